//! The command line, end to end: exit codes, the stats JSON, the dumps.

mod common;

use common::cellc;
use std::process::Command;

#[test]
fn check_is_silent_on_good_files() {
    let (code, out, err) = cellc(&["check", "examples/lstm.rnn"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}

#[test]
fn errors_exit_non_zero_with_a_located_message() {
    let (code, _, err) = cellc(&["check", "tests/ui/shape_mismatch_product.rnn"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("tests/ui/shape_mismatch_product.rnn:6:15"),
        "{err}"
    );
    assert!(err.contains("error[E0031]"), "{err}");
    let (code, _, err) = cellc(&["check", "no/such/file.rnn"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn bad_sizes_are_refused() {
    for dims in ["H=0", "H=-3", "H=abc", "Q=3", "H"] {
        let (code, _, err) = cellc(&["compile", "examples/lstm.rnn", "--dims", dims]);
        assert_ne!(code, 0, "{dims}");
        assert!(!err.is_empty(), "{dims}");
        assert!(!err.contains("panicked"), "{dims}: {err}");
    }
    let (code, _, err) = cellc(&["compile", "tests/ui/unbound_size.rnn"]);
    assert_eq!(code, 1);
    assert!(err.contains("size `X` is not bound"), "{err}");
    let (code, out, _) = cellc(&[
        "compile",
        "tests/ui/unbound_size.rnn",
        "--dims",
        "X=5",
        "--emit",
        "ir",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("input x: [5]"), "{out}");
}

#[test]
fn stats_is_one_json_object_with_integer_counts() {
    let (code, out, _) = cellc(&[
        "compile",
        "examples/lstm.rnn",
        "--dims",
        "X=32,H=64",
        "--emit",
        "stats",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "products_before",
        "products_after",
        "flops_per_step",
        "weight_bytes_per_step",
    ] {
        assert!(v[key].is_u64(), "{key}: {}", v[key]);
    }
    assert_eq!(v["products_before"], 8);
    assert_eq!(v["products_after"], 1);
    // The fused product is [4H, X + H] = [256, 96]: 2 * 256 * 96 flops, 4 bytes a weight.
    assert_eq!(v["products"][0]["rows"], 256);
    assert_eq!(v["products"][0]["cols"], 96);
    let weights = 4 * 256 * 96;
    let biases = 4 * 4 * 64; // one folded bias vector per gate
    assert_eq!(v["weight_bytes_per_step"], weights + biases);
    // 2*256*96 for the product, 4*64 bias adds, and 9 element-wise ops over 64 lanes.
    assert_eq!(v["flops_per_step"], 2 * 256 * 96 + 4 * 64 + 9 * 64);
}

#[test]
fn dumps() {
    let (code, out, _) = cellc(&["compile", "examples/gru.rnn", "--emit", "dot"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("digraph \"gru\""), "{out}");
    assert!(out.contains("product"));
    let (_, before, _) = cellc(&[
        "compile",
        "examples/gru.rnn",
        "--emit",
        "dot",
        "--after",
        "lower",
    ]);
    assert!(
        before.matches("box3d").count() == 6,
        "six separate products before fusion:\n{before}"
    );
    let (code, out, _) = cellc(&["compile", "examples/gru.rnn", "--emit", "stages"]);
    assert_eq!(code, 0);
    for stage in cellc::opt::stage_names() {
        assert!(out.contains(&format!("; ==== {stage} ====")), "{stage}");
    }
    let (code, out, _) = cellc(&[
        "compile",
        "examples/gru.rnn",
        "--emit",
        "opt",
        "--after",
        "concat",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("= product").count(), 4);
    let (code, _, err) = cellc(&[
        "compile",
        "examples/gru.rnn",
        "--emit",
        "opt",
        "--after",
        "bogus",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no such stage"), "{err}");
    let (code, out, _) = cellc(&["compile", "examples/gru.rnn", "--emit", "remarks"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("multiplied by `r` before it meets them"),
        "{out}"
    );
}

#[test]
fn help_on_every_subcommand() {
    for sub in [
        &["--help"][..],
        &["check", "--help"],
        &["compile", "--help"],
    ] {
        let (code, out, _) = cellc(sub);
        assert_eq!(code, 0);
        assert!(out.contains("Usage"), "{out}");
    }
}

/// A write that fails (here beyond `ulimit -f`, as a full disk would) leaves
/// the old output whole and nothing else behind; a missing folder is a write
/// error that says so. Both for `cellc run -o` and `cellc compile -o`.
#[cfg(unix)]
#[test]
fn failed_writes_keep_the_old_output() {
    let dir = std::env::temp_dir().join(format!("cellc-ulimit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join("cell.o");
    let root = env!("CARGO_MANIFEST_DIR");
    let exe = env!("CARGO_BIN_EXE_cellc");
    let compile = |limit: &str, dims: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{limit} exec '{exe}' compile '{root}/examples/lstm.rnn' --dims {dims} -o '{}'",
                obj.display()
            ))
            .output()
            .unwrap()
    };
    let good = compile("", "X=4,H=4");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let (old_obj, old_h) = (
        std::fs::read(&obj).unwrap(),
        std::fs::read(obj.with_extension("h")).unwrap(),
    );
    // 1 block of 512 bytes: far less than an object.
    let failed = compile("ulimit -f 1;", "X=64,H=64");
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write"), "{err}");
    assert_eq!(std::fs::read(&obj).unwrap(), old_obj);
    assert_eq!(std::fs::read(obj.with_extension("h")).unwrap(), old_h);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(left.len(), 2, "{left:?}");
    let (code, _, err) = cellc(&[
        "compile",
        "examples/lstm.rnn",
        "-o",
        "no/such/folder/cell.o",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot write"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--isa` names the kernels of the batched products: an unknown name is an
/// error that lists them; a known one runs and `bench --json` says which ran
/// and against what peak.
#[test]
fn isa_is_chosen_or_refused() {
    let (code, _, err) = cellc(&[
        "bench",
        "examples/lstm.rnn",
        "--dims",
        "X=4,H=4",
        "--isa",
        "sse9",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("avx512, avx2, neon and scalar"), "{err}");
    let (code, out, err) = cellc(&[
        "bench",
        "examples/lstm.rnn",
        "--dims",
        "X=4,H=4",
        "--batch",
        "8",
        "--seq",
        "2",
        "--plan",
        "gemm",
        "--isa",
        "scalar",
        "--samples",
        "1",
        "--no-unfused",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["isa"], "scalar");
    assert!(j["fma_peak_gflops"].as_f64().unwrap() > 0.0, "{j}");
}

/// `--layers` and `--bidirectional`: every layer in the dumps (layer 1 reading
/// both directions of layer 0), a network check, a network bench, and what a
/// network cannot be (an object, a stack of a two-output cell) refused.
#[test]
fn networks_on_the_command_line() {
    let (code, out, err) = cellc(&[
        "compile",
        "examples/lstm.rnn",
        "--dims",
        "X=24,H=40",
        "--layers",
        "3",
        "--bidirectional",
        "--emit",
        "ir",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("; network: 3 layers, bidirectional of cell lstm"),
        "{out}"
    );
    for l in 0..3 {
        assert!(
            out.contains(&format!("; ==== layer {l} (each direction")),
            "{out}"
        );
    }
    assert!(
        out.contains("input x: [24]") && out.matches("input x: [80]").count() == 2,
        "{out}"
    );
    let (code, out, err) = cellc(&["check", "examples/gru.rnn", "--layers", "2"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let (code, out, err) = cellc(&[
        "bench",
        "examples/gru.rnn",
        "--dims",
        "X=16,H=16",
        "--layers",
        "2",
        "--bidirectional",
        "--threads",
        "2",
        "--seq",
        "5",
        "--samples",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 layers, bidirectional") && out.contains("directions-in-parallel"),
        "{out}"
    );
    let obj = std::env::temp_dir().join(format!("cellc-net-{}.o", std::process::id()));
    let (code, _, err) = cellc(&[
        "compile",
        "examples/lstm.rnn",
        "--layers",
        "2",
        "-o",
        obj.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("an object holds one cell"), "{err}");
    assert!(!obj.exists());
    let (code, _, err) = cellc(&["check", "examples/lstm.rnn", "--layers", "0"]);
    assert_eq!(code, 1);
    assert!(err.contains("1 to 64 layers"), "{err}");
}

/// One rule for the sizes a user gives, on every subcommand: a name the cell
/// does not have, or a name given twice, is an error that names it (`run`
/// used to ignore an unknown name and keep the last of a repeated one).
#[test]
fn given_sizes_follow_one_rule_on_every_subcommand() {
    let case = "tests/conformance/cases/lstm_tiny";
    let weights = format!("{case}.weights.safetensors");
    let inputs = format!("{case}.inputs.safetensors");
    let out = std::env::temp_dir().join(format!("cellc-dims-{}.safetensors", std::process::id()));
    let out = out.to_str().unwrap();
    for (dims, says) in [
        ("Q=3", "`Q` is not a size variable of cell `lstm`"),
        ("H=16,H=16", "size `H` is given twice"),
        ("X=5,H=8,X=6", "size `X` is given twice"),
    ] {
        let runs: [Vec<&str>; 4] = [
            vec!["check", "examples/lstm.rnn", "--dims", dims],
            vec!["compile", "examples/lstm.rnn", "--dims", dims],
            vec![
                "bench",
                "examples/lstm.rnn",
                "--dims",
                dims,
                "--samples",
                "1",
                "--seq",
                "2",
            ],
            vec![
                "run",
                "examples/lstm.rnn",
                "--weights",
                &weights,
                "--inputs",
                &inputs,
                "-o",
                out,
                "--dims",
                dims,
            ],
        ];
        for args in runs {
            let (code, _, err) = cellc(&args);
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
    assert!(!std::path::Path::new(out).exists());
}

/// `cellc check` without `--dims` checks the file's default sizes as
/// `compile` does: a length of zero, a negative one or one that overflows is
/// an error, not a clean exit.
#[test]
fn check_checks_the_default_sizes() {
    let dir = std::env::temp_dir().join(format!("cellc-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (len, says) in [
        ("H - 2", "has a size of 0"),
        ("H - 5", "has a size of -3"),
        ("H * H * H * H * H", "too large"),
    ] {
        let src = format!(
            "dim H = 2\ndim K = 16777216\ninput x: [{len}]\nstate h: [H]\nparam W: [H, {len}]\nh' = tanh(W @ x + h)\n"
        )
        .replace("H * H * H * H * H", "K * K * K");
        let path = dir.join("c.rnn");
        std::fs::write(&path, src).unwrap();
        let p = path.to_str().unwrap();
        let (code, _, compile_err) = cellc(&["compile", p]);
        assert_eq!(code, 1, "{len}: {compile_err}");
        let (code, _, err) = cellc(&["check", p]);
        assert_eq!(code, 1, "{len}: {err}");
        assert!(err.contains(says), "{len}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-o same.h` once wrote the object, then the header over it, and said it
/// wrote both: two outputs of one command are never one file.
#[test]
fn an_object_named_like_its_header_is_refused() {
    let dir = std::env::temp_dir().join(format!("cellc-same-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let same = dir.join("same.h");
    let (code, _, err) = cellc(&["compile", "examples/lstm.rnn", "-o", same.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("one file") && err.contains("same.o"), "{err}");
    assert!(!same.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--threads` beyond what may run here is an error, on every subcommand
/// that takes it.
#[test]
fn thread_counts_beyond_the_bound_are_refused() {
    for args in [
        vec![
            "bench",
            "examples/gru.rnn",
            "--dims",
            "X=8,H=8",
            "--threads",
            "10000",
        ],
        vec!["compile", "examples/gru.rnn", "--threads", "10000"],
    ] {
        let (code, _, err) = cellc(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("10000 threads asked for; at most"),
            "{args:?}: {err}"
        );
    }
}

/// The calibration file is read only if it is a regular file of a sane
/// size: a FIFO there hung every compile, `/dev/zero` ate the memory.
/// Each case must end, quickly, with the default rates and the reason.
#[cfg(unix)]
#[test]
fn a_calibration_that_is_not_a_small_regular_file_is_not_read() {
    use std::time::{Duration, Instant};
    let dir = std::env::temp_dir().join(format!("cellc-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("host.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; 1 << 20]).unwrap();
    for (path, says) in [
        (fifo.as_path(), "not a regular file"),
        (std::path::Path::new("/dev/zero"), "not a regular file"),
        (big.as_path(), "larger than 64 KiB"),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cellc"))
            .args(["compile", "examples/lstm.rnn", "--emit", "schedule"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CELLC_HOST", path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("{}: cellc did not finish", path.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {text}", path.display());
        assert!(text.contains(says), "{}: {text}", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cellc bench` says when its floor comes from default rates, and gives a
/// network its FLOPs, GFLOP/s and floor as it gives a cell.
#[test]
fn bench_says_where_its_rates_come_from_and_measures_networks() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cellc"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CELLC_HOST", "defaults")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let base = [
        "bench",
        "examples/gru.rnn",
        "--dims",
        "X=8,H=8",
        "--samples",
        "3",
        "--seq",
        "4",
    ];
    let text = run(&base);
    assert!(text.contains("default rates"), "{text}");
    let mut json_args = base.to_vec();
    json_args.push("--json");
    let j: serde_json::Value = serde_json::from_str(&run(&json_args)).unwrap();
    assert_eq!(j["rates"], "default");
    assert!(j["noisy"].is_boolean() && j["spread"].is_number(), "{j}");
    json_args.extend(["--layers", "2"]);
    let j: serde_json::Value = serde_json::from_str(&run(&json_args)).unwrap();
    for key in [
        "flops_per_step",
        "gflops",
        "floor_us_per_step",
        "over_floor",
    ] {
        assert!(j[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {j}");
    }
    assert_eq!(j["rates"], "default");
}

/// Inputs that are not regular files are read with a bound: `/dev/zero` as a
/// cell, weights or a model ends in an error (it used to fill the memory),
/// and a FIFO still works (a cell piped in).
#[cfg(unix)]
#[test]
fn inputs_that_are_not_files_are_read_with_a_bound() {
    for args in [
        vec!["check", "/dev/zero"],
        vec![
            "run",
            "examples/lstm.rnn",
            "--weights",
            "/dev/zero",
            "--inputs",
            "/dev/zero",
            "-o",
            "/dev/null",
        ],
        vec![
            "run",
            "/dev/zero.onnx",
            "--inputs",
            "/dev/zero",
            "-o",
            "/dev/null",
        ],
    ] {
        let (code, _, err) = cellc(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let (_, _, err) = cellc(&["check", "/dev/zero"]);
    assert!(err.contains("too large"), "{err}");
    let dir = std::env::temp_dir().join(format!("cellc-fifo-in-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("cell.rnn");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let text =
                std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gru.rnn")).unwrap();
            std::fs::write(fifo, text).unwrap();
        })
    };
    let (code, _, err) = cellc(&["check", fifo.to_str().unwrap()]);
    writer.join().unwrap();
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `CELLC_MAX_THREADS` that is not a number is an error, not ignored.
#[test]
fn a_thread_bound_that_is_not_a_number_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cellc"))
        .args(["compile", "examples/gru.rnn", "--dims", "X=4,H=4"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CELLC_MAX_THREADS", "lots")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CELLC_MAX_THREADS=lots is not a number"),
        "{err}"
    );
}

/// `--emit grad` prints the backward cell after the optimizer, which parses
/// and verifies; `--after grad` prints it as derived (transposed products
/// still apart); `--emit grad-stages` names every stage; `--after lower` is
/// refused with the right stage's name.
#[test]
fn backward_cell_dumps() {
    let (code, out, err) = cellc(&["compile", "examples/gru.rnn", "--emit", "grad"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("cell gru_grad"), "{out}");
    let cell = cellc::ir::parse::parse(&out).unwrap();
    cellc::ir::verify::verify(&cell).unwrap();
    assert!(out.contains("fused"), "{out}");
    let (code, derived, _) = cellc(&[
        "compile",
        "examples/gru.rnn",
        "--emit",
        "grad",
        "--after",
        "grad",
    ]);
    assert_eq!(code, 0);
    assert_eq!(derived.matches("matvec_t").count(), 6, "{derived}");
    assert!(!derived.contains("fused"), "{derived}");
    let (code, stages, _) = cellc(&["compile", "examples/gru.rnn", "--emit", "grad-stages"]);
    assert_eq!(code, 0);
    for stage in ["grad", "simplify", "concat", "stack", "fuse", "dce"] {
        assert!(stages.contains(&format!("; ==== {stage} ====")), "{stage}");
    }
    let (code, _, err) = cellc(&[
        "compile",
        "examples/gru.rnn",
        "--emit",
        "grad",
        "--after",
        "lower",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("`grad`"), "{err}");
}
