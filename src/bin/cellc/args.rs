//! The command line's flags (clap): one struct per subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use cellc::{Cell, Error};

#[derive(Parser)]
#[command(
    name = "cellc",
    version,
    about = "A compiler for recurrent-network cells"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Parse and check a cell; print diagnostics, or nothing.
    Check(CheckArgs),
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
    Run(RunArgs),
    /// Compile a cell and print the requested stage.
    Compile(CompileArgs),
    /// Measure this machine's caches and kernels (a second or two) and save the
    /// figures the cost model plans with.
    ///
    /// Without a calibration, plans use fixed default rates (deterministic on a
    /// given machine). The file is `$XDG_CACHE_HOME/cellc/host.json` (or
    /// `~/.cache/cellc/host.json`); `CELLC_HOST=PATH` reads another,
    /// `CELLC_HOST=defaults` ignores it.
    Calibrate(CalibrateArgs),
    /// Measure per-step time with random weights, fused and unfused, in one run.
    Bench(BenchArgs),
}

/// The flags of `cellc check`.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// The `.rnn` file.
    pub(crate) file: PathBuf,
    /// Sizes, e.g. `X=64,H=128` (defaults come from the file); also checks them.
    #[arg(long, value_parser = parse_dims)]
    pub(crate) dims: Option<Dims>,
    #[command(flatten)]
    pub(crate) net: NetArgs,
}

/// The flags of `cellc run`.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The `.rnn` file, or an ONNX model with one LSTM or GRU node (`.onnx`:
    /// the cell and the weights both come from it).
    pub(crate) file: PathBuf,
    /// The weights (e.g. a PyTorch state_dict saved with safetensors); not
    /// with an ONNX model.
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
    /// The input sequence and optional initial states.
    #[arg(long)]
    pub(crate) inputs: PathBuf,
    /// Where to write the outputs and final states.
    #[arg(short = 'o', long = "output")]
    pub(crate) output: PathBuf,
    /// Sizes the tensors cannot tell (they must agree with the tensors).
    #[arg(long, value_parser = parse_dims)]
    pub(crate) dims: Option<Dims>,
    /// Read the weights under this prefix only, without it: `rnn.` for the
    /// state_dict of a module that holds its LSTM as `self.rnn`.
    #[arg(long)]
    pub(crate) prefix: Option<String>,
    /// Threads to run on (default: chosen per problem).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// The kernels of the batched products: avx512, avx2, neon (aarch64) or scalar
    /// (default: the widest this CPU has; one it lacks is an error).
    #[arg(long)]
    pub(crate) isa: Option<String>,
    /// How every product's weights are stored: f32, bf16 or int8 (int8: one
    /// scale per row). Default: as the file says (`param W: bf16[H, X]`), f32
    /// where it says nothing.
    #[arg(long)]
    pub(crate) precision: Option<String>,
    /// The arithmetic of the products: f32; bf16 (the matrices stored in
    /// bf16, the inputs rounded to bf16, float32 sums; AMX tiles for the
    /// input projection of a sequence where the CPU has them); or int8 (the
    /// matrices stored in int8, every vector they multiply quantized per
    /// batch row to u8, integer sums; VNNI where the CPU has it; the `gemm`
    /// plans). Default: f32.
    #[arg(long)]
    pub(crate) compute: Option<String>,
    /// Without the optimizer (the unfused baseline).
    #[arg(long)]
    pub(crate) no_opt: bool,
    /// The inputs and outputs are [B, T, len] (PyTorch's `batch_first=True`).
    #[arg(long)]
    pub(crate) batch_first: bool,
    /// Let the cell read only part of a checkpoint tensor (rows or columns
    /// no parameter reads), or read parts of it twice. Without it, either
    /// is an error: the weights are of another module than the cell, or a
    /// slice in the cell is wrong.
    #[arg(long)]
    pub(crate) allow_partial_reads: bool,
    #[command(flatten)]
    pub(crate) net: NetArgs,
}

/// The flags of `cellc compile`.
#[derive(clap::Args)]
pub(crate) struct CompileArgs {
    /// The `.rnn` file.
    pub(crate) file: PathBuf,
    /// Sizes, e.g. `X=64,H=128` (defaults come from the file).
    #[arg(long, value_parser = parse_dims)]
    pub(crate) dims: Option<Dims>,
    /// What to print; without it, the cell is compiled to native code and a
    /// summary is printed.
    #[arg(long, value_enum)]
    pub(crate) emit: Option<Emit>,
    /// Compile without the optimizer (every product and element-wise
    /// operation its own pass): the baseline.
    #[arg(long)]
    pub(crate) no_opt: bool,
    /// With `--emit clif`, `--emit asm` or `-o`: generate code for this target
    /// triple (e.g. `x86_64-unknown-linux-gnu`, `aarch64-unknown-linux-gnu`)
    /// instead of the host.
    #[arg(long, value_name = "TRIPLE")]
    pub(crate) target: Option<String>,
    /// Write a relocatable object with the cell's `NAME_step` and `NAME_run`
    /// functions, and a C header beside it (`cell.o` -> `cell.h`).
    #[arg(short = 'o', long = "output", value_name = "OBJECT")]
    pub(crate) output: Option<PathBuf>,
    /// With `--emit opt` or `dot`: stop after this stage (`lower`, or a pass:
    /// simplify, concat, stack, fuse, dce).
    #[arg(long, value_name = "PASS")]
    pub(crate) after: Option<String>,
    /// Also print the optimizer's remarks (what was fused, what was not, and why) to stderr.
    #[arg(long)]
    pub(crate) remarks: bool,
    /// With `--emit schedule` or `-o`: the batch size the plan is chosen for.
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// With `--emit schedule` (default 1: one step per call) or `-o` (default
    /// 100): the sequence length the plan is chosen for.
    #[arg(long)]
    pub(crate) seq: Option<usize>,
    /// Threads (default: chosen by the cost model).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Force a sequence plan: streaming, hoisted, gemm or gemm-hoisted.
    #[arg(long)]
    pub(crate) plan: Option<String>,
    /// The kernels of the batched products, as `run` and `bench` take it
    /// (`--emit schedule` costs the plans with them).
    #[arg(long)]
    pub(crate) isa: Option<String>,
    /// How every product's weights are stored: f32, bf16 or int8 (int8: one
    /// scale per row). Default: as the file says (`param W: bf16[H, X]`), f32
    /// where it says nothing.
    #[arg(long)]
    pub(crate) precision: Option<String>,
    #[command(flatten)]
    pub(crate) net: NetArgs,
}

/// The flags of `cellc calibrate`.
#[derive(clap::Args)]
pub(crate) struct CalibrateArgs {
    /// Where to save (default: the calibration file above).
    #[arg(short = 'o', long = "output")]
    pub(crate) output: Option<PathBuf>,
    /// Print the figures without saving them.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// The flags of `cellc bench`.
#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// The `.rnn` file.
    pub(crate) file: PathBuf,
    /// Sizes, e.g. `X=256,H=256`.
    #[arg(long, value_parser = parse_dims)]
    pub(crate) dims: Option<Dims>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// Sequence length; 1 measures one `step` call at a time (streaming).
    #[arg(long, default_value_t = 100)]
    pub(crate) seq: usize,
    /// Threads (default: chosen by the cost model).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Force a sequence plan: streaming, hoisted, gemm or gemm-hoisted.
    #[arg(long)]
    pub(crate) plan: Option<String>,
    /// The kernels of the batched products: avx512, avx2, neon (aarch64) or scalar
    /// (default: the widest this CPU has; one it lacks is an error).
    #[arg(long)]
    pub(crate) isa: Option<String>,
    /// How every product's weights are stored: f32, bf16 or int8 (int8: one
    /// scale per row). Default: as the file says (`param W: bf16[H, X]`), f32
    /// where it says nothing.
    #[arg(long)]
    pub(crate) precision: Option<String>,
    /// The arithmetic of the products: f32; bf16 (the matrices stored in
    /// bf16, the inputs rounded to bf16, float32 sums; AMX tiles for the
    /// input projection of a sequence where the CPU has them); or int8 (the
    /// matrices stored in int8, every vector they multiply quantized per
    /// batch row to u8, integer sums; VNNI where the CPU has it; the `gemm`
    /// plans). Default: f32.
    #[arg(long)]
    pub(crate) compute: Option<String>,
    /// Samples to take (after warm-up); the median is reported.
    #[arg(long, default_value_t = 21)]
    pub(crate) samples: usize,
    /// Skip the unfused baseline.
    #[arg(long)]
    pub(crate) no_unfused: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// A network's rows of random lengths, drawn uniformly from MIN..MAX
    /// (at most --seq).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_range)]
    pub(crate) lengths: Option<(usize, usize)>,
    #[command(flatten)]
    pub(crate) net: NetArgs,
}

/// A network of the cell's layers (`docs/language.md`, "Networks").
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct NetArgs {
    /// Layers of the cell, each reading the output of the one below (default
    /// 1; `run` reads it off the weights' names, and checks it if given).
    #[arg(long)]
    pub(crate) layers: Option<usize>,
    /// Both directions: each layer runs the sequence forward and in reverse,
    /// its output the two side by side (`run` reads it off the weights).
    #[arg(long)]
    pub(crate) bidirectional: bool,
    /// How a network's layers share the threads: layer-by-layer,
    /// directions-in-parallel or wavefront (default: chosen per run).
    #[arg(long)]
    pub(crate) schedule: Option<String>,
}

impl NetArgs {
    /// The layout asked for, if any.
    pub(crate) fn layout(&self) -> Option<cellc::network::Layout> {
        (self.layers.is_some() || self.bidirectional).then(|| cellc::network::Layout {
            layers: self.layers.unwrap_or(1),
            bidirectional: self.bidirectional,
            reverse: false,
        })
    }

    pub(crate) fn schedule(&self) -> Result<Option<cellc::network::Schedule>, Error> {
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

    pub(crate) fn network(&self, cell: &Cell) -> Result<cellc::network::Network, Error> {
        cellc::network::Network::new(
            cell.clone(),
            self.layout().unwrap_or(cellc::network::Layout::SINGLE),
        )
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Emit {
    /// The syntax tree, as S-expressions.
    Ast,
    /// The IR as lowered, before optimization.
    Ir,
    /// The IR after the optimizer (or after `--after PASS`).
    Opt,
    /// The IR after lowering and after every pass, one after the other.
    Stages,
    /// The backward cell of one step (reverse mode of the IR as lowered:
    /// the adjoints of the step's inputs, old states and parameters), after
    /// the optimizer (`--after grad` for it as derived).
    Grad,
    /// The backward cell as derived and after every pass.
    GradStages,
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
pub(crate) struct Dims(pub(crate) Vec<(String, u64)>);

pub(crate) fn parse_dims(s: &str) -> Result<Dims, String> {
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

pub(crate) fn parse_isa(s: &str) -> Result<cellc::Isa, Error> {
    cellc::Isa::from_name(s).ok_or_else(|| {
        Error::options(format!(
            "`--isa {s}`: the kernels are avx512, avx2, neon and scalar"
        ))
    })
}

pub(crate) fn parse_precision(s: &str) -> Result<cellc::ir::Precision, Error> {
    cellc::ir::Precision::from_name(s).ok_or_else(|| {
        Error::options(format!(
            "`--precision {s}`: the precisions are f32, bf16 and int8"
        ))
    })
}

pub(crate) fn parse_compute(s: &str) -> Result<cellc::Compute, Error> {
    cellc::Compute::from_name(s).ok_or_else(|| {
        Error::options(format!(
            "`--compute {s}`: the arithmetics are f32, bf16 and int8"
        ))
    })
}

pub(crate) fn parse_plan(s: &str) -> Result<cellc::Variant, Error> {
    cellc::Variant::from_name(s).ok_or_else(|| {
        Error::options(format!(
            "`--plan {s}`: the plans are streaming, hoisted, gemm and gemm-hoisted"
        ))
    })
}

pub(crate) fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("`{s}`: expected MIN..MAX, e.g. 10..100");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}
