//! The legacy GGUF blocks to the `cpu-q8` layouts, at load: every 32 weights become one
//! [`Layout`] block of small integers q with their scale d and, for the types with one, their
//! offset b, each computed in f32 as `gguf::dequantize` computes it, so that its weight is the
//! dequantizer's to the bit (`Repacked::row` says how; tested in `tests.rs`). The K-quants are
//! not repacked: they keep the file's super-blocks (`superblock.rs`).
//!
//! | GGUF type | layout | q | d | b | bytes per weight (file) |
//! |---|---|---|---|---|---|
//! | Q4_0 | Nibbles | 0..15 | d | −8·d | 0.75 (0.5625) |
//! | Q4_1 | Nibbles | 0..15 | d | m | 0.75 (0.625) |
//! | Q8_0 | Bytes | −128..127 | d | none | 1.125 (1.0625) |
//! | Q5_0 | Bytes | −16..15 | d | none | 1.125 (0.6875) |
//! | Q5_1 | Bytes | 0..31 | d | m | 1.25 (0.75) |
//!
//! (d and m: the blocks' f16 fields.) Every q·d and −8·d is exact in f32.

use super::{Layout, QK};
use crate::gguf::GgmlType;
use half::f16;

/// Where the blocks go: `qs` the quants (16 bytes of nibbles, or 32 × i8, per block), `d` the
/// scales (one per block), `b` the offsets (as many as `d`, or none).
#[derive(Default)]
pub(super) struct Sink {
    pub(super) qs: Vec<u8>,
    pub(super) d: Vec<f32>,
    pub(super) b: Vec<f32>,
}

impl Sink {
    /// 32 weights as bytes (i8).
    fn bytes(&mut self, q: impl IntoIterator<Item = i8>) {
        self.qs.extend(q.into_iter().map(|v| v as u8));
    }
}

/// The layout `ty` is multiplied in, and whether it has an offset; `None` if the backend does
/// not multiply it in blocks.
pub(super) fn layout(ty: GgmlType) -> Option<(Layout, bool)> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 | Q4_1 => (Layout::Nibbles, true),
        Q8_0 | Q5_0 => (Layout::Bytes, false),
        Q5_1 => (Layout::Bytes, true),
        _ => return None,
    })
}

fn half(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Appends one GGUF block of `ty` (`ty.block().1` bytes; a type [`layout`] takes) to `out`.
pub(super) fn block(ty: GgmlType, blk: &[u8], out: &mut Sink) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let d = half(blk, 0);
            let (b, qs) = match ty {
                GgmlType::Q4_1 => (half(blk, 2), &blk[4..20]),
                _ => (-8.0 * d, &blk[2..18]),
            };
            out.d.push(d);
            out.b.push(b);
            out.qs.extend_from_slice(qs);
        }
        GgmlType::Q8_0 => {
            out.d.push(half(blk, 0));
            out.qs.extend_from_slice(&blk[2..34]);
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => q5(blk, ty == GgmlType::Q5_1, out),
        _ => unreachable!("{} has no cpu-q8 layout", ty.name()),
    }
}

/// Q5_0 (`d, qh, qs`: q − 16, no offset) or Q5_1 (`d, m, qh, qs`: q, offset m); weight j
/// takes bit j of `qh` as its fifth.
fn q5(blk: &[u8], with_min: bool, out: &mut Sink) {
    let (rest, offset) = if with_min {
        (&blk[4..], 0)
    } else {
        (&blk[2..], 16)
    };
    let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let qs = &rest[4..20];
    out.d.push(half(blk, 0));
    if with_min {
        out.b.push(half(blk, 2));
    }
    out.bytes((0..QK).map(|j| {
        let nibble = if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 };
        ((nibble | (((qh >> j) & 1) << 4) as u8) as i8) - offset
    }));
}
