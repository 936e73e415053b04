//! GGUF blocks to the `cpu-q8` layouts, at load: every 32 weights become one [`Layout`] block
//! of small integers q with their scale d (per 32 weights, or per 16 for [`Layout::Halves`])
//! and, for the types with one, their offset b, each computed in f32 as `gguf::dequantize`
//! computes it, so that its weight is the dequantizer's to the bit (`QMatrix::row` says how;
//! tested in `tests.rs`).
//!
//! | GGUF type | layout | q | d | b |
//! |---|---|---|---|---|
//! | Q4_0 | Nibbles | 0..15 | d | −8·d |
//! | Q4_1 | Nibbles | 0..15 | d | m |
//! | Q4_K | Nibbles | 0..15 | d·sc | −(dmin·m) |
//! | Q8_0 | Bytes | −128..127 | d | none |
//! | Q5_0 | Bytes | −16..15 | d | none |
//! | Q5_1 | Bytes | 0..31 | d | m |
//! | Q5_K | Bytes | 0..31 | d·sc | −(dmin·m) |
//! | Q6_K | Halves | −32..31 | d·sc | none |
//! | Q3_K | Halves | −4..3 | d·sc | none |
//! | Q2_K | Halves | 0..3 | d·sc | −(dmin·m) (per 16) |
//!
//! (sc and m: the K-quants' integer sub-block scales and minimums; d, dmin, m of the legacy
//! types: their f16 fields.) Every d·sc and dmin·m is exact in f32 (an f16 times an integer
//! of at most 8 bits), as are the legacy types' q·d and −8·d.

use super::{Layout, QK};
use crate::gguf::{q3_k_scales, scale_min_k4, GgmlType};
use half::f16;

/// Where the blocks go: `qs` the quants (16 bytes of nibbles, or 32 × i8, per block), `d` the
/// scales (one or two per block), `b` the offsets (as many as `d`, or none).
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

    /// 32 weights 0..15 as nibbles: byte j holds weight j (low) and j + 16 (high).
    fn nibbles(&mut self, q: &[u8; QK]) {
        self.qs
            .extend((0..QK / 2).map(|j| (q[j] & 15) | (q[j + QK / 2] << 4)));
    }
}

/// The layout `ty` is multiplied in, and whether it has an offset; `None` if the backend does
/// not multiply it in blocks.
pub(super) fn layout(ty: GgmlType) -> Option<(Layout, bool)> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 | Q4_1 | Q4K => (Layout::Nibbles, true),
        Q8_0 | Q5_0 => (Layout::Bytes, false),
        Q5_1 | Q5K => (Layout::Bytes, true),
        Q6K | Q3K => (Layout::Halves, false),
        Q2K => (Layout::Halves, true),
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
        GgmlType::Q4K | GgmlType::Q5K => q45_k(blk, ty == GgmlType::Q5K, out),
        GgmlType::Q6K => q6_k(blk, out),
        GgmlType::Q3K => q3_k(blk, out),
        GgmlType::Q2K => q2_k(blk, out),
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

/// Q4_K or Q5_K: sub-block 2i + h (32 weights) is nibble h of `qs[32i..32i + 32]`, plus for
/// Q5_K bit 2i + h of `qh[l]` as the fifth; scale d·sc, offset −(dmin·m).
fn q45_k(blk: &[u8], five: bool, out: &mut Sink) {
    let (d, dmin) = (half(blk, 0), half(blk, 2));
    let scales = &blk[4..16];
    let (qh, qs) = if five {
        (&blk[16..48], &blk[48..176])
    } else {
        (&[][..], &blk[16..144])
    };
    for sub in 0..8 {
        let (sc, m) = scale_min_k4(sub, scales);
        out.d.push(d * sc as f32);
        out.b.push(-(dmin * m as f32));
        let q: [u8; QK] = std::array::from_fn(|l| {
            let nibble = (qs[32 * (sub / 2) + l] >> (4 * (sub % 2))) & 15;
            let fifth = if five { ((qh[l] >> sub) & 1) << 4 } else { 0 };
            nibble | fifth
        });
        if five {
            out.bytes(q.map(|v| v as i8));
        } else {
            out.nibbles(&q);
        }
    }
}

/// Q6_K: 2 halves of 128 weights, each 4 runs of 32 (the low/high nibbles of `ql[0..32]` and
/// `ql[32..64]`, 2 high bits from `qh[l]` at shift 2·run); q − 32; scale d·sc per 16.
fn q6_k(blk: &[u8], out: &mut Sink) {
    let d = half(blk, 208);
    for n in 0..2 {
        let ql = &blk[64 * n..64 * n + 64];
        let qh = &blk[128 + 32 * n..128 + 32 * n + 32];
        let sc = &blk[192 + 8 * n..192 + 8 * n + 8];
        for run in 0..4 {
            let (lo, shift) = ([0, 32, 0, 32][run], [0, 0, 4, 4][run]);
            out.d.push(d * sc[2 * run] as i8 as f32);
            out.d.push(d * sc[2 * run + 1] as i8 as f32);
            out.bytes((0..QK).map(|l| {
                let q = ((ql[lo + l] >> shift) & 15) | (((qh[l] >> (2 * run)) & 3) << 4);
                q as i8 - 32
            }));
        }
    }
}

/// Q3_K: 2 halves of 128 weights, each 4 shifts of 32 (2 bits of `qs[l]`, the third from
/// `hmask[l]`: set +0, clear −4); scale d·sc per 16 (sc signed, 6 bits).
fn q3_k(blk: &[u8], out: &mut Sink) {
    let d = half(blk, 108);
    let (hmask, scales) = (&blk[0..32], q3_k_scales(&blk[96..108]));
    for n in 0..2 {
        let q = &blk[32 + 32 * n..64 + 32 * n];
        for shift in 0..4 {
            let bit = 1u8 << (4 * n + shift);
            let is = 8 * n + 2 * shift;
            out.d.push(d * scales[is] as f32);
            out.d.push(d * scales[is + 1] as f32);
            out.bytes((0..QK).map(|l| {
                let low = ((q[l] >> (2 * shift)) & 3) as i8;
                low - if hmask[l] & bit != 0 { 0 } else { 4 }
            }));
        }
    }
}

/// Q2_K: 2 halves of 128 weights, each 4 shifts of 32 (2 bits of `qs[l]`); per 16 a byte of
/// `scales`: scale d·(low nibble), offset −(dmin·(high nibble)).
fn q2_k(blk: &[u8], out: &mut Sink) {
    let (d, dmin) = (half(blk, 80), half(blk, 82));
    for n in 0..2 {
        let q = &blk[16 + 32 * n..48 + 32 * n];
        for shift in 0..4 {
            for sc in &blk[8 * n + 2 * shift..8 * n + 2 * shift + 2] {
                out.d.push(d * (sc & 15) as f32);
                out.b.push(-(dmin * (sc >> 4) as f32));
            }
            out.bytes((0..QK).map(|l| ((q[l] >> (2 * shift)) & 3) as i8));
        }
    }
}
