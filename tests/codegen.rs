//! Snapshots of the generated code of every example at small sizes: the
//! Cranelift IR and the x86-64 machine code (AVX2 + FMA, spelled out rather than
//! detected, so that the text is the same on any host), plus checks on the
//! assembly that matter for speed: `fma` is one `vfmadd` instruction, no call
//! into libm anywhere, and the inner loops keep their accumulators in registers.

mod common;

use cellc::{Cell, Options};

fn text(path: &std::path::Path, triple: &str) -> Vec<(String, String, String)> {
    let cell = Cell::from_file(path).unwrap();
    let dims: Vec<(&str, u64)> = [("X", 3), ("H", 5), ("P", 2)]
        .into_iter()
        .filter(|(n, _)| cell.dim_names().iter().any(|d| d == n))
        .collect();
    let cell = cell.dims(&dims).unwrap();
    cell.generated_code(&Options::default(), Some(triple))
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.clif, f.asm))
        .collect()
}

fn joined(
    funcs: &[(String, String, String)],
    pick: fn(&(String, String, String)) -> &str,
) -> String {
    funcs
        .iter()
        .map(|f| format!("; ==== {} ====\n{}", f.0, pick(f)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The LSTM example at these sizes.
fn lstm(x: u64, h: u64) -> Cell {
    common::cell_with("lstm", &[("X", x), ("H", h)])
}

/// Fails on any call instruction (x86-64 `call`, aarch64 `bl`) in `asm`.
fn assert_no_calls(asm: &str, what: &str) {
    for line in asm.lines() {
        let l = line.trim_start();
        assert!(
            !l.starts_with("call") && !l.starts_with("bl "),
            "{what}: {l}"
        );
    }
}

#[test]
fn clif_and_asm_snapshots() {
    for path in common::examples() {
        let stem = common::stem(&path);
        let funcs = text(&path, "x86_64-unknown-linux-gnu");
        insta::assert_snapshot!(format!("clif_{stem}"), joined(&funcs, |f| &f.1));
        insta::assert_snapshot!(format!("asm_x86_64_{stem}"), joined(&funcs, |f| &f.2));
    }
}

#[test]
fn fma_is_one_instruction_and_nothing_calls_out() {
    for path in common::examples() {
        for (triple, fma) in [
            ("x86_64-unknown-linux-gnu", "vfmadd"),
            ("aarch64-unknown-linux-gnu", "fmla"),
        ] {
            let funcs = text(&path, triple);
            let asm = joined(&funcs, |f| &f.2);
            assert!(
                asm.contains(fma),
                "{}: no {fma} for {triple}",
                path.display()
            );
            // No calls at all: no libm, no `fmaf`, no per-lane helpers.
            assert_no_calls(&asm, &format!("{}: {triple}", path.display()));
        }
    }
}

/// The inner `k` loop of the LSTM's fused product at batch 1 touches the stack
/// nowhere: its accumulators stay in registers.
#[test]
fn lstm_inner_loop_does_not_spill() {
    let cell = lstm(64, 64);
    let funcs = cell
        .generated_code(&Options::default(), Some("x86_64-unknown-linux-gnu"))
        .unwrap();
    let asm = &funcs[0].asm;
    // A loop runs from its exit test (`jge`) to its back edge (`jmp`); the k
    // loops are those full of fmas.
    let mut loops = Vec::new();
    let mut window: Option<Vec<&str>> = None;
    for line in asm.lines() {
        let l = line.trim_start();
        if l.starts_with("jge") {
            window = Some(Vec::new());
        } else if l.starts_with("jmp") {
            if let Some(w) = window.take() {
                if w.iter().filter(|l| l.contains("vfmadd")).count() >= 8 {
                    loops.push(w);
                }
            }
        } else if let Some(w) = window.as_mut() {
            w.push(l);
        }
    }
    assert!(loops.len() >= 2, "no k loops found:\n{asm}");
    for body in loops {
        let spills: Vec<&&str> = body
            .iter()
            .filter(|l| l.contains("rsp") || l.contains("rbp"))
            .collect();
        assert!(
            spills.is_empty(),
            "the k loop touches the stack: {spills:?}"
        );
    }
}

/// The micro-kernels read narrow weights on both targets, widened in
/// registers as `lower/product.rs` says: bf16 by a shift by 16 (x86 `vpslld $0x10`,
/// aarch64 `shl ... #0x10`); int8 by a sign-extending load and a conversion
/// (x86 `vpmovsxbw` and `vcvtdq2ps`, aarch64 `sshll` and `scvtf`). The
/// same cell in f32 is the baseline: its activations use shifts too, so each
/// instruction must appear more often with narrow weights than without. No
/// calls. (The code runs on the host in tests/precision.rs; aarch64's is only
/// compiled here: the objects that run under qemu take float32 weights.)
#[test]
fn narrow_weights_widen_in_registers_on_both_targets() {
    use cellc::ir::Precision;
    let cell = lstm(33, 17);
    let asm = |triple: &str, precision: Option<Precision>| -> String {
        let opts = Options {
            precision,
            ..Options::default()
        };
        let funcs = cell.generated_code(&opts, Some(triple)).unwrap();
        let asm: String = funcs.iter().map(|f| f.asm.as_str()).collect();
        assert_no_calls(&asm, &format!("{triple} {precision:?}"));
        asm
    };
    for (triple, bf16, int8) in [
        (
            "x86_64-unknown-linux-gnu",
            ["vpslld $0x10"],
            ["vpmovsxbw", "vcvtdq2ps"],
        ),
        ("aarch64-unknown-linux-gnu", ["#0x10"], ["sshll", "scvtf"]),
    ] {
        let f32 = asm(triple, None);
        for (precision, want) in [(Precision::Bf16, &bf16[..]), (Precision::Int8, &int8[..])] {
            let narrow = asm(triple, Some(precision));
            for w in want {
                let (n, base) = (narrow.matches(w).count(), f32.matches(w).count());
                assert!(
                    n > base,
                    "{triple} {precision}: {w} {n} times, {base} in f32"
                );
            }
        }
    }
}
