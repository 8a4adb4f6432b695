//! Compiles a standalone element-wise region for the wide kernels
//! ([`crate::kernels::wide`]): its body in evaluation order, each value in a
//! register of scratch memory, registers reused once their value is dead.

use super::plan::{ArgSrc, Loc, RegionCode};
use crate::ir::{EwOp, Operand};
use crate::kernels::wide::{Fill, Inst, Kind, Program, Src};

/// Compiles a standalone region; `None` if it reads a product's
/// accumulators (a fused epilogue) or writes memory it also reads.
pub fn program(code: &RegionCode) -> Option<Program> {
    let mems: Vec<Loc> = code
        .args
        .iter()
        .map(|a| match a {
            ArgSrc::Mem(l) => Some(*l),
            ArgSrc::Block(_) => None,
        })
        .collect::<Option<_>>()?;
    // A yield into memory an argument reads would be seen by the
    // argument's later blocks: keep such (unplanned) regions generated.
    if code
        .yields
        .iter()
        .any(|(_, y)| mems.iter().any(|m| m.may_overlap(y)))
    {
        return None;
    }
    let order = evaluation_order(code);
    // Last reader of each value (position in `order`); yields read at the end.
    let end = order.len();
    let mut last = vec![0usize; code.body.len()];
    for (pos, &e) in order.iter().enumerate() {
        for o in &code.body[e].args {
            if let Operand::Inst(d) = *o {
                last[d as usize] = pos;
            }
        }
    }
    for (y, _) in &code.yields {
        if let Operand::Inst(d) = *y {
            last[d as usize] = end;
        }
    }
    let broadcast = |l: &Loc| l.len == 1 && code.len > 1;
    let mut p = Program {
        tiles: code.tiles,
        args: Vec::new(),
        fills: Vec::new(),
        insts: Vec::new(),
        regs: 0,
        yields: Vec::new(),
    };
    let mut free: Vec<u32> = Vec::new();
    let alloc = |p: &mut Program, free: &mut Vec<u32>| {
        free.pop().unwrap_or_else(|| {
            p.regs += 1;
            (p.regs - 1) as u32
        })
    };
    // Arguments: vectors read in place; broadcast ones and constants get
    // a register for the whole run.
    let mut arg_src = Vec::with_capacity(mems.len());
    for m in &mems {
        if broadcast(m) {
            let r = alloc(&mut p, &mut free);
            p.fills.push((r, Fill::Row(*m)));
            arg_src.push(Src::Reg(r));
        } else {
            p.args.push(*m);
            arg_src.push(Src::Arg((p.args.len() - 1) as u32));
        }
    }
    let mut val: Vec<Option<Src>> = vec![None; code.body.len()];
    // Constants: registers of their own, filled once before the body
    // runs (so none may be a register an instruction used before).
    for &e in &order {
        if let EwOp::Const(c) = code.body[e].op {
            let r = alloc(&mut p, &mut free);
            p.fills.push((r, Fill::Const(c as f32)));
            val[e] = Some(Src::Reg(r));
            last[e] = end;
        }
    }
    let src = |o: Operand, val: &[Option<Src>]| match o {
        Operand::Arg(a) => arg_src[a as usize],
        Operand::Inst(d) => val[d as usize]
            .unwrap_or_else(|| unreachable!("operands are evaluated before their readers")),
    };
    for (pos, &e) in order.iter().enumerate() {
        let inst = &code.body[e];
        let kind = match inst.op {
            EwOp::Const(_) => continue,
            EwOp::Unary(op) => Kind::Unary(op),
            EwOp::Binary(op) => Kind::Binary(op),
        };
        let a = src(inst.args[0], &val);
        let b = inst.args.get(1).map_or(a, |o| src(*o, &val));
        // Operands whose last reader this is free their registers, which
        // the result may take (lanes are read before they are written).
        for o in &inst.args {
            if let Operand::Inst(d) = *o {
                if last[d as usize] == pos {
                    if let Some(Src::Reg(r)) = val[d as usize] {
                        if !free.contains(&r) {
                            free.push(r);
                        }
                    }
                }
            }
        }
        let dst = alloc(&mut p, &mut free);
        p.insts.push(Inst { kind, a, b, dst });
        val[e] = Some(Src::Reg(dst));
    }
    for (y, loc) in &code.yields {
        p.yields.push((src(*y, &val), *loc));
    }
    Some(p)
}

/// The body in depth-first post-order from the yields: each value right
/// before its first reader, only values some yield needs (the order the
/// generated code evaluates a region in).
fn evaluation_order(code: &RegionCode) -> Vec<usize> {
    let mut done = vec![false; code.body.len()];
    let mut order = Vec::new();
    for (y, _) in &code.yields {
        let Operand::Inst(root) = *y else { continue };
        let mut stack = vec![(root as usize, false)];
        while let Some((e, expanded)) = stack.pop() {
            if done[e] {
                continue;
            }
            if expanded {
                done[e] = true;
                order.push(e);
                continue;
            }
            stack.push((e, true));
            for o in code.body[e].args.iter().rev() {
                if let Operand::Inst(d) = *o {
                    if !done[d as usize] {
                        stack.push((d as usize, false));
                    }
                }
            }
        }
    }
    order
}
