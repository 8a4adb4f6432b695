//! AMX tiles: the permission Linux asks for, the tile configuration, and the
//! kernel (stable Rust has no AMX intrinsics: inline assembly).
//!
//! Eight tile registers: four sums (`tmm0..3`, 16 columns of `C` by 16
//! rows each, float32), two tiles of `B`'s columns (`tmm4`, `tmm5`: 16
//! columns by 32 of `k` in bf16) and two of `A`'s units (`tmm6`, `tmm7`: 16
//! pairs of `k` by 16 rows). Per step of 32 of `k` they load 4 KiB and do
//! four `tdpbf16ps`, 32 K multiply-adds. `tdpbf16ps tmm_c, tmm_a, tmm_b`
//! adds to `c[r][n]` the products of row `r` of `a` (a column of `B`) with
//! the pairs of column `n` of `b` (a row of `A`): `C`'s tile is stored
//! column by column, as the product's `C` is.

use std::arch::asm;

use super::{Block, DEPTH, UNIT};
use crate::kernels::gemm::From;

/// Whether the CPU has AMX-TILE and AMX-BF16 and the kernel granted this
/// process the tile data state (asked once).
pub(super) fn available() -> bool {
    cpu_has(22) && tile_state_granted()
}

/// Whether the CPU has AMX-TILE and the AMX extension of CPUID leaf 7's EDX
/// bit `bit` (22: AMX-BF16, 25: AMX-INT8).
pub(crate) fn cpu_has(bit: u32) -> bool {
    // CPUID leaf 7, sub-leaf 0: EDX bit 24 is AMX-TILE.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64.
    let r = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    r.edx & (1 << bit) != 0 && r.edx & (1 << 24) != 0
}

/// Whether this process holds the AMX tile state (asked for once, for
/// every AMX kernel: bf16's and `kernels::int8`'s).
pub(crate) fn tile_state_granted() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GRANTED.get_or_init(|| (cpu_has(22) || cpu_has(25)) && request_tile_state())
}

/// Linux hands a process the AMX tile data (8 KiB of state per thread) only
/// when it asks: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`.
#[cfg(target_os = "linux")]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a system call with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Elsewhere the tile state is not requested: no AMX.
#[cfg(not(target_os = "linux"))]
fn request_tile_state() -> bool {
    false
}

/// The tile configuration: palette 1, eight tiles of 16 rows of 64 bytes.
#[repr(C, align(64))]
struct Config([u8; 64]);

const CONFIG: Config = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    Config(c)
};

/// Configures the tiles: eight of 16 rows of 64 bytes (both AMX paths'
/// tiles: bf16 pairs, int8 quads, f32 and i32 sums).
///
/// # Safety
/// The host has AMX and the tile state is granted ([`tile_state_granted`]).
pub(crate) unsafe fn configure_tiles() {
    // SAFETY: the configuration is 64 valid bytes; AMX as the caller
    // guarantees.
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
}

/// A tile of sums staged in memory, for the tiles at `C`'s edges.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Stage([[f32; UNIT]; UNIT]);

/// Loads sum tile `t` from `ptr`, rows `stride` bytes apart.
///
/// # Safety
/// 16 rows of 64 bytes there; the tiles configured.
unsafe fn load(t: usize, ptr: *const f32, stride: usize) {
    // SAFETY: as the caller guarantees.
    unsafe {
        match t {
            0 => {
                asm!("tileloadd tmm0, [{p} + {s}*1]", p = in(reg) ptr, s = in(reg) stride, options(nostack))
            }
            1 => {
                asm!("tileloadd tmm1, [{p} + {s}*1]", p = in(reg) ptr, s = in(reg) stride, options(nostack))
            }
            2 => {
                asm!("tileloadd tmm2, [{p} + {s}*1]", p = in(reg) ptr, s = in(reg) stride, options(nostack))
            }
            _ => {
                asm!("tileloadd tmm3, [{p} + {s}*1]", p = in(reg) ptr, s = in(reg) stride, options(nostack))
            }
        }
    }
}

/// Zeroes sum tile `t`.
///
/// # Safety
/// The tiles configured.
unsafe fn zero(t: usize) {
    // SAFETY: as the caller guarantees.
    unsafe {
        match t {
            0 => asm!("tilezero tmm0", options(nostack, nomem)),
            1 => asm!("tilezero tmm1", options(nostack, nomem)),
            2 => asm!("tilezero tmm2", options(nostack, nomem)),
            _ => asm!("tilezero tmm3", options(nostack, nomem)),
        }
    }
}

/// Stores sum tile `t` to `ptr`, rows `stride` bytes apart.
///
/// # Safety
/// 16 rows of 64 bytes writable there; the tiles configured.
unsafe fn store(t: usize, ptr: *mut f32, stride: usize) {
    // SAFETY: as the caller guarantees.
    unsafe {
        match t {
            0 => {
                asm!("tilestored [{p} + {s}*1], tmm0", p = in(reg) ptr, s = in(reg) stride, options(nostack))
            }
            1 => {
                asm!("tilestored [{p} + {s}*1], tmm1", p = in(reg) ptr, s = in(reg) stride, options(nostack))
            }
            2 => {
                asm!("tilestored [{p} + {s}*1], tmm2", p = in(reg) ptr, s = in(reg) stride, options(nostack))
            }
            _ => {
                asm!("tilestored [{p} + {s}*1], tmm3", p = in(reg) ptr, s = in(reg) stride, options(nostack))
            }
        }
    }
}

/// The block's rows in pairs of units by its columns in 32s: four tiles of
/// sums each, started from the product's start, swept over `k`, stored.
/// Tiles that reach past the job's rows or columns go through memory.
///
/// # Safety
/// As [`crate::kernels::gemm::Blocked::run_block`], for the block's job; the host has AMX
/// ([`available`]).
pub(super) unsafe fn block(b: &Block) {
    let p = b.product;
    let ldc = p.ldc * 4;
    let steps = b.kp / DEPTH;
    let mut stage = [Stage([[0.0; UNIT]; UNIT]); 4];
    // SAFETY: the host has AMX, as the caller guarantees.
    unsafe { configure_tiles() };
    for i in (b.i0..b.i1).step_by(2 * UNIT) {
        // The packed rows are padded to pairs of units.
        let (w0, w1) = (b.unit(i), b.unit(i + UNIT));
        for j in (b.j0..b.j1).step_by(2 * UNIT) {
            let x0 = b.x.wrapping_add((j - b.j0) * b.kp);
            let x1 = x0.wrapping_add(UNIT * b.kp);
            // Tile `t`: rows from `i + 16 (t & 1)`, columns from `j + 16 (t >> 1)`.
            let corner = |t: usize| (i + UNIT * (t & 1), j + UNIT * (t >> 1));
            let whole = |t: usize| {
                let (ti, tj) = corner(t);
                ti + UNIT <= b.i1 && tj + UNIT <= b.j1
            };
            for (t, st) in stage.iter_mut().enumerate() {
                let (ti, tj) = corner(t);
                // SAFETY: a whole tile's 16 x 16 elements (and bias rows)
                // are the job's; a staged one is ours.
                unsafe {
                    match (whole(t), p.from) {
                        (true, From::Zero) => zero(t),
                        (true, From::Dst) => load(t, b.c(ti, tj), ldc),
                        (true, From::Row(r)) => load(t, r.add(ti), 0),
                        (true, From::Matrix { ptr, ld }) => load(t, ptr.add(ti + tj * ld), ld * 4),
                        (false, _) => {
                            for (jj, row) in st.0.iter_mut().enumerate() {
                                for (ii, v) in row.iter_mut().enumerate() {
                                    let (ei, ej) = (ti + ii, tj + jj);
                                    *v = if ei < b.i1 && ej < b.j1 {
                                        b.start(ei, ej)
                                    } else {
                                        0.0
                                    };
                                }
                            }
                            load(t, st.0.as_ptr().cast(), 64);
                        }
                    }
                }
            }
            // SAFETY: `steps` steps of both column tiles (rows `kp` values
            // apart in the scratch, which holds 32 columns from `j`) and of
            // both units (16 pairs of 64 bytes per step).
            unsafe {
                asm!(
                    "2:",
                    "tileloadd tmm4, [{x0} + {xs}*1]",
                    "tileloadd tmm5, [{x1} + {xs}*1]",
                    "tileloadd tmm6, [{w0} + {ws}*1]",
                    "tileloadd tmm7, [{w1} + {ws}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    "add {x0}, 64",
                    "add {x1}, 64",
                    "add {w0}, 1024",
                    "add {w1}, 1024",
                    "dec {n}",
                    "jnz 2b",
                    x0 = inout(reg) x0 => _,
                    x1 = inout(reg) x1 => _,
                    w0 = inout(reg) w0 => _,
                    w1 = inout(reg) w1 => _,
                    n = inout(reg) steps => _,
                    xs = in(reg) b.kp * 2,
                    ws = in(reg) 64usize,
                    options(nostack, readonly),
                )
            };
            for (t, st) in stage.iter_mut().enumerate() {
                let (ti, tj) = corner(t);
                if whole(t) {
                    // SAFETY: the tile's elements are the job's.
                    unsafe { store(t, b.c(ti, tj), ldc) };
                    continue;
                }
                // SAFETY: the stage is ours.
                unsafe { store(t, st.0.as_mut_ptr().cast(), 64) };
                for (jj, row) in st.0.iter().enumerate() {
                    for (ii, &v) in row.iter().enumerate() {
                        let (ei, ej) = (ti + ii, tj + jj);
                        if ei < b.i1 && ej < b.j1 {
                            // SAFETY: an element of the job.
                            unsafe { *b.c(ei, ej) = v };
                        }
                    }
                }
            }
        }
    }
    // SAFETY: releases this thread's tiles (configured above).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}
