//! Buffers the generated code reads and writes: aligned, allocated fallibly.

use crate::{Error, Result};

/// A float buffer aligned to 64 bytes (a cache line), so vector accesses never
/// straddle one.
#[derive(Clone)]
pub(crate) struct AlignedBuf {
    blocks: Vec<Align64>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([f32; 16]);

impl AlignedBuf {
    /// `len` zeros, or an error if the memory cannot be had (never an abort).
    pub(crate) fn zeros(len: usize) -> Result<AlignedBuf> {
        let blocks = len.div_ceil(16);
        let mut v = Vec::new();
        v.try_reserve_exact(blocks).map_err(|_| {
            Error::too_large(format!(
                "cannot allocate {} for the kernel's buffers",
                byte_size(len)
            ))
        })?;
        v.resize(blocks, Align64([0.0; 16]));
        Ok(AlignedBuf { blocks: v, len })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `blocks` holds `16 * blocks.len() >= len` contiguous, initialized
        // f32 values (`Align64` is `repr(C)` over `[f32; 16]`).
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<f32>(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the view unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<f32>(), self.len) }
    }

    /// The first float, to read through.
    pub(super) fn ptr(&self) -> *const f32 {
        self.blocks.as_ptr().cast::<f32>()
    }

    /// The first float, to read and write through.
    pub(super) fn ptr_mut(&mut self) -> *mut f32 {
        self.blocks.as_mut_ptr().cast::<f32>()
    }
}

/// The product of sizes, or `None` if it overflows.
pub(super) fn count(sizes: &[usize]) -> Option<usize> {
    sizes.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

/// `floats` as a size a person reads.
fn byte_size(floats: usize) -> String {
    let bytes = floats as f64 * 4.0;
    if bytes >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
    }
}

pub(super) fn too_large(batch: usize) -> Error {
    Error::too_large(format!(
        "a batch of {batch} rows is too large: its buffers do not fit in memory"
    ))
}
