//! Checkpoints of whole models: the tensors of one recurrent module under a
//! prefix (`--prefix encoder.rnn.`), and the messages that list the
//! candidates when a checkpoint holds several.

use super::*;

impl Weights {
    /// The tensors whose names start with `prefix`, under the rest of their
    /// names (`rnn.weight_ih_l0` -> `weight_ih_l0` for `rnn.`). No tensor with
    /// the prefix is an error that says which prefixes there are.
    pub fn strip_prefix(&self, prefix: &str) -> Result<Weights, WeightsError> {
        // `encoder.rnn` means `encoder.rnn.`: a prefix ends at a dot.
        let dotted;
        let prefix = if !prefix.is_empty()
            && !prefix.ends_with('.')
            && self
                .tensors
                .keys()
                .any(|n| n.starts_with(&format!("{prefix}.")))
        {
            dotted = format!("{prefix}.");
            dotted.as_str()
        } else {
            prefix
        };
        let tensors: BTreeMap<String, Tensor> = self
            .tensors
            .iter()
            .filter_map(|(n, t)| {
                let rest = n.strip_prefix(prefix)?;
                (!rest.is_empty()).then(|| (rest.to_string(), t.clone()))
            })
            .collect();
        if tensors.is_empty() {
            let mut prefixes: Vec<&str> = self
                .tensors
                .keys()
                .filter_map(|n| n.rfind('.').map(|i| &n[..=i]))
                .collect();
            prefixes.sort_unstable();
            prefixes.dedup();
            prefixes.truncate(8);
            return err(format!(
                "no tensor name starts with `{prefix}`; {}",
                if prefixes.is_empty() {
                    format!("the weights have {}", self.some_names())
                } else {
                    format!(
                        "the prefixes are {}",
                        list(prefixes.iter().map(|p| format!("`{p}`")))
                    )
                }
            ));
        }
        let integers = self
            .integers
            .iter()
            .filter_map(|(n, t)| {
                let rest = n.strip_prefix(prefix)?;
                (!rest.is_empty()).then(|| (rest.to_string(), t.clone()))
            })
            .collect();
        Ok(Weights {
            tensors,
            integers,
            partial_reads: self.partial_reads,
        })
    }

    /// The prefixes under which tensors are named `<prefix>.<one of the
    /// bindings' tensors>` (the state_dict of a module that holds the cell as
    /// a submodule, or several), each with the tensor found, at most eight.
    pub(super) fn prefixed(&self, bindings: &[crate::ir::Binding]) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = Vec::new();
        for b in bindings {
            let suffix = format!(".{}", b.tensor);
            for n in self.tensors.keys() {
                if let Some(pre) = n.strip_suffix(&suffix) {
                    let pre = format!("{pre}.");
                    if found.len() < 8 && !found.iter().any(|(p, _)| *p == pre) {
                        found.push((pre, b.tensor.clone()));
                    }
                }
            }
            if !found.is_empty() {
                break;
            }
        }
        found
    }

    /// Up to eight of the tensor names, for messages.
    pub fn some_names(&self) -> String {
        if self.tensors.is_empty() {
            return "no tensors".to_string();
        }
        let shown = list(self.tensors.keys().take(8).map(|n| format!("`{n}`")));
        match self.tensors.len() {
            n if n > 8 => format!("{shown} and {} more", n - 8),
            _ => shown,
        }
    }

    /// Refuses a checkpoint of a stacked or bidirectional PyTorch module for
    /// one cell, rather than silently using layer 0: such a checkpoint is a
    /// network ([`crate::network::Network`], which gives each layer its own
    /// tensors under layer 0's names; `cellc run` does that by itself).
    pub(super) fn check_one_layer(&self, tensor: &str) -> Result<(), WeightsError> {
        let Some(base) = tensor.strip_suffix("_l0") else {
            return Ok(());
        };
        let layers = (1..)
            .take_while(|l| self.tensors.contains_key(&format!("{base}_l{l}")))
            .count();
        let reverse = self.tensors.contains_key(&format!("{tensor}_reverse"));
        if layers > 0 || reverse {
            return err(format!(
                "the weights hold a network ({} layer{}{}: `{base}_l0` .. ), not one cell: run \
                 them as a network (`cellc::network::Network::for_checkpoint`, or `cellc run`, \
                 which reads the layers off the names)",
                layers + 1,
                if layers == 0 { "" } else { "s" },
                if reverse { ", bidirectional" } else { "" }
            ));
        }
        Ok(())
    }
}
