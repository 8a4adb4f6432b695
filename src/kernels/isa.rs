//! Which kernels run: the ISAs this layer has kernels for, what the host
//! has, and which one a product takes by default (the widest).

/// Which kernel runs the products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (`f32::mul_add`), on any target.
    #[default]
    Scalar,
    /// x86-64 with AVX2 and FMA: 256-bit vectors.
    Avx2,
    /// x86-64 with AVX-512F: 512-bit vectors.
    Avx512,
    /// aarch64's Advanced SIMD: 128-bit vectors.
    Neon,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// Whether this host can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
            // Advanced SIMD is part of every aarch64 Linux target.
            Isa::Neon => cfg!(target_arch = "aarch64"),
        }
    }

    /// Whether its vectors are wider than the generated code's 128 bits (the
    /// cost model reads the weights faster through them).
    pub fn is_wide(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512)
    }

    /// Whether standalone element-wise regions run on its kernels
    /// (`kernels::wide`, which give the generated code's bits); with
    /// [`Isa::Scalar`] they run the generated code.
    ///
    /// On x86-64 the kernels are 2-4x as wide as the generated code. NEON's
    /// are as wide as Cranelift's aarch64 vectors, so they gain no width
    /// there; they run regions in blocks, as on x86, tested bit for bit
    /// under qemu but not yet timed on aarch64 hardware.
    pub fn has_region_kernels(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512 | Isa::Neon)
    }

    /// Floats per vector of its kernels (the generated code's 4 for
    /// [`Isa::Scalar`], whose regions it runs).
    pub fn lanes(self) -> usize {
        match self {
            Isa::Scalar | Isa::Neon => 4,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// The widest kernel the host has.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Scalar)
    }
}
