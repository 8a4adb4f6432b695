use super::*;
use crate::ir::Structure;
use crate::kernels::testing::random;

/// `m x n` row-major times `x` (f64).
fn matvec(m: &[f32], rows: usize, x: &[f64]) -> Vec<f64> {
    let n = x.len();
    (0..rows)
        .map(|r| (0..n).map(|c| f64::from(m[r * n + c]) * x[c]).sum())
        .collect()
}

/// The forward matrix gives rustfft's real-input spectrum, in the slot
/// layout; the inverse matrix undoes it.
#[test]
fn transforms_are_the_dft_and_its_inverse() {
    use rustfft::num_complex::Complex;
    for k in [4, 8, 16, 32, 64] {
        let x = random(k, k as u64);
        let mut buf: Vec<Complex<f64>> =
            x.iter().map(|&v| Complex::new(f64::from(v), 0.0)).collect();
        rustfft::FftPlanner::new()
            .plan_fft_forward(k)
            .process(&mut buf);
        let xs: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let spec = matvec(&forward_matrix(k), k, &xs);
        let mut want = vec![buf[0].re, buf[k / 2].re];
        for c in &buf[1..k / 2] {
            want.extend([c.re, c.im]);
        }
        for (i, (a, b)) in spec.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 1e-5 * k as f64,
                "k = {k}, float {i}: {a} vs {b}"
            );
        }
        let back = matvec(&inverse_matrix(k), k, &spec);
        for (a, b) in back.iter().zip(&xs) {
            assert!((a - b).abs() < 1e-5, "k = {k}: inverse {a} vs {b}");
        }
    }
}

/// The whole product (forward, multiply-accumulate, inverse) of a random
/// block-circulant matrix against the dense expansion's product in f64,
/// on every ISA the host has, with the same bits on each, and the same
/// bits whichever chunks a call covers.
#[test]
fn products_are_the_dense_expansions_on_every_isa() {
    for (k, rows, cols, batch) in [
        (4, 8, 12, 1),
        (8, 24, 16, 3),
        (16, 64, 48, 7),
        (16, 272, 32, 2),
        (32, 96, 64, 1),
        (64, 128, 192, 5),
    ] {
        let s = Structure::Circulant(k);
        let stored = random(s.stored_len(rows, cols), (k * rows) as u64);
        let dense = s.expand(rows, cols, &stored).unwrap();
        let x = random(batch * cols, 7);
        let (ni, nj) = (rows / k, cols / k);
        let mut packed = vec![0.0; weights_len(rows, cols, k).unwrap()];
        pack_weights(&dense, rows, cols, k, &mut packed);
        // The inputs' spectra, in f64 then rounded (the panel kernels'
        // part is tested with them).
        let fwd = forward_matrix(k);
        let mut xs = vec![0.0f32; batch * cols];
        for b in 0..batch {
            for j in 0..nj {
                let chunk: Vec<f64> = (0..k).map(|a| f64::from(x[b * cols + j * k + a])).collect();
                for (o, v) in matvec(&fwd, k, &chunk).into_iter().enumerate() {
                    xs[b * cols + j * k + o] = v as f32;
                }
            }
        }
        let term = MacTerm {
            weights: packed.as_ptr(),
            chunks: nj,
            x: xs.as_ptr(),
            x_stride: cols,
        };
        let mut reference: Option<Vec<f32>> = None;
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            for split in [ni, ni.div_ceil(3).max(1)] {
                let mut ys = vec![f32::NAN; batch * rows];
                let mut c = 0;
                while c < ni {
                    let end = (c + split).min(ni);
                    // SAFETY: the spectra of `ni` x `nj` chunks, `batch`
                    // rows of `cols` and `rows` floats.
                    unsafe { mac(isa, k, &[term], c, end, batch, ys.as_mut_ptr(), rows) };
                    c = end;
                }
                match &reference {
                    None => reference = Some(ys.clone()),
                    Some(r) => assert!(
                        r.iter().zip(&ys).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "k = {k}: {} (chunks {split} per call) differs from the first",
                        isa.name()
                    ),
                }
            }
        }
        let ys = reference.unwrap();
        let inv = inverse_matrix(k);
        for b in 0..batch {
            let xb: Vec<f64> = x[b * cols..(b + 1) * cols]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let want = matvec(&dense, rows, &xb);
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for i in 0..ni {
                let spec: Vec<f64> = (0..k)
                    .map(|o| f64::from(ys[b * rows + i * k + o]))
                    .collect();
                let got = matvec(&inv, k, &spec);
                for a in 0..k {
                    let (g, w) = (got[a], want[i * k + a]);
                    assert!(
                        (g - w).abs() <= 1e-5 * scale,
                        "k = {k}, {rows}x{cols}, row {b}, element {}: {g} vs {w}",
                        i * k + a
                    );
                }
            }
        }
    }
}

#[test]
fn supported_sizes() {
    let yes: Vec<usize> = (0..200).filter(|&k| supported(k)).collect();
    assert_eq!(yes, vec![4, 8, 16, 32, 64]);
    assert_eq!(weights_len(32, 16, 8), Some(16 * 2 * 8));
}
