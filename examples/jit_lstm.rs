//! The whole path: a cell file, weights, native code, a sequence.
//! `cargo run --release --example jit_lstm`

// A program: it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Parse and check the cell, with the sizes we want.
    let cell = cellc::Cell::from_file("examples/lstm.rnn")?.dims(&[("X", 64), ("H", 128)])?;

    // Weights by name, as PyTorch's nn.LSTM names them (here: random ones).
    // A real state_dict: `cellc::Weights::from_safetensors("lstm.safetensors")?`.
    let names = [("weight_ih_l0", 512, 64), ("weight_hh_l0", 512, 128)];
    let mut weights = cellc::Weights::new();
    for (name, rows, cols) in names {
        let data = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 1000.0)
            .collect();
        weights.insert(name, &[rows, cols], data)?;
    }
    for name in ["bias_ih_l0", "bias_hh_l0"] {
        weights.insert(name, &[512], vec![0.01; 512])?;
    }

    // JIT-compile: optimize, generate native code, pack the weights.
    let kernel = cell.compile(&weights, &cellc::Options::default())?;

    // A batch of 4 sequences of 10 steps, time-major: [T, B, X].
    let (batch, steps) = (4, 10);
    let xs: Vec<f32> = (0..steps * batch * 64)
        .map(|i| (i % 7) as f32 / 7.0 - 0.5)
        .collect();
    let mut ys = vec![0.0f32; steps * batch * 128];
    let mut state = kernel.new_state(batch)?; // h = c = 0
    kernel.run(&xs, &mut state, &mut ys)?;

    // One more step, streaming.
    kernel.step(&xs[..batch * 64], &mut state)?;
    let h = state.get("h")?;
    println!("h[0][..4] after 11 steps: {:?}", &h[..4]);
    println!(
        "y[9][0][..4]: {:?}",
        &ys[9 * batch * 128..9 * batch * 128 + 4]
    );
    Ok(())
}
