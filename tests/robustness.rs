//! The front end never panics, whatever it reads: random bytes, token soups, and
//! inputs built to exhaust the stack or the clock.

mod common;

use proptest::prelude::*;

use cellc::Cell;

/// Parse, check, bind default sizes and lower, as `cellc compile` does. Every
/// outcome is fine except a panic; an error must carry at least one diagnostic.
fn compile(text: &str) -> Result<usize, String> {
    match Cell::from_source("fuzz.rnn", text).and_then(|c| c.ir()) {
        Ok(ir) => Ok(ir.insts.len()),
        Err(cellc::Error::Source { diagnostics, .. }) => {
            assert!(
                diagnostics.iter().any(|d| d.is_error()),
                "rejected without an error"
            );
            // Rendering must not panic either.
            Err(format!("{} diagnostics", diagnostics.len()))
        }
        Err(e) => Err(e.to_string()),
    }
}

const TOKENS: &[&str] = &[
    "cell",
    "dim",
    "input",
    "state",
    "output",
    "param",
    "x",
    "h",
    "c",
    "W",
    "U",
    "b",
    "H",
    "X",
    "=",
    "'",
    ":",
    ",",
    "[",
    "]",
    "(",
    ")",
    "@",
    "+",
    "-",
    "*",
    "/",
    "..",
    "|",
    "1",
    "0",
    "2.5",
    "1e3",
    "sigmoid",
    "tanh",
    "relu",
    "exp",
    "\n",
    " ",
    "//",
    "\"t\"",
    "weight_ih_l0",
    ".",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = compile(&text);
    }

    #[test]
    fn token_soup_never_panics(idx in proptest::collection::vec(0..TOKENS.len(), 0..120)) {
        let text: Vec<&str> = idx.iter().map(|&i| TOKENS[i]).collect();
        let _ = compile(&text.join(" "));
    }

    /// Valid cells with one token changed: near misses exercise the checker.
    #[test]
    fn mutated_examples_never_panic(which in 0usize..7, pos in 0usize..4000, tok in 0..TOKENS.len()) {
        let examples = ["lstm", "gru", "gru_reset_before", "lstmp", "rnn_tanh", "mgu", "cifg"];
        let path = common::example_path(examples[which]);
        let text = std::fs::read_to_string(path).unwrap();
        let mut at = pos % text.len();
        while !text.is_char_boundary(at) { at -= 1; }
        let mutated = format!("{}{}{}", &text[..at], TOKENS[tok], &text[at..]);
        let _ = compile(&mutated);
    }
}

#[test]
fn empty_and_blank_files_are_errors() {
    for text in ["", "\n\n", "// only a comment\n", "cell c"] {
        assert!(compile(text).is_err(), "{text:?}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [65usize, 10_000, 100_000] {
        let text = format!(
            "dim H = 2\nstate h: [H]\nh' = {}h{}\n",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        let err = compile(&text).unwrap_err();
        assert!(err.contains("1 diagnostics"), "{err}");
    }
    // Deep calls and brackets count too.
    let text = format!(
        "dim H = 2\nstate h: [H]\nh' = {}h{}\n",
        "tanh(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(compile(&text).is_err());
    // Nesting at the limit is fine.
    let text = format!(
        "dim H = 2\nstate h: [H]\nh' = {}h{}\n",
        "(".repeat(64),
        ")".repeat(64)
    );
    assert!(compile(&text).is_ok());
}

#[test]
fn long_flat_expressions_are_fine() {
    // 100,000 terms in one sum, 10,000 signs, a chain of 2,000 products.
    let text = format!(
        "dim H = 2\nstate h: [H]\nh' = h{}\n",
        " + h".repeat(100_000)
    );
    assert!(compile(&text).is_ok());
    let text = format!("dim H = 2\nstate h: [H]\nh' = {}h\n", "- ".repeat(10_000));
    assert!(compile(&text).is_ok());
    let text = format!(
        "dim H = 2\nstate h: [H]\nparam W: [H, H]\nh' = {}h\n",
        "W @ ".repeat(2_000)
    );
    assert_eq!(compile(&text), Ok(2_000 + 2));
}

#[test]
fn a_hundred_thousand_lines() {
    let mut text = String::from("dim H = 2\ninput x: [H]\nstate h: [H]\na0 = x\n");
    for i in 1..100_000 {
        text.push_str(&format!("a{i} = a{} * h\n", i - 1));
    }
    text.push_str("h' = a99999\n");
    assert!(compile(&text).is_ok());
    // The same, written backwards: sema orders it without deep recursion.
    let lines: Vec<&str> = text.lines().collect();
    let mut rev: Vec<&str> = lines[..3].to_vec();
    rev.extend(lines[3..].iter().rev());
    assert!(compile(&rev.join("\n")).is_ok());
    // And with an error on every line: reported, not a crash.
    let bad: String = (0..100_000).map(|i| format!("a{i} = b{i} +\n")).collect();
    assert!(compile(&bad).is_err());
}

#[test]
fn ten_thousand_gates() {
    let mut text = String::from("dim H = 3\ninput x: [H]\nstate h: [H]\n");
    for i in 0..10_000 {
        text.push_str(&format!("param W{i}: [H, H]\ng{i} = sigmoid(W{i} @ x)\n"));
    }
    let sum: Vec<String> = (0..10_000).map(|i| format!("g{i}")).collect();
    text.push_str(&format!("h' = {}\n", sum.join(" + ")));
    assert!(compile(&text).is_ok());
}

#[test]
fn oversized_input_is_refused() {
    let text = "x".repeat(cellc::MAX_SOURCE_BYTES + 1);
    assert!(compile(&text).is_err());
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    let text =
        "dim H = 1099511627776\ninput x: [H]\nstate h: [H]\nparam W: [H, H]\nh' = W @ h + x\n";
    assert!(compile(text).is_err());
    let text = "dim H = 20000\ninput x: [H]\nstate h: [H]\nparam W: [H, H]\nparam U: [H, H]\nparam V: [H, H]\nparam Z: [H, H]\nparam Q: [H, H]\nparam R: [H, H]\nh' = W @ h + U @ h + V @ h + Z @ h + Q @ h + R @ h + x\n";
    assert!(
        compile(text).is_err(),
        "6 x 20000^2 floats = 9.6 GB must be refused"
    );
    let text = "dim H = 4\ndim X = 2\nstate h: [H - 2*X]\nh' = h\n";
    assert!(compile(text).is_err(), "a size that evaluates to zero");
    let text = "dim H = 99999999999999999999999\nstate h: [H]\nh' = h\n";
    assert!(compile(text).is_err());
}
