//! One function per subcommand: the flags in, the library called, the
//! results written; errors go back to `main`, which renders them.

use std::path::PathBuf;

use cellc::{diag, opt, Cell, Error, ErrorKind};

use crate::args::*;

fn load(file: &PathBuf, dims: &Option<Dims>) -> Result<Cell, Error> {
    let cell = Cell::from_file(file)?;
    print_warnings(&cell);
    match dims {
        Some(d) => {
            let d: Vec<(&str, u64)> = d.0.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            cell.dims(&d)
        }
        None => Ok(cell),
    }
}

fn print_warnings(cell: &Cell) {
    if !cell.warnings().is_empty() {
        diag::emit_stderr(cell.source(), cell.warnings());
    }
}

/// `cellc check`.
pub(crate) fn check(args: CheckArgs) -> Result<(), Error> {
    let CheckArgs { file, dims, net } = args;
    let cell = load(&file, &dims)?;
    cell.check_sizes()?;
    net.network(&cell)?.layer_cells()?;
    Ok(())
}

/// `cellc run`.
pub(crate) fn run(args: RunArgs) -> Result<(), Error> {
    let RunArgs {
        file,
        weights,
        inputs,
        output,
        dims,
        prefix,
        threads,
        isa,
        no_opt,
        batch_first,
        precision,
        compute,
        allow_partial_reads,
        net,
    } = args;
    let x = cellc::Weights::from_safetensors(&inputs)?;
    let opts = cellc::Options {
        optimize: !no_opt,
        threads,
        plan: None,
        isa: isa.as_deref().map(parse_isa).transpose()?,
        precision: precision.as_deref().map(parse_precision).transpose()?,
        compute: compute
            .as_deref()
            .map(parse_compute)
            .transpose()?
            .unwrap_or_default(),
    };
    let out = if file.extension().is_some_and(|e| e == "onnx") {
        let flags = RunFlags {
            weights: weights.is_some(),
            prefix: prefix.is_some(),
            dims: dims.is_some(),
            allow_partial_reads,
            batch_first,
            net,
        };
        run_onnx(&file, &x, opts, &flags)?
    } else {
        let cell = Cell::from_file(&file)?;
        print_warnings(&cell);
        let Some(weights) = weights else {
            return Err(Error::options("a `.rnn` cell needs `--weights`"));
        };
        let mut w = cellc::Weights::from_safetensors(&weights)?;
        if let Some(p) = &prefix {
            w = w.strip_prefix(p)?;
        }
        if allow_partial_reads {
            w = w.allow_partial_reads();
        }
        let given = dims.map(|d| d.0).unwrap_or_default();
        cellc::run::run_network(
            &cell,
            &w,
            &x,
            &given,
            &opts,
            &cellc::run::NetworkOptions {
                layout: net.layout(),
                batch_first,
                schedule: net.schedule()?,
            },
        )?
    };
    let bytes = out.to_safetensors_bytes()?;
    cellc::files::write_all(&[(&output, &bytes)])?;
    Ok(())
}

/// `cellc calibrate`.
pub(crate) fn calibrate(args: CalibrateArgs) -> Result<(), Error> {
    let CalibrateArgs { output, dry_run } = args;
    let json = cellc::calibrate();
    println!("{json}");
    if dry_run {
        return Ok(());
    }
    let Some(path) = output.or_else(cellc::calibration_path) else {
        return Err(Error::options(
            "no place to save the calibration (no HOME or XDG_CACHE_HOME); use --output",
        ));
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir.display(), e))?;
    }
    cellc::files::write_all(&[(&path, json.as_bytes())])?;
    eprintln!("saved to {}", path.display());
    Ok(())
}

/// `cellc bench`.
pub(crate) fn bench(args: BenchArgs) -> Result<(), Error> {
    let BenchArgs {
        file,
        dims,
        batch,
        seq,
        threads,
        plan,
        isa,
        samples,
        no_unfused,
        json,
        lengths,
        precision,
        compute,
        net,
    } = args;
    let cell = load(&file, &dims)?;
    let network = net.network(&cell)?;
    let opts = cellc::bench::BenchOptions {
        batch,
        seq,
        threads,
        plan: plan.as_deref().map(parse_plan).transpose()?,
        isa: isa.as_deref().map(parse_isa).transpose()?,
        precision: precision.as_deref().map(parse_precision).transpose()?,
        compute: compute
            .as_deref()
            .map(parse_compute)
            .transpose()?
            .unwrap_or_default(),
        samples,
        unfused: !no_unfused,
        schedule: net.schedule()?,
        lengths,
    };
    // Progress on a terminal's stderr once a run has taken a few seconds.
    let start = std::time::Instant::now();
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = |p: cellc::bench::Progress| {
        if !terminal || start.elapsed().as_secs_f64() < 3.0 {
            return;
        }
        eprint!("\rbench: {} of {} samples", p.done, p.of);
        if p.done == p.of {
            eprintln!();
        }
    };
    if !network.layout().is_single() || opts.lengths.is_some() || opts.schedule.is_some() {
        let r = cellc::bench::bench_network_with_progress(&network, &opts, &mut progress)?;
        if json {
            println!("{}", r.json());
        } else {
            print!("{}", r.text());
        }
        return Ok(());
    }
    let r = cellc::bench::bench_with_progress(&cell, &opts, &mut progress)?;
    if json {
        println!("{}", r.json());
    } else {
        print!("{}", r.text());
    }
    Ok(())
}

/// `cellc compile`.
pub(crate) fn compile(args: CompileArgs) -> Result<(), Error> {
    let CompileArgs {
        file,
        dims,
        emit,
        after,
        remarks,
        no_opt,
        target,
        output,
        batch,
        seq,
        threads,
        plan,
        isa,
        precision,
        net,
    } = args;
    let cell = load(&file, &dims)?;
    let network = net.network(&cell)?;
    let jit_opts = cellc::Options {
        optimize: !no_opt,
        threads,
        plan: plan.as_deref().map(parse_plan).transpose()?,
        isa: isa.as_deref().map(parse_isa).transpose()?,
        precision: precision.as_deref().map(parse_precision).transpose()?,
        compute: cellc::Compute::F32,
    };
    if !network.layout().is_single() {
        if output.is_some() {
            return Err(Error::options(format!(
                "`-o`: an object holds one cell, not a network ({}); write the cell's \
                 object and run its layers from C, or run the network with `cellc run`",
                network.layout()
            )));
        }
        let stage = Stage {
            emit,
            after,
            remarks,
            target,
            batch,
            seq: seq.unwrap_or(1),
        };
        return compile_network(&cell, &network, &net, &jit_opts, &stage);
    }
    if let Some(obj) = output {
        let seq = seq.unwrap_or(cellc::OBJECT_SEQ);
        return write_object(&cell, &obj, &jit_opts, target.as_deref(), (batch, seq));
    }
    let seq = seq.unwrap_or(1);
    compile_cell(
        &cell,
        emit,
        after,
        remarks,
        target.as_deref(),
        &jit_opts,
        batch,
        seq,
    )
}

/// What `cellc compile` prints of each cell: the stage, and the sizes of the
/// run a schedule is chosen for.
struct Stage {
    emit: Option<Emit>,
    after: Option<String>,
    remarks: bool,
    target: Option<String>,
    batch: usize,
    seq: usize,
}

/// `cellc compile --layers`: the network's schedule for the stage's batch and
/// sequences, then each layer's cell as `compile_cell` prints it.
fn compile_network(
    cell: &Cell,
    network: &cellc::network::Network,
    net: &NetArgs,
    jit_opts: &cellc::Options,
    stage: &Stage,
) -> Result<(), Error> {
    // The schedule as a run of `batch` rows of `seq` steps would
    // choose it (random weights: it depends only on the sizes).
    let mut compiled = network.compile_random(0, jit_opts)?;
    compiled.force_schedule(net.schedule()?)?;
    let schedule = compiled.schedule(stage.batch, stage.seq, false);
    let kernel_threads = compiled.kernel_threads(schedule);
    let kernel_opts = cellc::Options {
        threads: kernel_threads,
        ..jit_opts.clone()
    };
    let each = match kernel_threads {
        Some(1) => "1 thread".to_string(),
        Some(n) => format!("{n} threads"),
        None => "the threads the cost model picks".to_string(),
    };
    println!(
                "; network: {} of cell {}; schedule for batch {}, sequences of {}: {} ({}, each kernel on {each})",
                network.layout(),
                cell.name(),
                stage.batch,
                stage.seq,
                schedule.name(),
                match schedule {
                    cellc::network::Schedule::DirectionsInParallel =>
                        "the two directions of each layer at once",
                    cellc::network::Schedule::LayerByLayer =>
                        "one layer and direction after the other",
                    cellc::network::Schedule::Wavefront =>
                        "the layers as a pipeline over chunks of steps",
                }
            );
    for (l, layer) in network.layer_cells()?.iter().enumerate() {
        // The plan the network runs the layer with, whatever the threads.
        let kernel_opts = cellc::Options {
            plan: compiled
                .layer_plan(l, stage.batch, stage.seq)
                .or(kernel_opts.plan),
            ..kernel_opts.clone()
        };
        println!(
            "; ==== layer {l}{} ====",
            if network.layout().bidirectional {
                " (each direction: the same cell, its own weights)"
            } else {
                ""
            }
        );
        compile_cell(
            layer,
            stage.emit,
            stage.after.clone(),
            stage.remarks,
            stage.target.as_deref(),
            &kernel_opts,
            stage.batch,
            stage.seq,
        )?;
    }
    Ok(())
}

/// `cellc compile -o OBJECT`: the object and its header beside it.
fn write_object(
    cell: &Cell,
    obj: &std::path::Path,
    jit_opts: &cellc::Options,
    target: Option<&str>,
    (batch, seq): (usize, usize),
) -> Result<(), Error> {
    let aot = cell.compile_object_for(jit_opts, target, batch, seq)?;
    let header = obj.with_extension("h");
    if header == obj {
        return Err(Error::options(format!(
            "`-o {}`: the C header goes beside the object, with the extension \
                 `.h`, which the object already has: they would be one file; name \
                 the object `{}`",
            obj.display(),
            obj.with_extension("o").display()
        )));
    }
    cellc::files::write_all(&[(obj, &aot.object), (&header, aot.header.as_bytes())])?;
    eprintln!(
        "wrote {} ({} bytes: {p}_step, {p}_run) and {}",
        obj.display(),
        aot.object.len(),
        header.display(),
        p = aot.prefix
    );
    Ok(())
}

/// The flags of `cellc run` that a `.rnn` cell takes and an ONNX model,
/// which carries its own weights and states its own network, does not.
struct RunFlags {
    weights: bool,
    prefix: bool,
    dims: bool,
    allow_partial_reads: bool,
    batch_first: bool,
    net: NetArgs,
}

/// `cellc run model.onnx`: the model's cell, weights and layout, run as
/// ONNX Runtime runs it ([`cellc::run::run_onnx`]).
fn run_onnx(
    file: &std::path::Path,
    inputs: &cellc::Weights,
    mut opts: cellc::Options,
    flags: &RunFlags,
) -> Result<cellc::Weights, Error> {
    let carried = [
        (flags.weights, "--weights", "carries its own weights"),
        (flags.prefix, "--prefix", "carries its own weights"),
        (flags.dims, "--dims", "states its own sizes"),
        (
            flags.allow_partial_reads,
            "--allow-partial-reads",
            "binds its weights itself",
        ),
        (
            flags.net.layers.is_some() || flags.net.bidirectional,
            "--layers/--bidirectional",
            "states its own layers and directions",
        ),
        (
            flags.net.schedule.is_some(),
            "--schedule",
            "runs as ONNX Runtime runs it",
        ),
    ];
    if let Some((_, flag, why)) = carried.iter().find(|c| c.0) {
        return Err(Error::options(format!(
            "`{flag}`: an ONNX model {why}; drop `{flag}`"
        )));
    }
    let imported = cellc::onnx::import_file(file)
        .map_err(|e| Error::new(ErrorKind::Model, format!("{}: {}", file.display(), e.0)))?;
    if flags.batch_first && !imported.batch_first {
        return Err(Error::options(
            "`--batch-first`: the model reads its sequence time-major ([T, B, X]); an ONNX \
             model runs in its own layout (a batch-first one is found as such)",
        ));
    }
    // A quantized model runs in its own precision unless told.
    opts.precision = opts.precision.or(imported.precision);
    cellc::run::run_onnx(&imported, inputs, &opts)
}

/// `cellc compile` of one cell (or one layer of a network): the stage asked
/// for, or the summary.
#[allow(clippy::too_many_arguments)]
fn compile_cell(
    cell: &Cell,
    emit: Option<Emit>,
    after: Option<String>,
    remarks: bool,
    target: Option<&str>,
    jit_opts: &cellc::Options,
    batch: usize,
    seq: usize,
) -> Result<(), Error> {
    let Some(emit) = emit else {
        return summary(cell, jit_opts);
    };
    let backward = matches!(emit, Emit::Grad | Emit::GradStages);
    // A backward cell's first stage is its derivation (`grad`), where a
    // cell's is its lowering.
    let after = match after.as_deref() {
        Some("grad") if backward => Some("lower".to_string()),
        Some("lower") if backward => {
            return Err(Error::options(
                "`--after lower` with `--emit grad`: the backward cell's first stage is `grad`",
            ))
        }
        _ => after,
    };
    if let Some(a) = &after {
        if !opt::stage_names().contains(&a.as_str()) {
            return Err(Error::options(format!(
                "`--after {a}`: no such stage; the stages are {}",
                opt::stage_names().join(", ")
            )));
        }
    }
    let opts = opt::Options {
        stop_after: after,
        ..opt::Options::default()
    };
    if backward {
        let mut stages = String::new();
        let optimized = cell.backward_optimized_with_dumps(&opts, &mut |name, ir| {
            if matches!(emit, Emit::GradStages) {
                stages.push_str(&format!("; ==== {name} ====\n"));
                stages.push_str(&cellc::ir::print::print(ir));
                stages.push('\n');
            }
        })?;
        let text = if matches!(emit, Emit::GradStages) {
            stages
        } else {
            cellc::ir::print::print(&optimized.ir)
        };
        print!("{text}");
        return Ok(());
    }
    let mut stages = String::new();
    let optimized = cell.optimized_with_dumps(&opts, &mut |name, ir| {
        if matches!(emit, Emit::Stages) {
            stages.push_str(&format!("; ==== {name} ====\n"));
            stages.push_str(&cellc::ir::print::print(ir));
            stages.push('\n');
        }
    })?;
    if remarks {
        let diags: Vec<diag::Diagnostic> = optimized
            .remarks
            .iter()
            .map(opt::Remark::to_diagnostic)
            .collect();
        diag::emit_stderr(cell.source(), &diags);
    }
    let text = match emit {
        Emit::Ast => cell.ast_text(),
        Emit::Ir => cellc::ir::print::print(&cell.ir()?),
        Emit::Opt => cellc::ir::print::print(&optimized.ir),
        Emit::Stages => stages,
        Emit::Grad | Emit::GradStages => unreachable!("printed above"),
        Emit::Stats => cell.stats_json()?,
        Emit::Dot => cellc::ir::dot::dot(&optimized.ir),
        Emit::Remarks => cell.render_remarks(&optimized.remarks),
        Emit::Schedule => cell.schedule_text(jit_opts, batch, seq)?,
        Emit::Clif | Emit::Asm => {
            let mut out = String::new();
            for f in cell.generated_code(jit_opts, target)? {
                out.push_str(&format!("; ==== {} ====\n", f.name));
                out.push_str(if matches!(emit, Emit::Clif) {
                    &f.clif
                } else {
                    &f.asm
                });
                out.push('\n');
            }
            out
        }
    };
    print!("{text}");
    Ok(())
}

/// `cellc compile FILE`: compiles for real and says what came out.
fn summary(cell: &Cell, opts: &cellc::Options) -> Result<(), Error> {
    let before = cell.ir()?;
    let dims: Vec<String> = before
        .dims
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let weights = cellc::Weights::random(&before, 0);
    let kernel = cell.compile(&weights, opts)?;
    let after = cellc::ir::stats::stats(kernel.ir());
    let b = cellc::ir::stats::stats(&before);
    let code = kernel.code();
    let functions: usize = code.functions();
    println!("cell {} ({})", cell.name(), dims.join(", "));
    println!(
        "  products per step: {} -> {}{}",
        b.products,
        after.products,
        if opts.optimize {
            ""
        } else {
            " (optimizer off)"
        }
    );
    println!(
        "  element-wise passes per step: {} -> {}",
        b.elementwise_passes, after.elementwise_passes
    );
    println!(
        "  per step at batch 1: {} flops, {} bytes of weights",
        after.flops_per_step, after.weight_bytes_per_step
    );
    println!(
        "  native code: {} bytes in {} function{}, compiled in {:.1} ms",
        code.code_bytes(),
        functions,
        if functions == 1 { "" } else { "s" },
        code.compile_ms()
    );
    Ok(())
}
