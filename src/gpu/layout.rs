//! How weight tensors are laid out on the GPU: the GGUF blocks, bit for bit, split into two
//! textures that the kernels read with `textureLoad` (quant.wgsl):
//!
//! - **payload** (`rgba32uint`): each 32-weight block's quantized values as whole texels —
//!   Q4_0/Q4_1 1 texel (16 bytes of nibbles), Q8_0 2 texels (32 × i8), F16/BF16 4, F32 8;
//! - **scales** (`r32uint`): the block's scale word — Q4_1 `d|m` (two f16), Q4_0/Q8_0 `d`
//!   (f16 in the low half); float types have none (a 1×1 placeholder).
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
//! Why textures and not storage buffers: the bytes are the same (only Q4_0 and Q8_0 grow, by
//! 2 bytes of scale padding per block), but texel fetches are what software rasterisers do
//! well. On Mesa's lavapipe (the GPU of machines without one) a storage-buffer load is a
//! per-invocation loop with a bounds check per component, while a texel fetch is one vector
//! gather: with the activation read as a uniform, the output head's matrix-vector product
//! takes 23 ms from textures and 34 ms from storage buffers there (benches/README.md). On
//! real GPUs both go through the same caches.

use crate::gguf::GgmlType;

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
    /// `[scale_size.1][scale_size.0]` words; empty for float types.
    pub scales: Vec<u32>,
    /// Scale texture (width, height); (0, 0) for float types.
    pub scale_size: (u32, u32),
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
    Some(match ty {
        GgmlType::Q4_1 | GgmlType::Q4_0 => 1,
        GgmlType::Q8_0 => 2,
        GgmlType::F16 | GgmlType::BF16 => 4,
        GgmlType::F32 => 8,
        _ => return None,
    })
}

/// Bytes of 32 weights in the file (float types have 1-element "blocks" in ggml).
fn file_bytes_per_block(ty: GgmlType) -> usize {
    match ty {
        GgmlType::F32 => 128,
        GgmlType::F16 | GgmlType::BF16 => 64,
        _ => ty.block().1 as usize,
    }
}

/// Splits one GGUF block (`raw` holds exactly one) into its scale word, if the type has one,
/// and its payload words.
fn split_block(ty: GgmlType, raw: &[u8], payload: &mut Vec<u32>) -> Option<u32> {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let (scale, rest) = match ty {
        // d (f16), then the quants: the scale is padded to a whole word.
        GgmlType::Q4_0 | GgmlType::Q8_0 => {
            (Some(u16::from_le_bytes([raw[0], raw[1]]) as u32), &raw[2..])
        }
        // d|m (two f16) fill a word.
        GgmlType::Q4_1 => (Some(word(raw)), &raw[4..]),
        _ => (None, raw),
    };
    payload.extend(rest.chunks_exact(4).map(word));
    scale
}

/// Rearranges a `[rows][row_len]` GGUF tensor into the GPU layout. `bytes` must hold exactly
/// `rows · row_len` weights of type `ty` (checked by the reader); `None` for other types.
pub fn planes(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<WeightPlanes> {
    let tpb = texels_per_block(ty)?;
    let per_block = file_bytes_per_block(ty);
    if rows == 0 || !bytes.len().is_multiple_of(rows * per_block) {
        return None;
    }
    let nb = bytes.len() / rows / per_block;
    let slots = rows.div_ceil(LANES) * LANES * nb;
    let (pw, ph) = texture_size(slots * tpb);
    let (sw, sh) = texture_size(slots);
    let mut payload = vec![0u32; pw * ph * 4];
    let mut scales = vec![0u32; sw * sh];
    let mut words = Vec::with_capacity(tpb * 4);
    for (i, raw) in bytes.chunks_exact(per_block).enumerate() {
        let at = slot(i / nb, i % nb, nb);
        words.clear();
        if let Some(s) = split_block(ty, raw, &mut words) {
            scales[at] = s;
        }
        for (j, texel) in words.chunks_exact(4).enumerate() {
            let t = payload_texel(at, tpb, j) * 4;
            payload[t..t + 4].copy_from_slice(texel);
        }
    }
    let has_scales = matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0);
    let size = |(w, h): (usize, usize)| (w as u32, h as u32);
    Some(WeightPlanes {
        payload,
        payload_size: size((pw, ph)),
        scales: if has_scales { scales } else { Vec::new() },
        scale_size: if has_scales { size((sw, sh)) } else { (0, 0) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_split_into_scales_and_texels() {
        // 2 rows × 1 block each: slots 0 and 1 of a group of LANES.
        let mut bytes = Vec::new();
        for r in 0..2u8 {
            bytes.extend([0x00, 0x3C]); // d = 1.0
            bytes.extend((0..32).map(|i| i + 32 * r));
        }
        let p = planes(GgmlType::Q8_0, &bytes, 2).unwrap();
        assert_eq!(p.payload_size, (2 * LANES as u32, 1));
        assert_eq!(p.scale_size, (LANES as u32, 1));
        assert_eq!(&p.scales[..3], &[0x3C00, 0x3C00, 0]);
        // Texels 0 and 1: the first texel of rows 0 and 1 (bytes 0..16, 32..48).
        assert_eq!(p.payload[0], u32::from_le_bytes([0, 1, 2, 3]));
        assert_eq!(p.payload[4], u32::from_le_bytes([32, 33, 34, 35]));
        // Texel LANES: the second texel of row 0.
        assert_eq!(p.payload[LANES * 4], u32::from_le_bytes([16, 17, 18, 19]));
    }

    #[test]
    fn a_groups_blocks_follow_each_other() {
        // 3 rows × 2 Q4_1 blocks: row 1's block 1 is slot LANES + 1.
        let mut bytes = vec![0u8; 3 * 2 * 20];
        bytes[3 * 20..3 * 20 + 4].copy_from_slice(&[5, 6, 7, 8]);
        bytes[3 * 20 + 4] = 0xCD;
        let p = planes(GgmlType::Q4_1, &bytes, 3).unwrap();
        assert_eq!(slot(1, 1, 2), LANES + 1);
        assert_eq!(p.scales[LANES + 1], u32::from_le_bytes([5, 6, 7, 8]));
        assert_eq!(p.payload[(LANES + 1) * 4], 0xCD);
    }

    #[test]
    fn texels_past_the_width_go_to_the_next_texture_row() {
        // WIDTH + 1 rows of one Q4_1 block: row WIDTH has slot WIDTH, at (0, 1).
        let rows = WIDTH + 1;
        let mut bytes = vec![0u8; rows * 20];
        bytes[WIDTH * 20..WIDTH * 20 + 4].copy_from_slice(&[1, 2, 3, 4]);
        bytes[WIDTH * 20 + 4] = 0xAB;
        let p = planes(GgmlType::Q4_1, &bytes, rows).unwrap();
        assert_eq!(p.scale_size, (WIDTH as u32, 2));
        assert_eq!(p.scales[WIDTH], u32::from_le_bytes([1, 2, 3, 4]));
        assert_eq!(p.payload[WIDTH * 4], 0xAB);
    }

    #[test]
    fn float_types_have_no_scales_and_bad_shapes_are_refused() {
        let p = planes(GgmlType::F16, &[0u8; 64 * 3], 3).unwrap();
        assert!(p.scales.is_empty());
        // 3 rows padded to LANES, 4 texels per block.
        assert_eq!(p.payload_size, (4 * LANES as u32, 1));
        assert!(planes(GgmlType::Q4_1, &[0u8; 30], 1).is_none());
        assert!(planes(GgmlType::Q5_0, &[0u8; 22], 1).is_none());
    }
}
