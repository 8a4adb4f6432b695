//! The `cellc` command line: parses flags, calls the library, renders diagnostics.

// A program: it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use cellc::{diag, opt, Cell, Error, ErrorKind};

#[derive(Parser)]
#[command(
    name = "cellc",
    version,
    about = "A compiler for recurrent-network cells"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check a cell; print diagnostics, or nothing.
    Check {
        /// The `.rnn` file.
        file: PathBuf,
        /// Sizes, e.g. `X=64,H=128` (defaults come from the file); also checks them.
        #[arg(long, value_parser = parse_dims)]
        dims: Option<Dims>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run a cell, or a network of its layers, over a batch of sequences:
    /// weights, inputs and outputs in safetensors files.
    ///
    /// The inputs hold each input of the cell as [T, B, len] (time-major) and,
    /// optionally, each state's initial value as [B, len] and each row's length
    /// as `lengths` [B] (integers). The output file holds each output as [T, B,
    /// len] and each state's final value as [B, len]. Sizes are read off the
    /// tensors. Weights of a stacked or bidirectional PyTorch module
    /// (`weight_ih_l1`, `weight_ih_l0_reverse`, ...) run the whole network:
    /// states are then [D*L, B, len] and outputs [T, B, D*len], as PyTorch has
    /// them.
    Run {
        /// The `.rnn` file, or an ONNX model with one LSTM or GRU node (`.onnx`:
        /// the cell and the weights both come from it).
        file: PathBuf,
        /// The weights (e.g. a PyTorch state_dict saved with safetensors); not
        /// with an ONNX model.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// The input sequence and optional initial states.
        #[arg(long)]
        inputs: PathBuf,
        /// Where to write the outputs and final states.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Sizes the tensors cannot tell (they must agree with the tensors).
        #[arg(long, value_parser = parse_dims)]
        dims: Option<Dims>,
        /// Read the weights under this prefix only, without it: `rnn.` for the
        /// state_dict of a module that holds its LSTM as `self.rnn`.
        #[arg(long)]
        prefix: Option<String>,
        /// Threads to run on (default: chosen per problem).
        #[arg(long)]
        threads: Option<usize>,
        /// The kernels of the batched products: avx512, avx2, neon (aarch64) or scalar
        /// (default: the widest this CPU has; one it lacks is an error).
        #[arg(long)]
        isa: Option<String>,
        /// How every product's weights are stored: f32, bf16 or int8 (int8: one
        /// scale per row). Default: as the file says (`param W: bf16[H, X]`), f32
        /// where it says nothing.
        #[arg(long)]
        precision: Option<String>,
        /// Without the optimizer (the unfused baseline).
        #[arg(long)]
        no_opt: bool,
        /// The inputs and outputs are [B, T, len] (PyTorch's `batch_first=True`).
        #[arg(long)]
        batch_first: bool,
        /// Let the cell read only part of a checkpoint tensor (rows or columns
        /// no parameter reads), or read parts of it twice. Without it, either
        /// is an error: the weights are of another module than the cell, or a
        /// slice in the cell is wrong.
        #[arg(long)]
        allow_partial_reads: bool,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Compile a cell and print the requested stage.
    Compile {
        /// The `.rnn` file.
        file: PathBuf,
        /// Sizes, e.g. `X=64,H=128` (defaults come from the file).
        #[arg(long, value_parser = parse_dims)]
        dims: Option<Dims>,
        /// What to print; without it, the cell is compiled to native code and a
        /// summary is printed.
        #[arg(long, value_enum)]
        emit: Option<Emit>,
        /// Compile without the optimizer (every product and element-wise
        /// operation its own pass): the baseline.
        #[arg(long)]
        no_opt: bool,
        /// With `--emit clif`, `--emit asm` or `-o`: generate code for this target
        /// triple (e.g. `x86_64-unknown-linux-gnu`, `aarch64-unknown-linux-gnu`)
        /// instead of the host.
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// Write a relocatable object with the cell's `NAME_step` and `NAME_run`
        /// functions, and a C header beside it (`cell.o` -> `cell.h`).
        #[arg(short = 'o', long = "output", value_name = "OBJECT")]
        output: Option<PathBuf>,
        /// With `--emit opt` or `dot`: stop after this stage (`lower`, or a pass:
        /// simplify, concat, stack, fuse, dce).
        #[arg(long, value_name = "PASS")]
        after: Option<String>,
        /// Also print the optimizer's remarks (what was fused, what was not, and why) to stderr.
        #[arg(long)]
        remarks: bool,
        /// With `--emit schedule`: the batch size.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// With `--emit schedule`: the sequence length (1: one step per call).
        #[arg(long, default_value_t = 1)]
        seq: usize,
        /// Threads (default: chosen by the cost model).
        #[arg(long)]
        threads: Option<usize>,
        /// Force a sequence plan: streaming, hoisted, gemm or gemm-hoisted.
        #[arg(long)]
        plan: Option<String>,
        /// The kernels of the batched products, as `run` and `bench` take it
        /// (`--emit schedule` costs the plans with them).
        #[arg(long)]
        isa: Option<String>,
        /// How every product's weights are stored: f32, bf16 or int8 (int8: one
        /// scale per row). Default: as the file says (`param W: bf16[H, X]`), f32
        /// where it says nothing.
        #[arg(long)]
        precision: Option<String>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Measure this machine's caches and kernels (a second or two) and save the
    /// figures the cost model plans with.
    ///
    /// Without a calibration, plans use fixed default rates (deterministic on a
    /// given machine). The file is `$XDG_CACHE_HOME/cellc/host.json` (or
    /// `~/.cache/cellc/host.json`); `CELLC_HOST=PATH` reads another,
    /// `CELLC_HOST=defaults` ignores it.
    Calibrate {
        /// Where to save (default: the calibration file above).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Print the figures without saving them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Measure per-step time with random weights, fused and unfused, in one run.
    Bench {
        /// The `.rnn` file.
        file: PathBuf,
        /// Sizes, e.g. `X=256,H=256`.
        #[arg(long, value_parser = parse_dims)]
        dims: Option<Dims>,
        /// Batch size.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Sequence length; 1 measures one `step` call at a time (streaming).
        #[arg(long, default_value_t = 100)]
        seq: usize,
        /// Threads (default: chosen by the cost model).
        #[arg(long)]
        threads: Option<usize>,
        /// Force a sequence plan: streaming, hoisted, gemm or gemm-hoisted.
        #[arg(long)]
        plan: Option<String>,
        /// The kernels of the batched products: avx512, avx2, neon (aarch64) or scalar
        /// (default: the widest this CPU has; one it lacks is an error).
        #[arg(long)]
        isa: Option<String>,
        /// How every product's weights are stored: f32, bf16 or int8 (int8: one
        /// scale per row). Default: as the file says (`param W: bf16[H, X]`), f32
        /// where it says nothing.
        #[arg(long)]
        precision: Option<String>,
        /// Samples to take (after warm-up); the median is reported.
        #[arg(long, default_value_t = 21)]
        samples: usize,
        /// Skip the unfused baseline.
        #[arg(long)]
        no_unfused: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// A network's rows of random lengths, drawn uniformly from MIN..MAX
        /// (at most --seq).
        #[arg(long, value_name = "MIN..MAX", value_parser = parse_range)]
        lengths: Option<(usize, usize)>,
        #[command(flatten)]
        net: NetArgs,
    },
}

/// A network of the cell's layers (`docs/language.md`, "Networks").
#[derive(clap::Args, Clone, Debug, Default)]
struct NetArgs {
    /// Layers of the cell, each reading the output of the one below (default
    /// 1; `run` reads it off the weights' names, and checks it if given).
    #[arg(long)]
    layers: Option<usize>,
    /// Both directions: each layer runs the sequence forward and in reverse,
    /// its output the two side by side (`run` reads it off the weights).
    #[arg(long)]
    bidirectional: bool,
    /// How a network's layers share the threads: layer-by-layer,
    /// directions-in-parallel or wavefront (default: chosen per run).
    #[arg(long)]
    schedule: Option<String>,
}

impl NetArgs {
    /// The layout asked for, if any.
    fn layout(&self) -> Option<cellc::network::Layout> {
        (self.layers.is_some() || self.bidirectional).then(|| cellc::network::Layout {
            layers: self.layers.unwrap_or(1),
            bidirectional: self.bidirectional,
            reverse: false,
        })
    }

    fn schedule(&self) -> Result<Option<cellc::network::Schedule>, Error> {
        self.schedule
            .as_deref()
            .map(|s| {
                cellc::network::Schedule::from_name(s).ok_or_else(|| {
                    Error::options(format!(
                        "`--schedule {s}`: the schedules are layer-by-layer, \
                         directions-in-parallel and wavefront"
                    ))
                })
            })
            .transpose()
    }

    fn network(&self, cell: &Cell) -> Result<cellc::network::Network, Error> {
        cellc::network::Network::new(
            cell.clone(),
            self.layout().unwrap_or(cellc::network::Layout::SINGLE),
        )
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Emit {
    /// The syntax tree, as S-expressions.
    Ast,
    /// The IR as lowered, before optimization.
    Ir,
    /// The IR after the optimizer (or after `--after PASS`).
    Opt,
    /// The IR after lowering and after every pass, one after the other.
    Stages,
    /// Products, flops, weight bytes and element-wise passes per step, before and after, as JSON.
    Stats,
    /// A Graphviz graph of the optimized IR (`--after lower` for the original).
    Dot,
    /// What the optimizer fused and what it did not, with reasons, against the source.
    Remarks,
    /// The Cranelift IR of every generated function.
    Clif,
    /// The machine code of every generated function, disassembled.
    Asm,
    /// The plan the cost model picks for `--batch` and `--seq`, with its
    /// predicted time, the floor, and where the weights live.
    Schedule,
}

#[derive(Clone, Debug)]
struct Dims(Vec<(String, u64)>);

fn parse_dims(s: &str) -> Result<Dims, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected NAME=SIZE, e.g. H=128"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{name}` is not a size variable name"));
        }
        let value: u64 = value.trim().parse().map_err(|_| {
            format!(
                "`{}`: the size of {name} must be a positive integer",
                value.trim()
            )
        })?;
        if value == 0 {
            return Err(format!("the size of {name} must be at least 1"));
        }
        out.push((name.to_string(), value));
    }
    Ok(Dims(out))
}

fn parse_isa(s: &str) -> Result<cellc::Isa, Error> {
    cellc::Isa::from_name(s).ok_or_else(|| {
        Error::options(format!(
            "`--isa {s}`: the kernels are avx512, avx2, neon and scalar"
        ))
    })
}

fn parse_precision(s: &str) -> Result<cellc::ir::Precision, Error> {
    cellc::ir::Precision::from_name(s).ok_or_else(|| {
        Error::options(format!(
            "`--precision {s}`: the precisions are f32, bf16 and int8"
        ))
    })
}

fn parse_plan(s: &str) -> Result<cellc::Variant, Error> {
    cellc::Variant::from_name(s).ok_or_else(|| {
        Error::options(format!(
            "`--plan {s}`: the plans are streaming, hoisted, gemm and gemm-hoisted"
        ))
    })
}

fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}`: expected MIN..MAX, e.g. 10..100");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

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

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Check { file, dims, net } => {
            let cell = load(&file, &dims)?;
            cell.check_sizes()?;
            net.network(&cell)?.layer_cells()?;
            Ok(())
        }
        Command::Run {
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
            allow_partial_reads,
            net,
        } => {
            let x = cellc::Weights::from_safetensors(&inputs)?;
            let opts = cellc::Options {
                optimize: !no_opt,
                threads,
                plan: None,
                isa: isa.as_deref().map(parse_isa).transpose()?,
                precision: precision.as_deref().map(parse_precision).transpose()?,
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
        Command::Calibrate { output, dry_run } => {
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
        Command::Bench {
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
            net,
        } => {
            let cell = load(&file, &dims)?;
            let network = net.network(&cell)?;
            let opts = cellc::bench::BenchOptions {
                batch,
                seq,
                threads,
                plan: plan.as_deref().map(parse_plan).transpose()?,
                isa: isa.as_deref().map(parse_isa).transpose()?,
                precision: precision.as_deref().map(parse_precision).transpose()?,
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
        Command::Compile {
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
        } => {
            let cell = load(&file, &dims)?;
            let network = net.network(&cell)?;
            let jit_opts = cellc::Options {
                optimize: !no_opt,
                threads,
                plan: plan.as_deref().map(parse_plan).transpose()?,
                isa: isa.as_deref().map(parse_isa).transpose()?,
                precision: precision.as_deref().map(parse_precision).transpose()?,
            };
            if !network.layout().is_single() {
                if output.is_some() {
                    return Err(Error::options(format!(
                        "`-o`: an object holds one cell, not a network ({}); write the cell's \
                         object and run its layers from C, or run the network with `cellc run`",
                        network.layout()
                    )));
                }
                // The schedule as a run of `batch` rows of `seq` steps would
                // choose it (random weights: it depends only on the sizes).
                let mut compiled = network.compile_random(0, &jit_opts)?;
                compiled.force_schedule(net.schedule()?)?;
                let schedule = compiled.schedule(batch, seq, false);
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
                    "; network: {} of cell {}; schedule for batch {batch}, sequences of {seq}: {} ({}, each kernel on {each})",
                    network.layout(),
                    cell.name(),
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
                        plan: compiled.layer_plan(l, batch, seq).or(kernel_opts.plan),
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
                        emit,
                        after.clone(),
                        remarks,
                        target.as_deref(),
                        &kernel_opts,
                        batch,
                        seq,
                    )?;
                }
                return Ok(());
            }
            if let Some(obj) = output {
                let aot = cell.compile_object(&jit_opts, target.as_deref())?;
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
                cellc::files::write_all(&[(&obj, &aot.object), (&header, aot.header.as_bytes())])?;
                eprintln!(
                    "wrote {} ({} bytes: {p}_step, {p}_run) and {}",
                    obj.display(),
                    aot.object.len(),
                    header.display(),
                    p = aot.prefix
                );
                return Ok(());
            }
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
    }
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

fn report(e: &Error) {
    match e {
        Error::Source {
            source,
            diagnostics,
        } => {
            let (located, unlocated): (Vec<_>, Vec<_>) = diagnostics
                .iter()
                .cloned()
                .partition(|d| !d.labels.is_empty());
            diag::emit_stderr(source, &located);
            eprint!("{}", diag::render_without_source(&unlocated));
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            if errors > 0 {
                eprintln!(
                    "error: {} failed with {errors} error{}",
                    source.name,
                    if errors == 1 { "" } else { "s" }
                );
            }
        }
        other => eprint!("{}", other.render()),
    }
}

fn main() -> ExitCode {
    // A write beyond the file size limit (`ulimit -f`) then fails with EFBIG,
    // which is reported, instead of killing the process mid-write.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" installs no handler;
    // it is done before any other thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    // A reader that stops reading (`cellc compile --emit asm | head`) ends
    // cellc quietly, as it ends `cat`, rather than a write to a closed pipe
    // failing in the middle of a dump (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition installs no handler;
    // it is done before any other thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // A deep stack for the front end's recursion, whatever the input.
    let worker = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || run(cli));
    let result = match worker {
        Ok(handle) => match handle.join() {
            Ok(r) => r,
            Err(_) => Err(Error::internal("the compiler panicked")),
        },
        Err(e) => Err(Error::too_large(format!(
            "cannot start the compiler thread: {e}"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}
