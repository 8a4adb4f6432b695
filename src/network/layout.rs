//! A network's layout (layers, directions) and PyTorch's names for it: a
//! checkpoint's `weight_ih_l1_reverse` is layer 1's reverse direction;
//! [`layer_weights`] gives each layer and direction its tensors under layer
//! 0's names, which a cell's bindings read.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Error, Result, Weights};

/// How many layers, and which directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub layers: usize,
    pub bidirectional: bool,
    /// One direction, run from each row's last step to its first (an ONNX
    /// node with `direction = reverse`); not with `bidirectional`.
    pub reverse: bool,
}

/// Most layers a network may have.
pub const MAX_LAYERS: usize = 64;

impl Layout {
    /// One layer, forward: a cell on its own.
    pub const SINGLE: Layout = Layout {
        layers: 1,
        bidirectional: false,
        reverse: false,
    };

    /// 1 or 2.
    pub fn directions(self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// One layer in one direction, forward.
    pub fn is_single(self) -> bool {
        self == Layout::SINGLE
    }

    /// Whether each direction runs in reverse, in order.
    pub fn runs(self) -> &'static [bool] {
        match (self.bidirectional, self.reverse) {
            (true, _) => &[false, true],
            (false, true) => &[true],
            (false, false) => &[false],
        }
    }

    /// The layout of a PyTorch checkpoint, read off its tensor names (`_l<n>`
    /// for layer `n`, `_reverse` for the reverse direction); `None` when no
    /// name has a layer suffix (an `nn.LSTMCell`, a cell's own names). Every
    /// layer and direction must have the same tensors: a missing one is an
    /// error that names it.
    pub fn of_checkpoint(weights: &Weights) -> Result<Option<Layout>> {
        let groups = layer_groups(weights);
        let Some(&(last, _)) = groups.keys().max_by_key(|(l, _)| *l) else {
            return Ok(None);
        };
        let layers = last + 1;
        if layers > MAX_LAYERS {
            return Err(Error::shape(format!(
                "the weights name layer {last} (`_l{last}`); cellc runs at most {MAX_LAYERS} layers"
            )));
        }
        let forward = groups.keys().any(|(_, reverse)| !*reverse);
        let backward = groups.keys().any(|(_, reverse)| *reverse);
        let bidirectional = forward && backward;
        let layout = Layout {
            layers,
            bidirectional,
            reverse: !forward,
        };
        // Every layer and direction has the tensors of the forward layer 0.
        let all: BTreeSet<&str> = groups.values().flatten().copied().collect();
        for l in 0..layers {
            for &reverse in layout.runs() {
                let have = groups.get(&(l, reverse));
                for base in &all {
                    if !have.is_some_and(|h| h.contains(base)) {
                        let other = groups
                            .iter()
                            .find(|(_, h)| h.contains(base))
                            .map(|(&(ol, orev), _)| suffixed(base, ol, orev))
                            .unwrap_or_default();
                        return Err(Error::new(
                            crate::ErrorKind::Weights,
                            format!(
                                "the weights have `{other}` but no `{}`: every layer and direction \
                                 of a stacked{} module has the same tensors",
                                suffixed(base, l, reverse),
                                if bidirectional { " bidirectional" } else { "" }
                            ),
                        ));
                    }
                }
            }
        }
        Ok(Some(layout))
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} layer{}, {}",
            self.layers,
            if self.layers == 1 { "" } else { "s" },
            match (self.bidirectional, self.reverse) {
                (true, _) => "bidirectional",
                (false, true) => "reverse",
                (false, false) => "forward",
            }
        )
    }
}

/// `weight_ih_l1_reverse` -> (`weight_ih`, 1, true).
pub(super) fn split_layer_name(name: &str) -> Option<(&str, usize, bool)> {
    let (rest, reverse) = match name.strip_suffix("_reverse") {
        Some(r) => (r, true),
        None => (name, false),
    };
    let at = rest.rfind("_l")?;
    let digits = &rest[at + 2..];
    // PyTorch writes `_l0`, `_l12`: no sign, no leading zero (`_l01` would
    // be a second name for layer 1).
    let canonical = digits == "0" || (!digits.starts_with('0') && digits.len() <= 4);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !canonical {
        return None;
    }
    let base = &rest[..at];
    if base.is_empty() {
        return None;
    }
    Some((base, digits.parse().ok()?, reverse))
}

pub(super) fn suffixed(base: &str, layer: usize, reverse: bool) -> String {
    format!("{base}_l{layer}{}", if reverse { "_reverse" } else { "" })
}

/// The layered tensors' base names, by (layer, reverse). A base counts as
/// layered only if layer 0 has it (`weight_ih_l0`, or `..._l0_reverse`): a cell's own
/// tensor that happens to end in `_l2` is not a third layer.
pub(super) fn layer_groups(weights: &Weights) -> BTreeMap<(usize, bool), BTreeSet<&str>> {
    let mut groups: BTreeMap<(usize, bool), BTreeSet<&str>> = BTreeMap::new();
    for name in weights.names() {
        if let Some((base, l, rev)) = split_layer_name(name) {
            if has_layer_0(weights, base) {
                groups.entry((l, rev)).or_default().insert(base);
            }
        }
    }
    groups
}

/// Whether `name` is a layered tensor (see [`layer_groups`]).
pub(super) fn layered(weights: &Weights, name: &str) -> Option<(String, usize, bool)> {
    let (base, l, rev) = split_layer_name(name)?;
    has_layer_0(weights, base).then(|| (base.to_string(), l, rev))
}

/// Whether layer 0 has tensor `base` in some direction.
pub(super) fn has_layer_0(weights: &Weights, base: &str) -> bool {
    weights.get(&format!("{base}_l0")).is_some()
        || weights.get(&format!("{base}_l0_reverse")).is_some()
}

/// The tensors of one layer and direction of a layered checkpoint, under the
/// names of the forward layer 0 (`weight_ih_l1_reverse` -> `weight_ih_l0`).
/// A checkpoint of a module made with `bias=False` (PyTorch then saves no
/// `bias_*` tensors) gets zero `bias_ih_l0` and `bias_hh_l0`, as long as
/// `weight_ih_l0`/`weight_hh_l0`, whose rows they match; only when no tensor
/// of the checkpoint is a bias.
pub(crate) fn layer_weights(weights: &Weights, layer: usize, reverse: bool) -> Weights {
    let mut view = Weights::new();
    if weights.partial_reads_allowed() {
        view = view.allow_partial_reads();
    }
    for name in weights.names() {
        if let Some((base, l, rev)) = layered(weights, name) {
            if (l, rev) == (layer, reverse) {
                if let Some(t) = weights.get(name) {
                    // Names are unique in `weights`, so are their renamings.
                    let _ = view.insert(&format!("{base}_l0"), &t.shape, t.data.clone());
                }
            }
        }
    }
    // The rule: zero only when the checkpoint has no bias at all (a bias
    // under another name is refused by `unlayered`, not replaced by zeros).
    let has_bias = weights.names().any(|n| n.starts_with("bias"));
    if !has_bias {
        for (w, b) in [
            ("weight_ih_l0", "bias_ih_l0"),
            ("weight_hh_l0", "bias_hh_l0"),
        ] {
            if let Some(rows) = view.get(w).and_then(|t| t.shape.first().copied()) {
                let _ = view.insert(b, &[rows], vec![0.0; rows]);
            }
        }
    }
    view
}
