//! The slot tables generated code reads (a base pointer per slot of a
//! plan), held inline so that a step allocates nothing. Below both the state
//! that owns the buffers and the execution that hands them to the code.

use std::mem::MaybeUninit;

use super::MAX_SLOTS;

/// Up to [`MAX_SLOTS`] values inline (a step allocates nothing), of which
/// only the first `len` are written or read: a copy costs what it holds, not
/// `MAX_SLOTS` of them. (Copying and clearing whole 256-entry tables per
/// worker and step cost ~0.4 µs per 2-thread step, a fifth of a small cell's
/// step, measured with `perf`.)
pub(crate) struct Inline<T: Copy> {
    items: [MaybeUninit<T>; MAX_SLOTS],
    len: usize,
}

impl<T: Copy> Inline<T> {
    pub(super) fn new() -> Self {
        Inline {
            items: [const { MaybeUninit::uninit() }; MAX_SLOTS],
            len: 0,
        }
    }

    /// Appends `value`; panics when `MAX_SLOTS` are held (the kernel refuses
    /// plans with more slots or outputs).
    pub(super) fn push(&mut self, value: T) {
        assert!(self.len < MAX_SLOTS, "more than {MAX_SLOTS} slots");
        self.items[self.len] = MaybeUninit::new(value);
        self.len += 1;
    }
}

impl<T: Copy> Clone for Inline<T> {
    fn clone(&self) -> Self {
        let mut copy = Inline::new();
        copy.items[..self.len].copy_from_slice(&self.items[..self.len]);
        copy.len = self.len;
        copy
    }
}

impl<T: Copy> std::ops::Deref for Inline<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `items[..len]` were written (`push`, `clone`); `MaybeUninit<T>`
        // has `T`'s layout.
        unsafe { std::slice::from_raw_parts(self.items.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Copy> std::ops::DerefMut for Inline<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.items.as_mut_ptr().cast::<T>(), self.len) }
    }
}

/// The base pointer of every slot of a plan, as generated code reads them.
#[derive(Clone)]
pub(crate) struct SlotTable {
    pub(super) ptrs: Inline<*mut f32>,
}

// SAFETY: the pointers lead to the kernel's packed weights (only read) and to
// buffers of the `State` that the caller holds mutably for the whole call; the
// workers that share the table write disjoint tiles, rows and elements of
// them, and meet at a barrier before reading what another wrote.
unsafe impl Send for SlotTable {}
// SAFETY: as above.
unsafe impl Sync for SlotTable {}
