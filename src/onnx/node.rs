//! A recurrent node on its own: its op, its attributes (each of the type
//! ONNX gives it, nothing unknown, nothing cellc does not compute), what it
//! computes.

use super::proto::{self, err, short, AttrType, Node};
use crate::weights::WeightsError;

/// The largest `hidden_size` (that of any size variable, `sema::MAX_DIM`).
pub(super) const MAX_HIDDEN: i64 = 1 << 24;

/// The attribute `name` of a node, checked to have ONNX's type for it.
pub(super) fn attribute<'n, 'a>(
    n: &'n Node<'a>,
    desc: &str,
    name: &str,
    want: AttrType,
) -> Result<Option<&'n proto::Attribute<'a>>, WeightsError> {
    let Some(a) = n.attributes.iter().find(|a| a.name == name) else {
        return Ok(None);
    };
    match a.checked_type() {
        Ok(t) if t == want => Ok(Some(a)),
        Ok(t) => err(format!(
            "attribute `{name}` of {desc} is {}; ONNX defines it as {}",
            t.name(),
            want.name()
        )),
        Err(why) => err(format!("attribute `{name}` of {desc} {why}")),
    }
}

/// What one recurrent node computes.
#[derive(Clone, Copy)]
pub(super) struct Config {
    pub(super) lstm: bool,
    /// GRU's `linear_before_reset`.
    pub(super) lbr: bool,
    pub(super) hidden: usize,
    /// 1 (forward or reverse) or 2 (bidirectional).
    pub(super) directions: usize,
    /// One direction, backwards.
    pub(super) reverse: bool,
    /// ONNX Runtime's `DynamicQuantizeLSTM`: int8 weights with scales.
    pub(super) quantized: bool,
}

/// Checks a recurrent node's op and attributes (each of its ONNX type,
/// nothing unknown, nothing cellc does not compute).
pub(super) fn node_config(n: &Node, index: &usize) -> Result<Config, WeightsError> {
    let desc = &n.describe(*index);
    if n.op_type == "RNN" {
        return err(format!(
            "{desc}: cellc imports LSTM and GRU nodes; for a plain RNN, run \
             `examples/rnn_tanh.rnn` with the weights"
        ));
    }
    let quantized = n.op_type == "DynamicQuantizeLSTM";
    let lstm = n.op_type == "LSTM" || quantized;
    check_known(n, desc, lstm)?;
    let hidden = hidden_size(n, desc)?;
    let (directions, reverse) = direction(n, desc)?;
    check_activations(n, desc, lstm, directions)?;
    refuse_unsupported(n, desc)?;
    let lbr = linear_before_reset(n, desc)?;
    Ok(Config {
        lstm,
        lbr,
        hidden,
        directions,
        reverse,
        quantized,
    })
}

/// Every attribute is one the node's op has.
fn check_known(n: &Node, desc: &str, lstm: bool) -> Result<(), WeightsError> {
    let known: &[&str] = if lstm {
        &[
            "hidden_size",
            "direction",
            "activations",
            "activation_alpha",
            "activation_beta",
            "clip",
            "input_forget",
            "layout",
        ]
    } else {
        &[
            "hidden_size",
            "direction",
            "activations",
            "activation_alpha",
            "activation_beta",
            "clip",
            "linear_before_reset",
            "layout",
        ]
    };
    for a in &n.attributes {
        if !known.contains(&a.name) {
            return err(format!(
                "{desc} has attribute `{}`, which cellc does not know",
                short(a.name)
            ));
        }
    }
    Ok(())
}

fn hidden_size(n: &Node, desc: &str) -> Result<usize, WeightsError> {
    Ok(match attribute(n, desc, "hidden_size", AttrType::Int)? {
        Some(a) => match a.int {
            Some(h) if (1..=MAX_HIDDEN).contains(&h) => h as usize,
            Some(h) => {
                return err(format!(
                    "{desc} has hidden_size {h}; it must be between 1 and {MAX_HIDDEN}"
                ))
            }
            None => unreachable_attr()?,
        },
        None => return err(format!("{desc} has no hidden_size")),
    })
}

/// `(directions, reverse)`.
fn direction(n: &Node, desc: &str) -> Result<(usize, bool), WeightsError> {
    let mut directions = 1;
    let mut reverse = false;
    if let Some(a) = attribute(n, desc, "direction", AttrType::String)? {
        let d = String::from_utf8_lossy(a.string.unwrap_or_default());
        match d.as_ref() {
            "forward" => {}
            "reverse" => reverse = true,
            "bidirectional" => directions = 2,
            _ => {
                return err(format!(
                    "{desc} runs direction `{}`; ONNX's directions are forward, reverse and \
                     bidirectional",
                    short(&d)
                ))
            }
        }
    }
    Ok((directions, reverse))
}

/// The activations, if given, are the defaults (one list per direction).
fn check_activations(
    n: &Node,
    desc: &str,
    lstm: bool,
    directions: usize,
) -> Result<(), WeightsError> {
    let activations: usize = if lstm { 3 } else { 2 };
    if let Some(a) = attribute(n, desc, "activations", AttrType::Strings)? {
        let default: &[&str] = if lstm {
            &["Sigmoid", "Tanh", "Tanh"]
        } else {
            &["Sigmoid", "Tanh"]
        };
        let given: Vec<String> = a
            .strings
            .iter()
            .map(|s| short(&String::from_utf8_lossy(s)))
            .collect();
        // One list per direction.
        let expected = default
            .iter()
            .copied()
            .cycle()
            .take(activations * directions);
        if given.iter().map(String::as_str).ne(expected) {
            return err(format!(
                "{desc} uses activations {given:?}; cellc imports the default ones {default:?}"
            ));
        }
    }
    Ok(())
}

/// Attributes that change what the node computes in ways cellc does not.
fn refuse_unsupported(n: &Node, desc: &str) -> Result<(), WeightsError> {
    for name in ["activation_alpha", "activation_beta"] {
        if attribute(n, desc, name, AttrType::Floats)?.is_some() {
            return err(format!(
                "{desc} sets `{name}`, which only parameterised activations read; cellc \
                 imports the default activations"
            ));
        }
    }
    if let Some(a) = attribute(n, desc, "clip", AttrType::Float)? {
        return err(format!(
            "{desc} clips its cell at {}; cellc does not import `clip`",
            a.float.unwrap_or_default()
        ));
    }
    if let Some(a) = attribute(n, desc, "input_forget", AttrType::Int)? {
        if a.int != Some(0) {
            return err(format!(
                "{desc} couples its input and forget gates (input_forget = {}); see \
                 examples/cifg.rnn for such a cell",
                a.int.unwrap_or_default()
            ));
        }
    }
    if let Some(a) = attribute(n, desc, "layout", AttrType::Int)? {
        if a.int != Some(0) {
            return err(format!(
                "{desc} uses layout = {} (batch-major); cellc imports layout = 0 (time-major)",
                a.int.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn linear_before_reset(n: &Node, desc: &str) -> Result<bool, WeightsError> {
    Ok(
        match attribute(n, desc, "linear_before_reset", AttrType::Int)? {
            None => false,
            Some(a) => match a.int {
                Some(0) => false,
                Some(1) => true,
                v => {
                    return err(format!(
                        "{desc} has linear_before_reset = {}; ONNX allows 0 or 1",
                        v.unwrap_or_default()
                    ))
                }
            },
        },
    )
}

pub(super) fn unreachable_attr<T>() -> Result<T, WeightsError> {
    err("internal error: an attribute checked to hold a value holds none")
}
