//! How weight tensors are laid out on the GPU: every type as 32-weight blocks, split into two
//! textures that the kernels read with `textureLoad` (quant.wgsl):
//!
//! - **payload** (`rgba32uint`): each 32-weight block's quantized values as whole texels;
//! - **scales**: one texel per block (`r32uint`, `rg32uint` or `rgba32uint` by type) with
//!   what the block needs beside its payload; float types, Q2_K and Q3_K have none (a 1×1
//!   placeholder).
//!
//! The legacy types keep their GGUF blocks bit for bit; the K-quants' super-blocks of 256 are
//! repacked at upload into 32-weight blocks of the same shape, their nibbles in the legacy
//! order (byte j: weight j in the low nibble, weight j + 16 in the high one) and their
//! sub-block scales multiplied out on the host in f32 as [`crate::gguf::dequantize`] does
//! (d·sc and dmin·m: an f16 times a 6- or 8-bit integer, exact in f32), so the kernels read
//! one scale (Q6_K: one per 16 weights) and one minimum per block:
//!
//! | type | payload texel(s) | scale texel | bytes / 32 on the GPU | bits per weight: GPU / file |
//! |---|---|---|---|---|
//! | F32 | 8: the values | — | 128 | 32 / 32 |
//! | F16, BF16 | 4: the values | — | 64 | 16 / 16 |
//! | Q8_0 | 2: 32 × i8 | r: d (f16, low half) | 36 | 9 / 8.5 |
//! | Q4_0 | 1: nibbles | r: d (f16, low half) | 20 | 5 / 4.5 |
//! | Q4_1 | 1: nibbles | r: d\|m (two f16) | 20 | 5 / 5 |
//! | Q5_0 | 1: nibbles | rg: d (f16), qh (fifth bits) | 24 | 6 / 5.5 |
//! | Q5_1 | 1: nibbles | rg: d\|m, qh | 24 | 6 / 6 |
//! | Q4_K | 1: nibbles | rg: d·sc, dmin·m (f32) | 24 | 6 / 4.5 |
//! | Q5_K | 1: nibbles | rgba: d·sc, dmin·m (f32), fifth bits, 0 | 32 | 8 / 5.5 |
//! | Q6_K | 1: low nibbles | rgba: high 2 bits (2 words), d·sc per 16 (2 × f32) | 32 | 8 / 6.5625 |
//! | Q2_K | 1: 2-bit quants (2 words), the 2 scale bytes, d\|dmin | — | 16 | 4 / 2.625 |
//! | Q3_K | 1: 2-bit quants (2 words), high bits, d (f16) \| s₀ + 32 \| s₁ + 32 | — | 16 | 4 / 3.4375 |
//!
//! Bit j of a "bits" word and 2-bit field j of a quants word are weight j (j < 16 in the first
//! quants word, 16 + j in the second). Q2_K and Q3_K keep their sub-block scales as small
//! integers and the kernels multiply them by d, the same exact f32 product. Rows are padded
//! to a group of [`LANES`] and textures to whole texture rows; nothing else is added.
//!
//! Blocks are laid out so that a kernel's invocations (each on its own rows) read memory
//! in order: rows go in groups of [`LANES`], and a group's blocks are stored block by block,
//! the `LANES` rows of block `b` side by side. Block `b` of row `o` has the **slot**
//! `((o div LANES) · n_blocks + b) · LANES + o mod LANES`; its scale is scale texel `slot`, its
//! payload texel `j` is payload texel `(slot − slot mod LANES) · texels_per_block + j · LANES +
//! slot mod LANES`; texel `i` of a texture lies at `(i mod WIDTH, i div WIDTH)`. So `LANES`
//! neighbouring invocations read `LANES` neighbouring texels, and each moves on to the next
//! ones as it walks along its row: one stream through memory per group, where a layout with
//! the block index as the texture row (the first one here) jumps a texture row per block and
//! makes lavapipe miss cache and TLB on every block.
//!
//! A texture is [`WIDTH`] texels wide, so a tensor's height is its texels / `WIDTH`. Each is
//! a 2D texture array: one layer while the height is within the device's
//! `max_texture_dimension_2d` (8192 by WebGPU's default: 2²⁵ texels, 512 MiB of payload;
//! Gemma 3's Q8_0 embedding of 262,144 × 640 takes 2560 rows), else split over as many layers
//! of that height as it takes (`Gpu::texture_with`; quant.wgsl finds texel i's layer from the
//! texture's height). Only a tensor past `max_texture_array_layers` of them is refused, up
//! front, by name.
//!
//! Why textures and not storage buffers: the bytes are about the same, but texel fetches are
//! what software rasterisers do well. On Mesa's lavapipe (the GPU of machines without one) a
//! storage-buffer load is a per-invocation loop with a bounds check per component, while a
//! texel fetch is one vector gather: with the activation read as a uniform, the output head's
//! matrix-vector product takes 23 ms from textures and 34 ms from storage buffers there
//! (benches/README.md). On real GPUs both go through the same caches.

use crate::gguf::{q3_k_scales, scale_min_k4, GgmlType};
use half::f16;

/// Texture width (texels); `WIDTH` in quant.wgsl. Narrower only when a texture has fewer texels.
pub const WIDTH: usize = 4096;

/// Rows whose blocks are interleaved; `LANES` in quant.wgsl.
pub const LANES: usize = 8;

/// A weight tensor in the GPU layout, ready for two texture uploads.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightPlanes {
    /// `[payload.1][payload.0]` texels of 4 words each.
    pub payload: Vec<u32>,
    /// Payload texture (width, height).
    pub payload_size: (u32, u32),
    /// `[scale_size.1][scale_size.0]` texels of [`scale_words`] words; empty for types
    /// without a scale texture.
    pub scales: Vec<u32>,
    /// Scale texture (width, height); (0, 0) for types without one.
    pub scale_size: (u32, u32),
    /// Words per scale texel: 1 (`r32uint`), 2 (`rg32uint`), 4 (`rgba32uint`) or 0.
    pub scale_words: usize,
}

/// The slot of block `b` of row `o` in a tensor of `nb` blocks per row (see the module doc).
fn slot(o: usize, b: usize, nb: usize) -> usize {
    ((o / LANES) * nb + b) * LANES + o % LANES
}

/// Payload texel `j` of the block in `slot`.
fn payload_texel(slot: usize, tpb: usize, j: usize) -> usize {
    let l = slot % LANES;
    (slot - l) * tpb + j * LANES + l
}

/// Width and height of a texture of `texels` texels, rows of [`WIDTH`].
fn texture_size(texels: usize) -> (usize, usize) {
    (texels.min(WIDTH), texels.div_ceil(WIDTH))
}

/// Texels per 32-weight block in the payload texture (`texels_per_block` in quant.wgsl).
pub fn texels_per_block(ty: GgmlType) -> Option<usize> {
    use GgmlType::*;
    Some(match ty {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2K | Q3K | Q4K | Q5K | Q6K => 1,
        Q8_0 => 2,
        F16 | BF16 => 4,
        F32 => 8,
        _ => return None,
    })
}

/// Words of a block's scale texel: 0 (no scale texture), 1, 2 or 4.
pub fn scale_words(ty: GgmlType) -> usize {
    use GgmlType::*;
    match ty {
        Q4_0 | Q4_1 | Q8_0 => 1,
        Q5_0 | Q5_1 | Q4K => 2,
        Q5K | Q6K => 4,
        _ => 0,
    }
}

/// Bytes per 32 weights on the GPU (payload and scale texels, without padding).
pub fn gpu_bytes_per_block(ty: GgmlType) -> Option<usize> {
    Some(texels_per_block(ty)? * 16 + scale_words(ty) * 4)
}

/// The textures a `[rows][row_len]` weight of type `ty` takes: payload and scale (width,
/// height) in texels, and their bytes; `None` for a type the GPU does not read.
pub fn footprint(ty: GgmlType, rows: usize, row_len: usize) -> Option<Footprint> {
    let (tpb, sw) = (texels_per_block(ty)?, scale_words(ty));
    let slots = rows.div_ceil(LANES) * LANES * row_len.div_ceil(32);
    let (payload, scales) = (texture_size(slots * tpb), texture_size(slots));
    let bytes = payload.0 * payload.1 * 16
        + if sw > 0 {
            scales.0 * scales.1 * sw * 4
        } else {
            0
        };
    Some(Footprint {
        payload,
        scales,
        bytes: bytes as u64,
    })
}

/// What [`footprint`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub payload: (usize, usize),
    pub scales: (usize, usize),
    pub bytes: u64,
}

/// (weights, bytes) of one block in the file (float types as blocks of 32 weights).
fn file_block(ty: GgmlType) -> (usize, usize) {
    match ty {
        GgmlType::F32 => (32, 128),
        GgmlType::F16 | GgmlType::BF16 => (32, 64),
        _ => {
            let (n, bytes) = ty.block();
            (n as usize, bytes as usize)
        }
    }
}

/// Rearranges a `[rows][row_len]` GGUF tensor into the GPU layout. `bytes` must hold exactly
/// `rows · row_len` weights of type `ty` (checked by the reader); `None` for other types.
pub fn planes(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<WeightPlanes> {
    let tpb = texels_per_block(ty)?;
    let sw = scale_words(ty);
    let (block, block_bytes) = file_block(ty);
    if rows == 0 || !bytes.len().is_multiple_of(rows * block_bytes) {
        return None;
    }
    let per_row = bytes.len() / rows / block_bytes; // file blocks per row
    let (sub, nb) = (block / 32, per_row * block / 32); // GPU blocks per file block, per row
    let slots = rows.div_ceil(LANES) * LANES * nb;
    let (pw, ph) = texture_size(slots * tpb);
    let (cw, ch) = texture_size(slots);
    let mut payload = vec![0u32; pw * ph * 4];
    let mut scales = vec![0u32; cw * ch * sw];
    let (mut p, mut s) = (
        Vec::with_capacity(sub * tpb * 4),
        Vec::with_capacity(sub * sw),
    );
    for (i, raw) in bytes.chunks_exact(block_bytes).enumerate() {
        let (row, first) = (i / per_row, i % per_row * sub);
        p.clear();
        s.clear();
        repack(ty, raw, &mut p, &mut s);
        for k in 0..sub {
            let at = slot(row, first + k, nb);
            scales[at * sw..(at + 1) * sw].copy_from_slice(&s[k * sw..(k + 1) * sw]);
            for j in 0..tpb {
                let t = payload_texel(at, tpb, j) * 4;
                payload[t..t + 4].copy_from_slice(&p[(k * tpb + j) * 4..][..4]);
            }
        }
    }
    let size = |(w, h): (usize, usize)| (w as u32, h as u32);
    Some(WeightPlanes {
        payload,
        payload_size: size((pw, ph)),
        scales,
        scale_size: if sw > 0 { size((cw, ch)) } else { (0, 0) },
        scale_words: sw,
    })
}

/// One file block (`raw`) as GPU blocks of 32 weights: their payload words (texels in order)
/// onto `p`, their scale texels' words onto `s` (see the module doc's table).
fn repack(ty: GgmlType, raw: &[u8], p: &mut Vec<u32>, s: &mut Vec<u32>) {
    use GgmlType::*;
    let word = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    let half = |i: usize| u16::from_le_bytes([raw[i], raw[i + 1]]) as u32;
    let float = |i: usize| f16::from_bits(half(i) as u16).to_f32();
    let words = |from: usize, to: usize| (from..to).step_by(4).map(word);
    match ty {
        F32 | F16 | BF16 => p.extend(words(0, raw.len())),
        // d (f16), then the quants: the scale is padded to a whole word.
        Q4_0 | Q8_0 => {
            s.push(half(0));
            p.extend(words(2, raw.len()));
        }
        // d|m (two f16) fill a word.
        Q4_1 => {
            s.push(word(0));
            p.extend(words(4, 20));
        }
        Q5_0 => {
            s.extend([half(0), word(2)]);
            p.extend(words(6, 22));
        }
        Q5_1 => {
            s.extend([word(0), word(4)]);
            p.extend(words(8, 24));
        }
        // 8 sub-blocks of 32: sub-block j is the low (j even) or high nibbles of qs[32·(j/2)..].
        Q4K | Q5K => {
            let (d, dmin) = (float(0), float(2));
            let qs = if ty == Q5K {
                &raw[48..176]
            } else {
                &raw[16..144]
            };
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &raw[4..16]);
                p.extend(nibbles(|l| qs[32 * (j / 2) + l] >> (4 * (j % 2))));
                s.extend([(d * sc as f32).to_bits(), (dmin * m as f32).to_bits()]);
                if ty == Q5K {
                    s.extend([bits(|l| raw[16 + l] >> j), 0]);
                }
            }
        }
        // 2 halves of 128, each 4 runs of 32: low/high nibbles of ql[0..32], ql[32..64], the
        // high 2 bits at shift 2·run of qh[l]; an i8 scale per 16.
        Q6K => {
            let d = float(208);
            for n in 0..2 {
                for run in 0..4 {
                    let (lo, shift) = (64 * n + 32 * (run % 2), 4 * (run / 2));
                    let high = |l: usize| raw[128 + 32 * n + l] >> (2 * run);
                    let scale = |h: usize| d * raw[192 + 8 * n + 2 * run + h] as i8 as f32;
                    p.extend(nibbles(|l| raw[lo + l] >> shift));
                    s.extend([crumbs(high), crumbs(|l| high(16 + l))]);
                    s.extend([scale(0).to_bits(), scale(1).to_bits()]);
                }
            }
        }
        // 2 halves of 128, each 4 shifts of qs[32·n..][0..32]; a scale byte per 16.
        Q2K => {
            for n in 0..2 {
                for (i, shift) in [0, 2, 4, 6].into_iter().enumerate() {
                    let q = |l: usize| raw[16 + 32 * n + l] >> shift;
                    let is = 8 * n + 2 * i;
                    let sc = raw[is] as u32 | (raw[is + 1] as u32) << 8;
                    p.extend([crumbs(q), crumbs(|l| q(16 + l)), sc, word(80)]);
                }
            }
        }
        // As Q2_K, the third bit from hmask bit 4n + i, signed 6-bit scales.
        Q3K => {
            let sc = q3_k_scales(&raw[96..108]);
            for n in 0..2 {
                for (i, shift) in [0, 2, 4, 6].into_iter().enumerate() {
                    let q = |l: usize| raw[32 + 32 * n + l] >> shift;
                    let is = 8 * n + 2 * i;
                    let scales = |h: usize| ((sc[is + h] + 32) as u32) << (16 + 8 * h);
                    let d = half(108) | scales(0) | scales(1);
                    let h = bits(|l| raw[l] >> (4 * n + i));
                    p.extend([crumbs(q), crumbs(|l| q(16 + l)), h, d]);
                }
            }
        }
        _ => unreachable!("texels_per_block refuses {}", ty.name()),
    }
}

/// 32 nibbles (the low 4 bits of `q(l)`) as 4 words: byte j holds weight j in its low nibble
/// and weight j + 16 in its high one.
fn nibbles(q: impl Fn(usize) -> u8) -> [u32; 4] {
    std::array::from_fn(|w| {
        (0..4).fold(0, |acc, b| {
            let j = 4 * w + b;
            acc | (((q(j) & 15) | (q(j + 16) & 15) << 4) as u32) << (8 * b)
        })
    })
}

/// The low bits of `q(0..32)` as one word, bit j from weight j.
fn bits(q: impl Fn(usize) -> u8) -> u32 {
    (0..32).fold(0, |acc, l| acc | ((q(l) & 1) as u32) << l)
}

/// The low 2 bits of `q(0..16)` as one word, bits 2j, 2j + 1 from weight j.
fn crumbs(q: impl Fn(usize) -> u8) -> u32 {
    (0..16).fold(0, |acc, l| acc | ((q(l) & 3) as u32) << (2 * l))
}

#[cfg(test)]
mod tests;
