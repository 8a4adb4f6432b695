//! Size expressions in normal form, so that shapes can be compared before sizes
//! are known: `2*H` and `H + H` are equal, `[H, X]` applied to `[H]` is not.
//!
//! A [`Poly`] is a sum of monomials over size variables with integer coefficients.
//! Arithmetic saturates instead of overflowing; a saturated polynomial compares
//! unequal to everything ordinary, which is the safe answer for a shape check.

use std::collections::BTreeMap;
use std::fmt;

/// A polynomial over size variables (indices into the cell's `dim` list).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Poly {
    /// Monomial (sorted variable indices, repeated for powers) -> coefficient; no zeros.
    terms: BTreeMap<Vec<u32>, i64>,
}

impl Poly {
    pub fn constant(c: i64) -> Poly {
        let mut p = Poly::default();
        if c != 0 {
            p.terms.insert(Vec::new(), c);
        }
        p
    }

    pub fn var(v: u32) -> Poly {
        let mut p = Poly::default();
        p.terms.insert(vec![v], 1);
        p
    }

    pub fn add(&self, other: &Poly) -> Poly {
        let mut out = self.clone();
        for (m, c) in &other.terms {
            let e = out.terms.entry(m.clone()).or_insert(0);
            *e = e.saturating_add(*c);
            if *e == 0 {
                out.terms.remove(m);
            }
        }
        out
    }

    pub fn neg(&self) -> Poly {
        Poly {
            terms: self
                .terms
                .iter()
                .map(|(m, c)| (m.clone(), c.saturating_neg()))
                .collect(),
        }
    }

    pub fn sub(&self, other: &Poly) -> Poly {
        self.add(&other.neg())
    }

    pub fn mul(&self, other: &Poly) -> Poly {
        let mut out = Poly::default();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut m = ma.clone();
                m.extend_from_slice(mb);
                m.sort_unstable();
                // Bound the degree so that hostile input cannot grow monomials forever.
                if m.len() > 16 {
                    m.truncate(16);
                }
                let term = Poly {
                    terms: BTreeMap::from([(m, ca.saturating_mul(*cb))]),
                };
                out = out.add(&term);
            }
        }
        out
    }

    /// The monomials (variable indices) and their coefficients.
    pub fn terms(&self) -> impl Iterator<Item = (&[u32], i64)> {
        self.terms.iter().map(|(m, c)| (m.as_slice(), *c))
    }

    /// Solves `self = value` for the one variable it does not know, when the
    /// polynomial is linear in it (`2*H + X = 96` with X known gives H). Returns
    /// the variable and its value if that value is a whole number.
    pub fn solve(&self, known: &[Option<u64>], value: i128) -> Option<Result<(u32, i128), ()>> {
        let mut rest: i128 = 0;
        let mut unknown: Option<(u32, i128)> = None;
        for (m, c) in &self.terms {
            let mut coeff = *c as i128;
            let mut free: Vec<u32> = Vec::new();
            for &v in m {
                match known.get(v as usize).copied().flatten() {
                    Some(k) => coeff = coeff.checked_mul(k as i128)?,
                    None => free.push(v),
                }
            }
            match free.as_slice() {
                [] => rest = rest.checked_add(coeff)?,
                [v] => match unknown {
                    None => unknown = Some((*v, coeff)),
                    Some((u, c)) if u == *v => unknown = Some((u, c.checked_add(coeff)?)),
                    Some(_) => return None,
                },
                _ => return None,
            }
        }
        let (v, c) = unknown?;
        if c == 0 {
            return None;
        }
        let num = value.checked_sub(rest)?;
        if num % c != 0 {
            return Some(Err(()));
        }
        Some(Ok((v, num / c)))
    }

    /// The value for concrete sizes, or `None` on overflow.
    pub fn eval(&self, sizes: &[u64]) -> Option<i128> {
        let mut total: i128 = 0;
        for (m, c) in &self.terms {
            let mut v: i128 = *c as i128;
            for &var in m {
                let s = *sizes.get(var as usize)? as i128;
                v = v.checked_mul(s)?;
                if v.unsigned_abs() > (1u128 << 100) {
                    return None;
                }
            }
            total = total.checked_add(v)?;
        }
        Some(total)
    }

    /// Formats with the cell's size-variable names.
    pub fn display<'a>(&'a self, names: &'a [String]) -> impl fmt::Display + 'a {
        PolyDisplay { poly: self, names }
    }
}

struct PolyDisplay<'a> {
    poly: &'a Poly,
    names: &'a [String],
}

impl fmt::Display for PolyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.poly.terms.is_empty() {
            return write!(f, "0");
        }
        // Highest degree first reads most naturally (`2*H + 1`).
        let mut terms: Vec<_> = self.poly.terms.iter().collect();
        terms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (i, (m, c)) in terms.into_iter().enumerate() {
            let c = *c;
            if i > 0 {
                write!(f, "{}", if c < 0 { " - " } else { " + " })?;
            } else if c < 0 {
                write!(f, "-")?;
            }
            let a = c.unsigned_abs();
            let vars: Vec<&str> = m
                .iter()
                .map(|&v| self.names.get(v as usize).map_or("?", String::as_str))
                .collect();
            if vars.is_empty() {
                write!(f, "{a}")?;
            } else {
                if a != 1 {
                    write!(f, "{a}*")?;
                }
                write!(f, "{}", vars.join("*"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_form_identifies_equal_sizes() {
        let h = Poly::var(0);
        let x = Poly::var(1);
        assert_eq!(h.add(&h), Poly::constant(2).mul(&h));
        assert_eq!(h.add(&x).sub(&h), x);
        assert_ne!(h, x);
        assert_eq!(h.mul(&x), x.mul(&h));
    }

    #[test]
    fn display_and_eval() {
        let names = vec!["H".to_string(), "X".to_string()];
        let p = Poly::constant(2)
            .mul(&Poly::var(0))
            .add(&Poly::var(1))
            .sub(&Poly::constant(1));
        assert_eq!(p.display(&names).to_string(), "2*H + X - 1");
        assert_eq!(p.eval(&[10, 3]), Some(22));
        assert_eq!(p.eval(&[10]), None);
    }
}
