//! The verifier: checks that a [`Cell`] is well formed, so that every later stage
//! may assume it. Operands point backwards (checked first), each op's operand and
//! result types agree, products read matrix parameters of the right shapes,
//! regions refer only to their own arguments and earlier body values, and every
//! state and output has a value of its declared length.

use std::fmt;

use super::*;

#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError {
    /// The offending instruction, by index, when there is one.
    pub inst: Option<usize>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inst {
            Some(i) => write!(f, "instruction {i}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for VerifyError {}

pub fn verify(cell: &Cell) -> Result<(), VerifyError> {
    check_tables(cell)?;
    for (i, inst) in cell.insts.iter().enumerate() {
        check_inst(cell, i, inst).map_err(|message| VerifyError {
            inst: Some(i),
            message,
        })?;
    }
    check_roots(cell).map_err(|message| VerifyError {
        inst: None,
        message,
    })
}

fn check_tables(cell: &Cell) -> Result<(), VerifyError> {
    let err = |inst: Option<usize>, message: String| Err(VerifyError { inst, message });
    // Circulant blocks divide their matrix.
    for p in &cell.params {
        if let Structure::Circulant(k) = p.structure {
            let fits = matches!(p.ty, Type::Matrix(r, c) if k > 0 && r % k == 0 && c % k == 0);
            if !fits {
                return err(
                    None,
                    format!(
                        "parameter `{}` ({}) cannot have circulant blocks of {k}",
                        p.name, p.ty
                    ),
                );
            }
        }
    }
    // Weights, inputs and outputs are found by name: one name, one thing.
    for (what, names) in [
        (
            "parameter",
            cell.params.iter().map(|p| &p.name).collect::<Vec<_>>(),
        ),
        (
            "port",
            cell.inputs
                .iter()
                .chain(&cell.states)
                .chain(&cell.outputs)
                .map(|p| &p.name)
                .collect(),
        ),
    ] {
        let mut sorted = names.clone();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return err(None, format!("two {what}s are named `{}`", w[0]));
        }
    }
    let mut seen = vec![false; cell.values.len()];
    for (i, inst) in cell.insts.iter().enumerate() {
        for (r, v) in inst.results.iter().enumerate() {
            let Some(data) = cell.values.get(v.index()) else {
                return err(
                    Some(i),
                    format!("result v{} is not in the value table", v.0),
                );
            };
            if data.inst.index() != i || data.result != r {
                return err(
                    Some(i),
                    format!("value v{} does not point back to its instruction", v.0),
                );
            }
            if std::mem::replace(&mut seen[v.index()], true) {
                return err(Some(i), format!("value v{} is defined twice", v.0));
            }
        }
        // Operands point backwards.
        for v in inst.op.operands() {
            let Some(data) = cell.values.get(v.index()) else {
                return err(Some(i), format!("operand v{} does not exist", v.0));
            };
            if data.inst.index() >= i {
                return err(
                    Some(i),
                    format!(
                        "operand v{} is defined by a later instruction ({})",
                        v.0, data.inst.0
                    ),
                );
            }
        }
    }
    if let Some(v) = seen.iter().position(|s| !s) {
        return err(None, format!("value v{v} has no defining instruction"));
    }
    Ok(())
}

fn is_param(cell: &Cell, v: Value) -> bool {
    matches!(cell.op_of(v), Op::Param(_))
}

/// The type of an element-wise combination ([`Type::broadcast`]).
fn combine(a: Type, b: Type) -> Result<Type, String> {
    Type::broadcast(a, b).ok_or_else(|| format!("element-wise operands of types {a} and {b}"))
}

fn check_inst(cell: &Cell, i: usize, inst: &InstData) -> Result<(), String> {
    let result_tys: Vec<Type> = inst.results.iter().map(|&v| cell.ty(v)).collect();
    let one = |want: Type| -> Result<(), String> {
        if result_tys.as_slice() == [want] {
            Ok(())
        } else {
            Err(format!("result types {result_tys:?}, expected [{want}]"))
        }
    };
    let _ = i;
    match &inst.op {
        Op::Input(k) => {
            let p = cell
                .inputs
                .get(k.index())
                .ok_or(format!("input {k} does not exist"))?;
            one(Type::Vector(p.len))
        }
        Op::State(k) => {
            let p = cell
                .states
                .get(k.index())
                .ok_or(format!("state {k} does not exist"))?;
            one(Type::Vector(p.len))
        }
        Op::Param(k) => {
            let p = cell
                .params
                .get(k.index())
                .ok_or(format!("param {k} does not exist"))?;
            if matches!(p.ty, Type::Scalar) {
                return Err(format!("param `{}` is a scalar", p.name));
            }
            one(p.ty)
        }
        Op::Const(_) => one(Type::Scalar),
        Op::Unary(_, a) => {
            let t = cell.ty(*a);
            if matches!(t, Type::Matrix(..)) {
                return Err("element-wise op on a matrix".into());
            }
            one(t)
        }
        Op::Binary(_, a, b) => one(combine(cell.ty(*a), cell.ty(*b))?),
        Op::Reduce(_, a) => match cell.ty(*a) {
            Type::Vector(_) => one(Type::Vector(1)),
            t => Err(format!("reduction of a {t}")),
        },
        Op::MatVec { weight, input } => {
            if !is_param(cell, *weight) {
                return Err("matvec weight is not a parameter".into());
            }
            let Type::Matrix(r, c) = cell.ty(*weight) else {
                return Err("matvec weight is not a matrix".into());
            };
            if cell.ty(*input) != Type::Vector(c) {
                return Err(format!(
                    "matvec of a [{r}, {c}] matrix with a {} operand",
                    cell.ty(*input)
                ));
            }
            one(Type::Vector(r))
        }
        Op::MatVecT { weight, input } => {
            if !is_param(cell, *weight) {
                return Err("matvec_t weight is not a parameter".into());
            }
            let Type::Matrix(r, c) = cell.ty(*weight) else {
                return Err("matvec_t weight is not a matrix".into());
            };
            if cell.ty(*input) != Type::Vector(r) {
                return Err(format!(
                    "matvec_t of a [{r}, {c}] matrix with a {} operand",
                    cell.ty(*input)
                ));
            }
            one(Type::Vector(c))
        }
        Op::Product(p) => check_product(cell, p, &result_tys),
        Op::Fused(r) => check_region(cell, r, &result_tys),
    }
}

fn check_product(cell: &Cell, p: &Product, result_tys: &[Type]) -> Result<(), String> {
    if p.inputs.is_empty() || p.rows.is_empty() {
        return Err("product without inputs or rows".into());
    }
    if result_tys.len() != p.rows.len() {
        return Err(format!(
            "product has {} row blocks but {} results",
            p.rows.len(),
            result_tys.len()
        ));
    }
    let mut lens = Vec::new();
    for &x in &p.inputs {
        match cell.ty(x) {
            Type::Vector(n) => lens.push(n),
            t => return Err(format!("product input of type {t}")),
        }
    }
    for (r, row) in p.rows.iter().enumerate() {
        let Type::Vector(n) = result_tys[r] else {
            return Err(format!("row block {r} has a non-vector result"));
        };
        if row.weights.len() != p.inputs.len() {
            return Err(format!(
                "row block {r} has {} weights for {} inputs",
                row.weights.len(),
                p.inputs.len()
            ));
        }
        if row.weights.iter().all(Option::is_none) {
            return Err(format!("row block {r} has no weight"));
        }
        for (j, w) in row.weights.iter().enumerate() {
            let Some(w) = w else { continue };
            if !is_param(cell, *w) {
                return Err(format!("row block {r}: weight {j} is not a parameter"));
            }
            if cell.ty(*w) != Type::Matrix(n, lens[j]) {
                return Err(format!(
                    "row block {r}: weight {j} is {}, expected [{n}, {}]",
                    cell.ty(*w),
                    lens[j]
                ));
            }
        }
        for b in &row.biases {
            if !is_param(cell, *b) || cell.ty(*b) != Type::Vector(n) {
                return Err(format!("row block {r}: bias is not a [{n}] parameter"));
            }
        }
    }
    Ok(())
}

fn check_region(cell: &Cell, r: &Region, result_tys: &[Type]) -> Result<(), String> {
    for &a in &r.args {
        // A vector of length 1 broadcasts over the region's lanes.
        if cell.ty(a) != Type::Vector(r.len) && cell.ty(a) != Type::Vector(1) {
            return Err(format!(
                "region over [{}] takes an argument of type {}",
                r.len,
                cell.ty(a)
            ));
        }
    }
    let operand_ok = |o: Operand, here: usize| match o {
        Operand::Arg(a) => (a as usize) < r.args.len(),
        Operand::Inst(e) => (e as usize) < here,
    };
    for (k, ri) in r.body.iter().enumerate() {
        let arity = match ri.op {
            EwOp::Const(_) => 0,
            EwOp::Unary(_) => 1,
            EwOp::Binary(_) => 2,
        };
        if ri.args.len() != arity {
            return Err(format!(
                "region value e{k} has {} operands, expected {arity}",
                ri.args.len()
            ));
        }
        if let Some(o) = ri.args.iter().find(|&&o| !operand_ok(o, k)) {
            return Err(format!(
                "region value e{k} reads {o:?}, which is not defined before it"
            ));
        }
    }
    if r.yields.is_empty() {
        return Err("region yields nothing".into());
    }
    if let Some(o) = r.yields.iter().find(|&&o| !operand_ok(o, r.body.len())) {
        return Err(format!("region yields {o:?}, which does not exist"));
    }
    // A yielded body value must be a vector: a constant alone is a scalar.
    for y in &r.yields {
        if let Operand::Inst(e) = y {
            if is_scalar_in_region(r, *e as usize) {
                return Err(format!("region yields e{e}, a scalar"));
            }
        }
    }
    if result_tys.len() != r.yields.len() || result_tys.iter().any(|t| *t != Type::Vector(r.len)) {
        return Err(format!(
            "region over [{}] with {} yields has results {result_tys:?}",
            r.len,
            r.yields.len()
        ));
    }
    Ok(())
}

/// Whether body value `e` depends on no argument (a constant expression).
pub(crate) fn is_scalar_in_region(r: &Region, e: usize) -> bool {
    let mut scalar = vec![false; r.body.len()];
    for (k, ri) in r.body.iter().enumerate().take(e + 1) {
        scalar[k] = ri.args.iter().all(|o| match o {
            Operand::Arg(_) => false,
            Operand::Inst(j) => scalar.get(*j as usize).copied().unwrap_or(false),
        });
    }
    scalar.get(e).copied().unwrap_or(false)
}

fn check_roots(cell: &Cell) -> Result<(), String> {
    if cell.state_updates.len() != cell.states.len() {
        return Err(format!(
            "{} states but {} updates",
            cell.states.len(),
            cell.state_updates.len()
        ));
    }
    if cell.output_values.len() != cell.outputs.len() {
        return Err(format!(
            "{} outputs but {} values",
            cell.outputs.len(),
            cell.output_values.len()
        ));
    }
    for (ports, values, what) in [
        (&cell.states, &cell.state_updates, "state"),
        (&cell.outputs, &cell.output_values, "output"),
    ] {
        for (p, v) in ports.iter().zip(values) {
            if v.index() >= cell.values.len() {
                return Err(format!("{what} `{}` has an undefined value", p.name));
            }
            if cell.ty(*v) != Type::Vector(p.len) {
                return Err(format!(
                    "{what} `{}` is [{}] but its value is {}",
                    p.name,
                    p.len,
                    cell.ty(*v)
                ));
            }
        }
    }
    Ok(())
}
