use super::*;
use crate::kernels::testing::random;
use crate::quant::{bf16_bits, round_bf16};

/// The paths this host has (the others said as skipped).
#[allow(clippy::print_stderr)] // says what the host let it test
fn paths() -> Vec<Dots> {
    Dots::ALL
        .into_iter()
        .filter(|d| {
            let ok = d.available();
            if !ok {
                eprintln!("bf16 products: {} skipped (not on this host)", d.name());
            }
            ok
        })
        .collect()
}

/// One product on `dots`: `A` `[m, k]`, `B` column `j` at `b[j * ldb ..]`
/// (or strided by `rs` when `rs > 1`), `C` column-major with `ldc`.
struct Case {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    rs: usize,
    cs: usize,
    c0: Vec<f32>,
    ldc: usize,
    bias: Vec<f32>,
}

impl Case {
    fn new(m: usize, n: usize, k: usize, seed: u64, transposed_b: bool) -> Case {
        let ldc = m + 3;
        let (rs, cs) = if transposed_b { (n, 1) } else { (1, k) };
        Case {
            m,
            n,
            k,
            a: random(m * k, seed),
            b: random(k * n, seed + 1),
            rs,
            cs,
            c0: random(ldc * n, seed + 2),
            ldc,
            bias: random(m, seed + 3),
        }
    }

    fn run(&self, dots: Dots, from: u8, split: usize, reversed: bool) -> Vec<f32> {
        let packed = pack(&self.a, self.m, self.k);
        let mut c = self.c0.clone();
        let p = Product {
            dots,
            m: self.m,
            n: self.n,
            k: self.k,
            a: packed.as_ptr(),
            b: Right {
                ptr: self.b.as_ptr(),
                rs: self.rs,
                cs: self.cs,
            },
            c: c.as_mut_ptr(),
            ldc: self.ldc,
            from: match from {
                0 => From::Zero,
                1 => From::Dst,
                _ => From::Row(self.bias.as_ptr()),
            },
            split,
        };
        let mut jobs: Vec<usize> = (0..p.jobs()).collect();
        if reversed {
            jobs.reverse();
        }
        for j in jobs {
            // SAFETY: every operand holds what the product reads and writes.
            unsafe { p.run_job(j) };
        }
        c
    }

    /// Element `(i, j)` in f64 from the rounded operands, and the sum of
    /// its terms' magnitudes.
    fn exact(&self, from: u8, i: usize, j: usize) -> (f64, f64) {
        let start = match from {
            0 => 0.0,
            1 => self.c0[i + j * self.ldc] as f64,
            _ => self.bias[i] as f64,
        };
        let (mut sum, mut mag) = (start, start.abs());
        for l in 0..self.k {
            let t = round_bf16(self.a[i * self.k + l]) as f64
                * round_bf16(self.b[l * self.rs + j * self.cs]) as f64;
            sum += t;
            mag += t.abs();
        }
        (sum, mag)
    }
}

const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (16, 16, 32),
    (33, 13, 31),
    (17, 100, 33),
    (64, 257, 64),
    (100, 33, 100),
    (31, 300, 2),
    (290, 40, 65),
    (5, 7, 0),
];

#[test]
fn every_path_computes_the_rounded_product() {
    for dots in paths() {
        for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
            for transposed in [false, true] {
                let case = Case::new(m, n, k, 10 * s as u64, transposed);
                for from in 0..3 {
                    let c = case.run(dots, from, 4, false);
                    for j in 0..n {
                        for i in 0..case.ldc {
                            let got = c[i + j * case.ldc];
                            if i >= m {
                                assert_eq!(got, case.c0[i + j * case.ldc], "padding row written");
                                continue;
                            }
                            let (want, mag) = case.exact(from, i, j);
                            let tol = (k + 2) as f64 * f32::EPSILON as f64 * mag + 1e-30;
                            assert!(
                                (got as f64 - want).abs() <= tol,
                                "{} [{m}, {k}] x [{k}, {n}] from {from}: ({i}, {j}) {got} vs {want}",
                                dots.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_path_gives_the_same_bits_on_any_split() {
    for dots in paths() {
        for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
            let case = Case::new(m, n, k, 100 + s as u64, false);
            let one = case.run(dots, 2, 1, false);
            for (split, reversed) in [(4, true), (16, false), (3, true)] {
                let other = case.run(dots, 2, split, reversed);
                let same = one
                    .iter()
                    .zip(&other)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "{} [{m}, {k}] x [{k}, {n}] split {split}",
                    dots.name()
                );
            }
        }
    }
}

#[test]
fn rows_round_as_the_scalar_rounding() {
    let mut v = random(1000, 7);
    v.extend([
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE / 3.0,
        -0.0,
        f32::from_bits(0x3f80_8000), // a tie, to even (down)
        f32::from_bits(0x3f81_8000), // a tie, to even (up)
        f32::from_bits(0x7f7f_ffff),
    ]);
    for len in [0, 1, 15, 16, 17, v.len()] {
        let mut got = vec![0u16; len];
        round_row(&v[..len], &mut got);
        for (x, g) in v[..len].iter().zip(&got) {
            assert_eq!(*g, bf16_bits(*x), "{x:e}");
        }
    }
}

#[test]
fn the_safe_entry_checks_lengths_and_paths() {
    let a = pack(&random(6, 1), 2, 3);
    let mut c = vec![0.0; 8];
    assert!(product(Dots::Portable, &a, &[0.0; 11], 4, &mut c, false, 1).is_err());
    assert!(product(Dots::Portable, &a, &[0.0; 12], 4, &mut c[..7], false, 1).is_err());
    let b = random(12, 2);
    product(Dots::Portable, &a, &b, 4, &mut c, false, 1).unwrap();
    let a32 = random(6, 1);
    for i in 0..2 {
        for j in 0..4 {
            let want: f64 = (0..3)
                .map(|l| round_bf16(a32[i * 3 + l]) as f64 * round_bf16(b[l * 4 + j]) as f64)
                .sum();
            assert!((c[i * 4 + j] as f64 - want).abs() < 1e-6);
        }
    }
    for dots in Dots::ALL {
        if !dots.available() {
            assert!(product(dots, &a, &b, 4, &mut c, false, 1).is_err());
        }
    }
}
