//! The functions a cell may call: one table that the checker (names, arity,
//! shapes) and the lowering (which IR each call becomes) share, so that the two
//! cannot disagree about what a name means.
//!
//! Some functions are IR operations of their own (`sigmoid`, `min`, `mean`);
//! the others are written here in terms of those (`clip(x, lo, hi)` is
//! `min(max(x, lo), hi)`), so that the optimizer and the code generator see
//! only the primitive operations and fuse them like any other.

use crate::ir::{BinaryOp, ReduceOp, UnaryOp};

/// What a call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// An element-wise operation of the IR.
    Unary(UnaryOp),
    /// An element-wise operation of two operands, which broadcast.
    Binary(BinaryOp),
    /// A vector reduced to a number per batch row (a `[1]`, which broadcasts).
    Reduce(ReduceOp),
    /// `1 / sqrt(x)`.
    Rsqrt,
    /// `min(max(x, lo), hi)`.
    Clip,
    /// `clip(0.2 * x + 0.5, 0, 1)`, as Keras 2 (and its original GRU) define it.
    HardSigmoid,
    /// `clip(x, -1, 1)`.
    HardTanh,
    /// `x / (1 + abs(x))`.
    Softsign,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `max(x, 0) + slope * min(x, 0)`.
    LeakyRelu,
    /// `max(x, 0) + exp(min(x, 0)) - 1`.
    Elu,
    /// `(v - mean(v)) * rsqrt(mean((v - mean(v))^2) + eps) * gain + shift`:
    /// layer normalisation over the vector's units (Ba et al. 2016), as
    /// PyTorch's `nn.LayerNorm` computes it.
    LayerNorm,
}

/// One function of the language.
#[derive(Clone, Copy, Debug)]
pub struct FunctionInfo {
    pub name: &'static str,
    pub function: Function,
    /// The arguments' names, for messages (`clip(x, lo, hi)`).
    pub params: &'static [&'static str],
}

impl Function {
    /// Whether the first argument must be a vector (it is reduced).
    pub fn reduces(self) -> bool {
        matches!(self, Function::Reduce(_) | Function::LayerNorm)
    }
}

impl FunctionInfo {
    /// How it is called: `clip(x, lo, hi)`.
    pub fn signature(&self) -> String {
        format!("{}({})", self.name, self.params.join(", "))
    }
}

const fn f(
    name: &'static str,
    function: Function,
    params: &'static [&'static str],
) -> FunctionInfo {
    FunctionInfo {
        name,
        function,
        params,
    }
}

const X: &[&str] = &["x"];

/// Every function, in the order the documentation lists them.
pub const FUNCTIONS: &[FunctionInfo] = &[
    f("sigmoid", Function::Unary(UnaryOp::Sigmoid), X),
    f("tanh", Function::Unary(UnaryOp::Tanh), X),
    f("relu", Function::Unary(UnaryOp::Relu), X),
    f("exp", Function::Unary(UnaryOp::Exp), X),
    f("log", Function::Unary(UnaryOp::Log), X),
    f("abs", Function::Unary(UnaryOp::Abs), X),
    f("sqrt", Function::Unary(UnaryOp::Sqrt), X),
    f("rsqrt", Function::Rsqrt, X),
    f("softplus", Function::Unary(UnaryOp::Softplus), X),
    f("softsign", Function::Softsign, X),
    f("hard_sigmoid", Function::HardSigmoid, X),
    f("hard_tanh", Function::HardTanh, X),
    f("relu6", Function::Relu6, X),
    f("leaky_relu", Function::LeakyRelu, &["x", "slope"]),
    f("elu", Function::Elu, X),
    f("min", Function::Binary(BinaryOp::Min), &["a", "b"]),
    f("max", Function::Binary(BinaryOp::Max), &["a", "b"]),
    f("clip", Function::Clip, &["x", "lo", "hi"]),
    f("sum", Function::Reduce(ReduceOp::Sum), &["v"]),
    f("mean", Function::Reduce(ReduceOp::Mean), &["v"]),
    f(
        "layernorm",
        Function::LayerNorm,
        &["v", "gain", "shift", "eps"],
    ),
];

/// The function called `name`, if the language has one.
pub fn lookup(name: &str) -> Option<&'static FunctionInfo> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// The functions' names, for messages.
pub fn names() -> String {
    let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unary_operation_but_negation_and_step_is_callable_and_names_are_unique() {
        for op in UnaryOp::ALL {
            let callable = FUNCTIONS
                .iter()
                .any(|f| f.function == Function::Unary(op) && f.name == op.name());
            // `-x` is an operator; `step` exists for backward cells.
            let internal = matches!(op, UnaryOp::Neg | UnaryOp::Step);
            assert_eq!(callable, !internal, "{}", op.name());
        }
        for (i, a) in FUNCTIONS.iter().enumerate() {
            assert!(
                FUNCTIONS[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
    }
}
