//! Analyses of the IR that passes and the code generator share.

use super::{Cell, Op};

/// For every value, the number of products and reductions on the longest
/// dependency path that ends at it: inputs, states and parameters are at stage
/// 0; a product or a reduction is one stage after the latest of its inputs;
/// element-wise work is at the stage of its latest operand. The products and
/// reductions of one stage are independent of each other, and so are the
/// element-wise values of one stage and one length (a value of length 1 may
/// be read by values of other lengths of its stage: it broadcasts).
pub fn stages(cell: &Cell) -> Vec<usize> {
    let mut stage = vec![0usize; cell.values.len()];
    for inst in &cell.insts {
        let s = match &inst.op {
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Const(_) => 0,
            Op::MatVec { input, .. } | Op::MatVecT { input, .. } | Op::Reduce(_, input) => {
                stage[input.index()] + 1
            }
            Op::Product(p) => 1 + p.inputs.iter().map(|v| stage[v.index()]).max().unwrap_or(0),
            op => op
                .operands()
                .iter()
                .map(|v| stage[v.index()])
                .max()
                .unwrap_or(0),
        };
        for v in &inst.results {
            stage[v.index()] = s;
        }
    }
    stage
}
