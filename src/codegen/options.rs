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

/// How to compile and run a cell.
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
}

pub use super::panel::Isa;

impl Default for Options {
    fn default() -> Options {
        Options {
            optimize: true,
            threads: None,
            plan: None,
            isa: None,
            precision: None,
        }
    }
}
