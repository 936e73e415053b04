//! Writes GGUF v3 files for tests: synthetic models, and re-serialized copies of the real
//! model's header with chosen changes.

use gqa_lab::gguf::{Array, Gguf, Value, ValueType};

/// A tensor to write: name, ggml dims, ggml type id and its raw data.
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value<'_>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend(x.to_le_bytes()),
        Value::I16(x) => out.extend(x.to_le_bytes()),
        Value::U32(x) => out.extend(x.to_le_bytes()),
        Value::I32(x) => out.extend(x.to_le_bytes()),
        Value::F32(x) => out.extend(x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend(x.to_le_bytes()),
        Value::I64(x) => out.extend(x.to_le_bytes()),
        Value::F64(x) => out.extend(x.to_le_bytes()),
        Value::Array(a) => {
            out.extend((a.elem_type() as u32).to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|i| put_value(out, &i));
        }
    }
}

/// The header (magic, version, counts, metadata, tensor infos) without padding or data.
/// Tensor offsets are laid out back to back at 32-byte alignment.
pub fn header(kvs: &[(&str, Value<'_>)], tensors: &[(&str, &[u64], u32, u64)]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut out, k);
        out.extend((v.value_type() as u32).to_le_bytes());
        put_value(&mut out, v);
    }
    for (name, dims, ty, offset) in tensors {
        put_str(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
    }
    out
}

/// A whole GGUF file with the given metadata and tensors (alignment 32).
pub fn file(kvs: &[(&str, Value<'_>)], tensors: &[TensorSpec]) -> Vec<u8> {
    let mut offsets = Vec::new();
    let mut at = 0u64;
    for t in tensors {
        offsets.push(at);
        at = (at + t.data.len() as u64).div_ceil(32) * 32;
    }
    let infos: Vec<(&str, &[u64], u32, u64)> = tensors
        .iter()
        .zip(&offsets)
        .map(|(t, &o)| (t.name.as_str(), t.dims.as_slice(), t.type_id, o))
        .collect();
    let mut out = header(kvs, &infos);
    out.resize(out.len().div_ceil(32) * 32, 0);
    let base = out.len();
    for (t, &o) in tensors.iter().zip(&offsets) {
        out.resize(base + o as usize, 0);
        out.extend(&t.data);
    }
    out
}

/// The real model's header re-serialized, with every array cut to its first `keep` items:
/// all the real keys, types and tensor infos in a few kilobytes. No tensor data follows.
pub fn compact_real_header(real: &Gguf<'_>, keep: usize) -> Vec<u8> {
    let kvs: Vec<(&str, Value<'_>)> = real
        .metadata
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Array(a) => {
                    Value::Array(Array::new(a.elem_type(), a.iter().take(keep).collect()))
                }
                other => other.clone(),
            };
            (*k, v)
        })
        .collect();
    let infos: Vec<(&str, &[u64], u32, u64)> = real
        .tensors
        .iter()
        .map(|t| (t.name, t.dims.as_slice(), t.ggml_type.id(), t.offset))
        .collect();
    header(&kvs, &infos)
}

/// Shorthand for a string array value.
pub fn strings<'a>(items: &[&'a str]) -> Value<'a> {
    Value::Array(Array::new(
        ValueType::String,
        items.iter().map(|s| Value::String(s)).collect(),
    ))
}
