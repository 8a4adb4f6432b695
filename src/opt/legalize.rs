//! Legalization: the last rewrite before code generation, after which the IR
//! holds only what the code generator plans (inputs, states, parameters,
//! constants, products and element-wise regions).

use crate::ir::{self, Cell, Op, Operand, RegionInst, Type, Value};

/// Rewrites the IR so that codegen sees only products and regions: each loose
/// `matvec` becomes a one-block product and each loose element-wise instruction
/// a one-instruction region. Used for the unfused baseline (and as a safety net
/// after a partial pipeline).
pub fn legalize(cell: &mut Cell) {
    use std::collections::HashMap;
    let mut replaced: HashMap<Value, Value> = HashMap::new();
    for i in 0..cell.insts.len() {
        let op = cell.insts[i].op.clone();
        let old = cell.insts[i].results[0];
        let ty = cell.ty(old);
        let new = match op {
            Op::MatVec { weight, input } => cell.push1(
                Op::Product(ir::Product {
                    inputs: vec![input],
                    rows: vec![ir::RowBlock {
                        weights: vec![Some(weight)],
                        biases: Vec::new(),
                    }],
                }),
                ty,
            ),
            Op::Unary(u, a) if ty != Type::Scalar => {
                let (args, body) = region_operands(cell, &[a]);
                let mut body = body;
                let n = body.len() as u32;
                body.push(RegionInst {
                    op: ir::EwOp::Unary(u),
                    args: vec![args.1[0]],
                    name: cell.name(old).map(str::to_string),
                });
                let Type::Vector(len) = ty else { continue };
                cell.push1(
                    Op::Fused(ir::Region {
                        len,
                        args: args.0,
                        body,
                        yields: vec![Operand::Inst(n)],
                    }),
                    ty,
                )
            }
            Op::Binary(b, x, y) if ty != Type::Scalar => {
                let (args, body) = region_operands(cell, &[x, y]);
                let mut body = body;
                let n = body.len() as u32;
                body.push(RegionInst {
                    op: ir::EwOp::Binary(b),
                    args: args.1.clone(),
                    name: cell.name(old).map(str::to_string),
                });
                let Type::Vector(len) = ty else { continue };
                cell.push1(
                    Op::Fused(ir::Region {
                        len,
                        args: args.0,
                        body,
                        yields: vec![Operand::Inst(n)],
                    }),
                    ty,
                )
            }
            _ => continue,
        };
        let data = cell.values[old.index()].clone();
        cell.values[new.index()].name = data.name;
        cell.values[new.index()].span = data.span;
        replaced.insert(old, new);
    }
    cell.replace_all(&replaced);
    cell.compact();
}

/// Region arguments for operands: vectors become arguments, scalar constants
/// become body constants. Returns ((args, operands), body prefix).
fn region_operands(cell: &Cell, ops: &[Value]) -> ((Vec<Value>, Vec<Operand>), Vec<RegionInst>) {
    let mut args = Vec::new();
    let mut operands = Vec::new();
    let mut body = Vec::new();
    for &v in ops {
        match cell.op_of(v) {
            Op::Const(c) if cell.ty(v) == Type::Scalar => {
                operands.push(Operand::Inst(body.len() as u32));
                body.push(RegionInst {
                    op: ir::EwOp::Const(*c),
                    args: vec![],
                    name: None,
                });
            }
            _ => {
                operands.push(Operand::Arg(args.len() as u32));
                args.push(v);
            }
        }
    }
    ((args, operands), body)
}
