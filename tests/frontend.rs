//! Every example at every front-end stage: AST and IR snapshots, the IR's text
//! round trip, and the verifier.

mod common;

use cellc::ir;

fn load(path: &std::path::Path) -> cellc::Cell {
    cellc::Cell::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn examples_check_without_diagnostics() {
    let examples = common::examples();
    assert!(examples.len() >= 6);
    for path in examples {
        let cell = load(&path);
        assert!(
            cell.warnings().is_empty(),
            "{}: {:?}",
            path.display(),
            cell.warnings()
        );
    }
}

#[test]
fn ast_snapshots() {
    for path in common::examples() {
        let cell = load(&path);
        let text = cell.ast_text();
        insta::assert_snapshot!(format!("ast_{}", common::stem(&path)), text);
    }
}

#[test]
fn ir_snapshots() {
    for path in common::examples() {
        let cell = load(&path);
        let text = ir::print::print(&cell.ir().unwrap());
        insta::assert_snapshot!(format!("ir_{}", common::stem(&path)), text);
    }
}

/// print -> parse -> print is the identity, and the parsed IR verifies.
#[test]
fn ir_text_round_trips() {
    for path in common::examples() {
        for dims in [&[][..], &[("H", 3), ("X", 2)][..]] {
            let mut cell = load(&path);
            let names: Vec<String> = cell.dim_names();
            let dims: Vec<(&str, u64)> = dims
                .iter()
                .copied()
                .filter(|(n, _)| names.iter().any(|m| m == n))
                .collect();
            cell = cell.dims(&dims).unwrap();
            let original = cell.ir().unwrap();
            let text = ir::print::print(&original);
            let parsed = ir::parse::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
            ir::verify::verify(&parsed).unwrap();
            assert_eq!(ir::print::print(&parsed), text, "{}", path.display());
            // The parsed cell is the same graph, not only the same text.
            assert_eq!(parsed.insts, original.insts);
            assert_eq!(parsed.params, original.params);
        }
    }
}

#[test]
fn lstm_counts() {
    let ir = load(
        &common::examples()
            .into_iter()
            .find(|p| common::stem(p) == "lstm")
            .unwrap(),
    )
    .ir()
    .unwrap();
    assert_eq!(ir.product_count(), 8);
    assert_eq!(ir.params.len(), 16);
    assert_eq!(ir.states.len(), 2);
    // The weights of gate `g` are rows 2H..3H of PyTorch's weight_ih_l0.
    let w_ig = ir.params.iter().find(|p| p.name == "W_ig").unwrap();
    assert_eq!(w_ig.ty, ir::Type::Matrix(128, 64));
    assert_eq!(
        w_ig.binding[0],
        ir::Binding {
            tensor: "weight_ih_l0".into(),
            indices: vec![ir::BindIndex::Range(Some(256), Some(384))],
        }
    );
}

/// The verifier rejects what it must (hand-written IR).
#[test]
fn verifier_rejects_bad_ir() {
    let ok = "cell t\ninput x: [2]\nstate h: [2]\nparam W: [2, 2]\n\nv0: [2] = input x\nv1: [2] = state h\nv2: [2, 2] = param W\nv3: [2] = matvec v2, v1\nv4: [2] = add v3, v0\nupdate h = v4\n";
    ir::verify::verify(&ir::parse::parse(ok).unwrap()).unwrap();
    let bad_cases = [
        // matvec of a [2, 2] matrix with a [3] vector
        (
            "v3: [2] = matvec v2, v1",
            "v3: [2] = matvec v2, v5",
            "used before",
        ),
        // wrong result type
        (
            "v4: [2] = add v3, v0",
            "v4: [3] = add v3, v0",
            "result types",
        ),
        // weight that is not a parameter
        (
            "v3: [2] = matvec v2, v1",
            "v3: [2] = matvec v1, v1",
            "not a parameter",
        ),
    ];
    for (from, to, expect) in bad_cases {
        let text = ok.replace(from, to);
        let err = match ir::parse::parse(&text) {
            Err(e) => e.to_string(),
            Ok(c) => ir::verify::verify(&c).unwrap_err().to_string(),
        };
        assert!(err.contains(expect), "{to}: got {err}");
    }
}

/// One table of functions (`cellc::functions::FUNCTIONS`): the checker
/// accepts exactly its names with their arities; each IR operation of the table
/// lowers to itself (no fallback), and the rest to IR operations only.
#[test]
fn every_function_lowers_to_itself() {
    use cellc::functions::{Function, FUNCTIONS};
    use cellc::ir::{Op, UnaryOp};
    for f in FUNCTIONS {
        let args: Vec<&str> = (0..f.params.len())
            .map(|k| if k == 0 { "W @ h + x" } else { "x" })
            .collect();
        let text = format!(
            "dim H = 3\ninput x: [H]\nstate h: [H]\nparam W: [H, H]\nh' = {}({}) + h\n",
            f.name,
            args.join(", ")
        );
        let ir = cellc::Cell::from_source("f.rnn", &text)
            .unwrap_or_else(|e| panic!("{}: {e}", f.name))
            .ir()
            .unwrap();
        if let Function::Unary(op) = f.function {
            let ops: Vec<UnaryOp> = ir
                .insts
                .iter()
                .filter_map(|i| match i.op {
                    Op::Unary(u, _) => Some(u),
                    _ => None,
                })
                .collect();
            assert_eq!(ops, vec![op], "{}", f.name);
        }
        // One argument too many is an arity error that shows the signature.
        let text = format!(
            "dim H = 3\ninput x: [H]\nstate h: [H]\nh' = {}({}, x)\n",
            f.name,
            vec!["x"; f.params.len()].join(", ")
        );
        let err = cellc::Cell::from_source("f.rnn", &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("E0061") && err.contains(&f.signature()),
            "{}: {err}",
            f.name
        );
    }
    for name in ["neg", "softmax", "Tanh"] {
        let text = format!("dim H = 3\ninput x: [H]\nstate h: [H]\nh' = {name}(x)\n");
        let err = cellc::Cell::from_source("f.rnn", &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("E0060"), "{name}: {err}");
    }
}

/// Over a few hundred seeds the generator makes every kind of cell the
/// differential tests rely on, and every one checks.
#[test]
fn random_cells_cover_the_unusual_outputs_and_updates() {
    let (mut input_out, mut old_out, mut param_out, mut kept) = (0, 0, 0, 0);
    for seed in 0..400 {
        let text = cellc::gen::random_cell(seed);
        cellc::Cell::from_source("gen.rnn", &text)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        for line in text.lines() {
            let Some((lhs, rhs)) = line.split_once(" = ") else {
                continue;
            };
            let rhs = rhs.trim();
            if lhs.starts_with('z') && rhs.starts_with('x') {
                input_out += 1;
            }
            if lhs.starts_with('z') && rhs.starts_with('s') && !rhs.ends_with('\'') {
                old_out += 1;
            }
            if lhs.starts_with('z') && rhs.starts_with('p') {
                param_out += 1;
            }
            if lhs.starts_with('s') && lhs.ends_with('\'') && rhs.starts_with('s') {
                kept += 1;
            }
        }
    }
    for (what, n) in [
        ("an input output", input_out),
        ("an old-state output", old_out),
        ("a parameter output", param_out),
        ("a state keeping an old value", kept),
    ] {
        assert!(n >= 10, "{what}: {n} in 400 cells");
    }
}
