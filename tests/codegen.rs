//! Snapshots of the generated code of every example at small sizes: the
//! Cranelift IR and the x86-64 machine code (AVX2 + FMA, spelled out rather than
//! detected, so that the text is the same on any host), plus checks on the
//! assembly that matter for speed: `fma` is one `vfmadd` instruction, no call
//! into libm anywhere, and the inner loops keep their accumulators in registers.

mod common;

use cellc::{codegen, Cell, Options};

fn text(path: &std::path::Path, triple: &str) -> Vec<(String, String, String)> {
    let cell = Cell::from_file(path).unwrap();
    let dims: Vec<(&str, u64)> = [("X", 3), ("H", 5), ("P", 2)]
        .into_iter()
        .filter(|(n, _)| cell.checked().dim_names().iter().any(|d| d == n))
        .collect();
    let cell = cell.dims(&dims).unwrap();
    let (_, plan) = cell.streaming_plan(&Options::default()).unwrap();
    let isa = codegen::target_isa(triple, false).unwrap();
    codegen::compile_text(&plan, &*isa).unwrap()
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
            for line in asm.lines() {
                let l = line.trim_start();
                assert!(
                    !l.starts_with("call") && !l.starts_with("bl "),
                    "{}: {triple}: {l}",
                    path.display()
                );
            }
        }
    }
}

/// The inner `k` loop of the LSTM's fused product at batch 1 touches the stack
/// nowhere: its accumulators stay in registers.
#[test]
fn lstm_inner_loop_does_not_spill() {
    let path = common::examples()
        .into_iter()
        .find(|p| common::stem(p) == "lstm")
        .unwrap();
    let cell = Cell::from_file(&path)
        .unwrap()
        .dims(&[("X", 64), ("H", 64)])
        .unwrap();
    let (_, plan) = cell.streaming_plan(&Options::default()).unwrap();
    let isa = codegen::target_isa("x86_64-unknown-linux-gnu", false).unwrap();
    let funcs = codegen::compile_text(&plan, &*isa).unwrap();
    let asm = &funcs[0].2;
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

/// Every plan of every example and of random cells verifies (`plan` runs the
/// verifier and fails on a plan that does not), and the verifier catches a
/// location past its slot's rows, a packed range past the weights, a stride
/// that is not its slot's, and a slot that does not exist.
#[test]
fn plans_verify_and_the_verifier_catches_bad_locations() {
    use cellc::codegen::plan::{self, verify::verify, Task};
    use cellc::Variant;
    let mut cells: Vec<Cell> = Vec::new();
    for path in common::examples() {
        let cell = Cell::from_file(&path).unwrap();
        let dims: Vec<(&str, u64)> = [("X", 5), ("H", 17), ("P", 6)]
            .into_iter()
            .filter(|(n, _)| cell.checked().dim_names().iter().any(|d| d == n))
            .collect();
        cells.push(cell.dims(&dims).unwrap());
    }
    for seed in 0..40 {
        let text = cellc::gen::random_cell(seed);
        let cell = Cell::from_source("random.rnn", &text).unwrap();
        cells.push(cell.dims(&[("X", 7), ("H", 9)]).unwrap());
    }
    for cell in &cells {
        for optimize in [true, false] {
            let opts = Options {
                optimize,
                ..Options::default()
            };
            let ir = cell.kernel_ir(&opts).unwrap();
            for v in Variant::ALL {
                let p = plan::plan(&ir, v, optimize)
                    .unwrap_or_else(|e| panic!("{} {v:?}: {e}", cell.name()));
                verify(&p, &ir).unwrap();
            }
        }
    }
    let lstm = Cell::from_file(common::example_path("lstm"))
        .unwrap()
        .dims(&[("X", 5), ("H", 17)])
        .unwrap();
    let ir = lstm.kernel_ir(&Options::default()).unwrap();
    let good = plan::plan(&ir, Variant::Streaming, true).unwrap();
    let mut bad = Vec::new();
    let mut p = good.clone();
    p.outputs[0].offset += 4;
    bad.push(("an output past its slot's rows", p));
    let mut p = good.clone();
    p.outputs[0].stride += 4;
    bad.push(("a stride that is not its slot's", p));
    let mut p = good.clone();
    p.outputs[0].slot = p.slots.len();
    bad.push(("a slot that does not exist", p));
    let mut p = good.clone();
    if let Task::Product(groups) = &mut p.tasks[0] {
        groups[0].weights_offset = p.weights_len;
    }
    bad.push(("panels past the packed weights", p));
    let mut p = good.clone();
    p.consts[0].1 = p.weights_len - 1;
    bad.push(("a constant past the packed weights", p));
    for (what, p) in bad {
        assert!(verify(&p, &ir).is_err(), "not caught: {what}");
    }
}
