//! GGUF reader: parses a GGUF v2/v3 file held in memory (`&[u8]`), without copying tensor data.
//!
//! Spec: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. Layout:
//! `magic "GGUF" | version u32 | tensor_count u64 | kv_count u64 | kv pairs | tensor infos |
//! padding to general.alignment | tensor data`. All integers are little-endian.
//!
//! The file is untrusted input. Every length and count is checked against the bytes that are
//! really there before anything is allocated, nesting is bounded, and every tensor must lie
//! inside the data section, aligned and without overlapping another. Nothing here panics on
//! any input; each failure is a [`GgufError`] that says what and where.
//!
//! Works on a byte slice rather than a reader so that the browser (which holds the downloaded
//! model in one `Vec<u8>`) and native code share it.

mod error;
mod kquant;
mod quant;
mod reader;
mod value;

pub use error::GgufError;
pub use kquant::{q3_k_scales, scale_min_k4};
pub use quant::{dequantize, GgmlType, QK_K, SUPPORTED};
pub use value::{Array, Value, ValueType};

use reader::Reader;
use std::collections::HashMap;

/// Magic bytes at the start of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (ggml's GGML_MAX_DIMS).
pub const MAX_DIMS: usize = 4;
/// Bytes of the fixed header: magic, version, tensor count, metadata count.
pub const HEADER_BYTES: usize = 24;

/// Checks the fixed header at the start of a file of `file_len` bytes (`first`: its first
/// [`HEADER_BYTES`] bytes, or all of a shorter file): the magic, the version, and counts of
/// metadata pairs and tensor infos that the file could hold. Lets a reader refuse a file
/// that is no GGUF model before reading the rest of it.
pub fn check_header(first: &[u8], file_len: u64) -> Result<(), GgufError> {
    let mut r = Reader::new(first);
    let (_, tensor_count, kv_count) = read_header(&mut r)?;
    // Each pair needs at least 13 bytes, each tensor info 24 (see the readers below).
    let needed = kv_count
        .saturating_mul(13)
        .saturating_add(tensor_count.saturating_mul(24));
    let room = file_len.saturating_sub(HEADER_BYTES as u64);
    if needed > room {
        return Err(GgufError::Truncated {
            what: format!("{kv_count} metadata pairs and {tensor_count} tensor infos"),
            offset: HEADER_BYTES as u64,
            needed,
        });
    }
    Ok(())
}

/// Magic and version (checked), then the tensor and metadata counts.
fn read_header(r: &mut Reader<'_>) -> Result<(u32, u64, u64), GgufError> {
    let magic = r.bytes(4, "magic")?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic {
            found: magic.try_into().unwrap_or([0; 4]),
        });
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => return Err(GgufError::BigEndian),
        v => return Err(GgufError::UnsupportedVersion(v)),
    }
    let tensor_count = r.u64("tensor_count")?;
    let kv_count = r.u64("metadata_kv_count")?;
    Ok((version, tensor_count, kv_count))
}

/// One tensor's header entry, validated against the data section.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo<'a> {
    pub name: &'a str,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension, i.e. the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the first byte, relative to the start of the data section.
    pub offset: u64,
    /// Size in bytes of the tensor's data.
    pub size: u64,
}

impl TensorInfo<'_> {
    /// Rows of a `[rows][row_len]` matrix (1 for a vector).
    pub fn rows(&self) -> usize {
        self.dims.get(1).copied().unwrap_or(1) as usize
    }

    /// Number of elements (the product of the dimensions; checked at parse time).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file. Borrows strings and tensor data from the input bytes.
#[derive(Debug)]
pub struct Gguf<'a> {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(&'a str, Value<'a>)>,
    /// Each key's index in `metadata`, for [`Gguf::get`].
    index: HashMap<&'a str, usize>,
    pub tensors: Vec<TensorInfo<'a>>,
    pub alignment: u64,
    /// Absolute file offset where the data section starts.
    pub data_offset: u64,
    bytes: &'a [u8],
}

impl<'a> Gguf<'a> {
    /// The whole file's bytes (for a fingerprint of the model).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Parses and validates the header, metadata and tensor infos of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, GgufError> {
        Self::parse_head(bytes, bytes.len() as u64)
    }

    /// Parses the header, metadata and tensor infos from the first bytes of a file of
    /// `file_len` bytes, the tensors' ranges checked against `file_len`; their data are not
    /// there ([`Gguf::tensor_bytes`] is empty past `head`). For the page, which needs only the
    /// tokenizer and the shapes while the engine's worker gets the whole file. A head too short
    /// for the tensor infos is [`GgufError::Truncated`]: read more and try again.
    pub fn parse_head(head: &'a [u8], file_len: u64) -> Result<Self, GgufError> {
        let bytes = head;
        let mut r = Reader::new(bytes);
        let (version, tensor_count, kv_count) = read_header(&mut r)?;
        let (metadata, index) = read_metadata(&mut r, kv_count)?;
        let alignment = alignment_of(
            index
                .get("general.alignment")
                .and_then(|&i| metadata.get(i))
                .map(|(_, v)| v),
        )?;
        let infos = read_tensor_infos(&mut r, tensor_count)?;
        let data_offset = align_up(r.position() as u64, alignment)
            .ok_or(GgufError::Overflow("data section offset"))?;
        let data_len = file_len.max(bytes.len() as u64).saturating_sub(data_offset);
        let tensors = validate_tensors(infos, alignment, data_len)?;
        Ok(Gguf {
            version,
            metadata,
            index,
            tensors,
            alignment,
            data_offset,
            bytes,
        })
    }

    /// The metadata value stored under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|(_, v)| v)
    }

    /// The value under `key`, or [`GgufError::MissingKey`].
    pub fn require(&self, key: &str) -> Result<&Value<'a>, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    /// A required unsigned integer (any integer type that is non-negative and fits in u64).
    pub fn u64(&self, key: &str) -> Result<u64, GgufError> {
        self.require(key)?.to_u64().map_err(|e| e.at(key))
    }

    /// A required integer that must fit in `usize` (counts and sizes).
    pub fn usize(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.u64(key)?;
        usize::try_from(v).map_err(|_| GgufError::OutOfRange {
            key: key.to_string(),
            value: v.to_string(),
        })
    }

    /// A required float (f32 or f64).
    pub fn f32(&self, key: &str) -> Result<f32, GgufError> {
        self.require(key)?.to_f32().map_err(|e| e.at(key))
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&'a str, GgufError> {
        self.require(key)?.to_str().map_err(|e| e.at(key))
    }

    /// A required bool.
    pub fn bool(&self, key: &str) -> Result<bool, GgufError> {
        self.require(key)?.to_bool().map_err(|e| e.at(key))
    }

    /// A required array.
    pub fn array(&self, key: &str) -> Result<&Array<'a>, GgufError> {
        self.require(key)?.to_array().map_err(|e| e.at(key))
    }

    /// A required array of strings; an item of another type is named by its index.
    pub fn str_array(&self, key: &str) -> Result<Vec<&'a str>, GgufError> {
        let items = self.array(key)?.iter().enumerate();
        items
            .map(|(i, v)| v.to_str().map_err(|e| e.at(&format!("{key}[{i}]"))))
            .collect()
    }

    /// `read(self, key)` (one of the getters above) if the key is present, else `None`.
    pub fn optional<'s, T>(
        &'s self,
        key: &str,
        read: impl FnOnce(&'s Self, &str) -> Result<T, GgufError>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            Some(_) => read(self, key).map(Some),
            None => Ok(None),
        }
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo<'a>> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw (still quantized) bytes of a tensor. Bounds were checked by [`Gguf::parse`].
    pub fn tensor_bytes(&self, t: &TensorInfo<'_>) -> &'a [u8] {
        let start = (self.data_offset + t.offset) as usize;
        let end = start + t.size as usize;
        self.bytes.get(start..end).unwrap_or(&[])
    }

    /// The tensor's data dequantized to f32, in ggml order (rows of `dims[0]` values).
    pub fn dequantize(&self, t: &TensorInfo<'_>) -> Result<Vec<f32>, GgufError> {
        dequantize(t.ggml_type, self.tensor_bytes(t), t.n_elements() as usize)
            .map_err(|e| e.in_tensor(t.name))
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two), or `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Most nested array levels accepted: real files use one; the bound keeps recursion shallow.
const MAX_ARRAY_DEPTH: usize = 8;

/// Metadata in file order, and each key's index in it.
type Metadata<'a> = (Vec<(&'a str, Value<'a>)>, HashMap<&'a str, usize>);

/// Reads `count` key-value pairs; a key seen before is an error (found in a hash set, so a
/// file with many keys costs linear time).
fn read_metadata<'a>(r: &mut Reader<'a>, count: u64) -> Result<Metadata<'a>, GgufError> {
    // Each pair needs at least a key length (8), one key byte and a type (4).
    let cap = r.capacity_for(count, 13);
    let mut out = Vec::with_capacity(cap);
    let mut index = HashMap::with_capacity(cap);
    for i in 0..count {
        let key = r.string(|| format!("metadata key #{i}"))?;
        if index.insert(key, out.len()).is_some() {
            return Err(GgufError::DuplicateKey(key.to_string()));
        }
        let ty = r.u32("metadata value type")?;
        let ty = ValueType::from_u32(ty).ok_or_else(|| GgufError::BadValueType {
            key: key.to_string(),
            type_id: ty,
        })?;
        let value = value::read_value(r, ty, key, MAX_ARRAY_DEPTH)?;
        out.push((key, value));
    }
    Ok((out, index))
}

/// The data section's alignment: `general.alignment` (its value, if present) or the default.
fn alignment_of(value: Option<&Value<'_>>) -> Result<u64, GgufError> {
    let Some(v) = value else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let a = v.to_u64().map_err(|e| e.at("general.alignment"))?;
    if a == 0 || !a.is_power_of_two() || a > 1 << 16 {
        return Err(GgufError::BadAlignment(a));
    }
    Ok(a)
}

/// A tensor info as read, before its place in the data section is checked.
struct RawInfo<'a> {
    name: &'a str,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

fn read_tensor_infos<'a>(r: &mut Reader<'a>, count: u64) -> Result<Vec<RawInfo<'a>>, GgufError> {
    // Each info needs at least name length (8) + n_dims (4) + type (4) + offset (8).
    let mut out = Vec::with_capacity(r.capacity_for(count, 24));
    for i in 0..count {
        let name = r.string(|| format!("tensor name #{i}"))?;
        let n_dims = r.u32("tensor n_dims")? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadDims {
                tensor: name.to_string(),
                reason: format!("{n_dims} dimensions (1..={MAX_DIMS} allowed)"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(r.u64("tensor dimension")?);
        }
        let type_id = r.u32("tensor type")?;
        let offset = r.u64("tensor offset")?;
        out.push(RawInfo {
            name,
            dims,
            type_id,
            offset,
        });
    }
    Ok(out)
}

fn validate_tensors<'a>(
    infos: Vec<RawInfo<'a>>,
    alignment: u64,
    data_len: u64,
) -> Result<Vec<TensorInfo<'a>>, GgufError> {
    let mut tensors = Vec::with_capacity(infos.len());
    for raw in infos {
        tensors.push(validate_tensor(raw, alignment, data_len)?);
    }
    check_names_and_overlaps(&tensors)?;
    Ok(tensors)
}

fn validate_tensor<'a>(
    raw: RawInfo<'a>,
    alignment: u64,
    data_len: u64,
) -> Result<TensorInfo<'a>, GgufError> {
    let name = raw.name;
    let bad_dims = |reason: String| GgufError::BadDims {
        tensor: name.to_string(),
        reason,
    };
    let ggml_type =
        GgmlType::from_u32(raw.type_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.to_string(),
            type_id: raw.type_id,
        })?;
    if raw.dims.contains(&0) {
        return Err(bad_dims(format!("a zero dimension in {:?}", raw.dims)));
    }
    let n = raw
        .dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| bad_dims(format!("element count of {:?} overflows", raw.dims)))?;
    let (block, block_bytes) = ggml_type.block();
    if !raw.dims[0].is_multiple_of(block) {
        return Err(bad_dims(format!(
            "row length {} is not a multiple of the {} block size {block}",
            raw.dims[0],
            ggml_type.name()
        )));
    }
    let size = (n / block)
        .checked_mul(block_bytes)
        .ok_or_else(|| bad_dims(format!("byte size of {:?} overflows", raw.dims)))?;
    if !raw.offset.is_multiple_of(alignment) {
        return Err(GgufError::Misaligned {
            tensor: name.to_string(),
            offset: raw.offset,
            alignment,
        });
    }
    let end = raw.offset.checked_add(size).filter(|&e| e <= data_len);
    if end.is_none() {
        return Err(GgufError::TensorOutOfBounds {
            tensor: name.to_string(),
            offset: raw.offset,
            size,
            data_len,
        });
    }
    Ok(TensorInfo {
        name,
        dims: raw.dims,
        ggml_type,
        offset: raw.offset,
        size,
    })
}

fn check_names_and_overlaps(tensors: &[TensorInfo<'_>]) -> Result<(), GgufError> {
    let mut by_offset: Vec<&TensorInfo<'_>> = tensors.iter().collect();
    by_offset.sort_by_key(|t| (t.offset, t.name));
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.size > b.offset {
            return Err(GgufError::Overlap {
                first: a.name.to_string(),
                second: b.name.to_string(),
            });
        }
    }
    let mut names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(GgufError::DuplicateTensor(w[0].to_string()));
    }
    Ok(())
}
