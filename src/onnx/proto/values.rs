//! A tensor's values: `raw_data`, the typed fields or an external file,
//! decoded to the element type its `data_type` says, every size checked.

use super::{err, for_each_field, ints, External, Field, Tensor, WeightsError};

/// The elements a tensor of `dims` holds, checked: no negative dimension,
/// no overflow.
fn element_count(dims: &[i64], what: &str) -> Result<(Vec<usize>, usize), WeightsError> {
    let shape = dims
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| WeightsError(format!("{what} has a negative dimension ({d})")))
        })
        .collect::<Result<Vec<usize>, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| WeightsError(format!("{what} is too large (its size overflows)")))?;
    Ok((shape, n))
}

/// A tensor's values, of the element type its `data_type` says, before any
/// conversion.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// float16 bits.
    F16(Vec<u16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

/// Reads the bytes an [`External`] names: `(where, how many)`.
pub type ReadExternal<'r> = dyn Fn(&External<'_>, usize) -> Result<Vec<u8>, WeightsError> + 'r;

impl Tensor<'_> {
    /// The values of the typed field `number` (packed or not), at most `n`:
    /// a field that holds more is an error, decoded no further.
    fn field_values<T>(
        &self,
        number: u64,
        n: usize,
        what: &str,
        mut decode: impl FnMut(Field<'_>, &mut Vec<T>) -> Result<(), WeightsError>,
    ) -> Result<Vec<T>, WeightsError> {
        let mut out: Vec<T> = Vec::new();
        for_each_field(self.body, |num, f| {
            if num == number {
                decode(f, &mut out)?;
                if out.len() > n {
                    return err(format!(
                        "{what} holds more values than its shape {:?}",
                        self.dims
                    ));
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The tensor's values as stored in the model file (`raw_data` or the
    /// typed fields): `n` of them, or an error naming what is wrong. Bytes
    /// outside the model come from `external` (which reads what the
    /// tensor's [`External`] names).
    pub fn values(
        &self,
        what: &str,
        external: &ReadExternal<'_>,
    ) -> Result<(Vec<usize>, Values), WeightsError> {
        if self.segmented {
            return err(format!("{what} is segmented; cellc reads whole tensors"));
        }
        let (shape, n) = element_count(&self.dims, what)?;
        let size = element_size(self.data_type, what)?;
        let owned;
        let raw = match (&self.external, self.raw) {
            (Some(e), _) => {
                let bytes = n.checked_mul(size).ok_or_else(|| {
                    WeightsError(format!("{what} is too large (its size overflows)"))
                })?;
                owned = external(e, bytes)?;
                Some(owned.as_slice())
            }
            (None, raw) => raw,
        };
        if let Some(raw) = raw {
            if Some(raw.len()) != n.checked_mul(size) {
                return err(format!(
                    "{what} has {} bytes of data for its shape {shape:?} ({n} values of {size} bytes)",
                    raw.len()
                ));
            }
            return Ok((shape, decode_raw(self.data_type, raw)));
        }
        let values = self.typed_values(n, what)?;
        if values.len() != n {
            return err(format!(
                "{what} has {} values for its shape {shape:?} ({n})",
                values.len()
            ));
        }
        Ok((shape, values))
    }

    /// The values of the typed fields: float_data (4), int32_data (5, also
    /// for int8, uint8 and float16 bits), int64_data (7), double_data (10);
    /// at most `n`.
    fn typed_values(&self, n: usize, what: &str) -> Result<Values, WeightsError> {
        let varints = |f: Field<'_>, out: &mut Vec<i64>| -> Result<(), WeightsError> {
            ints(f, out, n.saturating_add(1), "values in one tensor")
        };
        Ok(match self.data_type {
            1 => Values::F32(self.field_values(4, n, what, |f, out: &mut Vec<f32>| {
                match f {
                    Field::Fixed32(v) => out.push(f32::from_bits(v)),
                    Field::Bytes(b) => {
                        if b.len() / 4 > n {
                            return err(format!("{what} holds more values than its shape"));
                        }
                        out.extend(b.chunks_exact(4).map(f32_le))
                    }
                    _ => return err(format!("not an ONNX model: {what} has the wrong encoding")),
                }
                Ok(())
            })?),
            11 => Values::F64(self.field_values(10, n, what, |f, out: &mut Vec<f64>| {
                match f {
                    Field::Fixed64(v) => out.push(f64::from_bits(v)),
                    Field::Bytes(b) => {
                        if b.len() / 8 > n {
                            return err(format!("{what} holds more values than its shape"));
                        }
                        out.extend(b.chunks_exact(8).map(f64_le))
                    }
                    _ => return err(format!("not an ONNX model: {what} has the wrong encoding")),
                }
                Ok(())
            })?),
            7 => Values::I64(self.field_values(7, n, what, varints)?),
            6 | 3 | 2 | 10 => {
                let v = self.field_values(5, n, what, varints)?;
                match self.data_type {
                    6 => Values::I32(v.iter().map(|&x| x as i32).collect()),
                    3 => Values::I8(v.iter().map(|&x| x as i8).collect()),
                    2 => Values::U8(v.iter().map(|&x| x as u8).collect()),
                    _ => Values::F16(v.iter().map(|&x| x as u16).collect()),
                }
            }
            _ => unreachable_type()?,
        })
    }
}

impl Values {
    pub(crate) fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::F16(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::I8(v) => v.len(),
            Values::U8(v) => v.len(),
        }
    }
}

/// Bytes per element of the types cellc reads; an error for the others.
fn element_size(data_type: i64, what: &str) -> Result<usize, WeightsError> {
    match data_type {
        1 | 6 => Ok(4),
        2 | 3 => Ok(1),
        7 | 11 => Ok(8),
        10 => Ok(2),
        other => err(format!(
            "{what} has ONNX element type {}; cellc reads float, double, float16, \
             int64, int32, int8 and uint8 tensors",
            element_type_name(other)
        )),
    }
}

fn f32_le(c: &[u8]) -> f32 {
    f32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

fn f64_le(c: &[u8]) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    f64::from_le_bytes(a)
}

/// `raw_data` of a type [`element_size`] accepts, whose length is a
/// multiple of the element's size (little-endian, as ONNX stores it).
fn decode_raw(data_type: i64, raw: &[u8]) -> Values {
    match data_type {
        1 => Values::F32(raw.chunks_exact(4).map(f32_le).collect()),
        6 => Values::I32(
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        7 => Values::I64(
            raw.chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    i64::from_le_bytes(a)
                })
                .collect(),
        ),
        11 => Values::F64(raw.chunks_exact(8).map(f64_le).collect()),
        10 => Values::F16(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        3 => Values::I8(raw.iter().map(|&b| b as i8).collect()),
        _ => Values::U8(raw.to_vec()),
    }
}

fn unreachable_type<T>() -> Result<T, WeightsError> {
    err("internal error: an element type checked above is not handled")
}

fn element_type_name(code: i64) -> String {
    let name = match code {
        1 => "float",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "double",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => return format!("{code}"),
    };
    format!("{code} ({name})")
}
