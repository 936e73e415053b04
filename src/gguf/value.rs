//! Typed GGUF metadata values and their checked getters (candle's `to_u32()` habit: a getter
//! on the wrong type is an error, never a silent cast).

use super::reader::Reader;
use super::GgufError;

/// The value types of the GGUF spec, with their on-disk ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_u32(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Bytes per value for the fixed-size types; `None` for strings and arrays.
    fn fixed_size(self) -> Option<usize> {
        match self {
            ValueType::String | ValueType::Array => None,
            t => Some(t.min_size()),
        }
    }

    /// The fewest bytes one value of this type takes on disk.
    fn min_size(self) -> usize {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value. Strings borrow from the file bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(&'a str),
    Array(Array<'a>),
    U64(u64),
    I64(i64),
    F64(f64),
}

pub(super) fn read_value<'a>(
    r: &mut Reader<'a>,
    ty: ValueType,
    key: &str,
    depth: usize,
) -> Result<Value<'a>, GgufError> {
    use ValueType as T;
    Ok(match ty {
        T::U8 => Value::U8(r.u8(key)?),
        T::I8 => Value::I8(r.u8(key)? as i8),
        T::U16 => Value::U16(r.u16(key)?),
        T::I16 => Value::I16(r.u16(key)? as i16),
        T::U32 => Value::U32(r.u32(key)?),
        T::I32 => Value::I32(r.u32(key)? as i32),
        T::F32 => Value::F32(f32::from_bits(r.u32(key)?)),
        T::Bool => match r.u8(key)? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => {
                return Err(GgufError::OutOfRange {
                    key: key.to_string(),
                    value: format!("bool byte {b}"),
                })
            }
        },
        T::String => Value::String(r.string(|| format!("value of {key:?}"))?),
        T::U64 => Value::U64(r.u64(key)?),
        T::I64 => Value::I64(r.u64(key)? as i64),
        T::F64 => Value::F64(f64::from_bits(r.u64(key)?)),
        T::Array => read_array(r, key, depth)?,
    })
}

fn read_array<'a>(r: &mut Reader<'a>, key: &str, depth: usize) -> Result<Value<'a>, GgufError> {
    if depth == 0 {
        return Err(GgufError::TooDeep {
            key: key.to_string(),
            max: super::MAX_ARRAY_DEPTH,
        });
    }
    let type_id = r.u32(key)?;
    let elem = ValueType::from_u32(type_id).ok_or_else(|| GgufError::BadValueType {
        key: key.to_string(),
        type_id,
    })?;
    let count = r.u64(key)?;
    if let Some(size) = elem.fixed_size() {
        // Numbers stay packed in the file bytes: no per-item allocation at all.
        let bytes = r.bytes(count.saturating_mul(size as u64), key)?;
        if elem == ValueType::Bool && bytes.iter().any(|&b| b > 1) {
            return Err(GgufError::OutOfRange {
                key: key.to_string(),
                value: "a bool byte other than 0 or 1".into(),
            });
        }
        return Ok(Value::Array(Array {
            elem,
            repr: Repr::Packed {
                count: count as usize,
                bytes,
            },
        }));
    }
    let mut items = Vec::with_capacity(r.capacity_for(count, elem.min_size()));
    for _ in 0..count {
        items.push(read_value(r, elem, key, depth - 1)?);
    }
    Ok(Value::Array(Array::new(elem, items)))
}

/// An array value. Arrays of numbers or bools borrow their packed bytes from the file and
/// decode an item when asked; arrays of strings or arrays hold parsed items.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<'a> {
    elem: ValueType,
    repr: Repr<'a>,
}

#[derive(Debug, Clone, PartialEq)]
enum Repr<'a> {
    Packed { count: usize, bytes: &'a [u8] },
    Items(Vec<Value<'a>>),
}

impl<'a> Array<'a> {
    /// An array of already-built items (used when writing GGUF).
    pub fn new(elem: ValueType, items: Vec<Value<'a>>) -> Self {
        Array {
            elem,
            repr: Repr::Items(items),
        }
    }

    pub fn elem_type(&self) -> ValueType {
        self.elem
    }

    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Packed { count, .. } => *count,
            Repr::Items(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Item `i`, decoded.
    pub fn get(&self, i: usize) -> Option<Value<'a>> {
        match &self.repr {
            Repr::Items(items) => items.get(i).cloned(),
            Repr::Packed { bytes, count } => {
                let size = self.elem.fixed_size()?;
                if i >= *count {
                    return None;
                }
                let mut r = Reader::new(bytes.get(i * size..(i + 1) * size)?);
                read_value(&mut r, self.elem, "", 1).ok()
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Value<'a>> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }
}

impl<'a> Value<'a> {
    /// The type name used in error messages.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => format!("array of {:?}", a.elem_type()),
            other => format!("{:?}", other.value_type()),
        }
    }

    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    fn wrong(&self, expected: &'static str) -> GgufError {
        GgufError::WrongType {
            key: String::new(),
            found: self.type_name(),
            expected,
        }
    }

    /// Any integer type holding a non-negative value.
    pub fn to_u64(&self) -> Result<u64, GgufError> {
        let signed = |v: i64| {
            u64::try_from(v).map_err(|_| GgufError::OutOfRange {
                key: String::new(),
                value: v.to_string(),
            })
        };
        match *self {
            Value::U8(v) => Ok(v.into()),
            Value::U16(v) => Ok(v.into()),
            Value::U32(v) => Ok(v.into()),
            Value::U64(v) => Ok(v),
            Value::I8(v) => signed(v.into()),
            Value::I16(v) => signed(v.into()),
            Value::I32(v) => signed(v.into()),
            Value::I64(v) => signed(v),
            _ => Err(self.wrong("a non-negative integer")),
        }
    }

    /// Any integer type, as i64.
    pub fn to_i64(&self) -> Result<i64, GgufError> {
        match *self {
            Value::I8(v) => Ok(v.into()),
            Value::I16(v) => Ok(v.into()),
            Value::I32(v) => Ok(v.into()),
            Value::I64(v) => Ok(v),
            _ => self.to_u64().and_then(|v| {
                i64::try_from(v).map_err(|_| GgufError::OutOfRange {
                    key: String::new(),
                    value: v.to_string(),
                })
            }),
        }
    }

    pub fn to_f32(&self) -> Result<f32, GgufError> {
        match *self {
            Value::F32(v) => Ok(v),
            Value::F64(v) => Ok(v as f32),
            _ => Err(self.wrong("a float")),
        }
    }

    pub fn to_bool(&self) -> Result<bool, GgufError> {
        match *self {
            Value::Bool(v) => Ok(v),
            _ => Err(self.wrong("a bool")),
        }
    }

    pub fn to_str(&self) -> Result<&'a str, GgufError> {
        match *self {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong("a string")),
        }
    }

    /// An array value.
    pub fn to_array(&self) -> Result<&Array<'a>, GgufError> {
        match self {
            Value::Array(a) => Ok(a),
            _ => Err(self.wrong("an array")),
        }
    }

    /// An array of strings.
    pub fn to_str_array(&self) -> Result<Vec<&'a str>, GgufError> {
        self.to_array()?.iter().map(|v| v.to_str()).collect()
    }
}
