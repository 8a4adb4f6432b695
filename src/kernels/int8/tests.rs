use super::*;
use crate::kernels::testing::random;
use crate::quant::int8_rows;

/// The paths this host has (the others said as skipped).
#[allow(clippy::print_stderr)] // says what the host let it test
fn paths() -> Vec<Dots> {
    Dots::ALL
        .into_iter()
        .filter(|d| {
            let ok = d.available();
            if !ok {
                eprintln!("int8 products: {} skipped (not on this host)", d.name());
            }
            ok
        })
        .collect()
}

/// One product: `A` `[m, k]` (float32, quantized per row as `--precision
/// int8` stores it), `B` column `j` at `b[j * cs ..]` or strided by `rs`,
/// `C` column-major with `ldc`.
struct Case {
    m: usize,
    n: usize,
    k: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
    b: Vec<f32>,
    rs: usize,
    cs: usize,
    c0: Vec<f32>,
    ldc: usize,
    bias: Vec<f32>,
    /// Another matrix laid out as `C` (`ldc` apart), a start.
    other: Vec<f32>,
}

impl Case {
    fn new(m: usize, n: usize, k: usize, seed: u64, transposed_b: bool) -> Case {
        let ldc = m + 3;
        let (rs, cs) = if transposed_b { (n, 1) } else { (1, k) };
        let (q, scales) = int8_rows(&random(m * k, seed), k);
        // Columns of all signs, of positive values only and of negative
        // values only (the zero point at either end).
        let mut b = random(k * n, seed + 1);
        for j in 0..n {
            for l in 0..k {
                let v = &mut b[l * rs + j * cs];
                match j % 3 {
                    1 => *v = v.abs() * 3.0,
                    2 => *v = -v.abs(),
                    _ => {}
                }
            }
        }
        Case {
            m,
            n,
            k,
            q,
            scales,
            b,
            rs,
            cs,
            c0: random(ldc * n, seed + 2),
            ldc,
            bias: random(m, seed + 3),
            other: random(ldc * n, seed + 4),
        }
    }

    fn from(&self, from: u8) -> From {
        match from {
            0 => From::Zero,
            1 => From::Dst,
            2 => From::Row(self.bias.as_ptr()),
            _ => From::Matrix {
                ptr: self.other.as_ptr(),
                ld: self.ldc,
            },
        }
    }

    fn run(&self, dots: Dots, from: u8, split: usize, reversed: bool) -> Vec<f32> {
        let packed = pack(dots, &self.q, &self.scales, self.m, self.k).unwrap();
        let mut c = self.c0.clone();
        let right = Right {
            ptr: self.b.as_ptr(),
            rs: self.rs,
            cs: self.cs,
        };
        let p = Product {
            from: self.from(from),
            split,
            ..Product::new(dots, &packed, self.n, right, c.as_mut_ptr(), self.ldc)
        };
        let mut jobs: Vec<usize> = (0..p.jobs()).collect();
        if reversed {
            jobs.reverse();
        }
        for j in jobs {
            // SAFETY: the case's operands are as long as the product
            // needs; the host has `dots`.
            unsafe { p.run_job(j) };
        }
        c
    }

    /// The module's formula, straight from the row-major values: each
    /// column quantized by `quantize`, the sum in i64, then the float32
    /// operations the module docs state.
    fn expected(&self, from: u8) -> Vec<f32> {
        let mut c = self.c0.clone();
        let mut qb = vec![0u8; self.k];
        for j in 0..self.n {
            let col: Vec<f32> = (0..self.k)
                .map(|l| self.b[l * self.rs + j * self.cs])
                .collect();
            let (sb, zb) = quantize(&col, &mut qb);
            for i in 0..self.m {
                let row = &self.q[i * self.k..(i + 1) * self.k];
                let dot: i64 = (row.iter().zip(&qb))
                    .map(|(&w, &x)| i64::from(w) * i64::from(x))
                    .sum();
                let sum: i64 = row.iter().map(|&w| i64::from(w)).sum();
                let t = dot - i64::from(zb) * sum;
                let t = i32::try_from(t).unwrap() as f32;
                let at = i + j * self.ldc;
                let start = match from {
                    0 => 0.0,
                    1 => self.c0[at],
                    2 => self.bias[i],
                    _ => self.other[at],
                };
                c[at] = t.mul_add(self.scales[i] * sb, start);
            }
        }
        c
    }
}

/// Every path this host has gives the module's formula, bit for bit, on
/// shapes around every block (rows around units and tiles, `k` around a
/// quad, columns around a tile and a job), `B` either way round, each
/// start; elements of `C` outside the product (the rows past `m` of each
/// column, `ldc > m`) untouched.
#[test]
fn every_path_computes_the_formula_exactly() {
    let shapes = [
        (1, 1, 1),
        (15, 5, 3),
        (16, 12, 4),
        (17, 13, 5),
        (33, 7, 64),
        (70, 25, 257),
        (300, 3, 130),
        (64, 241, 9),
    ];
    for dots in paths() {
        for (s, &(m, n, k)) in shapes.iter().enumerate() {
            for transposed in [false, true] {
                let case = Case::new(m, n, k, 10 * s as u64, transposed);
                for from in 0..4 {
                    let got = case.run(dots, from, 1, false);
                    let want = case.expected(from);
                    for (e, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            g.to_bits() == w.to_bits(),
                            "{} [{m}, {k}] x {n} transposed {transposed} from {from}: \
                             element {e}: {g} against {w}",
                            dots.name()
                        );
                    }
                }
            }
        }
    }
}

/// The job split and the order jobs run in change nothing, and every path
/// gives the portable one's bits (integer sums are exact in any order).
#[test]
fn every_split_and_path_gives_the_same_bits() {
    let case = Case::new(300, 100, 70, 77, false);
    let want = case.run(Dots::Portable, 2, 1, false);
    for dots in paths() {
        for split in [1, 2, 4, 8] {
            for reversed in [false, true] {
                let got = case.run(dots, 2, split, reversed);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{} split {split} reversed {reversed}", dots.name());
            }
        }
    }
}

/// The product is a product: against float32 sums of the unquantized
/// operands, within what quantizing both costs (half a step of each per
/// term, summed over `k`).
#[test]
fn products_are_close_to_float32() {
    let (m, n, k) = (64, 9, 200);
    let a = random(m * k, 3);
    let b = random(k * n, 4);
    let (q, scales) = int8_rows(&a, k);
    let packed = pack(Dots::best(), &q, &scales, m, k).unwrap();
    let mut c = vec![0.0; m * n];
    product(Dots::best(), &packed, &b, n, &mut c, false, 1).unwrap();
    for i in 0..m {
        for j in 0..n {
            let exact: f64 = (0..k)
                .map(|l| f64::from(a[i * k + l]) * f64::from(b[l * n + j]))
                .sum();
            // |a|, |b| < 1: each term off by at most half a step of each.
            let bound = k as f64 * (f64::from(scales[i]) / 2.0 + 1.0 / 255.0);
            let err = (f64::from(c[i * n + j]) - exact).abs();
            assert!(err <= bound, "({i}, {j}): {err} over {bound}");
        }
    }
}

/// Quantizing a column: the range from its smallest value (or 0) to its
/// largest (or 0) in 255 steps, 0 exact, every value within half a step;
/// columns of one sign use every level; a zero column has scale 1; a value
/// that is not finite makes the scale NaN, so the product's elements are
/// NaN rather than numbers.
#[test]
fn columns_quantize_over_their_range() {
    let mut q = vec![0u8; 8];
    for (x, lo, hi) in [
        (
            vec![-1.0f32, 0.5, 0.25, 3.0, 0.0, -0.7, 2.9],
            -1.0f32,
            3.0f32,
        ),
        (vec![0.2, 0.5, 4.0], 0.0, 4.0),
        (vec![-0.2, -0.5, -4.0], -4.0, 0.0),
    ] {
        let (scale, zero) = quantize(&x, &mut q);
        assert_eq!(scale, (hi - lo) / 255.0, "{x:?}");
        assert_eq!(zero as f32, (-lo / scale).round_ties_even(), "{x:?}");
        for (&v, &qv) in x.iter().zip(&q) {
            let back = (f32::from(qv) - zero as f32) * scale;
            assert!(
                (back - v).abs() <= scale * 0.5 + 1e-6,
                "{v} -> {qv} -> {back}"
            );
            if v == 0.0 {
                assert_eq!(i32::from(qv), zero, "0 is exact");
            }
        }
        assert!(q[x.len()..].iter().all(|&v| v == 0), "the rest is zeroed");
    }
    let (_, zero) = quantize(&[0.5, 4.0], &mut q);
    assert_eq!((zero, q[1]), (0, 255), "positive values start at level 0");
    let (_, zero) = quantize(&[-4.0, -0.5], &mut q);
    assert_eq!((zero, q[0]), (255, 0), "negative values end at level 255");
    assert_eq!(quantize(&[0.0, 0.0], &mut q), (1.0, 0));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let (scale, _) = quantize(&[1.0, bad], &mut q);
        assert!(scale.is_nan(), "{bad}");
    }
    let (q8, scales) = int8_rows(&random(32 * 4, 1), 4);
    for dots in paths() {
        let packed = pack(dots, &q8, &scales, 32, 4).unwrap();
        let mut c = vec![0.0; 32 * 2];
        // `[k, n]` row-major: column 1 holds the NaN.
        let b = [1.0, f32::NAN, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0];
        product(dots, &packed, &b, 2, &mut c, false, 1).unwrap();
        for i in 0..32 {
            assert!(c[i * 2].is_finite(), "{}: row {i}", dots.name());
            assert!(c[i * 2 + 1].is_nan(), "{}: row {i}", dots.name());
        }
    }
}

/// The AVX-512 and AVX2 quantizations give the portable one's scale, zero
/// point and bytes: columns of every length around a vector, of one sign or
/// both, with values on the rounding ties, and with values that are not
/// finite.
#[test]
#[allow(clippy::print_stderr)] // says what the host let it test
fn quantizing_on_simd_gives_the_portable_bytes() {
    type Quantize = unsafe fn(&[f32], &mut [u8]) -> (f32, i32);
    #[cfg(target_arch = "x86_64")]
    let paths: [(&str, bool, Quantize); 2] = [
        (
            "avx512",
            is_x86_feature_detected!("avx512f"),
            x86::quantize_avx512,
        ),
        (
            "avx2",
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            x86::quantize_avx2,
        ),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let paths: [(&str, bool, Quantize); 0] = [];
    for (name, available, simd) in paths {
        if !available {
            eprintln!("int8 quantization: {name} skipped (not on this host)");
            continue;
        }
        for (s, n) in [1usize, 7, 8, 9, 15, 16, 17, 33, 100, 513]
            .into_iter()
            .enumerate()
        {
            for kind in 0..6 {
                let mut x = random(n, 100 + s as u64);
                match kind {
                    1 => x.iter_mut().for_each(|v| *v = v.abs()),
                    2 => x.iter_mut().for_each(|v| *v = -v.abs() * 1e-3),
                    // Ties: halves of a step of 1 (range 0..255).
                    3 => {
                        for (l, v) in x.iter_mut().enumerate() {
                            *v = (l % 256) as f32 + if l % 2 == 0 { 0.5 } else { 0.0 };
                        }
                    }
                    4 => x[n / 2] = f32::INFINITY,
                    5 => x[n - 1] = f32::NAN,
                    _ => {}
                }
                let (mut a, mut b) = (vec![7u8; n + 5], vec![9u8; n + 5]);
                let pa = quantize_portable(&x, &mut a);
                // SAFETY: the host has the path's features.
                let pb = unsafe { simd(&x, &mut b) };
                assert_eq!(
                    pa.0.to_bits(),
                    pb.0.to_bits(),
                    "{name}: n {n} kind {kind}: scale"
                );
                assert_eq!((pa.1, &a), (pb.1, &b), "{name}: n {n} kind {kind}");
            }
        }
    }
}

/// Packing refuses what it cannot represent, and products refuse short
/// buffers and paths the host lacks.
#[test]
fn mistakes_are_refused() {
    let pack = |q: &[i8], scales: &[f32], m, k| pack(Dots::Portable, q, scales, m, k);
    assert!(pack(&[1, 2, 3], &[1.0], 2, 2)
        .unwrap_err()
        .contains("needs 4"));
    assert!(pack(&[1, 2], &[1.0], 2, 1)
        .unwrap_err()
        .contains("2 scales"));
    assert!(pack(&[i8::MIN, 0], &[1.0], 1, 2)
        .unwrap_err()
        .contains("-128"));
    let k = MAX_K + 1;
    assert!(pack(&vec![0; k], &[1.0], 1, k)
        .unwrap_err()
        .contains("overflow"));
    assert!(pack(&[1, 2], &[f32::NAN], 1, 2)
        .unwrap_err()
        .contains("scale is NaN"));
    let packed = pack(&[1, 2, 3, 4], &[1.0, 1.0], 2, 2).unwrap();
    let mut c = vec![0.0; 6];
    let err = product(Dots::Portable, &packed, &[0.0; 5], 3, &mut c, false, 1).unwrap_err();
    assert!(err.contains("needs 6 and 6"), "{err}");
    for dots in Dots::ALL.into_iter().filter(|d| !d.available()) {
        let err = product(dots, &packed, &[0.0; 6], 3, &mut c, false, 1).unwrap_err();
        assert!(err.contains("not available"), "{err}");
    }
}

/// Each float ISA the host has gets the integer path of its width: at
/// AVX2's, AVX-VNNI where the host has it, else plain AVX2 (never the
/// portable path, which hosts without VNNI would otherwise fall to); the
/// portable and NEON kernels the portable path.
#[test]
fn each_isa_gets_the_integer_path_of_its_width() {
    use crate::kernels::Isa;
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let dots = Dots::for_isa(isa);
        assert!(dots.available(), "{isa:?}: {dots:?}");
        let expected = match isa {
            Isa::Avx512 => Dots::best(),
            Isa::Avx2 if Dots::AvxVnni.available() => Dots::AvxVnni,
            Isa::Avx2 => Dots::Avx2,
            Isa::Scalar | Isa::Neon => Dots::Portable,
        };
        assert_eq!(dots, expected, "{isa:?}");
    }
}
