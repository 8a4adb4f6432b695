//! Ahead-of-time objects: the object's architecture and symbols for the host and
//! for aarch64, and a C program linked against the host object (built with `cc`)
//! that prints the same numbers as the JIT.

// Tests and programs print what they measure.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSymbol};

use cellc::{Cell, Options, Weights};

fn lstm() -> Cell {
    common::cell("lstm").dims(&[("X", 8), ("H", 16)]).unwrap()
}

/// A cell named `lstm` (so that `examples/c/lstm_main.c` runs it) that calls
/// every function of the language, reductions and a scalar parameter
/// included.
const FUNCTIONS_CELL: &str = "cell lstm
dim X = 8, H = 16
input x: [X]
state h: [H], c: [H]
output y: [H]
param W: [H, X]
param U: [H, H]
param g: [H]
param t: []
a = W @ x + U @ h
n = layernorm(a, g, g * 0.5, 1e-5)
c' = softplus(n) * 0.5 - log(1 + abs(c)) + sqrt(abs(a)) * 0.1 + clip(c, -1, 1) * t + exp(-abs(c)) * 0.1 + relu(n) * sigmoid(a) * 0.1
h' = hard_sigmoid(n) * tanh(c') + softsign(a) * 0.1 + leaky_relu(a, 0.1) * 0.05 + elu(c) * 0.01 + relu6(a) * 0.01 + hard_tanh(h) * min(a, max(h, 0.5)) * 0.1 + sum(x) * 0.01 + rsqrt(1 + mean(a * a)) * 0.1
y = h'
";

/// The cells the C program runs: the LSTM, and the one of every function.
fn cells() -> Vec<(&'static str, Cell)> {
    let functions = Cell::from_source("functions.rnn", FUNCTIONS_CELL).unwrap();
    vec![("lstm", lstm()), ("functions", functions)]
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cellc-aot-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn exported(bytes: &[u8]) -> (object::Architecture, Vec<String>) {
    let file = object::File::parse(bytes).unwrap();
    let names = file
        .symbols()
        .filter(|s| s.is_global() && s.is_definition())
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect();
    (file.architecture(), names)
}

#[test]
fn objects_for_the_host_and_for_aarch64() {
    for (triple, arch) in [
        (
            Some("aarch64-unknown-linux-gnu"),
            object::Architecture::Aarch64,
        ),
        (
            Some("x86_64-unknown-linux-gnu"),
            object::Architecture::X86_64,
        ),
    ] {
        let aot = lstm().compile_object(&Options::default(), triple).unwrap();
        let (a, names) = exported(&aot.object);
        assert_eq!(a, arch, "{triple:?}");
        assert!(
            names.contains(&"lstm_step".to_string()) && names.contains(&"lstm_run".to_string()),
            "{names:?}"
        );
        // Only the entry points and the fingerprint are exported.
        assert!(names.contains(&"lstm_abi".to_string()), "{names:?}");
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(aot.header.contains("void lstm_step(const float *weights, float *workspace, int64_t batch, const float *in_x, float *out_y);"));
    }
    assert!(lstm()
        .compile_object(&Options::default(), Some("not-a-triple"))
        .is_err());
}

/// Builds `examples/c/lstm_main.c` against `obj` (its `cell.h` in `dir`) with
/// the C compiler `cc`, warnings as errors; returns the executable.
fn build_c_program(cc: &str, dir: &Path, obj: &Path) -> std::path::PathBuf {
    build_c_program_with(cc, dir, obj, 5)
}

fn build_c_program_with(cc: &str, dir: &Path, obj: &Path, steps: usize) -> std::path::PathBuf {
    let exe = dir.join("lstm");
    let out = Command::new(cc)
        .args(["-O2", "-Wall", "-Werror"])
        .arg(format!("-DSTEPS={steps}"))
        .arg(format!("-I{}", dir.display()))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/lstm_main.c"))
        .arg(obj)
        .arg("-lm")
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("a C compiler (`{cc}`): {e}"));
    assert!(
        out.status.success(),
        "{cc}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Both plans an object can run (the streaming one, and the hoisted one,
/// whose `run` projects 32 steps of inputs at once: 70 steps are a first
/// step alone, then two whole chunks and a part of one), against the JIT.
#[test]
fn c_program_matches_the_jit() {
    for (name, cell) in cells() {
        for (plan, steps) in [("streaming", 5), ("hoisted", 5), ("hoisted", 70)] {
            c_program_matches_the_jit_for(name, &cell, plan, steps, (8, 16));
        }
    }
    // Sizes that are not whole vectors, and blocks of more rows than one
    // unit of the projection's matrices (64): 4 gates of 70 rows, X = 7.
    for plan in ["streaming", "hoisted"] {
        c_program_matches_the_jit_for("lstm", &lstm(), plan, 70, (7, 70));
    }
}

fn c_program_matches_the_jit_for(
    name: &str,
    cell: &Cell,
    plan: &str,
    steps: usize,
    (x, h): (usize, usize),
) {
    let cell = &cell
        .clone()
        .dims(&[("X", x as u64), ("H", h as u64)])
        .unwrap();
    let dir = tmp(&format!("c-{name}-{plan}-{steps}-{x}-{h}"));
    let obj = dir.join("cell.o");
    let source = dir.join(format!("{name}.rnn"));
    std::fs::write(&source, cell.source().text.as_bytes()).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_cellc"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("compile")
        .arg(&source)
        .args(["--dims", &format!("X={x},H={h}"), "--plan", plan, "-o"])
        .arg(&obj)
        .status()
        .unwrap();
    assert!(status.success(), "{name}");
    let header = std::fs::read_to_string(dir.join("cell.h")).unwrap();
    assert!(
        header.contains(&format!("/* Plan: {plan} ")),
        "{name}: {header}"
    );
    let exe = build_c_program_with("cc", &dir, &obj, steps);
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success(), "{name}");
    let printed: Vec<f32> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();

    // The same weights and inputs through the JIT.
    let ir = cell.ir().unwrap();
    let mut w = Weights::new();
    for (k, p) in ir.params.iter().enumerate() {
        let (shape, n) = match p.ty {
            cellc::ir::Type::Matrix(r, c) => (vec![r, c], r * c),
            cellc::ir::Type::Vector(n) => (vec![n], n),
            cellc::ir::Type::Scalar => (vec![1], 1),
        };
        let data = (0..n)
            .map(|i| ((i * 37 + k * 11) % 101) as f32 - 50.0)
            .map(|v| v / 250.0)
            .collect();
        w.insert(&p.name, &shape, data).unwrap();
    }
    let kernel = cell.compile(&w, &Options::default()).unwrap();
    let batch = 3;
    let xs: Vec<f32> = (0..steps)
        .flat_map(|t| {
            (0..batch)
                .flat_map(move |b| (0..x).map(move |i| ((t * 7 + b * 3 + i) % 13) as f32 - 6.0))
        })
        .map(|v| v / 6.0)
        .collect();
    let mut ys = vec![0.0f32; steps * batch * h];
    let mut state = kernel.new_state(batch).unwrap();
    kernel.run(&xs, &mut state, &mut ys).unwrap();
    let mut want = ys;
    want.extend(state.get("c").unwrap());
    assert_eq!(printed.len(), want.len());
    for (i, (a, b)) in printed.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6,
            "{name} ({plan}, {steps} steps): value {i}: C {a}, JIT {b}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The aarch64 object, cross-linked with the C program and run under qemu-user,
/// prints the same numbers as the host object. Needs `aarch64-linux-gnu-gcc` and
/// `qemu-aarch64` (Debian: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross,
/// qemu-user; `.ci/run` installs them and sets CELLC_REQUIRE_QEMU=1, which makes
/// their absence a failure rather than a skip).
///
/// Without the tools the build (`build.rs`) leaves `cfg(cellc_qemu)` unset
/// and `cargo test` lists this test as ignored, with the reason; with
/// `CELLC_REQUIRE_QEMU` set it always runs, so missing tools fail it.
#[test]
#[cfg_attr(
    not(cellc_qemu),
    ignore = "no aarch64-linux-gnu-gcc or qemu-aarch64 on this machine"
)]
fn aarch64_object_runs_under_qemu() {
    for (name, cell) in cells() {
        for plan in [cellc::Variant::Streaming, cellc::Variant::Hoisted] {
            aarch64_agrees(name, &cell, plan);
        }
    }
}

fn aarch64_agrees(name: &str, cell: &Cell, plan: cellc::Variant) {
    let dir = tmp(&format!("arm-{name}-{}", plan.name()));
    let opts = Options {
        plan: Some(plan),
        ..Options::default()
    };
    let mut outputs = Vec::new();
    for (triple, cc, runner) in [
        ("x86_64-unknown-linux-gnu", "cc", None),
        (
            "aarch64-unknown-linux-gnu",
            "aarch64-linux-gnu-gcc",
            Some("qemu-aarch64"),
        ),
    ] {
        let sub = dir.join(triple);
        std::fs::create_dir_all(&sub).unwrap();
        let obj = sub.join("cell.o");
        let aot = cell.compile_object(&opts, Some(triple)).unwrap();
        std::fs::write(&obj, &aot.object).unwrap();
        std::fs::write(sub.join("cell.h"), &aot.header).unwrap();
        let exe = build_c_program_with(cc, &sub, &obj, 70);
        let run = match runner {
            Some(r) => Command::new(r)
                .args(["-L", "/usr/aarch64-linux-gnu"])
                .arg(&exe)
                .output()
                .unwrap(),
            None => Command::new(&exe).output().unwrap(),
        };
        assert!(
            run.status.success(),
            "{triple}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        outputs.push(String::from_utf8_lossy(&run.stdout).into_owned());
    }
    assert!(!outputs[0].is_empty());
    assert_eq!(
        outputs[0],
        outputs[1],
        "{name} ({}): aarch64 and x86-64 disagree",
        plan.name()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Names that would clash in C: inputs `x` and `X` (one macro for both), a
/// size named like one of the header's own macros: refused, naming both. Names
/// that are C keywords or the entry points' own parameters (`int`, `batch`,
/// `weights`) are prefixed in the prototypes, and the header compiles.
#[test]
fn header_names_do_not_clash() {
    let clash = Cell::from_source(
        "clash.rnn",
        "dim H = 4\ninput x: [H], X: [H]\nstate h: [H]\nh' = tanh(x + X + h)\n",
    )
    .unwrap();
    let err = clash
        .compile_object(&Options::default(), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("CLASH_INPUT_X_LEN") && err.contains("input `x`") && err.contains("input `X`"),
        "{err}"
    );
    let clash = Cell::from_source(
        "sizes.rnn",
        "dim WEIGHTS_LEN = 4\ninput x: [WEIGHTS_LEN]\nstate h: [WEIGHTS_LEN]\nh' = tanh(x + h)\n",
    )
    .unwrap();
    let err = clash
        .compile_object(&Options::default(), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("SIZES_WEIGHTS_LEN"), "{err}");
    // Names that would redefine a standard macro (`int8` with a size `MAX`
    // made `#define INT8_MAX`), or that C reserves, are refused.
    for (source, says) in [
        (
            "cell int8\ndim MAX = 4\ninput x: [MAX]\nstate h: [MAX]\nh' = tanh(x + h)\n",
            "`INT8_MAX` (for size `MAX`), which <stdint.h>",
        ),
        (
            "cell M\ndim PI = 4\ninput x: [PI]\nstate h: [PI]\nh' = tanh(x + h)\n",
            "`M_PI` (for size `PI`)",
        ),
        (
            "cell fp\ndim NAN = 4\ninput x: [NAN]\nstate h: [NAN]\nh' = tanh(x + h)\n",
            "`FP_NAN`",
        ),
        (
            "cell c\ndim H = 4\ninput x: [H]\nstate _h: [H]\nh2 = tanh(x + _h)\n_h' = h2\n",
            "two underscores in a row",
        ),
    ] {
        let cell = Cell::from_source("std.rnn", source).unwrap();
        let err = cell
            .compile_object(&Options::default(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(says), "{source}: {err}");
    }
    let odd = Cell::from_source(
        "odd.rnn",
        "dim H = 4\ninput batch: [H], int: [H], weights: [H]\nstate steps: [H]\noutput workspace: [H]\n\
         param g: [H] = \"evil*/ name\"\n\
         steps' = tanh(batch + int + weights + steps * g)\nworkspace = steps'\n",
    )
    .unwrap();
    let aot = odd.compile_object(&Options::default(), None).unwrap();
    // The header says where each parameter comes from, and a tensor name
    // that would end a C comment does not.
    assert!(
        aot.header.contains("g [4] <- \"evil* / name\""),
        "{}",
        aot.header
    );
    let lstm_header = lstm()
        .compile_object(&Options::default(), None)
        .unwrap()
        .header;
    assert!(
        lstm_header.contains("W_if [") && lstm_header.contains("<- weight_ih_l0["),
        "{lstm_header}"
    );
    let dir = tmp("names");
    std::fs::write(dir.join("odd.h"), &aot.header).unwrap();
    std::fs::write(
        dir.join("main.c"),
        "#include \"odd.h\"\nint main(void) { return odd_check() ? 0 : 1; }\n",
    )
    .unwrap();
    std::fs::write(dir.join("odd.o"), &aot.object).unwrap();
    let out = Command::new("cc")
        .args(["-Wall", "-Werror", "-O1"])
        .arg(dir.join("main.c"))
        .arg(dir.join("odd.o"))
        .arg("-lm")
        .arg("-o")
        .arg(dir.join("main"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(Command::new(dir.join("main")).status().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A program built with one header and linked with another object (other
/// sizes) is told so by `NAME_check()`.
#[test]
fn an_object_and_a_header_that_do_not_belong_together_are_detected() {
    let dir = tmp("abi");
    let small = lstm().compile_object(&Options::default(), None).unwrap();
    let other = common::cell("lstm")
        .dims(&[("X", 8), ("H", 20)])
        .unwrap()
        .compile_object(&Options::default(), None)
        .unwrap();
    assert_ne!(small.header, other.header);
    std::fs::write(dir.join("cell.h"), &small.header).unwrap();
    std::fs::write(dir.join("other.o"), &other.object).unwrap();
    let exe = build_c_program("cc", &dir, &dir.join("other.o"));
    let run = Command::new(&exe).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("do not belong together"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Options an object cannot honour are refused, not ignored.
#[test]
fn objects_refuse_plans_and_threads_they_cannot_run() {
    for opts in [
        Options {
            plan: Some(cellc::Variant::Gemm),
            ..Options::default()
        },
        Options {
            plan: Some(cellc::Variant::GemmHoisted),
            ..Options::default()
        },
        Options {
            threads: Some(2),
            ..Options::default()
        },
    ] {
        let err = lstm().compile_object(&opts, None).err().unwrap();
        assert_eq!(err.kind(), cellc::ErrorKind::Options, "{err}");
    }
    let err = lstm()
        .compile_object_for(&Options::default(), None, 1, 0)
        .err()
        .unwrap();
    assert_eq!(err.kind(), cellc::ErrorKind::Options, "{err}");
}

/// An object's plan is the cost model's for the sizes given: one step per
/// call is streaming; a long sequence of a cell whose input projection is
/// most of its weights is hoisted.
#[test]
fn objects_take_the_plan_the_cost_model_picks() {
    let wide_input = common::cell("lstm").dims(&[("X", 512), ("H", 64)]).unwrap();
    let plan_of = |seq: usize| {
        let aot = wide_input
            .compile_object_for(&Options::default(), None, 1, seq)
            .unwrap();
        let line = aot
            .header
            .lines()
            .find(|l| l.starts_with("/* Plan: "))
            .unwrap();
        line.to_string()
    };
    assert!(plan_of(1).contains("streaming"), "{}", plan_of(1));
    assert!(plan_of(200).contains("hoisted"), "{}", plan_of(200));
}
