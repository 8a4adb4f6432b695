use super::*;
use crate::kernels::testing::random;

fn isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.available()).collect()
}

/// One case: `A` `[m, k]` row-major, `B` `[k, n]` row-major, `C` column by
/// column with `ldc >= m`, a bias row.
struct Case {
    m: usize,
    n: usize,
    k: usize,
    ldc: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    bias: Vec<f32>,
}

impl Case {
    fn new(m: usize, n: usize, k: usize, seed: u64) -> Case {
        let ldc = m + 3;
        Case {
            m,
            n,
            k,
            ldc,
            a: random(m * k, seed),
            b: random(k * n, seed + 1),
            c: random(ldc * n, seed + 2),
            bias: random(m, seed + 3),
        }
    }

    /// The chain every kernel computes: from the start, `fma` in `l` order.
    fn chains(&self, from: &str) -> Vec<f32> {
        let mut c = self.c.clone();
        for j in 0..self.n {
            for i in 0..self.m {
                let mut s = match from {
                    "zero" => 0.0,
                    "dst" => self.c[i + j * self.ldc],
                    _ => self.bias[i],
                };
                for l in 0..self.k {
                    s = self.a[i * self.k + l].mul_add(self.b[l * self.n + j], s);
                }
                c[i + j * self.ldc] = s;
            }
        }
        c
    }

    /// `C` from the blocked product: `A` packed in units or read strided;
    /// with `reverse`, `A` (when strided) and `B` column by column and the
    /// jobs in reverse order.
    fn run(&self, isa: Isa, units: bool, from: &str, reverse: bool) -> Vec<f32> {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut packed = vec![0.0; units_len(m, k).unwrap()];
        pack_units(&self.a, m, k, &mut packed);
        // The transposed copy: `A` column-major.
        let mut at = vec![0.0; m * k];
        for i in 0..m {
            for l in 0..k {
                at[l * m + i] = self.a[i * k + l];
            }
        }
        let a = if units {
            Left::Units(packed.as_ptr())
        } else if reverse {
            Left::Strided {
                ptr: at.as_ptr(),
                rs: 1,
                cs: m,
            }
        } else {
            Left::Strided {
                ptr: self.a.as_ptr(),
                rs: k,
                cs: 1,
            }
        };
        // `B` column by column (the projection's inputs): `(l, j)` at `j * k + l`.
        let mut bt = vec![0.0; k * n];
        for l in 0..k {
            for j in 0..n {
                bt[j * k + l] = self.b[l * n + j];
            }
        }
        let b = if reverse {
            Right {
                ptr: bt.as_ptr(),
                rs: 1,
                cs: k,
            }
        } else {
            Right {
                ptr: self.b.as_ptr(),
                rs: n,
                cs: 1,
            }
        };
        let mut c = self.c.clone();
        let g = Gemm {
            isa,
            m,
            n,
            k,
            a,
            b,
            c: c.as_mut_ptr(),
            ldc: self.ldc,
            from: match from {
                "zero" => From::Zero,
                "dst" => From::Dst,
                _ => From::Row(self.bias.as_ptr()),
            },
            split: if reverse { SPLIT } else { 1 },
        };
        let jobs: Vec<usize> = if reverse {
            (0..g.jobs()).rev().collect()
        } else {
            (0..g.jobs()).collect()
        };
        for j in jobs {
            // SAFETY: every operand is as large as the case says; `isa` is
            // available.
            unsafe { g.run_job(j) };
        }
        c
    }
}

/// Every ISA, `A` packed or strided, every start and any job order give
/// exactly the chains of fused multiply-adds in `k` order, for shapes
/// around every block size (units, strips, `KC`, `MC`, `NC`), and the
/// padding between columns of `C` is left alone. (The large shapes with one
/// start: the test also runs under qemu.)
#[test]
fn every_kernel_computes_the_chains() {
    let shapes = [
        (1, 1, 1),
        (5, 3, 7),
        (32, 12, 256),
        (33, 13, 257),
        (31, 25, 100),
        (MC + 17, NC + 5, KC + 3),
        (70, 2 * NC + 11, 2 * KC + 1),
        (2 * MC + 40, 7, 40),
    ];
    for (s, &(m, n, k)) in shapes.iter().enumerate() {
        let case = Case::new(m, n, k, 10 * s as u64);
        let froms: &[&str] = if m * n * k > 1 << 20 {
            &["row"]
        } else {
            &["zero", "dst", "row"]
        };
        for &from in froms {
            let want = case.chains(from);
            for isa in isas() {
                for units in [true, false] {
                    for reverse in [false, true] {
                        let got = case.run(isa, units, from, reverse);
                        let same = got
                            .iter()
                            .zip(&want)
                            .all(|(g, w)| g.to_bits() == w.to_bits());
                        assert!(
                            same,
                            "{m}x{n}x{k} from {from} on {} (units {units}, reverse {reverse})",
                            isa.name()
                        );
                    }
                }
            }
        }
    }
}

/// With no `k`, `C` is its start.
#[test]
fn an_empty_sum_is_its_start() {
    let case = Case::new(40, 20, 0, 3);
    for from in ["zero", "dst", "row"] {
        for isa in isas() {
            assert_eq!(case.run(isa, true, from, false), case.chains(from));
        }
    }
}

/// The safe entry points against f64 sums: `out += A B` with `A` read down
/// or across, `zᵀ v` and `z w`.
#[test]
fn the_row_major_products_sum_right() {
    let (m, n, k) = (45, 70, 300);
    let a = random(m * k, 1);
    let b = random(k * n, 2);
    let out0 = random(m * n, 3);
    let close = |got: &[f32], want: &[f64]| {
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-4, "{g} against {w}");
        }
    };
    let mut want = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = f64::from(out0[i * n + j])
                + (0..k)
                    .map(|l| f64::from(a[i * k + l]) * f64::from(b[l * n + j]))
                    .sum::<f64>();
        }
    }
    let mut out = out0.clone();
    product_sum(m, k, n, &a, &b, &mut out);
    close(&out, &want);
    // `zᵀ v` with `z` = `A` stored transposed (`[k, m]`).
    let mut z = vec![0.0; k * m];
    for i in 0..m {
        for l in 0..k {
            z[l * m + i] = a[i * k + l];
        }
    }
    let mut out = out0.clone();
    let g = outer_sum_jobs(m, n, k, &z, &b, &mut out).unwrap();
    // SAFETY: the operands are borrowed until the product is done.
    unsafe { g.run() };
    close(&out, &want);
}

/// Short operands are refused before any product runs.
#[test]
#[should_panic(expected = "b too short")]
fn a_short_operand_is_refused() {
    let mut out = vec![0.0; 4];
    product_sum(2, 3, 2, &[0.0; 6], &[0.0; 5], &mut out);
}

/// Operands whose rows and columns are both strided (no contiguous runs to
/// copy whole) pack one value at a time, and give the same chains.
#[test]
fn fully_strided_operands_give_the_chains() {
    let case = Case::new(45, 33, 70, 7);
    let (m, n, k) = (case.m, case.n, case.k);
    // Every value of `A` and `B` at twice its row-major index.
    let mut a = vec![f32::NAN; 2 * m * k];
    let mut b = vec![f32::NAN; 2 * k * n];
    for (i, v) in case.a.iter().enumerate() {
        a[2 * i] = *v;
    }
    for (i, v) in case.b.iter().enumerate() {
        b[2 * i] = *v;
    }
    let want = case.chains("dst");
    for isa in isas() {
        let mut c = case.c.clone();
        let g = Gemm {
            isa,
            m,
            n,
            k,
            a: Left::Strided {
                ptr: a.as_ptr(),
                rs: 2 * k,
                cs: 2,
            },
            b: Right {
                ptr: b.as_ptr(),
                rs: 2 * n,
                cs: 2,
            },
            c: c.as_mut_ptr(),
            ldc: case.ldc,
            from: From::Dst,
            split: SPLIT,
        };
        // SAFETY: the operands hold every strided value; `isa` is available.
        unsafe { g.run() };
        let same = c.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
        assert!(same, "fully strided operands on {}", isa.name());
    }
}
