//! Element-wise regions at the host's full vector width.
//!
//! Cranelift lowers no vector wider than 128 bits on x86-64, so the generated
//! region code does a quarter of the work per instruction that AVX-512 could
//! (half of AVX2's). Here a standalone region (a `Task::Region`'s code,
//! compiled by `codegen::wide`) is a [`Program`]: its body in evaluation order, each
//! value in a *register* of [`BLOCK`] floats of scratch memory. A pass runs
//! one instruction over a block of up to `BLOCK` lanes of one batch row, in
//! 16- or 8-lane vectors (the loop is compiled per operation and per width, so
//! the dispatch costs once per block, not per vector); the yields are copied
//! out at the end of the block. Registers are reused once their value is dead,
//! so a long chain needs a few of them, not one per value.
//!
//! The arithmetic mirrors the generated code's operation for operation
//! ([`math`]): a wide region computes the same bits as the Cranelift one, on
//! every width and thread count (`tests/jit.rs` checks it), and the accuracy
//! contract of `tests/vecmath.rs` holds unchanged.

// The loops and math are instantiated for x86-64's widths and aarch64's
// Advanced SIMD: elsewhere regions run the generated code
// (`Isa::has_region_kernels`).
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code, unused_variables)
)]

pub(crate) mod coefficients;
mod math;

use std::mem::MaybeUninit;

use super::Isa;
use super::Loc;

/// Floats per tile of a region's rows, the unit threads split: the
/// generated code's vector (`codegen::plan::LANES`).
pub const TILE_LANES: usize = 4;

/// Lanes one instruction runs over before the next one starts.
pub const BLOCK: usize = 256;

/// Registers held on the stack; a program needing more uses a heap buffer.
const STACK_REGS: usize = 24;

/// A value's source in a [`Program`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Src {
    Reg(u32),
    /// A vector argument: its lanes from the argument's row.
    Arg(u32),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Unary(crate::ir::UnaryOp),
    Binary(crate::ir::BinaryOp),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Inst {
    pub(crate) kind: Kind,
    pub(crate) a: Src,
    pub(crate) b: Src,
    pub(crate) dst: u32,
}

/// A register filled before the body runs: a constant (once per call), or
/// one float of each batch row of an argument, broadcast (once per row).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Fill {
    Const(f32),
    Row(Loc),
}

/// A standalone region compiled for the wide kernels.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Tiles of [`TILE_LANES`] lanes per batch row.
    pub(crate) tiles: usize,
    /// Vector arguments.
    pub(crate) args: Vec<Loc>,
    pub(crate) fills: Vec<(u32, Fill)>,
    pub(crate) insts: Vec<Inst>,
    /// Registers of [`BLOCK`] floats.
    pub(crate) regs: usize,
    pub(crate) yields: Vec<(Src, Loc)>,
}

impl Program {
    /// Tiles of [`TILE_LANES`] floats per batch row: the unit threads split.
    pub fn tiles(&self) -> usize {
        self.tiles
    }

    /// Runs batch rows `b0..b1`, tiles `t0..t1`.
    ///
    /// # Safety
    /// `slots` holds the base pointer of every slot of the (verified) plan
    /// the region belongs to, each buffer sized for `b1` batch rows of its
    /// slot's stride; no other thread touches the tiles `t0..t1` of the
    /// region's yields meanwhile; `t1 <= self.tiles()`; the host has `isa`,
    /// which is not [`Isa::Scalar`].
    pub unsafe fn run(
        &self,
        isa: Isa,
        slots: *const *mut f32,
        b0: usize,
        b1: usize,
        t0: usize,
        t1: usize,
    ) {
        debug_assert!(t1 <= self.tiles);
        // Every lane of a register is written before it is read (a pass
        // writes the lanes the next ones read; fills write whole registers),
        // so the scratch starts uninitialized: no clearing per call.
        let mut stack = [const { MaybeUninit::<f32>::uninit() }; STACK_REGS * BLOCK];
        let mut heap: Vec<MaybeUninit<f32>> = Vec::new();
        let scratch = if self.regs <= STACK_REGS {
            stack.as_mut_ptr()
        } else {
            heap.reserve_exact(self.regs * BLOCK);
            heap.as_mut_ptr()
        }
        .cast::<f32>();
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as the caller guarantees; `scratch` holds `regs` registers.
            Isa::Avx512 => unsafe { x86::run_avx512(self, slots, scratch, b0, b1, t0, t1) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 => unsafe { x86::run_avx2(self, slots, scratch, b0, b1, t0, t1) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: as above (Advanced SIMD is part of every aarch64 target).
            Isa::Neon => unsafe {
                run::run::<crate::kernels::simd::Neon>(self, slots, scratch, b0, b1, t0, t1)
            },
            _ => unreachable!("no wide kernels for {}", isa.name()),
        }
    }
}

/// One width's loops over a program.
///
/// Everything here is `#[inline(always)]` and free of closures, down to the
/// intrinsics: it is compiled inside the `#[target_feature]` function of its
/// width (`x86`), where the intrinsics inline. (A closure or a function that
/// is not inlined would be compiled without the width's features, and every
/// intrinsic in it would become a call.)
///
/// # Safety (of every function)
/// As [`Program::run`], `scratch` holds `p.regs * BLOCK` floats, and `S`'s
/// target features are enabled.
mod run {
    use super::math;
    use super::{Fill, Inst, Kind, Loc, Program, Src, BLOCK};
    use crate::ir::{BinaryOp, UnaryOp};
    use crate::kernels::simd::SimdMath as Simd;

    /// An operation of one operand, as a type (so that each gets its loop).
    trait Map1 {
        unsafe fn f<S: Simd>(x: S::F) -> S::F;
    }

    trait Map2 {
        unsafe fn f<S: Simd>(x: S::F, y: S::F) -> S::F;
    }

    macro_rules! map1_ops {
        ($($name:ident => $op:expr),* $(,)?) => {$(
            struct $name;
            impl Map1 for $name {
                #[inline(always)]
                unsafe fn f<S: Simd>(x: S::F) -> S::F {
                    // SAFETY: module contract.
                    unsafe { math::unary::<S>($op, x) }
                }
            }
        )*};
    }
    map1_ops! {
        Neg => UnaryOp::Neg,
        Sigmoid => UnaryOp::Sigmoid,
        Tanh => UnaryOp::Tanh,
        Relu => UnaryOp::Relu,
        Exp => UnaryOp::Exp,
        Abs => UnaryOp::Abs,
        Sqrt => UnaryOp::Sqrt,
        Log => UnaryOp::Log,
        Softplus => UnaryOp::Softplus,
        Step => UnaryOp::Step,
    }

    macro_rules! map2_ops {
        ($($name:ident => $op:expr),* $(,)?) => {$(
            struct $name;
            impl Map2 for $name {
                #[inline(always)]
                unsafe fn f<S: Simd>(x: S::F, y: S::F) -> S::F {
                    // SAFETY: module contract.
                    unsafe { math::binary::<S>($op, x, y) }
                }
            }
        )*};
    }
    map2_ops! {
        Add => BinaryOp::Add,
        Sub => BinaryOp::Sub,
        Mul => BinaryOp::Mul,
        Div => BinaryOp::Div,
        Min => BinaryOp::Min,
        Max => BinaryOp::Max,
    }

    /// `k` rows of `n` floats: a row `r` starts `r * stride` floats after
    /// `ptr`.
    #[derive(Clone, Copy)]
    struct Rows<P> {
        ptr: P,
        stride: usize,
    }

    impl<P: Copy> Rows<P> {
        fn new(ptr: P, stride: usize) -> Self {
            Rows { ptr, stride }
        }
    }

    /// `d[r][i] = M(a[r][i])` for `r < k`, `i < n`.
    #[inline(always)]
    unsafe fn map1<S: Simd, M: Map1>(k: usize, n: usize, a: Rows<*const f32>, d: Rows<*mut f32>) {
        // SAFETY: `a` and `d` hold `k` rows of `n` floats (module contract).
        unsafe {
            for r in 0..k {
                let (a, d) = (a.ptr.add(r * a.stride), d.ptr.add(r * d.stride));
                let mut i = 0;
                while i + S::LANES <= n {
                    S::store(d.add(i), M::f::<S>(S::load(a.add(i))));
                    i += S::LANES;
                }
                if i < n {
                    let t = S::tail(n - i);
                    S::store_tail(d.add(i), M::f::<S>(S::load_tail(a.add(i), t)), t);
                }
            }
        }
    }

    /// `d[r][i] = M(a[r][i], b[r][i])` for `r < k`, `i < n`.
    #[inline(always)]
    unsafe fn map2<S: Simd, M: Map2>(
        k: usize,
        n: usize,
        a: Rows<*const f32>,
        b: Rows<*const f32>,
        d: Rows<*mut f32>,
    ) {
        // SAFETY: `a`, `b` and `d` hold `k` rows of `n` floats (module contract).
        unsafe {
            for r in 0..k {
                let (a, b) = (a.ptr.add(r * a.stride), b.ptr.add(r * b.stride));
                let d = d.ptr.add(r * d.stride);
                let mut i = 0;
                while i + S::LANES <= n {
                    S::store(d.add(i), M::f::<S>(S::load(a.add(i)), S::load(b.add(i))));
                    i += S::LANES;
                }
                if i < n {
                    let t = S::tail(n - i);
                    let v = M::f::<S>(S::load_tail(a.add(i), t), S::load_tail(b.add(i), t));
                    S::store_tail(d.add(i), v, t);
                }
            }
        }
    }

    struct Identity;
    impl Map1 for Identity {
        #[inline(always)]
        unsafe fn f<S: Simd>(x: S::F) -> S::F {
            x
        }
    }

    /// `n` floats from `d` set to `v` (`n` a multiple of `S::LANES`).
    #[inline(always)]
    unsafe fn fill<S: Simd>(d: *mut f32, n: usize, v: f32) {
        // SAFETY: `d` holds `n` floats.
        unsafe {
            let v = S::splat(v);
            let mut i = 0;
            while i < n {
                S::store(d.add(i), v);
                i += S::LANES;
            }
        }
    }

    /// One instruction over `k` rows of `n` lanes.
    #[inline(always)]
    unsafe fn inst<S: Simd>(
        k: usize,
        n: usize,
        inst: &Inst,
        a: Rows<*const f32>,
        b: Rows<*const f32>,
        d: Rows<*mut f32>,
    ) {
        use BinaryOp as B;
        use UnaryOp as U;
        // SAFETY: module contract, for each arm.
        unsafe {
            match inst.kind {
                Kind::Unary(U::Neg) => map1::<S, Neg>(k, n, a, d),
                Kind::Unary(U::Sigmoid) => map1::<S, Sigmoid>(k, n, a, d),
                Kind::Unary(U::Tanh) => map1::<S, Tanh>(k, n, a, d),
                Kind::Unary(U::Relu) => map1::<S, Relu>(k, n, a, d),
                Kind::Unary(U::Exp) => map1::<S, Exp>(k, n, a, d),
                Kind::Unary(U::Abs) => map1::<S, Abs>(k, n, a, d),
                Kind::Unary(U::Sqrt) => map1::<S, Sqrt>(k, n, a, d),
                Kind::Unary(U::Log) => map1::<S, Log>(k, n, a, d),
                Kind::Unary(U::Softplus) => map1::<S, Softplus>(k, n, a, d),
                Kind::Unary(U::Step) => map1::<S, Step>(k, n, a, d),
                Kind::Binary(B::Add) => map2::<S, Add>(k, n, a, b, d),
                Kind::Binary(B::Sub) => map2::<S, Sub>(k, n, a, b, d),
                Kind::Binary(B::Mul) => map2::<S, Mul>(k, n, a, b, d),
                Kind::Binary(B::Div) => map2::<S, Div>(k, n, a, b, d),
                Kind::Binary(B::Min) => map2::<S, Min>(k, n, a, b, d),
                Kind::Binary(B::Max) => map2::<S, Max>(k, n, a, b, d),
            }
        }
    }

    /// Scratch lanes per register row: whole vectors of the widest kernel.
    fn row_lanes(n: usize) -> usize {
        n.div_ceil(16) * 16
    }

    #[inline(always)]
    pub(super) unsafe fn run<S: Simd>(
        p: &Program,
        slots: *const *mut f32,
        scratch: *mut f32,
        b0: usize,
        b1: usize,
        t0: usize,
        t1: usize,
    ) {
        // SAFETY: module contract: every location is inside its slot's
        // buffer for rows below `b1` and lanes below `LANES * p.tiles`; a block's
        // `k` register rows of `row_lanes(m)` floats stay inside `BLOCK`.
        unsafe {
            let reg = |r: u32| scratch.add(r as usize * BLOCK);
            let at =
                |l: &Loc, row: usize| (*slots.add(l.slot)).wrapping_add(l.offset + row * l.stride);
            for &(r, f) in &p.fills {
                if let Fill::Const(c) = f {
                    fill::<S>(reg(r), BLOCK, c);
                }
            }
            let (l0, l1) = (t0 * super::TILE_LANES, t1 * super::TILE_LANES);
            // A block: `k` batch rows of `m` lanes (several rows when a
            // row's share is short, so that each pass has work).
            let width = (l1 - l0).min(BLOCK);
            let rows = (BLOCK / row_lanes(width)).max(1);
            let mut row = b0;
            while row < b1 {
                let k = rows.min(b1 - row);
                let mut lane = l0;
                while lane < l1 {
                    let m = (l1 - lane).min(BLOCK);
                    let rs = row_lanes(m);
                    for &(r, f) in &p.fills {
                        if let Fill::Row(l) = f {
                            for i in 0..k {
                                fill::<S>(reg(r).add(i * rs), rs, *at(&l, row + i));
                            }
                        }
                    }
                    let src = |s: Src| match s {
                        Src::Reg(r) => Rows::new(reg(r).cast_const(), rs),
                        Src::Arg(a) => {
                            let l = &p.args[a as usize];
                            Rows::new(at(l, row).add(lane).cast_const(), l.stride)
                        }
                    };
                    for ins in &p.insts {
                        let d = Rows::new(reg(ins.dst), rs);
                        inst::<S>(k, m, ins, src(ins.a), src(ins.b), d);
                    }
                    for (s, l) in &p.yields {
                        let d = Rows::new(at(l, row).add(lane), l.stride);
                        map1::<S, Identity>(k, m, src(*s), d);
                    }
                    lane += m;
                }
                row += k;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Program;
    use crate::kernels::simd::{Avx2, Avx512};

    /// # Safety
    /// As `run::run`, with AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run_avx512(
        p: &Program,
        slots: *const *mut f32,
        scratch: *mut f32,
        b0: usize,
        b1: usize,
        t0: usize,
        t1: usize,
    ) {
        // SAFETY: as the caller guarantees; AVX-512F is enabled here.
        unsafe { super::run::run::<Avx512>(p, slots, scratch, b0, b1, t0, t1) }
    }

    /// # Safety
    /// As `run::run`, with AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run_avx2(
        p: &Program,
        slots: *const *mut f32,
        scratch: *mut f32,
        b0: usize,
        b1: usize,
        t0: usize,
        t1: usize,
    ) {
        // SAFETY: as the caller guarantees; AVX2 and FMA are enabled here.
        unsafe { super::run::run::<Avx2>(p, slots, scratch, b0, b1, t0, t1) }
    }
}
