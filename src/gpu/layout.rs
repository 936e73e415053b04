//! How weight tensors are laid out on the GPU: the GGUF blocks, bit for bit, split into two
//! textures that the kernels read with `textureLoad` (quant.wgsl):
//!
//! - **payload** (`rgba32uint`): each 32-weight block's quantized values as whole texels —
//!   Q4_0/Q4_1 1 texel (16 bytes of nibbles), Q8_0 2 texels (32 × i8), F16/BF16 4, F32 8;
//! - **scales** (`r32uint`): the block's scale word — Q4_1 `d|m` (two f16), Q4_0/Q8_0 `d`
//!   (f16 in the low half); float types have none (a 1×1 placeholder).
//!
//! Rows are laid side by side in stripes of [`STRIPE`] rows, so that neighbouring invocations
//! (one per output row) read neighbouring texels: block `b` of row `o`, texel `j` is at
//! `(o mod STRIPE, ((o div STRIPE) · n_blocks + b) · texels_per_block + j)`; its scale at
//! `(o mod STRIPE, (o div STRIPE) · n_blocks + b)`.
//!
//! Why textures and not storage buffers: the bytes are the same (only Q4_0 and Q8_0 grow, by
//! 2 bytes of scale padding per block), but texel fetches are what software rasterisers do
//! well. On Mesa's lavapipe (the GPU of machines without one) a storage-buffer load is a
//! per-invocation loop with a bounds check per component, while a texel fetch is one vector
//! gather: with the activation read as a uniform, the output head's matrix-vector product
//! takes 23 ms from textures and 34 ms from storage buffers there (benches/README.md). On
//! real GPUs both go through the same caches.

use crate::gguf::GgmlType;

/// Rows per stripe; `STRIPE` in quant.wgsl. Texture widths are at most this.
pub const STRIPE: usize = 4096;

/// A weight tensor in the GPU layout, ready for two texture uploads.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightPlanes {
    /// Texture width (texels): min(rows, STRIPE).
    pub width: u32,
    /// `[payload_height][width]` texels of 4 words each.
    pub payload: Vec<u32>,
    pub payload_height: u32,
    /// `[scale_height][width]` words; empty for float types.
    pub scales: Vec<u32>,
    pub scale_height: u32,
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
    let width = rows.min(STRIPE);
    let stripes = rows.div_ceil(STRIPE);
    let scale_height = stripes * nb;
    let payload_height = scale_height * tpb;
    let mut payload = vec![0u32; payload_height * width * 4];
    let mut scales = vec![0u32; scale_height * width];
    let mut words = Vec::with_capacity(tpb * 4);
    for (i, raw) in bytes.chunks_exact(per_block).enumerate() {
        let (o, b) = (i / nb, i % nb);
        let (x, y) = (o % STRIPE, (o / STRIPE) * nb + b);
        words.clear();
        if let Some(s) = split_block(ty, raw, &mut words) {
            scales[y * width + x] = s;
        }
        for (j, texel) in words.chunks_exact(4).enumerate() {
            let at = ((y * tpb + j) * width + x) * 4;
            payload[at..at + 4].copy_from_slice(texel);
        }
    }
    let has_scales = matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0);
    Some(WeightPlanes {
        width: width as u32,
        payload,
        payload_height: payload_height as u32,
        scales: if has_scales { scales } else { Vec::new() },
        scale_height: if has_scales { scale_height as u32 } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_split_into_scales_and_texels() {
        // 2 rows × 1 block each.
        let mut bytes = Vec::new();
        for r in 0..2u8 {
            bytes.extend([0x00, 0x3C]); // d = 1.0
            bytes.extend((0..32).map(|i| i + 32 * r));
        }
        let p = planes(GgmlType::Q8_0, &bytes, 2).unwrap();
        assert_eq!((p.width, p.payload_height, p.scale_height), (2, 2, 1));
        assert_eq!(p.scales, vec![0x3C00, 0x3C00]);
        // Texel row 0: row 0's bytes 0..16, then row 1's bytes 32..48.
        assert_eq!(p.payload[0], u32::from_le_bytes([0, 1, 2, 3]));
        assert_eq!(p.payload[4], u32::from_le_bytes([32, 33, 34, 35]));
        // Texel row 1: the second texel of each block.
        assert_eq!(p.payload[8], u32::from_le_bytes([16, 17, 18, 19]));
    }

    #[test]
    fn rows_past_a_stripe_go_below_it() {
        // STRIPE + 1 rows of one Q4_1 block: row STRIPE is at (0, 1).
        let rows = STRIPE + 1;
        let mut bytes = vec![0u8; rows * 20];
        bytes[STRIPE * 20..STRIPE * 20 + 4].copy_from_slice(&[1, 2, 3, 4]);
        bytes[STRIPE * 20 + 4] = 0xAB;
        let p = planes(GgmlType::Q4_1, &bytes, rows).unwrap();
        assert_eq!((p.width, p.scale_height), (STRIPE as u32, 2));
        assert_eq!(p.scales[STRIPE], u32::from_le_bytes([1, 2, 3, 4]));
        assert_eq!(p.payload[STRIPE * 4], 0xAB);
    }

    #[test]
    fn float_types_have_no_scales_and_bad_shapes_are_refused() {
        let p = planes(GgmlType::F16, &[0u8; 64 * 3], 3).unwrap();
        assert!(p.scales.is_empty());
        assert_eq!(p.payload_height, 4);
        assert!(planes(GgmlType::Q4_1, &[0u8; 30], 1).is_none());
        assert!(planes(GgmlType::Q5_0, &[0u8; 22], 1).is_none());
    }
}
