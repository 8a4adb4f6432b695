//! Hand-written compute the generated code cannot express, called by the
//! runtime: matrix products through the `gemm` crate (large batches and the
//! hoisted input projection) and the memory probe's read loop.

/// `dst[i + j*dst_cs] (+)= sum_k lhs[i*lhs_rs + k] * rhs[k + j*rhs_cs]` for an
/// `m x n` result, with the `gemm` crate on one thread. Checks every bound.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_cs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    rhs_cs: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The last element each operand reaches, computed without wrapping.
    let last = |rows: usize, rs: usize, cols: usize, cs: usize| {
        (rows - 1)
            .checked_mul(rs)
            .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)))
    };
    let fits = |len: usize, last: Option<usize>| last.is_some_and(|l| l < len);
    assert!(
        fits(dst.len(), last(m, 1, n, dst_cs)),
        "sgemm: dst too short"
    );
    if k > 0 {
        assert!(
            fits(lhs.len(), last(m, lhs_rs, k, 1)),
            "sgemm: lhs too short"
        );
        assert!(
            fits(rhs.len(), last(k, 1, n, rhs_cs)),
            "sgemm: rhs too short"
        );
    }
    // SAFETY: the asserts above keep every access of the `m x k` by `k x n`
    // product and the `m x n` result inside the slices.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            lhs.as_ptr(),
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            accumulate,
        )
    }
}

/// The sum of `v`'s floats (only whole groups of 32 are read): the memory probe's
/// read loop, eight independent 128-bit sums as the generated kernels load
/// weights, so that it runs at the memory's pace. (A plain Rust loop reaches
/// only about two thirds of that: LLVM keeps fewer chains in flight.)
pub fn sum_floats(v: &[f32]) -> f32 {
    let n = v.len() / 32 * 32;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128, _mm_add_ps, _mm_loadu_ps, _mm_setzero_ps, _mm_storeu_ps};
        let mut out = [0.0f32; 4];
        // SAFETY: SSE is part of x86-64; every load reads floats
        // `i + 4j .. i + 4j + 4` with `i + 32 <= n <= v.len()`.
        unsafe {
            let p = v.as_ptr();
            let mut acc: [__m128; 8] = [_mm_setzero_ps(); 8];
            let mut i = 0;
            while i < n {
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm_add_ps(*a, _mm_loadu_ps(p.add(i + 4 * j)));
                }
                i += 32;
            }
            let mut s = _mm_setzero_ps();
            for a in acc {
                s = _mm_add_ps(s, a);
            }
            _mm_storeu_ps(out.as_mut_ptr(), s);
        }
        out.iter().sum()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut acc = [[0.0f32; 4]; 8];
        for c in v[..n].chunks_exact(32) {
            for (j, a) in acc.iter_mut().enumerate() {
                for (l, x) in a.iter_mut().enumerate() {
                    *x += c[4 * j + l];
                }
            }
        }
        acc.iter().flatten().sum()
    }
}

/// # Safety
/// The `m x n` result at `dst` (columns `dst_cs` floats apart), the `m x k`
/// matrix at `lhs` (rows `lhs_rs` apart) and the `k x n` matrix at `rhs`
/// (columns `rhs_cs` apart) must be valid; `dst` must not overlap the others.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    accumulate: bool,
) {
    // SAFETY: as the caller guarantees (columns of `lhs` one float apart).
    unsafe {
        gemm_strided(
            m, n, k, dst, dst_cs, lhs, 1, lhs_rs, rhs, rhs_cs, accumulate,
        )
    }
}

/// [`gemm_raw`] with the `m x k` matrix's columns `lhs_cs` floats apart
/// (`lhs_cs = m`, `lhs_rs = 1`: column-major).
///
/// # Safety
/// As for [`gemm_raw`], with `lhs` element `(i, j)` at `i * lhs_rs + j * lhs_cs`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: usize,
    lhs: *const f32,
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    accumulate: bool,
) {
    if k == 0 {
        return;
    }
    // SAFETY: as the caller guarantees.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            1,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
