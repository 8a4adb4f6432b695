//! The plan verifier: every memory access the generated code and the runtime
//! make through a plan stays inside the buffer the plan sizes for it.
//!
//! Generated code reads and writes whole vectors of [`LANES`] floats: a
//! location of `len` floats at `offset` is touched at `offset .. offset +
//! padded(len)` of each batch row. So a location in a batch slot must have the
//! slot's stride and `offset + padded(len) <= stride` (the runtime sizes each
//! such slot `batch * stride` floats); a location in the packed weights (slot 0,
//! stride 0) must end within `weights_len`. Every weight panel, bias, matrix and
//! constant the plan packs must end within `weights_len` too, and every slot
//! index must exist. The runtime runs this on every plan before any call into
//! generated code; a plan that fails it is a compiler bug.

use super::*;
use crate::ir::Type;

/// Where and why a plan is unsafe to run.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyError(pub String);

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Checked = Result<(), VerifyError>;

fn fail(m: String) -> Checked {
    Err(VerifyError(m))
}

struct Verifier<'a> {
    plan: &'a Plan,
}

impl Verifier<'_> {
    /// A range of the packed weights: `at .. at + len`.
    fn weights(&self, at: usize, len: usize, what: &str) -> Checked {
        match at.checked_add(len) {
            Some(end) if end <= self.plan.weights_len => Ok(()),
            _ => fail(format!(
                "{what}: floats {at}..{} outside the packed weights ({} floats)",
                at.saturating_add(len),
                self.plan.weights_len
            )),
        }
    }

    /// A location read or written as whole vectors.
    fn loc(&self, l: &Loc, what: &str) -> Checked {
        let Some(slot) = self.plan.slots.get(l.slot) else {
            return fail(format!("{what}: slot {} does not exist", l.slot));
        };
        let Some(end) = l.offset.checked_add(padded(l.len)) else {
            return fail(format!("{what}: offset {} overflows", l.offset));
        };
        if slot.kind == SlotKind::Weights {
            if l.stride != 0 {
                return fail(format!("{what}: a parameter with a batch stride"));
            }
            return self.weights(l.offset, padded(l.len), what);
        }
        if l.stride != slot.stride {
            return fail(format!(
                "{what}: stride {} in slot `{}` of stride {}",
                l.stride, slot.name, slot.stride
            ));
        }
        if end > slot.stride {
            return fail(format!(
                "{what}: floats {}..{end} of each row of slot `{}` (rows of {})",
                l.offset, slot.name, slot.stride
            ));
        }
        Ok(())
    }

    fn region(&self, r: &RegionCode, blocks: usize, what: &str) -> Checked {
        if r.tiles != r.len.div_ceil(LANES) {
            return fail(format!("{what}: {} tiles for {} lanes", r.tiles, r.len));
        }
        for (i, a) in r.args.iter().enumerate() {
            match a {
                ArgSrc::Block(b) if *b >= blocks => {
                    return fail(format!("{what}: argument {i} is block {b} of {blocks}"))
                }
                ArgSrc::Block(_) => {}
                ArgSrc::Mem(l) => {
                    // A single float broadcasts over the region's lanes.
                    if l.len < r.len && l.len != 1 {
                        return fail(format!(
                            "{what}: argument {i} has {} floats, the region {}",
                            l.len, r.len
                        ));
                    }
                    self.loc(l, &format!("{what}, argument {i}"))?;
                }
            }
        }
        for (i, (_, l)) in r.yields.iter().enumerate() {
            if l.len < r.len {
                return fail(format!("{what}: yield {i} has {} floats", l.len));
            }
            self.loc(l, &format!("{what}, yield {i}"))?;
            if l.slot == 0 {
                return fail(format!("{what}: yield {i} writes the weights"));
            }
        }
        Ok(())
    }

    fn reductions(&self, rs: &[Reduction], what: &str) -> Checked {
        for (k, r) in rs.iter().enumerate() {
            let what = format!("{what}, reduction {k}");
            if r.src.len == 0 || r.dest.len != 1 {
                return fail(format!(
                    "{what}: {} floats reduced into {}",
                    r.src.len, r.dest.len
                ));
            }
            self.loc(&r.src, &format!("{what}, source"))?;
            self.loc(&r.dest, &format!("{what}, destination"))?;
            if r.dest.slot == 0 {
                return fail(format!("{what}: writes the weights"));
            }
        }
        Ok(())
    }

    fn group(&self, g: &ProductGroup, what: &str) -> Checked {
        if g.tiles != g.len.div_ceil(LANES) {
            return fail(format!("{what}: {} tiles for {} rows", g.tiles, g.len));
        }
        let panels = g.tile_stride.saturating_mul(g.tiles);
        self.weights(g.weights_offset, panels, &format!("{what}, panels"))?;
        for (c, ch) in g.chunks.iter().enumerate() {
            let what = format!("{what}, chunk {c}");
            if ch.blocks.iter().any(|&b| b >= g.blocks.len()) || ch.blocks.len() > MAX_CHUNK {
                return fail(format!("{what}: blocks {:?}", ch.blocks));
            }
            if let Some(bo) = ch.bias_offset {
                if bo + ch.blocks.len() * LANES > g.tile_stride {
                    return fail(format!("{what}: biases past the tile"));
                }
            }
            if let Some((l, offsets)) = &ch.init_projection {
                if offsets.len() != ch.blocks.len() {
                    return fail(format!("{what}: projection offsets"));
                }
                for &o in offsets {
                    self.loc(
                        &Loc {
                            offset: o,
                            len: g.len,
                            ..*l
                        },
                        &format!("{what}, projection"),
                    )?;
                }
            }
            for (si, seg) in ch.segments.iter().enumerate() {
                let what = format!("{what}, segment {si}");
                if seg.input.len != seg.k || seg.blocks.iter().any(|&b| b >= ch.blocks.len()) {
                    return fail(format!(
                        "{what}: k {} for an input of {}",
                        seg.k, seg.input.len
                    ));
                }
                // The generated code reads the input element by element.
                self.loc(&seg.input, &what)?;
                let end = seg.panel_floats().and_then(|n| n.checked_add(seg.offset));
                if end.is_none_or(|e| e > g.tile_stride) {
                    return fail(format!("{what}: panel past the tile"));
                }
            }
        }
        if g.dest.len() != g.blocks.len() {
            return fail(format!("{what}: {} destinations", g.dest.len()));
        }
        for (b, d) in g.dest.iter().enumerate() {
            if let Some(l) = d {
                if l.len != g.len || l.slot == 0 {
                    return fail(format!("{what}: destination of block {b}"));
                }
                self.loc(l, &format!("{what}, destination {b}"))?;
            }
        }
        if let Some(e) = &g.epilogue {
            if e.len != g.len {
                return fail(format!("{what}: epilogue of {} lanes", e.len));
            }
            self.region(e, g.blocks.len(), &format!("{what}, epilogue"))?;
        }
        Ok(())
    }

    fn gemm(&self, blocks: &[GemmBlock], what: &str) -> Checked {
        for (i, b) in blocks.iter().enumerate() {
            let what = format!("{what}, block {i}");
            if b.dest.len != b.len || b.dest.slot == 0 {
                return fail(format!("{what}: destination"));
            }
            self.loc(&b.dest, &what)?;
            match &b.init {
                GemmInit::Zero => {}
                GemmInit::Bias(o) => self.weights(*o, b.len, &format!("{what}, bias"))?,
                GemmInit::Projection(l) => {
                    // The kernels read the projection as the sums' start
                    // while they write the destination: separate buffers.
                    if l.len != b.len || l.slot == b.dest.slot {
                        return fail(format!("{what}: projection"));
                    }
                    self.loc(l, &format!("{what}, projection"))?;
                }
            }
            for (t, term) in b.terms.iter().enumerate() {
                if term.input.len != term.k {
                    return fail(format!("{what}, term {t}: input of {}", term.input.len));
                }
                self.loc(&term.input, &format!("{what}, term {t}"))?;
                let n = crate::kernels::panel::stored_len(b.len, term.k, term.precision)
                    .unwrap_or(usize::MAX);
                self.weights(term.panels, n, &format!("{what}, term {t} panels"))?;
            }
            if let Some(s) = &b.spectral {
                self.spectral(b, s, &what)?;
            }
        }
        Ok(())
    }
}

/// Checks every location and packed range of `plan`, made from `cell`.
pub fn verify(plan: &Plan, cell: &Cell) -> Result<(), VerifyError> {
    let v = Verifier { plan };
    v.slots(cell)?;
    v.packed(cell)?;
    v.tasks()?;
    v.hoists()?;
    v.results()
}

impl Verifier<'_> {
    /// The slots: the weights first, the ports' slots of their kinds and
    /// lengths, every stride a whole number of vectors.
    fn slots(&self, cell: &Cell) -> Result<(), VerifyError> {
        let plan = self.plan;
        if plan.slots.first().map(|s| &s.kind) != Some(&SlotKind::Weights) {
            return fail("slot 0 is not the weights".into());
        }
        let kinds_match = |slots: &[usize], kind: &dyn Fn(usize) -> SlotKind, lens: &[usize]| {
            slots.len() == lens.len()
                && slots.iter().enumerate().all(|(i, &s)| {
                    plan.slots
                        .get(s)
                        .is_some_and(|sl| sl.kind == kind(i) && sl.stride >= padded(lens[i]))
                })
        };
        let input = |i| SlotKind::Input(InputId::new(i));
        let cur = |i| SlotKind::StateCur(StateId::new(i));
        let next = |i| SlotKind::StateNext(StateId::new(i));
        if !kinds_match(&plan.input_slots, &input, &plan.input_lens)
            || !kinds_match(&plan.state_cur, &cur, &plan.state_lens)
            || !kinds_match(&plan.state_next, &next, &plan.state_lens)
        {
            return fail(
                "the input and state slots do not match the cell's inputs and states".into(),
            );
        }
        let lens = |ports: &[crate::ir::Port]| ports.iter().map(|p| p.len).collect::<Vec<_>>();
        if plan.input_lens != lens(&cell.inputs)
            || plan.state_lens != lens(&cell.states)
            || plan.output_lens != lens(&cell.outputs)
        {
            return fail("the plan's lengths are not the cell's".into());
        }
        for (i, s) in plan.slots.iter().enumerate().skip(1) {
            if s.stride == 0 || s.stride % LANES != 0 {
                return fail(format!("slot `{}` ({i}) has stride {}", s.name, s.stride));
            }
        }
        Ok(())
    }

    /// The packed constants, parameters, panels and bias sums inside the weights.
    fn packed(&self, cell: &Cell) -> Result<(), VerifyError> {
        let plan = self.plan;
        for &(_, off) in &plan.consts {
            self.weights(off, LANES, "a vector constant")?;
        }
        let param_len = |k: ParamId| match cell.params.get(k.index()).map(|p| p.ty) {
            Some(Type::Vector(n)) => Some(n),
            Some(Type::Matrix(r, c)) => r.checked_mul(c),
            Some(Type::Scalar) => Some(1),
            None => None,
        };
        for pv in &plan.vectors {
            let Some(n) = param_len(pv.param) else {
                return fail(format!("parameter {} does not exist", pv.param));
            };
            self.weights(pv.offset, padded(n), "a packed parameter")?;
        }
        for pv in &plan.matrices {
            let units = match cell.params.get(pv.param.index()).map(|p| p.ty) {
                Some(Type::Matrix(r, c)) => super::unit_major_len(r, c),
                _ => None,
            };
            let Some(n) = units else {
                return fail(format!(
                    "a unit-major copy of {}, which is not a matrix",
                    pv.param
                ));
            };
            self.weights(pv.offset, n, "a unit-major matrix")?;
        }
        for pv in &plan.panels {
            let panels = match cell
                .params
                .get(pv.param.index())
                .map(|p| (p.ty, p.precision))
            {
                Some((Type::Matrix(r, c), precision)) => {
                    crate::kernels::panel::stored_len(r, c, precision)
                }
                _ => None,
            };
            let Some(n) = panels else {
                return fail(format!("panels of {}, which is not a matrix", pv.param));
            };
            self.weights(pv.offset, n, "a matrix in panels")?;
        }
        for &(off, param, k) in &plan.spectra {
            let n = match cell.params.get(param.index()).map(|p| (p.ty, p.structure)) {
                Some((Type::Matrix(r, c), crate::ir::Structure::Circulant(pk))) if pk == k => {
                    crate::kernels::spectral::weights_len(r, c, k)
                }
                _ => None,
            };
            let Some(n) = n else {
                return fail(format!(
                    "spectra of {param}, which is not circulant in blocks of {k}"
                ));
            };
            self.weights(off, n, "a matrix's spectra")?;
        }
        for &(off, k, _) in &plan.transforms {
            let n = crate::kernels::panel::stored_len(k, k, Precision::F32);
            self.weights(off, n.unwrap_or(usize::MAX), "a transform")?;
        }
        for (off, params, len) in &plan.bias_sums {
            if params.iter().any(|&k| param_len(k) != Some(*len)) {
                return fail("a bias sum of parameters of another length".into());
            }
            self.weights(*off, *len, "a bias sum")?;
        }
        Ok(())
    }

    /// Every task's locations and packed ranges.
    fn tasks(&self) -> Result<(), VerifyError> {
        let plan = self.plan;
        for (t, task) in plan.tasks.iter().enumerate() {
            let what = format!("task {t}");
            match task {
                Task::Product(groups) => {
                    for (gi, g) in groups.iter().enumerate() {
                        self.group(g, &format!("{what}, group {gi}"))?;
                    }
                }
                Task::Region(r) => self.region(r, 0, &what)?,
                Task::Rows(steps) => {
                    for (k, step) in steps.iter().enumerate() {
                        let what = format!("{what}, step {k}");
                        match step {
                            RowStep::Region(r) => self.region(r, 0, &what)?,
                            RowStep::Reduce(rs) => self.reductions(rs, &what)?,
                        }
                    }
                }
                Task::Gemm(blocks) => self.gemm(blocks, &what)?,
                Task::Spectra(transforms) => self.transforms(transforms, &what)?,
            }
        }
        Ok(())
    }

    /// The inputs' transforms: a supported `k` dividing the input, the
    /// destination as long in a slot of its own, the matrix packed.
    fn transforms(&self, transforms: &[Transform], what: &str) -> Checked {
        for (i, t) in transforms.iter().enumerate() {
            let what = format!("{what}, transform {i}");
            if !crate::kernels::spectral::supported(t.k) || !t.input.len.is_multiple_of(t.k) {
                return fail(format!("{what}: chunks of {} in {}", t.k, t.input.len));
            }
            if t.dest.len != t.input.len || t.dest.slot == 0 || t.dest.slot == t.input.slot {
                return fail(format!("{what}: destination"));
            }
            self.loc(&t.input, &what)?;
            self.loc(&t.dest, &what)?;
            let n = crate::kernels::panel::stored_len(t.k, t.k, Precision::F32);
            self.weights(t.forward, n.unwrap_or(usize::MAX), &what)?;
        }
        Ok(())
    }

    /// A block's spectral part: a supported `k` dividing the block and each
    /// input, its output spectra in a buffer no input or output shares,
    /// each matrix's spectra packed for these sizes.
    fn spectral(&self, b: &GemmBlock, s: &Spectral, what: &str) -> Checked {
        let k = s.k;
        if !crate::kernels::spectral::supported(k) || !b.len.is_multiple_of(k) {
            return fail(format!("{what}: chunks of {k} in {}", b.len));
        }
        let sc = &s.scratch;
        let shares = |l: &Loc| l.slot == sc.slot;
        if sc.len != b.len || sc.slot == 0 || shares(&b.dest) {
            return fail(format!("{what}: spectra buffer"));
        }
        if matches!(&b.init, GemmInit::Projection(l) if shares(l)) {
            return fail(format!("{what}: spectra buffer"));
        }
        self.loc(sc, what)?;
        let n = crate::kernels::panel::stored_len(k, k, Precision::F32);
        self.weights(s.inverse, n.unwrap_or(usize::MAX), what)?;
        for (t, term) in s.terms.iter().enumerate() {
            let l = &term.spectrum;
            if !l.len.is_multiple_of(k) || l.slot == 0 || shares(l) || l.slot == b.dest.slot {
                return fail(format!("{what}, spectral term {t}: spectrum"));
            }
            self.loc(l, what)?;
            let n = crate::kernels::spectral::weights_len(b.len, l.len, k);
            self.weights(term.weights, n.unwrap_or(usize::MAX), what)?;
            if !self
                .plan
                .spectra
                .iter()
                .any(|m| m.0 == term.weights && m.1 == term.param && m.2 == k)
            {
                return fail(format!(
                    "{what}, spectral term {t}: its spectra are not packed"
                ));
            }
        }
        Ok(())
    }

    /// The hoisted projections: their slots, rows, biases and terms.
    fn hoists(&self) -> Result<(), VerifyError> {
        let plan = self.plan;
        for (h, hoist) in plan.hoists.iter().enumerate() {
            let what = format!("projection {h}");
            match plan.slots.get(hoist.slot) {
                Some(s) if s.kind == SlotKind::Projection(h) && s.stride == hoist.stride => {}
                _ => return fail(format!("{what}: its slot")),
            }
            for (bi, b) in hoist.blocks.iter().enumerate() {
                let what = format!("{what}, block {bi}");
                if b.offset + padded(b.len) > hoist.stride {
                    return fail(format!("{what}: past the row"));
                }
                if let Some(o) = b.bias {
                    self.weights(o, b.len, &what)?;
                }
                for &(input, k, matrix) in &b.terms {
                    if plan.input_lens.get(input.index()) != Some(&k) {
                        return fail(format!("{what}: input {input} of {k}"));
                    }
                    self.weights(matrix, b.len.saturating_mul(k), &what)?;
                }
            }
        }
        Ok(())
    }

    /// The state updates and outputs: one per port, of its length, in bounds.
    fn results(&self) -> Result<(), VerifyError> {
        let plan = self.plan;
        if plan.updates.len() != plan.state_cur.len()
            || plan.outputs.len() != plan.output_lens.len()
        {
            return fail("updates or outputs do not match the cell".into());
        }
        for (s, u) in plan.updates.iter().enumerate() {
            if let Update::Copy(l) = u {
                if l.len != plan.state_lens[s] {
                    return fail(format!("the update of state {s} has {} floats", l.len));
                }
                self.loc(l, &format!("the update of state {s}"))?;
            }
        }
        for (o, l) in plan.outputs.iter().enumerate() {
            if l.len != plan.output_lens[o] {
                return fail(format!("output {o} has {} floats", l.len));
            }
            self.loc(l, &format!("output {o}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cell, Options, Variant};
    use std::path::{Path, PathBuf};

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    /// Every cell the project ships.
    fn examples() -> Vec<PathBuf> {
        ["examples", "src/onnx/cells"]
            .iter()
            .flat_map(|d| std::fs::read_dir(root().join(d)).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rnn"))
            .collect()
    }

    /// Every plan of every example and of random cells verifies (`plan` runs the
    /// verifier and fails on a plan that does not), and the verifier catches a
    /// location past its slot's rows, a packed range past the weights, a stride
    /// that is not its slot's, and a slot that does not exist.
    #[test]
    fn plans_verify_and_the_verifier_catches_bad_locations() {
        let mut cells: Vec<Cell> = Vec::new();
        for path in examples() {
            let cell = Cell::from_file(&path).unwrap();
            let dims: Vec<(&str, u64)> = [("X", 5), ("H", 17), ("P", 6)]
                .into_iter()
                .filter(|(n, _)| cell.dim_names().iter().any(|d| d == n))
                .collect();
            cells.push(cell.dims(&dims).unwrap());
        }
        for seed in 0..40 {
            let text = crate::gen::random_cell(seed);
            let cell = Cell::from_source("random.rnn", &text).unwrap();
            cells.push(cell.dims(&[("X", 7), ("H", 9)]).unwrap());
        }
        for cell in &cells {
            for optimize in [true, false] {
                let opts = Options {
                    optimize,
                    ..Options::default()
                };
                let ir = cell.kernel_ir(&opts).unwrap();
                for v in Variant::ALL {
                    let p = super::plan(&ir, v, optimize)
                        .unwrap_or_else(|e| panic!("{} {v:?}: {e}", cell.name()));
                    verify(&p, &ir).unwrap();
                }
            }
        }
        let lstm = Cell::from_file(root().join("examples/lstm.rnn"))
            .unwrap()
            .dims(&[("X", 5), ("H", 17)])
            .unwrap();
        let ir = lstm.kernel_ir(&Options::default()).unwrap();
        let good = super::plan(&ir, Variant::Streaming, true).unwrap();
        let mut bad = Vec::new();
        let mut p = good.clone();
        p.outputs[0].offset += 4;
        bad.push(("an output past its slot's rows", p));
        let mut p = good.clone();
        p.outputs[0].stride += 4;
        bad.push(("a stride that is not its slot's", p));
        let mut p = good.clone();
        p.outputs[0].slot = p.slots.len();
        bad.push(("a slot that does not exist", p));
        let mut p = good.clone();
        if let Task::Product(groups) = &mut p.tasks[0] {
            groups[0].weights_offset = p.weights_len;
        }
        bad.push(("panels past the packed weights", p));
        let mut p = good.clone();
        p.consts[0].1 = p.weights_len - 1;
        bad.push(("a constant past the packed weights", p));
        let mut p = super::plan(&ir, Variant::GemmHoisted, true).unwrap();
        let mut moved = false;
        for task in &mut p.tasks {
            if let Task::Gemm(blocks) = task {
                for b in blocks {
                    if let GemmInit::Projection(l) = &mut b.init {
                        *l = b.dest;
                        moved = true;
                    }
                }
            }
        }
        assert!(
            moved,
            "the gemm-hoisted plan starts no product from a projection"
        );
        bad.push(("a projection in its product's destination", p));
        for (what, p) in bad {
            assert!(verify(&p, &ir).is_err(), "not caught: {what}");
        }
    }
}
