//! Matrix products through the `gemm` crate: the plans that take it for
//! large batches, and the hoisted input projection of a sequence.

/// `dw[i*c + j] += sum_n z[n*r + i] * v[n*c + j]`: the sum over `n` rows of
/// the outer products of `z`'s and `v`'s rows (`zᵀ v`, `[r, c]` row-major),
/// with the `gemm` crate on one thread (the same bits whatever else runs).
/// Checks every bound.
pub(crate) fn outer_sum(r: usize, c: usize, n: usize, z: &[f32], v: &[f32], dw: &mut [f32]) {
    // `zᵀ`: element (i, k) at `z[k*r + i]`.
    accumulate(r, c, n, (z, 1, r), v, dw);
}

/// `out[i*c + j] += sum_k z[i*r + k] * w[k*c + j]`: `out += z w` for `n`
/// rows of `z` (`[n, r]`) and `w` (`[r, c]`), all row-major, with the
/// `gemm` crate on one thread (the same bits whatever else runs). Checks
/// every bound.
pub(crate) fn product_sum(n: usize, r: usize, c: usize, z: &[f32], w: &[f32], out: &mut [f32]) {
    accumulate(n, c, r, (z, r, 1), w, out);
}

/// `out += A B` for `out` `[m, n]` and `b` `[k, n]`, both row-major, and
/// `A` `[m, k]` with element `(i, l)` at `a[i*a_rs + l*a_cs]`, on one
/// thread. Checks every bound.
fn accumulate(
    m: usize,
    n: usize,
    k: usize,
    (a, a_rs, a_cs): (&[f32], usize, usize),
    b: &[f32],
    out: &mut [f32],
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let size = |x: usize, y: usize| x.checked_mul(y).expect("accumulate: sizes overflow");
    let a_last = (size(m - 1, a_rs)).checked_add(size(k - 1, a_cs));
    assert!(
        a_last.is_some_and(|l| l < a.len()),
        "accumulate: a too short"
    );
    assert!(b.len() >= size(k, n), "accumulate: b too short");
    assert!(out.len() >= size(m, n), "accumulate: out too short");
    // SAFETY: element (i, j) of the result is `out[i*n + j]`, (i, l) of the
    // left operand `a[i*a_rs + l*a_cs]`, (l, j) of the right `b[l*n + j]`:
    // inside the slices, whose lengths were checked above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

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
