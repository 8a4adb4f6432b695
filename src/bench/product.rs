//! One batched product on the panel kernels alone (`benches/panel.rs`).

use crate::jit::buffer::AlignedBuf;

/// One batched product on the panel kernels, alone: `dst[b] += W @ x[b]`
/// for a `[rows, k]` matrix packed once and `batch` rows of `x` (the
/// per-step product of the `gemm` plans without the step around it), for
/// measuring the kernels against the FMA peak (`benches/panel.rs`).
#[doc(hidden)]
pub struct ProductBench {
    isa: crate::Isa,
    panels: AlignedBuf,
    x: AlignedBuf,
    dst: AlignedBuf,
    rows: usize,
    k: usize,
    batch: usize,
}

impl ProductBench {
    /// Random weights and inputs; an error if the host lacks `isa` or the
    /// sizes overflow.
    pub fn new(
        isa: crate::Isa,
        batch: usize,
        rows: usize,
        k: usize,
    ) -> std::result::Result<Self, String> {
        use crate::kernels::panel;
        if !isa.available() {
            return Err(format!("this CPU cannot run the {} kernels", isa.name()));
        }
        let len = panel::panels_len(rows, k).ok_or("the matrix is too large")?;
        let mut rng = crate::gen::Rng(1);
        let w: Vec<f32> = (0..rows * k).map(|_| rng.unit() as f32).collect();
        // Aligned to cache lines, as the compiled cell's buffers are: a
        // 64-byte load from a `Vec` (16-byte aligned) straddles two lines.
        let mut panels = AlignedBuf::zeros(len).map_err(|e| e.to_string())?;
        panel::pack(&w, rows, k, panels.as_mut_slice());
        let mut x = AlignedBuf::zeros(batch * k).map_err(|e| e.to_string())?;
        x.as_mut_slice()
            .iter_mut()
            .for_each(|v| *v = rng.unit() as f32);
        let dst = AlignedBuf::zeros(batch * rows).map_err(|e| e.to_string())?;
        Ok(ProductBench {
            isa,
            panels,
            x,
            dst,
            rows,
            k,
            batch,
        })
    }

    /// One product.
    pub fn run(&mut self) {
        crate::kernels::panel::product(
            self.isa,
            self.panels.as_slice(),
            self.rows,
            self.k,
            self.x.as_slice(),
            self.k,
            self.batch,
            self.dst.as_mut_slice(),
            self.rows,
        );
    }

    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.rows * self.k) as f64
    }

    /// The FMA peak of one core at the kernel's width, GFLOP/s, measured now.
    pub fn peak_gflops(&self) -> f64 {
        crate::kernels::probe::fma_peak_gflops(self.isa, 0.2)
    }
}

/// The blocked product of many rows alone (`kernels::gemm`: the hoisted
/// projection's), one thread: `columns` columns (steps x batch rows) of
/// `rows` weight rows over `k`, the weights packed in units as a compiled
/// cell packs them (`benches/panel.rs`).
#[doc(hidden)]
pub struct GemmBench {
    isa: crate::Isa,
    /// The operands' arithmetic: float32 (the weights in `units`), or bf16
    /// or int8 dot products on a path, the weights packed for it.
    operands: Operands,
    units: AlignedBuf,
    x: AlignedBuf,
    dst: AlignedBuf,
    bias: Vec<f32>,
    rows: usize,
    k: usize,
    columns: usize,
}

/// What [`GemmBench`] multiplies.
enum Operands {
    F32,
    Bf16(crate::kernels::bf16::Dots, crate::kernels::bf16::Packed),
    Int8(crate::kernels::int8::Dots, crate::kernels::int8::Packed),
}

impl GemmBench {
    /// Random weights and inputs; an error if the host lacks `isa` or the
    /// sizes overflow.
    pub fn new(
        isa: crate::Isa,
        columns: usize,
        rows: usize,
        k: usize,
    ) -> std::result::Result<Self, String> {
        use crate::kernels::gemm;
        if !isa.available() {
            return Err(format!("this CPU cannot run the {} kernels", isa.name()));
        }
        let len = gemm::units_len(rows, k).ok_or("the matrix is too large")?;
        let mut rng = crate::gen::Rng(1);
        let w: Vec<f32> = (0..rows * k).map(|_| rng.unit() as f32).collect();
        let mut units = AlignedBuf::zeros(len).map_err(|e| e.to_string())?;
        gemm::pack_units(&w, rows, k, units.as_mut_slice());
        let mut x = AlignedBuf::zeros(columns * k).map_err(|e| e.to_string())?;
        x.as_mut_slice()
            .iter_mut()
            .for_each(|v| *v = rng.unit() as f32);
        let dst = AlignedBuf::zeros(columns * rows).map_err(|e| e.to_string())?;
        let bias = (0..rows).map(|_| rng.unit() as f32).collect();
        Ok(GemmBench {
            isa,
            operands: Operands::F32,
            units,
            x,
            dst,
            bias,
            rows,
            k,
            columns,
        })
    }

    /// The bf16 paths this host has (`kernels::bf16`: "amx",
    /// "avx512-bf16", "portable").
    pub fn bf16_paths() -> Vec<&'static str> {
        use crate::kernels::bf16::Dots;
        Dots::ALL
            .into_iter()
            .filter(|d| d.available())
            .map(Dots::name)
            .collect()
    }

    /// As [`GemmBench::new`], the product on bf16 operands on `path` (one
    /// of [`GemmBench::bf16_paths`]).
    pub fn bf16(
        path: &str,
        columns: usize,
        rows: usize,
        k: usize,
    ) -> std::result::Result<Self, String> {
        use crate::kernels::bf16::{self, Dots};
        let dots = Dots::ALL
            .into_iter()
            .find(|d| d.name() == path && d.available())
            .ok_or_else(|| format!("no bf16 path {path} on this host"))?;
        GemmBench::with_weights(columns, rows, k, 2, |w| {
            Ok(Operands::Bf16(dots, bf16::pack(w, rows, k)))
        })
    }

    /// The int8 paths this host has (`kernels::int8`: "amx", "avx512-vnni",
    /// "avx-vnni", "portable").
    pub fn int8_paths() -> Vec<&'static str> {
        use crate::kernels::int8::Dots;
        Dots::ALL
            .into_iter()
            .filter(|d| d.available())
            .map(Dots::name)
            .collect()
    }

    /// As [`GemmBench::new`], the product on int8 operands (the weights
    /// quantized per row, the inputs per column as each job starts) on
    /// `path` (one of [`GemmBench::int8_paths`]).
    pub fn int8(
        path: &str,
        columns: usize,
        rows: usize,
        k: usize,
    ) -> std::result::Result<Self, String> {
        use crate::kernels::int8::{self, Dots};
        let dots = Dots::ALL
            .into_iter()
            .find(|d| d.name() == path && d.available())
            .ok_or_else(|| format!("no int8 path {path} on this host"))?;
        GemmBench::with_weights(columns, rows, k, 3, |w| {
            let (q, scales) = crate::quant::int8_rows(w, k);
            Ok(Operands::Int8(
                dots,
                int8::pack(dots, &q, &scales, rows, k)?,
            ))
        })
    }

    /// As [`GemmBench::new`], the product on other operands: random
    /// weights from `seed`, packed by `pack`.
    fn with_weights(
        columns: usize,
        rows: usize,
        k: usize,
        seed: u64,
        pack: impl FnOnce(&[f32]) -> std::result::Result<Operands, String>,
    ) -> std::result::Result<Self, String> {
        let mut b = GemmBench::new(crate::Isa::Scalar, columns, rows, k)?;
        let mut rng = crate::gen::Rng(seed);
        let w: Vec<f32> = (0..rows * k).map(|_| rng.unit() as f32).collect();
        b.operands = pack(&w)?;
        b.isa = crate::Isa::detect();
        Ok(b)
    }

    /// One product, `bias + W x` for every column.
    pub fn run(&mut self) {
        use crate::kernels::gemm::{Blocked, From, Gemm, Left, Right, SPLIT};
        use crate::kernels::{bf16, int8};
        let (m, n, k) = (self.rows, self.columns, self.k);
        let b = Right {
            ptr: self.x.as_slice().as_ptr(),
            rs: 1,
            cs: k,
        };
        let (c, ldc) = (self.dst.as_mut_slice().as_mut_ptr(), m);
        let from = From::Row(self.bias.as_ptr());
        // Each arm: the buffers were made for these sizes (`new`), the
        // weights packed for them, the destination is borrowed mutably, and
        // `new`, `bf16` or `int8` checked the ISA or path.
        match &self.operands {
            // SAFETY: as above.
            Operands::F32 => unsafe {
                Gemm {
                    isa: self.isa,
                    m,
                    n,
                    k,
                    a: Left::Units(self.units.as_slice().as_ptr()),
                    b,
                    c,
                    ldc,
                    from,
                    split: SPLIT,
                }
                .run()
            },
            // SAFETY: as above.
            Operands::Bf16(dots, packed) => unsafe {
                bf16::Product {
                    dots: *dots,
                    m,
                    n,
                    k,
                    a: packed.as_ptr(),
                    b,
                    c,
                    ldc,
                    from,
                    split: SPLIT,
                }
                .run()
            },
            // SAFETY: as above.
            Operands::Int8(dots, packed) => unsafe {
                int8::Product {
                    from,
                    split: SPLIT,
                    ..int8::Product::new(*dots, packed, n, b, c, ldc)
                }
                .run()
            },
        }
    }

    pub fn flops(&self) -> f64 {
        2.0 * (self.columns * self.rows * self.k) as f64
    }

    /// The FMA peak of one core at the kernel's width, GFLOP/s, measured now.
    pub fn peak_gflops(&self) -> f64 {
        crate::kernels::probe::fma_peak_gflops(self.isa, 0.2)
    }
}
