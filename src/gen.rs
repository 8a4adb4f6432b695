//! Random well-typed cells, for differential tests and fuzzing: the optimizer and
//! the JIT are checked against the interpreter on cells nobody wrote by hand.
//!
//! A generated cell has one or two inputs, one to three states, and a handful of
//! gates. A gate is an activation of a sum whose terms are matrix products of
//! inputs, states or earlier gates (so some products depend on others), biases,
//! element-wise products with parameter vectors (peepholes), reset-style terms
//! `g * (W @ v + b)`, subtractions and constants. States are updated from gates
//! and old states, through squashing or convex updates that keep them bounded,
//! or keep their value (`h' = h`, or another state's old value). Besides `y`, a
//! cell may output values no instruction computes: an input, a state's old or
//! new value, a parameter. Everything is generated from a seed, so a failure
//! reproduces.

use std::fmt::Write;

/// SplitMix64: small, fast, and good enough to pick shapes.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in [-1, 1): 53 random bits over [0, 2), shifted.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.unit() * scale).collect()
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The source text of a random cell. Sizes are `X` and `H` (defaults 3 and 4;
/// override them when compiling).
pub fn random_cell(seed: u64) -> String {
    let mut rng = Rng(seed);
    let mut g = Gen::default();
    let n_inputs = 1 + rng.below(2);
    let n_states = 1 + rng.below(3);
    let n_gates = 1 + rng.below(5);
    let mut text = String::from("// generated\ndim X = 3\ndim H = 4\n");
    for i in 0..n_inputs {
        let _ = writeln!(text, "input x{i}: [X]");
        g.x_vectors.push(format!("x{i}"));
    }
    for s in 0..n_states {
        let _ = writeln!(text, "state s{s}: [H]");
        g.h_vectors.push(format!("s{s}"));
    }
    let mut body = String::new();
    for k in 0..n_gates {
        let terms = 1 + rng.below(4);
        let sum = g.sum(&mut rng, terms);
        let gate = match rng.below(13) {
            0 => format!("sigmoid({sum})"),
            1 => format!("tanh({sum})"),
            2 => format!("relu({sum})"),
            3 => format!("exp(tanh({sum}))"),
            4 => format!("tanh({sum}) * sigmoid({})", g.sum(&mut rng, 1)),
            // Normalised over the units (a layer norm), with a learned scale.
            5 => {
                let _ = writeln!(body, "n{k} = {sum}");
                let scale = g.param("[H]");
                format!(
                    "tanh((n{k} - mean(n{k})) * rsqrt(mean((n{k} - mean(n{k})) * (n{k} - mean(n{k}))) + 0.01) * {scale})"
                )
            }
            6 => format!("hard_sigmoid({sum}) * softsign({})", g.sum(&mut rng, 1)),
            7 => format!(
                "clip({sum}, -2, 1.5) * min({}, max({}, 0.5))",
                g.sum(&mut rng, 1),
                g.sum(&mut rng, 1)
            ),
            8 => format!(
                "log(1 + abs({sum})) - sqrt(abs({})) + softplus({})",
                g.sum(&mut rng, 1),
                g.sum(&mut rng, 1)
            ),
            // A scalar parameter, and a reduction that broadcasts.
            9 => {
                let temperature = g.param("[]");
                let v = rng.pick(&g.x_vectors).clone();
                format!("tanh(({sum}) * {temperature} + sum({v}) * 0.1)")
            }
            10 => format!(
                "leaky_relu({sum}, 0.1) + elu({}) + relu6({}) * hard_tanh({})",
                g.sum(&mut rng, 1),
                g.sum(&mut rng, 1),
                g.sum(&mut rng, 1)
            ),
            _ => sum,
        };
        let _ = writeln!(body, "g{k} = {gate}");
        g.h_vectors.push(format!("g{k}"));
        g.gates.push(format!("g{k}"));
    }
    for s in 0..n_states {
        let a = rng.pick(&g.gates).clone();
        let b = rng.pick(&g.gates).clone();
        // Gates are anything; state updates are squashed or convex, so that a
        // sequence stays bounded (an unbounded recurrence is chaotic in f32 and
        // cannot be compared with f64 over many steps).
        let update = match rng.below(9) {
            0 | 1 => format!("sigmoid({a}) * s{s} + (1 - sigmoid({a})) * tanh({b})"),
            2 | 3 => format!("0.5 * sigmoid({a}) * s{s} + tanh({b})"),
            4 | 5 => format!("tanh({a} - 0.5 * s{s})"),
            // A state that does not change (`h' = h`), or takes another's old value.
            6 => format!("s{}", rng.below(n_states)),
            _ => format!("tanh({a})"),
        };
        let _ = writeln!(body, "s{s}' = {update}");
    }
    let last = rng.pick(&g.gates).clone();
    let out = if rng.chance(50) {
        format!("s0' * {last}")
    } else {
        "s0'".to_string()
    };
    let _ = writeln!(text, "output y: [H]");
    let _ = writeln!(body, "y = {out}");
    // More outputs, some of them not computed by the step at all: an input, a
    // state's old or new value, a parameter, a gate.
    for o in 0..rng.below(3) {
        let (len, value) = match rng.below(5) {
            0 => ("X", rng.pick(&g.x_vectors).clone()),
            1 => ("H", format!("s{}", rng.below(n_states))),
            2 => ("H", format!("s{}'", rng.below(n_states))),
            3 => ("H", g.param("[H]")),
            _ => ("H", rng.pick(&g.gates).clone()),
        };
        let _ = writeln!(text, "output z{o}: [{len}]");
        let _ = writeln!(body, "z{o} = {value}");
    }
    for p in &g.params {
        let _ = writeln!(text, "{p}");
    }
    text.push_str(&body);
    text
}

/// [`random_cell`] with some of its matrices block-circulant with blocks of
/// `k` (about half, chosen by the seed): compile it at sizes `X` and `H`
/// that `k` divides.
pub fn random_circulant_cell(seed: u64, k: usize) -> String {
    let mut rng = Rng(seed ^ 0xC1C1);
    let mut text = String::new();
    for line in random_cell(seed).lines() {
        let matrix = line.starts_with("param ") && line.contains(", ");
        match line.split_once(": [") {
            Some((head, shape)) if matrix && rng.chance(50) => {
                let _ = writeln!(text, "{head}: circulant({k})[{shape}");
            }
            _ => {
                let _ = writeln!(text, "{line}");
            }
        }
    }
    text
}

#[derive(Default)]
struct Gen {
    /// Vectors of length X and H that a term may read.
    x_vectors: Vec<String>,
    h_vectors: Vec<String>,
    gates: Vec<String>,
    params: Vec<String>,
}

impl Gen {
    fn param(&mut self, shape: &str) -> String {
        let name = format!("p{}", self.params.len());
        self.params.push(format!("param {name}: {shape}"));
        name
    }

    /// A product `W @ v` of length H, from any earlier vector.
    fn product(&mut self, rng: &mut Rng) -> String {
        if rng.chance(40) {
            let v = rng.pick(&self.x_vectors).clone();
            let w = self.param("[H, X]");
            format!("{w} @ {v}")
        } else {
            let v = rng.pick(&self.h_vectors).clone();
            let w = self.param("[H, H]");
            // Sometimes the product reads a gated vector (`W @ (g * s)`).
            if rng.chance(20) && !self.gates.is_empty() {
                let gate = rng.pick(&self.gates).clone();
                format!("{w} @ ({gate} * {v})")
            } else {
                format!("{w} @ {v}")
            }
        }
    }

    /// A sum of about `n` terms, at least one a product.
    fn sum(&mut self, rng: &mut Rng, n: usize) -> String {
        let mut terms = vec![self.product(rng)];
        for _ in 1..n.max(1) {
            let t = match rng.below(8) {
                0 | 1 => self.product(rng),
                2 => self.param("[H]"),
                3 => {
                    let p = self.param("[H]");
                    let v = rng.pick(&self.h_vectors).clone();
                    format!("{p} * {v}")
                }
                4 if !self.gates.is_empty() => {
                    let gate = rng.pick(&self.gates).clone();
                    let inner = self.product(rng);
                    let b = self.param("[H]");
                    format!("{gate} * ({inner} + {b})")
                }
                5 => format!("- {}", self.product(rng)),
                6 => "0.25".to_string(),
                _ => rng.pick(&self.h_vectors).clone(),
            };
            terms.push(t);
        }
        let mut s = String::new();
        for (i, t) in terms.iter().enumerate() {
            if i == 0 {
                s.push_str(t);
            } else if let Some(neg) = t.strip_prefix("- ") {
                let _ = write!(s, " - {neg}");
            } else {
                let _ = write!(s, " + {t}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_uniform_in_minus_one_to_one() {
        let mut rng = Rng(1);
        let n = 100_000;
        let v = rng.vec(n, 1.0);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        // Uniform on [-1, 1): mean 0, variance 1/3; 5 sigma of the estimates.
        assert!(
            mean.abs() < 5.0 * (1.0f64 / 3.0 / n as f64).sqrt(),
            "{mean}"
        );
        assert!((var - 1.0 / 3.0).abs() < 0.01, "{var}");
        let below = v.iter().filter(|&&x| x < -0.5).count() as f64 / n as f64;
        assert!((below - 0.25).abs() < 0.01, "{below}");
    }
}
