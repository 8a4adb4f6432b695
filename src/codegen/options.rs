//! How a cell is compiled and run: the options a user sets, and the plans
//! ([`Variant`]) a step can run with. The one place the choice of plan is
//! spelled; the planner, the cost model and the runtime all take a `Variant`.

/// The plan a cell runs with: how its products are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Streaming,
    Hoisted,
    Gemm,
    GemmHoisted,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Streaming,
        Variant::Hoisted,
        Variant::Gemm,
        Variant::GemmHoisted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Streaming => "streaming",
            Variant::Hoisted => "hoisted",
            Variant::Gemm => "gemm",
            Variant::GemmHoisted => "gemm-hoisted",
        }
    }

    /// The plan that runs `seq` steps when this one is asked for: one step at a
    /// time has no input projection to hoist.
    pub fn for_steps(self, seq: usize) -> Variant {
        match self {
            Variant::Hoisted if seq == 1 => Variant::Streaming,
            Variant::GemmHoisted if seq == 1 => Variant::Gemm,
            v => v,
        }
    }

    pub fn from_name(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn hoists(self) -> bool {
        matches!(self, Variant::Hoisted | Variant::GemmHoisted)
    }

    pub fn uses_gemm(self) -> bool {
        matches!(self, Variant::Gemm | Variant::GemmHoisted)
    }
}

/// How to compile and run a cell. The defaults let the cost model choose the
/// plan and the threads for each call's batch and sequence length; each
/// field forces one choice.
///
/// ```
/// # fn main() -> cellc::Result<()> {
/// use cellc::{Isa, Options, Variant};
/// let cell = cellc::Cell::from_file("examples/gru.rnn")?.dims(&[("X", 16), ("H", 32)])?;
/// let weights = cellc::Weights::random(&cell.ir()?, 3);
/// let forced = Options {
///     threads: Some(1),
///     plan: Some(Variant::Streaming),
///     isa: Some(Isa::Scalar), // the portable kernels, on any host
///     ..Options::default()
/// };
/// let kernel = cell.compile(&weights, &forced)?;
/// assert_eq!(kernel.choice(1, 1).variant, Variant::Streaming);
/// // More threads than this process may use is an error, not a slowdown.
/// let greedy = Options { threads: Some(100_000), ..Options::default() };
/// assert!(cell.compile(&weights, &greedy).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// Run the optimizer (concatenation, stacking, fused epilogues). Off, every
    /// product and every element-wise operation is its own pass: the baseline.
    pub optimize: bool,
    /// Threads to run on (the caller's included). `None`: the cost model picks per
    /// batch and sequence length, up to the number of cores.
    pub threads: Option<usize>,
    /// The plan for `run` (`step` always streams). `None`: the cost model picks.
    pub plan: Option<Variant>,
    /// The kernels of the batched products (the `gemm` plans). `None`: the
    /// widest the host has ([`Isa::detect`]); one the host lacks is an error
    /// when the cell is compiled.
    pub isa: Option<Isa>,
    /// How every product's weights (the matrix parameters) are stored,
    /// overriding what the source says; `None`: as the source says (`f32`
    /// where it says nothing). Vector parameters keep their own.
    pub precision: Option<crate::ir::Precision>,
    /// The arithmetic of the products ([`Compute::F32`] unless asked).
    pub compute: Compute,
}

/// The arithmetic of the products: an explicit choice, apart from how the
/// weights are stored ([`Options::precision`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compute {
    /// Float32 products (of weights widened exactly from their storage).
    #[default]
    F32,
    /// Products of bfloat16 operands with float32 sums, as the bf16
    /// dot-product instructions compute them: every matrix parameter is
    /// stored in bf16 and the cell's inputs are rounded to bf16 as they
    /// come in (ties to even); sums, states and element-wise operations stay
    /// float32. The input projection hoisted out of a sequence's loop runs
    /// on AMX tiles (`tdpbf16ps`) where the host has them, else on the
    /// float32 kernels, which compute the same exact products of the same
    /// bf16 values (only the order of the sums differs). Inference only:
    /// training and objects refuse it.
    Bf16,
    /// Products in integers, as the int8 dot-product instructions (VNNI's
    /// `vpdpbusd`) compute them: every matrix parameter is stored in int8
    /// with a scale per row (symmetric), and every vector a matrix
    /// multiplies is quantized as it comes, batch row by batch row, to
    /// unsigned bytes with a scale and zero point of its own over its range
    /// (`kernels::int8::quantize`); the sums are exact in i32 and each
    /// product is finished in float32 (`t * (sw * sx) + start`, fused).
    /// Only the products change: states and element-wise operations stay
    /// float32. Runs on the `gemm` plans (whose products are the int8
    /// kernels'); a streaming or hoisted plan asked for is an error, as are
    /// block-circulant weights. Inference only: training and objects refuse
    /// it.
    Int8,
}

impl Compute {
    pub const ALL: [Compute; 3] = [Compute::F32, Compute::Bf16, Compute::Int8];

    pub fn name(self) -> &'static str {
        match self {
            Compute::F32 => "f32",
            Compute::Bf16 => "bf16",
            Compute::Int8 => "int8",
        }
    }

    pub fn from_name(s: &str) -> Option<Compute> {
        Compute::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The storage its products multiply, which every matrix is then stored
    /// in (`None`: float32 products of any storage, widened exactly).
    pub(crate) fn storage(self) -> Option<crate::ir::Precision> {
        match self {
            Compute::F32 => None,
            Compute::Bf16 => Some(crate::ir::Precision::Bf16),
            Compute::Int8 => Some(crate::ir::Precision::Int8),
        }
    }
}

impl std::fmt::Display for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub use crate::kernels::Isa;

/// The environment variable that raises [`max_threads`] above the cores this
/// process may use (to test schedules on more threads than a small machine
/// has; `cargo test` sets it in `.cargo/config.toml`).
pub const MAX_THREADS_VAR: &str = "CELLC_MAX_THREADS";

/// Most threads `Options::threads` may ask for: the cores this process may
/// use (`std::thread::available_parallelism`: affinity and cgroup quotas
/// counted), or [`MAX_THREADS_VAR`] when set (at most 1024). Threads beyond
/// the cores only wait for each other; each count asked for keeps its own
/// pool of threads for the life of the process, so the bound also bounds
/// the threads a process can start.
pub fn max_threads() -> usize {
    // Read once per process: a step asks, and must not allocate (the core
    // count comes from cgroup files).
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        max_threads_var()
            .ok()
            .flatten()
            .map_or(cores, |n| n.clamp(1, 1024))
    })
}

/// [`MAX_THREADS_VAR`]'s value, `None` when unset; a value that is not a
/// count is an error ([`Options::check`] reports it).
fn max_threads_var() -> Result<Option<usize>, String> {
    match std::env::var(MAX_THREADS_VAR) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| format!("{MAX_THREADS_VAR}={v} is not a number of threads")),
        Err(_) => Err(format!("{MAX_THREADS_VAR} is not UTF-8")),
    }
}

impl Options {
    /// Checks what the options ask for against this machine: `threads`
    /// from 1 to [`max_threads`].
    pub fn check(&self) -> Result<(), String> {
        max_threads_var()?;
        if let Some(forced) = self.compute.storage() {
            if let Some(p) = self.precision.filter(|&p| p != forced) {
                return Err(format!(
                    "compute {c} multiplies {forced} weights; they cannot also be stored in {p} \
                     (leave the precision unset, or set it to {forced})",
                    c = self.compute
                ));
            }
        }
        if self.compute == Compute::Int8 {
            if let Some(v) = self.plan.filter(|v| !v.uses_gemm()) {
                return Err(format!(
                    "compute int8 runs the `gemm` and `gemm-hoisted` plans (their products \
                     are the int8 kernels'); plan `{}` multiplies in float32",
                    v.name()
                ));
            }
        }
        match self.threads {
            Some(0) => Err("threads must be at least 1".to_string()),
            Some(n) if n > max_threads() => Err(format!(
                "{n} threads asked for; at most {} may run here ({}; more threads than cores \
                 only wait for each other)",
                max_threads(),
                if std::env::var_os(MAX_THREADS_VAR).is_some() {
                    MAX_THREADS_VAR.to_string()
                } else {
                    format!("the cores this process may use; {MAX_THREADS_VAR} allows more")
                }
            )),
            _ => Ok(()),
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            optimize: true,
            threads: None,
            plan: None,
            isa: None,
            precision: None,
            compute: Compute::F32,
        }
    }
}
