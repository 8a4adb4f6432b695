//! Memory whose size comes from the input (a batch, a sequence length, a
//! tensor's shape): sized with checked arithmetic and allocated fallibly, so
//! that too large a request is a [`ErrorKind::TooLarge`] error naming what it
//! was for, never an abort or a wrapped size. The runtime's own buffers do the
//! same (`jit::buffer`); this is the rest of the crate's.
//!
//! [`ErrorKind::TooLarge`]: crate::ErrorKind::TooLarge

use crate::{Error, Result};

/// The product of `sizes`, or an error saying `what` is too large.
pub(crate) fn product(sizes: &[usize], what: &str) -> Result<usize> {
    sizes
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| Error::too_large(format!("{what} is too large: its size overflows")))
}

/// An empty vector with room for `len` values.
pub(crate) fn with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        Error::too_large(format!(
            "cannot allocate {what} ({len} values of {} bytes)",
            std::mem::size_of::<T>()
        ))
    })?;
    Ok(v)
}

/// Room for `len` values in `v` (which is empty or shorter).
pub(crate) fn reserve<T>(v: &mut Vec<T>, len: usize, what: &str) -> Result<()> {
    v.try_reserve_exact(len.saturating_sub(v.len()))
        .map_err(|_| {
            Error::too_large(format!(
                "cannot allocate {what} ({len} values of {} bytes)",
                std::mem::size_of::<T>()
            ))
        })
}

/// `len` zeros.
pub(crate) fn zeros(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut v = with_capacity(len, what)?;
    huge_pages(&mut v);
    v.resize(len, 0.0);
    Ok(v)
}

/// Asks Linux to back a large buffer's untouched memory with huge pages
/// where it may (transparent huge pages in `madvise` mode): a fresh buffer
/// of tens of megabytes otherwise takes a page fault per 4 KiB on first
/// touch, which costs more than writing it (measured: 20 ms of a 60 ms
/// training step's backward pass at LSTM H = 256, batch 32, T = 100, before
/// its buffers were kept). Only whole 2 MiB pages inside the buffer are
/// advised; a refusal changes nothing.
fn huge_pages<T>(v: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes < 2 * HUGE {
            return;
        }
        let start = v.as_mut_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if lo < hi {
            // SAFETY: the range lies inside the vector's allocation, which is
            // ours; madvise(MADV_HUGEPAGE) changes how the kernel backs it,
            // never its contents or validity.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// A copy of `values`.
pub(crate) fn copy(values: &[f32], what: &str) -> Result<Vec<f32>> {
    let mut v = with_capacity(values.len(), what)?;
    v.extend_from_slice(values);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_is_an_error_not_an_abort() {
        assert!(product(&[1 << 40, 1 << 40], "x").is_err());
        assert_eq!(product(&[3, 4, 5], "x").unwrap(), 60);
        let e = zeros(usize::MAX / 8, "the outputs").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::TooLarge);
        assert!(e.to_string().contains("the outputs"), "{e}");
    }
}
