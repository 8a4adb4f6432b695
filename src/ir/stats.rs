//! Counting what one step of a cell costs, before and after optimization: matrix
//! products, floating-point operations, bytes of parameters read, and passes of
//! element-wise work (`cellc compile --emit stats`).
//!
//! Conventions (batch 1, float32): a matrix-vector product of `[r, c]` is `2rc`
//! flops; every element-wise operation (an activation included) is 1 flop per
//! element; a bias add is 1 flop per element. Bytes count each parameter element
//! read once per instruction that reads it; a product's biases are summed when the
//! weights are packed, so each row block reads one bias vector. A block-circulant
//! matrix multiplied through its spectra (FFT products) reads `rc/k` floats and
//! costs `4rc/k` flops, plus `2k` flops per value of each input transformed and
//! of each row block transformed back; one on its dense expansion counts as
//! dense.

use serde_json::json;

use super::{Cell, EwOp, Op, Type};

#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Matrix products per step (`matvec`s and `product`s).
    pub products: usize,
    pub flops_per_step: u64,
    pub weight_bytes_per_step: u64,
    /// Passes of element-wise work: each loose element-wise instruction, or each
    /// fused region.
    pub elementwise_passes: usize,
    pub product_shapes: Vec<ProductShape>,
}

/// One product after fusion: its stacked shape and its block structure.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductShape {
    pub rows: usize,
    pub cols: usize,
    pub row_blocks: usize,
    /// Non-zero `[rows, cols]` blocks, i.e. weight matrices read.
    pub weight_blocks: usize,
    pub inputs: Vec<String>,
}

/// Flops and bytes of a product by an `[r, c]` matrix alone: `2rc` and
/// `4rc`, or through spectra ([`super::Structure::spectral_k`]) the
/// multiply-accumulate's `4rc/k` flops over `rc/k` floats and the
/// transforms of its input and output (`2k` flops a value each).
fn matrix_cost(cell: &Cell, w: super::Value, r: usize, c: usize) -> (u64, u64) {
    match spectral_block(cell, w, r, c) {
        Some(k) => (
            (4 * r * c / k + 2 * k * (r + c)) as u64,
            4 * (r * c / k) as u64,
        ),
        None => (2 * (r * c) as u64, 4 * (r * c) as u64),
    }
}

/// The block size an `[r, c]` matrix parameter's products run through
/// spectra with, if it does.
fn spectral_block(cell: &Cell, w: super::Value, r: usize, c: usize) -> Option<usize> {
    match cell.op_of(w) {
        Op::Param(p) => cell.params[p.index()].structure.spectral_k(r, c),
        _ => None,
    }
}

fn param_vector_len(cell: &Cell, v: super::Value) -> u64 {
    match (cell.op_of(v), cell.ty(v)) {
        (Op::Param(_), Type::Vector(n)) => n as u64,
        _ => 0,
    }
}

pub fn stats(cell: &Cell) -> Stats {
    let mut s = Stats {
        products: 0,
        flops_per_step: 0,
        weight_bytes_per_step: 0,
        elementwise_passes: 0,
        product_shapes: Vec::new(),
    };
    for inst in &cell.insts {
        match &inst.op {
            Op::Input(_) | Op::State(_) | Op::Param(_) | Op::Const(_) => {}
            Op::Unary(_, a) => {
                s.elementwise_passes += 1;
                s.flops_per_step += cell.ty(*a).vector_len().unwrap_or(0) as u64;
                s.weight_bytes_per_step += 4 * param_vector_len(cell, *a);
            }
            Op::Reduce(_, a) => {
                s.elementwise_passes += 1;
                s.flops_per_step += cell.ty(*a).vector_len().unwrap_or(0) as u64;
                s.weight_bytes_per_step += 4 * param_vector_len(cell, *a);
            }
            Op::Binary(_, a, b) => {
                s.elementwise_passes += 1;
                let n = cell.ty(inst.results[0]).vector_len().unwrap_or(0) as u64;
                s.flops_per_step += n;
                s.weight_bytes_per_step +=
                    4 * (param_vector_len(cell, *a) + param_vector_len(cell, *b));
            }
            Op::MatVec { weight, .. } | Op::MatVecT { weight, .. } => {
                s.products += 1;
                if let Type::Matrix(r, c) = cell.ty(*weight) {
                    let (flops, bytes) = matrix_cost(cell, *weight, r, c);
                    s.flops_per_step += flops;
                    s.weight_bytes_per_step += bytes;
                    s.product_shapes.push(ProductShape {
                        rows: r,
                        cols: c,
                        row_blocks: 1,
                        weight_blocks: 1,
                        inputs: Vec::new(),
                    });
                }
            }
            Op::Product(p) => {
                s.products += 1;
                let mut shape = ProductShape {
                    rows: 0,
                    cols: p
                        .inputs
                        .iter()
                        .map(|v| cell.ty(*v).vector_len().unwrap_or(0))
                        .sum(),
                    row_blocks: p.rows.len(),
                    weight_blocks: 0,
                    inputs: p.inputs.iter().map(|v| cell.describe(*v, None)).collect(),
                };
                // The inputs transformed for the products through spectra:
                // (input, block size), each once per step.
                let mut transformed: Vec<(usize, usize)> = Vec::new();
                for (ri, (row, v)) in p.rows.iter().zip(&inst.results).enumerate() {
                    let r = cell.ty(*v).vector_len().unwrap_or(0);
                    shape.rows += r;
                    let row_k = p.spectral_k(cell, ri, r);
                    for (j, w) in row.weights.iter().enumerate() {
                        let Some(w) = w else { continue };
                        let term_k = p.spectral_term(cell, ri, j, r);
                        let Type::Matrix(r, c) = cell.ty(*w) else {
                            continue;
                        };
                        shape.weight_blocks += 1;
                        match term_k {
                            Some(k) => {
                                s.flops_per_step += (4 * r * c / k) as u64;
                                s.weight_bytes_per_step += 4 * (r * c / k) as u64;
                                if !transformed.contains(&(j, k)) {
                                    transformed.push((j, k));
                                    s.flops_per_step += (2 * k * c) as u64;
                                }
                            }
                            None => {
                                s.flops_per_step += 2 * (r * c) as u64;
                                s.weight_bytes_per_step += 4 * (r * c) as u64;
                            }
                        }
                    }
                    if let Some(k) = row_k {
                        // The row block's inverse transform.
                        s.flops_per_step += (2 * k * r) as u64;
                    }
                    if !row.biases.is_empty() {
                        s.flops_per_step += r as u64;
                        s.weight_bytes_per_step += 4 * r as u64;
                    }
                }
                s.product_shapes.push(shape);
            }
            Op::Fused(region) => {
                s.elementwise_passes += 1;
                let ops = region
                    .body
                    .iter()
                    .filter(|b| !matches!(b.op, EwOp::Const(_)))
                    .count();
                s.flops_per_step += (ops * region.len) as u64;
                for a in &region.args {
                    s.weight_bytes_per_step += 4 * param_vector_len(cell, *a);
                }
            }
        }
    }
    s
}

/// The JSON object of `--emit stats`: the cell, its sizes, and the counts before
/// and after optimization.
pub fn stats_json(before: &Cell, after: &Cell) -> serde_json::Value {
    let b = stats(before);
    let a = stats(after);
    let dims: serde_json::Map<String, serde_json::Value> = after
        .dims
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect();
    json!({
        "cell": after.name,
        "dims": dims,
        "products_before": b.products,
        "products_after": a.products,
        "flops_per_step_before": b.flops_per_step,
        "flops_per_step": a.flops_per_step,
        "weight_bytes_per_step_before": b.weight_bytes_per_step,
        "weight_bytes_per_step": a.weight_bytes_per_step,
        "elementwise_passes_before": b.elementwise_passes,
        "elementwise_passes_after": a.elementwise_passes,
        "products": a.product_shapes.iter().map(|p| json!({
            "rows": p.rows,
            "cols": p.cols,
            "row_blocks": p.row_blocks,
            "weight_blocks": p.weight_blocks,
            "inputs": p.inputs,
        })).collect::<Vec<_>>(),
    })
}
