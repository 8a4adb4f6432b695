//! The AMX kernel of [`super`]: `tdpbusd` on tiles (stable Rust has no AMX
//! intrinsics: inline assembly), the sums finished on AVX-512 as the
//! AVX512-VNNI kernel finishes them (the same operations: the same bits).
//!
//! Eight tile registers: four of i32 sums (`tmm0..3`: 16 columns of `C` by
//! 16 rows each), two tiles of quantized columns (`tmm4`, `tmm5`: 16
//! columns by 64 bytes of `k`) and two of weights (`tmm6`, `tmm7`: 16 quads
//! of a unit, 64 of `k` by 16 rows: a unit's packed quads are exactly the
//! layout `tdpbusd` reads its second operand in). `tdpbusd tmm_c, tmm_a,
//! tmm_b` adds to `c[r][n]` the products of the 64 unsigned bytes of row
//! `r` of `a` (a column) with the signed bytes of column `n` of `b` (a
//! row of weights), four at a time: per step of 64 of `k`, 4 KiB loaded and
//! 64 K multiply-adds. The sums come out column by column (16 rows of a
//! column contiguous), as `C` is.

use std::arch::asm;
use std::arch::x86_64::*;

use super::x86::finish_512;
use super::{Block, AMX_DEPTH, UNIT};
use crate::kernels::bf16::amx::{configure_tiles, cpu_has, tile_state_granted};

/// Whether the CPU has AMX-INT8 and this process the tile state.
pub(super) fn available() -> bool {
    cpu_has(25) && tile_state_granted()
}

/// Four tiles of sums staged in memory: tile `t`'s column `c` at `[t][c]`.
#[repr(C, align(64))]
struct Stage([[[i32; UNIT]; UNIT]; 4]);

/// The block's rows in pairs of units by its columns in 32s: four tiles of
/// sums each, from zero, swept over `kp`, staged, then finished row by row
/// of 16 into `C` (masked at the block's edges).
///
/// # Safety
/// As `Product::run_block`, for the block's job; `kp` a multiple of 64 (the
/// weights packed for [`super::Dots::Amx`]); the columns' bytes held for a
/// whole number of 32 columns from `j0` ([`super::Columns::quantize`]);
/// the host has AMX-INT8 with the tile state granted ([`available`]) and
/// AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn block(b: &Block) {
    let steps = b.kp / AMX_DEPTH;
    // Written whole by the tile stores before any read.
    let mut stage = std::mem::MaybeUninit::<Stage>::uninit();
    // SAFETY: the host has AMX, as the caller guarantees.
    unsafe { configure_tiles() };
    for i in (b.i0..b.i1).step_by(2 * UNIT) {
        // The packed rows are padded to pairs of units.
        let (w0, w1) = (b.unit(i), b.unit(i + UNIT));
        for j in (b.j0..b.j1).step_by(2 * UNIT) {
            let x0 = b.x.wrapping_add((j - b.j0) * b.kp);
            let x1 = x0.wrapping_add(UNIT * b.kp);
            // SAFETY: `steps` steps of both column tiles (rows `kp` bytes
            // apart; the columns' bytes are held to a multiple of 32
            // columns, zero past the block's) and of both units (16 quads
            // of 64 bytes per step; the units hold `kp / 4` quads); the
            // stage holds four tiles of 16 rows of 64 bytes.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "2:",
                    "tileloadd tmm4, [{x0} + {xs}*1]",
                    "tileloadd tmm5, [{x1} + {xs}*1]",
                    "tileloadd tmm6, [{w0} + {ws}*1]",
                    "tileloadd tmm7, [{w1} + {ws}*1]",
                    "tdpbusd tmm0, tmm4, tmm6",
                    "tdpbusd tmm1, tmm4, tmm7",
                    "tdpbusd tmm2, tmm5, tmm6",
                    "tdpbusd tmm3, tmm5, tmm7",
                    "add {x0}, 64",
                    "add {x1}, 64",
                    "add {w0}, 1024",
                    "add {w1}, 1024",
                    "dec {n}",
                    "jnz 2b",
                    "tilestored [{s} + {ws}*1], tmm0",
                    "add {s}, 1024",
                    "tilestored [{s} + {ws}*1], tmm1",
                    "add {s}, 1024",
                    "tilestored [{s} + {ws}*1], tmm2",
                    "add {s}, 1024",
                    "tilestored [{s} + {ws}*1], tmm3",
                    x0 = inout(reg) x0 => _,
                    x1 = inout(reg) x1 => _,
                    w0 = inout(reg) w0 => _,
                    w1 = inout(reg) w1 => _,
                    n = inout(reg) steps => _,
                    s = inout(reg) stage.as_mut_ptr() => _,
                    xs = in(reg) b.kp,
                    ws = in(reg) 64usize,
                    options(nostack),
                )
            };
            // SAFETY: the four tile stores above wrote all of it.
            let staged = unsafe { stage.assume_init_ref() };
            for (t, tile) in staged.0.iter().enumerate() {
                // Tile `t`: rows from `i + 16 (t & 1)`, columns from `j + 16 (t >> 1)`.
                let (ti, tj) = (i + UNIT * (t & 1), j + UNIT * (t >> 1));
                if ti >= b.i1 {
                    continue;
                }
                let valid = (b.i1 - ti).min(UNIT);
                let mask: __mmask16 = if valid == UNIT {
                    u16::MAX
                } else {
                    (1u16 << valid) - 1
                };
                for (c, sums) in tile.iter().enumerate() {
                    let col = tj + c;
                    if col >= b.j1 {
                        break;
                    }
                    // SAFETY: the tile's rows `ti..ti + valid` of column
                    // `col` are the block's; the scales and sums hold the
                    // padded rows, 16 from `ti`.
                    unsafe {
                        finish_512(b, ti, col, mask, _mm512_loadu_si512(sums.as_ptr().cast()))
                    };
                }
            }
        }
    }
    // SAFETY: releases this thread's tiles (configured above).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}
