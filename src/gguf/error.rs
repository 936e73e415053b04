//! Errors of the GGUF boundary: each names what was wrong and where in the file.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum GgufError {
    #[error("not a GGUF file: the first four bytes are {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("file truncated: {what} at byte {offset} needs {needed} more bytes than the file has")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    BadUtf8 { what: String, offset: u64 },
    #[error("metadata key {key:?} has unknown value type {type_id}")]
    BadValueType { key: String, type_id: u32 },
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    TooDeep { key: String, max: usize },
    #[error("general.alignment = {0} is not a power of two between 1 and 65536")]
    BadAlignment(u64),
    #[error("overflow computing the {0}")]
    Overflow(&'static str),
    #[error("required metadata key {0:?} is missing")]
    MissingKey(String),
    #[error("metadata key {key:?} is a {found}, expected {expected}")]
    WrongType {
        key: String,
        found: String,
        expected: &'static str,
    },
    #[error("metadata key {key:?} = {value} is out of range")]
    OutOfRange { key: String, value: String },
    #[error("tensor {tensor:?}: {reason}")]
    BadDims { tensor: String, reason: String },
    #[error("tensor {tensor:?} has unknown ggml type id {type_id}")]
    UnknownTensorType { tensor: String, type_id: u32 },
    #[error("unsupported tensor type {type_name} in {tensor} (supported: {supported})")]
    UnsupportedTensorType {
        type_name: &'static str,
        tensor: String,
        supported: String,
    },
    #[error("tensor {tensor:?} at offset {offset} must be aligned to {alignment} bytes")]
    Misaligned {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {tensor:?} ({size} bytes at data offset {offset}) runs past the end of the data section ({data_len} bytes)")]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },
    #[error("tensors {first:?} and {second:?} overlap")]
    Overlap { first: String, second: String },
    #[error("tensor name {0:?} appears twice")]
    DuplicateTensor(String),
    #[error("tensor {tensor:?}: {reason}")]
    BadTensorData { tensor: String, reason: String },
}

impl GgufError {
    /// Fills in the key of a type error raised by a [`super::Value`] getter (its getters
    /// know no key: every caller of one names the key it read).
    pub fn at(self, key: &str) -> Self {
        match self {
            GgufError::WrongType {
                found, expected, ..
            } => GgufError::WrongType {
                key: key.to_string(),
                found,
                expected,
            },
            GgufError::OutOfRange { value, .. } => GgufError::OutOfRange {
                key: key.to_string(),
                value,
            },
            other => other,
        }
    }

    /// Fills in the tensor name of an error raised while dequantizing.
    pub(super) fn in_tensor(self, name: &str) -> Self {
        match self {
            GgufError::UnsupportedTensorType {
                type_name,
                supported,
                ..
            } => GgufError::UnsupportedTensorType {
                type_name,
                tensor: name.to_string(),
                supported,
            },
            GgufError::BadTensorData { reason, .. } => GgufError::BadTensorData {
                tensor: name.to_string(),
                reason,
            },
            other => other,
        }
    }
}
