//! Times tract and candle-nn on an LSTM or GRU, as `cellc bench --json` does:
//! median µs per step over repeated runs after warm-up.
//!
//! cellc-peers SYSTEM CELL H BATCH SEQ MODEL.onnx
//!   SYSTEM: tract | candle;  CELL: lstm | gru;  SEQ 1 means one step per call.
//!   MODEL.onnx: the ONNX model tract loads (written by compare.py); candle
//!   builds its own module with random weights.

use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_samples(mut f: impl FnMut(), per_sample_steps: usize) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut samples = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e6 / per_sample_steps as f64);
    }
    median(samples)
}

fn tract(cell: &str, h: usize, batch: usize, seq: usize, model: &str) -> f64 {
    use tract_onnx::prelude::*;
    let x = h;
    let plan = tract_onnx::onnx()
        .model_for_path(model)
        .expect("model")
        .with_input_fact(0, f32::fact([seq, batch, x]).into())
        .expect("fact")
        .into_optimized()
        .expect("optimize")
        .into_runnable()
        .expect("runnable");
    let input: Tensor = tract_ndarray::Array3::<f32>::from_shape_fn((seq, batch, x), |(t, b, i)| ((t + b + i) % 7) as f32 * 0.1 - 0.3).into();
    let _ = cell;
    if seq > 1 {
        time_samples(|| {
            plan.run(tvec!(input.clone().into())).expect("run");
        }, seq)
    } else {
        // One step per call: the T = 1 model called again and again.
        let steps = 50;
        time_samples(|| {
            for _ in 0..steps {
                plan.run(tvec!(input.clone().into())).expect("run");
            }
        }, steps)
    }
}

fn candle(cell: &str, h: usize, batch: usize, seq: usize) -> f64 {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::rnn::{RNN, LSTMConfig, GRUConfig};
    let dev = Device::Cpu;
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let x = h;
    let input = Tensor::randn(0f32, 1.0, (batch, seq, x), &dev).expect("input");
    let step_in = Tensor::randn(0f32, 1.0, (batch, x), &dev).expect("input");
    macro_rules! go {
        ($m:expr) => {{
            let m = $m;
            if seq > 1 {
                time_samples(|| {
                    let _ = m.seq(&input).expect("seq");
                }, seq)
            } else {
                let steps = 50;
                time_samples(|| {
                    let mut s = m.zero_state(batch).expect("state");
                    for _ in 0..steps {
                        s = m.step(&step_in, &s).expect("step");
                    }
                }, steps)
            }
        }};
    }
    match cell {
        "lstm" => go!(candle_nn::rnn::lstm(x, h, LSTMConfig::default(), vb.pp("lstm")).expect("lstm")),
        _ => go!(candle_nn::rnn::gru(x, h, GRUConfig::default(), vb.pp("gru")).expect("gru")),
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: cellc-peers tract|candle lstm|gru H BATCH SEQ [MODEL.onnx]");
        std::process::exit(2);
    }
    let (system, cell) = (a[1].as_str(), a[2].as_str());
    let h: usize = a[3].parse().expect("H");
    let batch: usize = a[4].parse().expect("batch");
    let seq: usize = a[5].parse().expect("seq");
    let us = match system {
        "tract" => tract(cell, h, batch, seq, a.get(6).map(String::as_str).expect("model path")),
        _ => candle(cell, h, batch, seq),
    };
    println!("{}", serde_json::json!({"system": system, "cell": cell, "H": h, "batch": batch, "seq": seq, "us_per_step_median": us}));
}
