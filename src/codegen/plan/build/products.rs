//! The planning of products: the packed copies of their weights (panels,
//! row-major matrices, summed biases), the hoisted input projection, and the
//! task each product becomes (a `gemm` call or micro-kernel tiles).

use super::super::*;
use super::Planner;
use crate::ir::{self, Type, Value};

/// What the planning of one product shares between its steps.
struct ProductPlan<'c> {
    inst: usize,
    product: &'c ir::Product,
    results: Vec<Value>,
    /// Where each input of the product lives.
    inputs: Vec<Loc>,
    /// Per input: the cell input it is, when its terms are hoisted out of the
    /// step (none are unless the plan hoists and some term reads a cell input).
    hoisted: Vec<Option<InputId>>,
}

impl Planner<'_> {
    /// A unit-major copy of a matrix parameter in the packed weights (for
    /// the hoisted projection), at a 64-byte boundary.
    fn matrix_copy(&mut self, param: ParamId) -> usize {
        if let Some(m) = self.plan.matrices.iter().find(|m| m.param == param) {
            return m.offset;
        }
        let n = match self.cell.params[param.index()].ty {
            Type::Matrix(r, c) => super::super::unit_major_len(r, c).unwrap_or(0),
            _ => 0,
        };
        let offset = self.aligned_weights(n);
        self.plan.matrices.push(PackVector { offset, param });
        offset
    }

    /// A copy of a matrix parameter packed in panels (for the batched
    /// products), at a 64-byte boundary of the packed weights.
    fn panel_copy(&mut self, param: ParamId) -> usize {
        if let Some(m) = self.plan.panels.iter().find(|m| m.param == param) {
            return m.offset;
        }
        let p = &self.cell.params[param.index()];
        let n = match p.ty {
            Type::Matrix(r, c) => crate::kernels::panel::stored_len(r, c, p.precision).unwrap_or(0),
            _ => 0,
        };
        let pad = self.plan.weights_len.next_multiple_of(16) - self.plan.weights_len;
        self.alloc_weights(pad);
        let offset = self.alloc_weights(n);
        self.plan.panels.push(PackVector { offset, param });
        offset
    }

    /// The packed spectra of a block-circulant matrix (blocks of `k`), at a
    /// 64-byte boundary of the packed weights.
    fn spectra_copy(&mut self, param: ParamId, k: usize) -> Result<usize, PlanError> {
        if let Some(&(o, _, _)) = self.plan.spectra.iter().find(|m| m.1 == param && m.2 == k) {
            return Ok(o);
        }
        let n = match self.cell.params[param.index()].ty {
            Type::Matrix(r, c) => crate::kernels::spectral::weights_len(r, c, k),
            _ => None,
        }
        .ok_or_else(|| PlanError("internal error: a circulant matrix's spectra overflow".into()))?;
        let offset = self.aligned_weights(n);
        self.plan.spectra.push((offset, param, k));
        Ok(offset)
    }

    /// The `k x k` forward or inverse transform in panels.
    fn transform_copy(&mut self, k: usize, inverse: bool) -> usize {
        if let Some(&(o, _, _)) = (self.plan.transforms.iter()).find(|t| t.1 == k && t.2 == inverse)
        {
            return o;
        }
        let n = crate::kernels::panel::stored_len(k, k, Precision::F32).unwrap_or(0);
        let offset = self.aligned_weights(n);
        self.plan.transforms.push((offset, k, inverse));
        offset
    }

    /// `n` floats of packed weights from a 64-byte boundary.
    fn aligned_weights(&mut self, n: usize) -> usize {
        let pad = self.plan.weights_len.next_multiple_of(16) - self.plan.weights_len;
        self.alloc_weights(pad);
        self.alloc_weights(n)
    }

    /// The block size each row block of product instruction `i` multiplies
    /// its block-circulant matrices through spectra with, if any
    /// ([`ir::Product::spectral_k`]); the others run on their dense
    /// expansion.
    pub(super) fn spectral_blocks(&self, i: usize) -> Vec<Option<usize>> {
        let cell = self.cell;
        let Op::Product(p) = &cell.insts[i].op else {
            return Vec::new();
        };
        let results = &cell.insts[i].results;
        (0..p.rows.len())
            .map(|r| {
                let len = self.len_of(results[r]);
                (self.opts.spectral)
                    .then(|| p.spectral_k(cell, r, len))
                    .flatten()
            })
            .collect()
    }

    /// The sum of vector parameters, `len` floats in the packed weights.
    fn bias_sum(&mut self, params: Vec<ParamId>, len: usize) -> usize {
        let offset = self.alloc_weights(padded(len));
        self.plan.bias_sums.push((offset, params, len));
        offset
    }

    /// A row block's biases summed into the packed weights (`len` floats), or
    /// `None` when it has none.
    fn row_bias(&mut self, biases: &[Value], len: usize) -> Result<Option<usize>, PlanError> {
        if biases.is_empty() {
            return Ok(None);
        }
        let params = biases
            .iter()
            .map(|b| self.param_of(*b))
            .collect::<Result<_, _>>()?;
        Ok(Some(self.bias_sum(params, len)))
    }

    fn param_of(&self, v: Value) -> Result<ParamId, PlanError> {
        match self.cell.op_of(v) {
            Op::Param(k) => Ok(*k),
            _ => Err(PlanError(
                "internal error: a weight or bias is not a parameter".into(),
            )),
        }
    }

    /// Plans product instruction `i`: its hoisted input projection (if the
    /// plan hoists), then either `gemm` blocks or micro-kernel groups with the
    /// epilogue regions `epilogues` fused into them.
    pub(super) fn product_task(&mut self, i: usize, epilogues: &[usize]) -> Result<(), PlanError> {
        let cell = self.cell;
        let Op::Product(p) = &cell.insts[i].op else {
            return Err(PlanError("internal error: not a product".into()));
        };
        let inputs: Vec<Loc> = p
            .inputs
            .iter()
            .map(|&x| self.mem(x))
            .collect::<Result<_, _>>()?;
        let spectral = self.spectral_blocks(i);
        // Terms that read a cell input leave the step when hoisting, unless
        // a block multiplies that input through spectra (every step, at its
        // cost, rather than on the dense expansion for the sequence).
        let hoisted: Vec<Option<InputId>> = p
            .inputs
            .iter()
            .enumerate()
            .map(|(j, &x)| {
                let in_spectra = (0..p.rows.len()).any(|r| {
                    spectral[r].is_some()
                        && p.spectral_term(cell, r, j, self.len_of(cell.insts[i].results[r]))
                            .is_some()
                });
                match cell.op_of(x) {
                    Op::Input(k) if self.opts.hoist_inputs && !in_spectra => Some(*k),
                    _ => None,
                }
            })
            .collect();
        let any_hoisted = p.rows.iter().any(|r| {
            r.weights
                .iter()
                .zip(&hoisted)
                .any(|(w, h)| w.is_some() && h.is_some())
        });
        let prod = ProductPlan {
            inst: i,
            product: p,
            results: cell.insts[i].results.clone(),
            inputs,
            hoisted: if any_hoisted {
                hoisted
            } else {
                vec![None; p.inputs.len()]
            },
        };
        let projection = if any_hoisted {
            self.hoisted_projection(&prod)?
        } else {
            Vec::new()
        };
        if self.opts.gemm_products || spectral.iter().any(Option::is_some) {
            self.gemm_task(&prod, &projection, &spectral)
        } else {
            self.micro_kernel_task(&prod, &projection, epilogues)
        }
    }

    /// The projection row of a product whose terms read cell inputs: every
    /// block at its offset, its biases folded in. Returns each block's place.
    fn hoisted_projection(&mut self, prod: &ProductPlan) -> Result<Vec<Loc>, PlanError> {
        let slot = self.plan.slots.len();
        let stride: usize = prod.results.iter().map(|&v| padded(self.len_of(v))).sum();
        self.plan.slots.push(Slot {
            kind: SlotKind::Projection(self.plan.hoists.len()),
            stride,
            name: "projection".into(),
        });
        let mut blocks = Vec::new();
        let mut projection = Vec::new();
        let mut offset = 0;
        for (r, &v) in prod.results.iter().enumerate() {
            let len = self.len_of(v);
            let row = &prod.product.rows[r];
            let bias = self.row_bias(&row.biases, len)?;
            let mut terms = Vec::new();
            for (j, w) in row.weights.iter().enumerate() {
                if let (Some(w), Some(input)) = (w, prod.hoisted[j]) {
                    let param = self.param_of(*w)?;
                    terms.push((input, prod.inputs[j].len, self.matrix_copy(param)));
                }
            }
            blocks.push(HoistBlock {
                offset,
                len,
                bias,
                terms,
            });
            projection.push(Loc {
                slot,
                offset,
                stride,
                len,
            });
            offset += padded(len);
        }
        self.plan.hoists.push(Hoist {
            slot,
            stride,
            blocks,
        });
        Ok(projection)
    }

    /// The product as `gemm` blocks, each starting from its bias or its
    /// hoisted projection, those with a block size in `spectral` multiplying
    /// their circulant matrices of that size through spectra (after a task
    /// that computes their inputs' spectra).
    fn gemm_task(
        &mut self,
        prod: &ProductPlan,
        projection: &[Loc],
        spectral: &[Option<usize>],
    ) -> Result<(), PlanError> {
        let mut blocks = Vec::new();
        let mut transforms: Vec<Transform> = Vec::new();
        // The output chunks' spectra: one slot, each block at its offset.
        let ys_stride: usize = (prod.results.iter().zip(spectral))
            .filter(|(_, k)| k.is_some())
            .map(|(&v, _)| padded(self.len_of(v)))
            .sum();
        let ys_slot = (ys_stride > 0).then(|| {
            self.plan.slots.push(Slot {
                kind: SlotKind::Scratch,
                stride: ys_stride,
                name: "spectra".into(),
            });
            self.plan.slots.len() - 1
        });
        let mut ys_offset = 0;
        for (r, &v) in prod.results.iter().enumerate() {
            let row = &prod.product.rows[r];
            let len = self.len_of(v);
            let init = match projection.get(r) {
                Some(&l) => GemmInit::Projection(l),
                None => self
                    .row_bias(&row.biases, len)?
                    .map_or(GemmInit::Zero, GemmInit::Bias),
            };
            let mut terms = Vec::new();
            let mut spectral_terms = Vec::new();
            for (j, w) in row.weights.iter().enumerate() {
                if let (Some(w), None) = (w, prod.hoisted[j]) {
                    let param = self.param_of(*w)?;
                    let term_k = spectral[r].and(prod.product.spectral_term(self.cell, r, j, len));
                    if let Some(k) = term_k {
                        let spectrum = self.spectrum(&mut transforms, prod.inputs[j], k);
                        spectral_terms.push(SpectralTerm {
                            spectrum,
                            weights: self.spectra_copy(param, k)?,
                            param,
                        });
                        continue;
                    }
                    terms.push(GemmTerm {
                        input: prod.inputs[j],
                        k: prod.inputs[j].len,
                        panels: self.panel_copy(param),
                        precision: self.cell.params[param.index()].precision,
                    });
                }
            }
            let dest = self.home(v);
            let spectral = match (spectral[r], ys_slot) {
                (Some(k), Some(slot)) => {
                    let scratch = Loc {
                        slot,
                        offset: ys_offset,
                        stride: ys_stride,
                        len,
                    };
                    ys_offset += padded(len);
                    Some(Spectral {
                        k,
                        inverse: self.transform_copy(k, true),
                        scratch,
                        terms: spectral_terms,
                    })
                }
                _ => None,
            };
            blocks.push(GemmBlock {
                len,
                dest,
                init,
                terms,
                spectral,
            });
        }
        if !transforms.is_empty() {
            self.plan.tasks.push(Task::Spectra(transforms));
        }
        self.plan.tasks.push(Task::Gemm(blocks));
        Ok(())
    }

    /// Where the spectra of `input`'s chunks of `k` are, adding the
    /// transform that computes them unless `transforms` has it.
    fn spectrum(&mut self, transforms: &mut Vec<Transform>, input: Loc, k: usize) -> Loc {
        if let Some(t) = transforms.iter().find(|t| t.input == input && t.k == k) {
            return t.dest;
        }
        let stride = padded(input.len);
        self.plan.slots.push(Slot {
            kind: SlotKind::Scratch,
            stride,
            name: format!("spectrum{}", transforms.len()),
        });
        let dest = Loc {
            slot: self.plan.slots.len() - 1,
            offset: 0,
            stride,
            len: input.len,
        };
        let forward = self.transform_copy(k, false);
        transforms.push(Transform {
            input,
            k,
            dest,
            forward,
        });
        dest
    }

    /// The product as generated micro-kernels: one group per block length,
    /// its tiles' panels laid out chunk by chunk, with the epilogue of that
    /// length fused.
    fn micro_kernel_task(
        &mut self,
        prod: &ProductPlan,
        projection: &[Loc],
        epilogues: &[usize],
    ) -> Result<(), PlanError> {
        let cell = self.cell;
        let results = &prod.results;
        let mut lens: Vec<usize> = results.iter().map(|&v| self.len_of(v)).collect();
        lens.sort_unstable();
        lens.dedup();
        let mut groups = Vec::new();
        for len in lens {
            let blocks: Vec<usize> = (0..results.len())
                .filter(|&r| cell.ty(results[r]) == Type::Vector(len))
                .collect();
            // The epilogue region of this length (`run` fused it only if one chunk
            // holds every block).
            let epilogue = epilogues
                .iter()
                .copied()
                .find(|&j| matches!(&cell.insts[j].op, Op::Fused(r) if r.len == len));
            if epilogue.is_some() && blocks.len() > MAX_CHUNK {
                return Err(PlanError(format!(
                    "internal error: a fused epilogue needs one chunk ({} blocks)",
                    blocks.len()
                )));
            }
            let (chunks, tile_stride) = self.tile_layout(prod, &blocks, projection)?;
            let tiles = len.div_ceil(LANES);
            let weights_offset = self.alloc_weights(tile_stride * tiles);
            // Destinations of the blocks.
            let mut dest = Vec::new();
            for &b in &blocks {
                let v = results[b];
                let needed = self.read_elsewhere(v, epilogue);
                dest.push(if needed { Some(self.home(v)) } else { None });
            }
            let epilogue_code = match epilogue {
                Some(j) => {
                    let block_values: Vec<Value> = blocks.iter().map(|&b| results[b]).collect();
                    Some(self.region_code(j, &block_values, Some(prod.inst))?)
                }
                None => None,
            };
            groups.push(ProductGroup {
                len,
                tiles,
                blocks,
                chunks,
                weights_offset,
                tile_stride,
                dest,
                epilogue: epilogue_code,
            });
        }
        self.plan.tasks.push(Task::Product(groups));
        Ok(())
    }

    /// The layout of one tile of a group of row blocks (indices into the
    /// product's rows): its chunks of at most [`MAX_CHUNK`] blocks, each with
    /// its biases (unless a projection holds them) and one panel per input it
    /// reads. Returns the chunks and the tile's length in floats.
    fn tile_layout(
        &self,
        prod: &ProductPlan,
        blocks: &[usize],
        projection: &[Loc],
    ) -> Result<(Vec<Chunk>, usize), PlanError> {
        let cell = self.cell;
        let rows = &prod.product.rows;
        let hoisting = !projection.is_empty();
        let chunked: Vec<Vec<usize>> = (0..blocks.len())
            .collect::<Vec<_>>()
            .chunks(MAX_CHUNK)
            .map(<[usize]>::to_vec)
            .collect();
        let mut offset = 0;
        let mut chunks = Vec::new();
        for cb in &chunked {
            let has_bias = !hoisting && cb.iter().any(|&b| !rows[blocks[b]].biases.is_empty());
            let bias_offset = has_bias.then(|| {
                let o = offset;
                offset += cb.len() * LANES;
                o
            });
            let mut segments = Vec::new();
            for (j, input) in prod.inputs.iter().enumerate() {
                if prod.hoisted[j].is_some() {
                    continue;
                }
                let present: Vec<usize> = (0..cb.len())
                    .filter(|&c| rows[blocks[cb[c]]].weights[j].is_some())
                    .collect();
                if present.is_empty() {
                    continue;
                }
                let mut weights = Vec::new();
                for &c in &present {
                    match rows[blocks[cb[c]]].weights[j].map(|w| cell.op_of(w)) {
                        Some(Op::Param(k)) => weights.push(*k),
                        _ => {
                            return Err(PlanError(
                                "internal error: a weight is not a parameter".into(),
                            ))
                        }
                    }
                }
                let stored: Vec<Precision> = weights
                    .iter()
                    .map(|p| cell.params[p.index()].precision)
                    .collect();
                let precision = if stored.iter().all(|&p| p == stored[0]) {
                    stored[0]
                } else {
                    Precision::F32
                };
                let segment = Segment {
                    input_index: j,
                    input: *input,
                    k: input.len,
                    blocks: present.clone(),
                    weights,
                    precision,
                    offset,
                };
                offset += segment
                    .panel_floats()
                    .ok_or_else(|| PlanError("internal error: a panel's size overflows".into()))?;
                segments.push(segment);
            }
            let bias_params = if hoisting {
                vec![Vec::new(); cb.len()]
            } else {
                cb.iter()
                    .map(|&b| {
                        rows[blocks[b]]
                            .biases
                            .iter()
                            .filter_map(|v| match cell.op_of(*v) {
                                Op::Param(k) => Some(*k),
                                _ => None,
                            })
                            .collect()
                    })
                    .collect()
            };
            let init_projection = hoisting.then(|| {
                let base = Loc {
                    offset: 0,
                    ..projection[blocks[cb[0]]]
                };
                let offsets = cb.iter().map(|&c| projection[blocks[c]].offset).collect();
                (base, offsets)
            });
            chunks.push(Chunk {
                blocks: cb.clone(),
                bias_offset,
                bias_params,
                init_projection,
                segments,
            });
        }
        Ok((chunks, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::*;

    /// A row block whose circulant matrices share a block size but not the
    /// cost model's verdict: the large one goes through spectra, the small
    /// one (8 columns: the transforms would cost more than it saves) stays
    /// a dense term, as its remark and `--emit stats` say.
    #[test]
    fn only_the_matrices_sent_to_spectra_go_there() {
        let text = "cell c\ndim X = 64\ndim H = 64\ndim S = 8\ninput x: [X]\ninput s: [S]\n\
                    state h: [H]\noutput y: [H]\nparam W: circulant(8)[H, X]\n\
                    param V: circulant(8)[H, S]\nh' = tanh(W @ x + V @ s)\ny = h'\n";
        let cell = crate::Cell::from_source("c.rnn", text).unwrap();
        let ir = cell.kernel_ir(&Default::default()).unwrap();
        let plan = plan(&ir, Variant::Streaming, true).unwrap();
        let blocks: Vec<&GemmBlock> = (plan.tasks.iter())
            .filter_map(|t| match t {
                Task::Gemm(b) => Some(b),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(blocks.len(), 1, "{:?}", plan.tasks);
        let spectral = blocks[0].spectral.as_ref().expect("W through spectra");
        assert_eq!(spectral.terms.len(), 1);
        assert_eq!(blocks[0].terms.len(), 1, "V as a dense term");
        assert_eq!(blocks[0].terms[0].k, 8);
    }
}
