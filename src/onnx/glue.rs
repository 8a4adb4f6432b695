//! The glue exporters write around and between recurrent nodes: the chain of
//! layers (each reading the one below through a Transpose and Reshape, or a
//! Squeeze), a batch-first model's Transposes, the Reshapes' literal sizes,
//! the layers' final states joined by Concat, initial states made by Expand
//! of zeros or sliced per layer from one graph input, and the glue between
//! `Y` and a graph output.

use super::graph::{Ctx, Source};
use super::proto::{err, short, Node};
use crate::weights::WeightsError;

/// The recurrent nodes in layer order: the first reads a graph input, each
/// next one the output of the one before through glue that puts its
/// directions side by side (`width` = directions x hidden). Accepts the glue.
pub(super) fn order_chain(
    cx: &mut Ctx,
    rnn: &[usize],
    width: usize,
) -> Result<Vec<usize>, WeightsError> {
    let g = cx.g;
    let x_of = |r: usize| g.nodes[r].inputs.first().copied().unwrap_or("");
    let mut firsts = Vec::new();
    for &r in rnn {
        match cx.source(x_of(r)) {
            Source::GraphInput => firsts.push(r),
            // A batch-first model: `[B, T, X]` transposed to `[T, B, X]`.
            Source::Node(i) if transposes_a_graph_input(cx, i) => {
                cx.accepted[i] = true;
                cx.batch_first = true;
                firsts.push(r);
            }
            Source::Node(_) => {}
            Source::Initializer(_) | Source::Constant(..) => {
                return err(format!(
                    "the sequence input of {} is a constant; cellc imports recurrent nodes \
                     whose input `X` is a graph input",
                    cx.node(r)
                ))
            }
            Source::Missing => return err(format!("{} has no sequence input `X`", cx.node(r))),
        }
    }
    let [first] = firsts[..] else {
        if firsts.is_empty() {
            // No layer reads a graph input: say what the first one reads.
            let r = rnn[0];
            if let Source::Node(i) = cx.source(x_of(r)) {
                return err(format!(
                    "the sequence input of {} is computed by {}; cellc imports recurrent \
                     nodes whose input `X` is a graph input or the layer below's output",
                    cx.node(r),
                    cx.node(i)
                ));
            }
        }
        return err(format!(
            "{} recurrent nodes read graph inputs; cellc imports one stack of layers",
            firsts.len()
        ));
    };
    let mut chain = vec![first];
    while chain.len() < rnn.len() {
        let y = g.nodes[chain[chain.len() - 1]]
            .outputs
            .first()
            .copied()
            .unwrap_or("");
        let next = rnn
            .iter()
            .copied()
            .find(|&r| !chain.contains(&r) && matches!(cx.source(x_of(r)), Source::Node(_)));
        let Some(next) = next.filter(|&r| glue_between(cx, y, x_of(r), width)) else {
            let r = rnn
                .iter()
                .copied()
                .find(|r| !chain.contains(r))
                .unwrap_or(first);
            return err(format!(
                "the sequence input of {} is not the output of {} with its directions side \
                 by side (a Transpose [0, 2, 1, 3] and a Reshape to [T, B, {width}], or a \
                 Squeeze of axis 1); cellc imports a stack of layers",
                cx.node(r),
                cx.node(chain[chain.len() - 1])
            ));
        };
        chain.push(next);
    }
    Ok(chain)
}

/// Whether node `i` is a `Transpose` [1, 0, 2] of a graph input (a
/// batch-first model's `[B, T, X]` made `[T, B, X]`).
pub(super) fn transposes_a_graph_input(cx: &Ctx, i: usize) -> bool {
    let n = &cx.g.nodes[i];
    n.op_type == "Transpose"
        && n.inputs.len() == 1
        && matches!(cx.source(n.inputs[0]), Source::GraphInput)
        && n.attributes
            .iter()
            .any(|a| a.name == "perm" && a.ints == [1, 0, 2])
}

/// Checks a glue `Reshape`'s target `[T', B', w]` against the layout
/// `[T, B, w]` it must keep: `0` copies an axis; a literal fixes it (the
/// default exporter writes the sizes it was exported at), which a run must
/// then have. A literal that disagrees with another `Reshape`'s is an error.
pub(super) fn fix_sizes(cx: &mut Ctx, shape: &[i64], desc: &str) -> Result<(), WeightsError> {
    for (axis, &d) in shape.iter().take(2).enumerate() {
        if d <= 0 {
            continue;
        }
        let slot = if axis == 0 {
            &mut cx.fixed.0
        } else {
            &mut cx.fixed.1
        };
        match *slot {
            Some(v) if v != d as usize => {
                return err(format!(
                    "{desc} reshapes to {shape:?}, but another Reshape fixes {} = {v}; the \
                     layers would read their inputs in another order",
                    if axis == 0 { "T" } else { "B" }
                ))
            }
            _ => *slot = Some(d as usize),
        }
    }
    Ok(())
}

/// Whether `x` is `y` ([T, D, B, H]) with its directions side by side
/// ([T, B, D*H] = `width`): a Transpose [0, 2, 1, 3] then a Reshape to
/// three axes ending in `width` (or -1), or (one direction) a Squeeze of axis
/// 1. Accepts those nodes.
pub(super) fn glue_between(cx: &mut Ctx, y: &str, x: &str, width: usize) -> bool {
    let Some(&last) = cx.producer.get(x) else {
        return false;
    };
    let ln = &cx.g.nodes[last];
    match ln.op_type {
        "Reshape" if ln.inputs.len() == 2 => {
            let Some(&t) = cx.producer.get(ln.inputs[0]) else {
                return false;
            };
            let tn = &cx.g.nodes[t];
            if !(tn.op_type == "Transpose" && tn.inputs.first() == Some(&y) && drops_direction(tn))
                || ln
                    .attributes
                    .iter()
                    .any(|a| a.name == "allowzero" && a.int != Some(0))
            {
                return false;
            }
            let Ok(shape) = cx.int_constant(ln.inputs[1], "the shape of a Reshape") else {
                return false;
            };
            let ok = shape.len() == 3
                && (shape[2] == width as i64 || shape[2] == -1)
                && shape[..2].iter().all(|&d| d >= 0)
                && fix_sizes(cx, &shape, &cx.node(last)).is_ok();
            if ok {
                cx.accepted[last] = true;
                cx.accepted[t] = true;
            }
            ok
        }
        "Squeeze" if ln.inputs.first() == Some(&y) => {
            let axes = match (
                ln.inputs.get(1),
                ln.attributes.iter().find(|a| a.name == "axes"),
            ) {
                (Some(name), None) if ln.inputs.len() == 2 => cx
                    .int_constant(name, "the axes of a Squeeze")
                    .unwrap_or_default(),
                (None, Some(a)) => a.ints.clone(),
                _ => return false,
            };
            // Only one direction can be squeezed away.
            let d = cx.g.nodes.iter().find(|n| n.outputs.first() == Some(&y));
            let one = d.is_some_and(|n| {
                n.attributes.iter().all(|a| {
                    a.name != "direction" || a.string.unwrap_or_default() != b"bidirectional"
                })
            });
            if axes == [1] && one {
                cx.accepted[last] = true;
                true
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Whether graph output `out` is a Concat along axis 0 of exactly `parts`
/// (the layers' final states, in layer order). Accepts it.
pub(super) fn concat_of(cx: &mut Ctx, out: &str, parts: &[&str]) -> bool {
    let Some(&c) = cx.producer.get(out) else {
        return false;
    };
    let n = &cx.g.nodes[c];
    let axis0 = n
        .attributes
        .iter()
        .any(|a| a.name == "axis" && a.int == Some(0));
    if n.op_type == "Concat" && axis0 && n.inputs == parts && parts.iter().all(|p| !p.is_empty()) {
        cx.accepted[c] = true;
        return true;
    }
    false
}

/// Whether node `e` is an `Expand` of stored zeros (whatever the shape it
/// expands to, the result is zeros); accepts it and the shape computation
/// feeding it.
pub(super) fn zero_expand(cx: &mut Ctx, e: usize) -> Result<bool, WeightsError> {
    let n = &cx.g.nodes[e];
    if n.op_type != "Expand" || n.inputs.len() != 2 {
        return Ok(false);
    }
    let zeros = match cx.source(n.inputs[0]) {
        Source::Initializer(_) | Source::Constant(..) => cx
            .stored_floats(n.inputs[0], "the value an initial state expands")
            .is_ok_and(|v| v.is_some_and(|(_, v)| v.iter().all(|&x| x == 0.0))),
        _ => false,
    };
    if !zeros {
        return Ok(false);
    }
    if let Source::Constant(c, _) = cx.source(n.inputs[0]) {
        cx.accepted[c] = true;
    }
    cx.accepted[e] = true;
    // The shape: any computation over shapes and constants.
    let mut stack = vec![n.inputs[1]];
    while let Some(name) = stack.pop() {
        let Some(&p) = cx.producer.get(name) else {
            continue;
        };
        if cx.accepted[p] {
            continue;
        }
        let pn = &cx.g.nodes[p];
        match pn.op_type {
            "Shape" => cx.accepted[p] = true,
            "Constant" | "Gather" | "Unsqueeze" | "Squeeze" | "Concat" | "Cast" | "Slice" => {
                cx.accepted[p] = true;
                stack.extend(pn.inputs.iter().copied());
            }
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// Whether node `e` is layer `layer`'s slice of a graph input of all the
/// layers' initial states (`Slice` of rows `layer*D .. (layer+1)*D` on axis
/// 0, as `torch.onnx.export` writes a stacked module's `h0`): the input's
/// name, the node and its constants accepted.
pub(super) fn layer_slice<'a>(
    cx: &mut Ctx<'_, 'a>,
    e: usize,
    layer: usize,
    directions: usize,
) -> Option<&'a str> {
    let n = &cx.g.nodes[e];
    if n.op_type != "Slice" || !(3..=5).contains(&n.inputs.len()) {
        return None;
    }
    let data = n.inputs[0];
    if !matches!(cx.source(data), Source::GraphInput) {
        return None;
    }
    let inputs = n.inputs.clone();
    let starts = cx.int_constant(inputs[1], "the starts of a Slice").ok()?;
    let ends = cx.int_constant(inputs[2], "the ends of a Slice").ok()?;
    let axes = match inputs.get(3) {
        Some(a) if !a.is_empty() => cx.int_constant(a, "the axes of a Slice").ok()?,
        _ => vec![0],
    };
    let steps_one = match inputs.get(4) {
        Some(st) if !st.is_empty() => cx.int_constant(st, "the steps of a Slice").ok()? == [1],
        _ => true,
    };
    let (lo, hi) = (
        (layer * directions) as i64,
        ((layer + 1) * directions) as i64,
    );
    if starts == [lo] && ends == [hi] && axes == [0] && steps_one {
        cx.accepted[e] = true;
        Some(data)
    } else {
        None
    }
}

/// Accepts the nodes between the recurrent node's `Y` and graph output `out`
/// when they only drop the direction axis, or says what is there instead.
pub(super) fn glue_output(
    cx: &mut Ctx,
    out: &str,
    y: &str,
    hidden: usize,
    desc: &str,
) -> Result<(), WeightsError> {
    let back_to_batch_first = |cx: &Ctx, i: usize| {
        let n = &cx.g.nodes[i];
        n.op_type == "Transpose"
            && n.inputs.len() == 1
            && n.attributes
                .iter()
                .any(|a| a.name == "perm" && a.ints == [1, 0, 2])
    };
    if cx.batch_first {
        // `[T, B, D*H]` back to `[B, T, D*H]`, as the input came.
        return match cx.producer.get(out) {
            Some(&t) if back_to_batch_first(cx, t) => {
                cx.accepted[t] = true;
                let inner = cx.g.nodes[t].inputs[0];
                glue_output_time_major(cx, out, inner, y, hidden, desc)
            }
            _ => err(format!(
                "graph output `{}` is not {desc}'s Y transposed back to [B, T, ...]: the \
                 model reads its sequence batch-first and would write Y time-major; cellc \
                 runs a model in one layout",
                short(out)
            )),
        };
    }
    glue_output_time_major(cx, out, out, y, hidden, desc)
}

/// [`glue_output`] of a time-major graph output `out`: its value `inner`
/// (the output itself, or what a batch-first model transposes into it).
pub(super) fn glue_output_time_major(
    cx: &mut Ctx,
    out: &str,
    inner: &str,
    y: &str,
    hidden: usize,
    desc: &str,
) -> Result<(), WeightsError> {
    let refuse = |cx: &Ctx, i: usize| -> Result<(), WeightsError> {
        let n = &cx.g.nodes[i];
        let perm = n.attributes.iter().find(|a| a.name == "perm");
        if n.op_type == "Transpose" && perm.is_some_and(|a| a.ints == [1, 0, 2]) {
            return err(format!(
                "{} makes graph output `{}` batch-first, but the model reads its sequence \
                 time-major ([T, B, X]); cellc runs a model in one layout",
                cx.node(i),
                short(out)
            ));
        }
        err(format!(
            "graph output `{}` is computed by {} from the output of {desc}; cellc runs the \
             recurrent node alone, not the layers around it",
            short(out),
            cx.node(i)
        ))
    };
    let Some(&last) = cx.producer.get(inner) else {
        return err(format!(
            "graph output `{}` is not an output of {desc}",
            short(out)
        ));
    };
    let ln = &cx.g.nodes[last];
    let only = |n: &Node, k: usize| n.inputs.len() == k;
    match ln.op_type {
        "Squeeze" if ln.inputs.first() == Some(&y) => {
            let axes = match (
                ln.inputs.get(1),
                ln.attributes.iter().find(|a| a.name == "axes"),
            ) {
                (Some(name), None) if only(ln, 2) => {
                    cx.int_constant(name, "the axes of a Squeeze")?
                }
                (None, Some(a)) => a.ints.clone(),
                _ => return refuse(cx, last),
            };
            if axes != [1] {
                return refuse(cx, last);
            }
            cx.accepted[last] = true;
            Ok(())
        }
        "Transpose" if ln.inputs.first() == Some(&y) && drops_direction(ln) => {
            cx.accepted[last] = true;
            Ok(())
        }
        "Reshape" if only(ln, 2) => {
            let Some(&t) = cx.producer.get(ln.inputs[0]) else {
                return refuse(cx, last);
            };
            let tn = &cx.g.nodes[t];
            if !(tn.op_type == "Transpose" && tn.inputs.first() == Some(&y) && drops_direction(tn))
            {
                return refuse(cx, last);
            }
            if ln
                .attributes
                .iter()
                .any(|a| a.name == "allowzero" && a.int != Some(0))
            {
                return refuse(cx, last);
            }
            let shape = cx.int_constant(ln.inputs[1], "the shape of a Reshape")?;
            // [T, B, 1, H] -> three axes ending in H: the values keep their order.
            let ok = shape.len() == 3
                && (shape[2] == hidden as i64 || shape[2] == -1)
                && shape[..2].iter().all(|&d| d >= 0);
            if !ok {
                return refuse(cx, last);
            }
            fix_sizes(cx, &shape, &cx.node(last))?;
            cx.accepted[last] = true;
            cx.accepted[t] = true;
            Ok(())
        }
        _ => refuse(cx, last),
    }
}

/// A `Transpose` with perm [0, 2, 1, 3]: `[T, 1, B, H]` to `[T, B, 1, H]`.
pub(super) fn drops_direction(n: &Node) -> bool {
    n.inputs.len() == 1
        && n.attributes
            .iter()
            .any(|a| a.name == "perm" && a.ints == [0, 2, 1, 3])
}
