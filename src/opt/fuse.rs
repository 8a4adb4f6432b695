//! `fuse`: epilogue fusion.
//!
//! The element-wise work after the products (activations, gate arithmetic, peephole
//! terms, the state update) becomes one [`Region`] per stage and vector length: a
//! single pass that codegen runs over each block of lanes while the products'
//! results are still in registers, instead of one pass over memory per operation.
//!
//! **Legality.** A region runs in a *slot*: after the products of one stage and
//! before those of the next. An element-wise value may run in any slot between the
//! stage of its latest operand ([`stages`]) and the slot before the first
//! product that reads it; [`place`] picks, per vector length, the fewest slots that
//! serve every value, and runs each value as late as it may (so a peephole term
//! `w_ic * c`, ready before any product, joins its gate's region instead of
//! making a pass of its own). Operands are never placed after their readers, and
//! no product reads a value placed after it, so the schedule has no cycle. Within
//! a region the instructions keep their order, so every value is computed from the
//! same operands as before. Scalar constants are copied into each region that
//! reads them. A region yields every value read outside it.

use std::collections::{BTreeMap, HashMap};

use super::{Ctx, PassResult, RemarkKind};
use crate::ir::analysis::stages;
use crate::ir::{Cell, EwOp, Inst, Op, Operand, Region, RegionInst, Type, Value};

const PASS: &str = "fuse";

pub fn fuse_epilogue(cell: &mut Cell, ctx: &mut Ctx<'_>) -> PassResult {
    let slot = place(cell);
    let users = cell.users();
    // (slot, length) -> instructions, in schedule order. A `[1]` value that
    // only longer element-wise values read is not a member of any region: it
    // is copied into each region that reads it (see `operand`).
    let copied = copied_everywhere(cell, &users);
    let mut groups: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (i, inst) in cell.insts.iter().enumerate() {
        if !matches!(inst.op, Op::Unary(..) | Op::Binary(..)) {
            continue;
        }
        let v = inst.results[0];
        if copied[v.index()] {
            continue;
        }
        if let Type::Vector(n) = cell.ty(v) {
            groups.entry((slot[v.index()], n)).or_default().push(i);
        }
    }
    if groups.is_empty() {
        return Ok(false);
    }
    let mut replaced: HashMap<Value, Value> = HashMap::new();
    for ((s, len), members) in groups {
        let (mut region, body_of) = region_of(cell, len, &members)?;
        let yielded = yields(cell, &users, &copied, &members, &body_of, &mut region);
        if yielded.is_empty() {
            continue;
        }
        let names: Vec<String> = yielded
            .iter()
            .map(|&v| format!("`{}`", cell.describe(v, ctx.source)))
            .collect();
        let count = region
            .body
            .iter()
            .filter(|b| !matches!(b.op, EwOp::Const(_)))
            .count();
        let new = cell.push(Op::Fused(region), &vec![Type::Vector(len); yielded.len()]);
        for (old, new) in yielded.iter().zip(&new) {
            let data = cell.values[old.index()].clone();
            cell.values[new.index()].name = data.name;
            cell.values[new.index()].span = data.span;
            replaced.insert(*old, *new);
        }
        let span = yielded.iter().find_map(|v| cell.values[v.index()].span);
        let params: Vec<String> = cell.insts[cell.insts.len() - 1]
            .op
            .operands()
            .into_iter()
            .filter(|v| matches!(cell.op_of(*v), Op::Param(_)))
            .map(|v| format!("`{}`", cell.describe(v, ctx.source)))
            .collect();
        let r = ctx.remark(
            PASS,
            RemarkKind::Applied,
            span,
            format!(
                "fused {count} element-wise operation{} over [{len}] after stage {s} into one pass, yielding {}",
                if count == 1 { "" } else { "s" },
                names.join(", ")
            ),
        );
        if !params.is_empty() {
            r.notes.push(format!(
                "it reads the parameter vector{} {} lane by lane (peephole or scale terms)",
                if params.len() > 1 { "s" } else { "" },
                params.join(", ")
            ));
        }
    }
    remark_reductions(cell, ctx);
    cell.replace_all(&replaced);
    cell.compact();
    Ok(true)
}

/// The region of vector length `len` whose body is the instructions
/// `members` (in order), with the body index of each member's result.
fn region_of(
    cell: &Cell,
    len: usize,
    members: &[usize],
) -> Result<(Region, HashMap<Value, u32>), String> {
    let mut region = Region {
        len,
        args: Vec::new(),
        body: Vec::new(),
        yields: Vec::new(),
    };
    // Body index of each member, and of each copied constant.
    let mut body_of: HashMap<Value, u32> = HashMap::new();
    let mut arg_of: HashMap<Value, u32> = HashMap::new();
    for &i in members {
        let inst = &cell.insts[i];
        let (op, operands) = match &inst.op {
            Op::Unary(o, a) => (EwOp::Unary(*o), vec![*a]),
            Op::Binary(o, a, b) => (EwOp::Binary(*o), vec![*a, *b]),
            _ => continue,
        };
        let mut args = Vec::with_capacity(operands.len());
        for v in operands {
            args.push(operand(cell, &mut region, &mut body_of, &mut arg_of, v)?);
        }
        let result = inst.results[0];
        body_of.insert(result, region.body.len() as u32);
        region.body.push(RegionInst {
            op,
            args,
            name: cell.name(result).map(str::to_string),
        });
    }
    Ok((region, body_of))
}

/// Adds to the region the yields of what is read outside it (but not by
/// the longer regions that copy a `[1]` value's expression); returns the
/// values they replace.
fn yields(
    cell: &Cell,
    users: &[Vec<Inst>],
    copied: &[bool],
    members: &[usize],
    body_of: &HashMap<Value, u32>,
    region: &mut Region,
) -> Vec<Value> {
    let member_of: HashMap<Value, usize> = members
        .iter()
        .enumerate()
        .map(|(k, &i)| (cell.insts[i].results[0], k))
        .collect();
    let mut yielded = Vec::new();
    for &i in members {
        let v = cell.insts[i].results[0];
        let outside = cell.is_root(v)
            || users[v.index()].iter().any(|u| {
                let r = cell.insts[u.index()].results.first();
                let inside = r.is_some_and(|r| member_of.contains_key(r) || copied[r.index()]);
                !(inside || region.len == 1 && copies_broadcast(cell, *u))
            });
        if outside {
            region.yields.push(Operand::Inst(body_of[&v]));
            yielded.push(v);
        }
    }
    yielded
}

/// Says where a reduction splits the element-wise work.
fn remark_reductions(cell: &Cell, ctx: &mut Ctx<'_>) {
    for inst in &cell.insts {
        let Op::Reduce(op, a) = inst.op else { continue };
        let v = inst.results[0];
        let span = cell.values[v.index()].span;
        ctx.remark(
            PASS,
            RemarkKind::Missed,
            span,
            format!(
                "`{}` of `{}`: the element-wise work before it and after it run as separate passes",
                op.name(),
                cell.describe(a, ctx.source)
            ),
        )
        .notes
        .push(format!(
            "`{}` needs every unit of its vector of a batch row before the work that reads it can start; that work reads its result, one number per row, in its own pass",
            op.name()
        ));
    }
}

/// Whether instruction `u` is element-wise over vectors longer than 1: it
/// copies the expression of any `[1]` element-wise value it reads.
fn copies_broadcast(cell: &Cell, u: Inst) -> bool {
    let inst = &cell.insts[u.index()];
    matches!(inst.op, Op::Unary(..) | Op::Binary(..))
        && matches!(cell.ty(inst.results[0]), Type::Vector(n) if n > 1)
}

/// For each value, whether it is a `[1]` element-wise value that only
/// element-wise values read, longer ones or such values themselves: it needs
/// no region of its own, since every longer region that reads it copies its
/// expression.
fn copied_everywhere(cell: &Cell, users: &[Vec<Inst>]) -> Vec<bool> {
    let mut copied = vec![false; cell.values.len()];
    for inst in cell.insts.iter().rev() {
        let v = inst.results[0];
        if cell.ty(v) != Type::Vector(1)
            || !matches!(inst.op, Op::Unary(..) | Op::Binary(..))
            || cell.is_root(v)
        {
            continue;
        }
        copied[v.index()] = users[v.index()].iter().all(|&u| {
            let r = cell.insts[u.index()].results[0];
            copies_broadcast(cell, u) || copied[r.index()]
        });
    }
    copied
}

/// Chooses the slot (the stage after whose product it runs) of every element-wise
/// vector value, so that there are as few regions as possible and values are
/// computed as late as they may be.
///
/// A value may run no earlier than its operands ([`stages`], "as soon as
/// possible") and no later than its readers: a product of stage `L` needs it by
/// slot `L - 1`; state updates and outputs, by the last slot ("as late as
/// possible"). Per vector length, the fewest slots that meet every value's
/// interval are chosen greedily (the classic interval stabbing: by right end),
/// and each value takes the latest chosen slot inside its interval. Both bounds
/// grow along the dataflow, so operands never land after their readers.
fn place(cell: &Cell) -> Vec<usize> {
    let asap = stages(cell);
    let users = cell.users();
    let last = asap.iter().copied().max().unwrap_or(0);
    let elementwise = |op: &Op| matches!(op, Op::Unary(..) | Op::Binary(..));
    let mut alap = asap.clone();
    for inst in cell.insts.iter().rev() {
        if !elementwise(&inst.op) {
            continue;
        }
        let v = inst.results[0];
        let mut latest = if cell.is_root(v) { last } else { usize::MAX };
        for u in &users[v.index()] {
            let user = &cell.insts[u.index()];
            let s = asap[user.results[0].index()];
            latest = latest.min(match user.op {
                Op::Product(_) | Op::MatVec { .. } | Op::MatVecT { .. } | Op::Reduce(..) => {
                    s.saturating_sub(1)
                }
                _ if elementwise(&user.op) => alap[user.results[0].index()],
                _ => s,
            });
        }
        alap[v.index()] = if latest == usize::MAX {
            asap[v.index()]
        } else {
            latest.max(asap[v.index()])
        };
    }
    // Interval stabbing per length.
    let mut by_len: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for inst in &cell.insts {
        if !elementwise(&inst.op) {
            continue;
        }
        let v = inst.results[0];
        if let Type::Vector(n) = cell.ty(v) {
            by_len
                .entry(n)
                .or_default()
                .push((asap[v.index()], alap[v.index()]));
        }
    }
    let mut chosen: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (n, mut intervals) in by_len {
        intervals.sort_by_key(|&(lo, hi)| (hi, lo));
        let mut slots: Vec<usize> = Vec::new();
        for (lo, hi) in intervals {
            if !slots.iter().any(|&s| lo <= s && s <= hi) {
                slots.push(hi);
            }
        }
        slots.sort_unstable();
        chosen.insert(n, slots);
    }
    let mut slot = asap;
    for inst in &cell.insts {
        if !elementwise(&inst.op) {
            continue;
        }
        let v = inst.results[0];
        if let Type::Vector(n) = cell.ty(v) {
            let hi = alap[v.index()];
            if let Some(s) = chosen[&n].iter().rev().find(|&&s| s <= hi) {
                slot[v.index()] = *s;
            }
        }
    }
    slot
}

/// The region operand for `v`: a body value, a copied constant expression, or an
/// argument.
fn operand(
    cell: &Cell,
    region: &mut Region,
    body_of: &mut HashMap<Value, u32>,
    arg_of: &mut HashMap<Value, u32>,
    v: Value,
) -> Result<Operand, String> {
    if let Some(&b) = body_of.get(&v) {
        return Ok(Operand::Inst(b));
    }
    let broadcast = cell.ty(v) == Type::Vector(1)
        && region.len > 1
        && matches!(cell.op_of(v), Op::Unary(..) | Op::Binary(..));
    if cell.ty(v) == Type::Scalar || broadcast {
        // Scalars are constants (lowering and `simplify` fold them), and `[1]`
        // element-wise values are cheap (a lane each); copy the expression
        // into the region.
        let (op, operands) = match cell.op_of(v) {
            Op::Const(c) => (EwOp::Const(*c), vec![]),
            Op::Unary(o, a) => (EwOp::Unary(*o), vec![*a]),
            Op::Binary(o, a, b) => (EwOp::Binary(*o), vec![*a, *b]),
            other => {
                return Err(format!(
                    "a scalar or [1] operand of a region is computed by {other:?}, which \
                     a region cannot copy (lowering and `simplify` leave only constants \
                     and element-wise expressions)"
                ))
            }
        };
        let args = operands
            .into_iter()
            .map(|a| operand(cell, region, body_of, arg_of, a))
            .collect::<Result<_, _>>()?;
        let b = region.body.len() as u32;
        region.body.push(RegionInst {
            op,
            args,
            name: None,
        });
        body_of.insert(v, b);
        return Ok(Operand::Inst(b));
    }
    Ok(Operand::Arg(*arg_of.entry(v).or_insert_with(|| {
        region.args.push(v);
        region.args.len() as u32 - 1
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scalar operand that a region cannot copy (a scalar-typed parameter:
    /// the verifier refuses one, so only an IR that skipped it reaches here)
    /// is an internal error, never a NaN constant in the region.
    #[test]
    fn an_operand_a_region_cannot_copy_is_an_internal_error() {
        let text = "cell c\ndims H = 4\ninput x: [4]\nstate h: [4]\nparam t: scalar\n\n\
                    v0: [4] = input x\nv1: [4] = state h\nv2: scalar = param t\n\
                    v3: [4] = mul v0, v2\nv4: [4] = add v3, v1\nupdate h = v4\n";
        let mut cell = crate::ir::parse::parse(text).unwrap();
        let e = fuse_epilogue(&mut cell, &mut Ctx::default()).unwrap_err();
        assert!(e.contains("cannot copy"), "{e}");
    }
}
