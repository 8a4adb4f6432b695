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
    v.resize(len, 0.0);
    Ok(v)
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
