//! The kernel layer: hand-written compute the generated code calls, or that
//! runs beside it, at the host's full vector width. Cranelift emits no
//! vector wider than 128 bits on x86-64, so the products of a step (and the
//! wide element-wise regions) are kernels here, the way tract keeps
//! `tract-linalg` apart from its operators.
//!
//! - [`isa`]: the ISAs there are kernels for, and what the host has.
//! - `simd`: the one SIMD abstraction every vector kernel is written in
//!   (a trait, one implementation per ISA, instantiated inside
//!   `#[target_feature]` entry points).
//! - [`panel`]: the packed weight layout and the matrix products over it
//!   (float32, bf16 and int8 weights).
//! - `gemm`: products of many rows blocked for the caches (BLIS's
//!   layout): the hoisted input projection of a sequence, and training's
//!   weight gradients and input adjoints.
//! - `spectral`: products with block-circulant weights through their
//!   spectra (the FFT products): the transforms and the multiply-accumulate.
//! - [`wide`]: element-wise regions at the full width, the same bits as
//!   the generated 128-bit code.
//! - [`probe`]: the FMA peak and the memory read loop the host calibration
//!   measures.
//!
//! This layer decides nothing: which kernel, tile and plan a product takes is
//! the code generator's choice (`codegen::plan`, `codegen::schedule`); here
//! every ISA computes the portable kernel's bits.

pub(crate) mod bf16;
pub(crate) mod gemm;
pub(crate) mod int8;
pub mod isa;
pub mod panel;
pub mod probe;
pub(crate) mod simd;
pub(crate) mod spectral;
pub mod wide;

pub use isa::Isa;

/// What the kernels' unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// `n` values in [-1, 1) from `seed` (SplitMix64; `crate::gen` is a
    /// layer above the kernels).
    pub(crate) fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }
}

/// Where a vector lives: a slot, an offset in floats, and the distance in floats
/// between batch rows (0 for parameters, which the batch shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub slot: usize,
    pub offset: usize,
    pub stride: usize,
    pub len: usize,
}

impl Loc {
    /// Whether writing one may change what the other holds: the same buffer
    /// (not the read-only weights) and overlapping floats of a row, or rows
    /// laid out differently (then assumed to meet).
    pub fn may_overlap(&self, other: &Loc) -> bool {
        self.slot == other.slot && self.slot != 0 && {
            let (a0, a1) = (self.offset, self.offset + self.len.max(1));
            let (b0, b1) = (other.offset, other.offset + other.len.max(1));
            self.stride != other.stride || (a0 < b1 && b0 < a1)
        }
    }
}
