//! How weight tensors are laid out on the GPU: the GGUF blocks, bit for bit, each padded to a
//! whole number of 32-bit words and interleaved by row, so that neighbouring invocations
//! (one per output row) read neighbouring words — coalesced on a GPU, vector loads on lavapipe.
//!
//! Word `k` of block `b` of row `o` is at `(b · words_per_block + k) · n_rows + o`.
//! Per block: Q4_1 = [d|m, 4 × qs] (5 words), Q4_0 = [d, 4 × qs] (5), Q8_0 = [d, 8 × qs] (9),
//! F16/BF16 = 16 words, F32 = 32 words. Only Q8_0 and Q4_0 grow (36 and 20 bytes per block
//! instead of 34 and 18): about 6% and 11%.

use crate::gguf::GgmlType;

/// Words per 32-weight block on the GPU (`words_per_block` in quant.wgsl).
pub fn words_per_block(ty: GgmlType) -> Option<usize> {
    Some(match ty {
        GgmlType::Q4_1 | GgmlType::Q4_0 => 5,
        GgmlType::Q8_0 => 9,
        GgmlType::F16 | GgmlType::BF16 => 16,
        GgmlType::F32 => 32,
        _ => return None,
    })
}

/// The GPU words of one GGUF block (`raw` holds exactly one block).
fn block_words(ty: GgmlType, raw: &[u8], out: &mut Vec<u32>) {
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    match ty {
        // d (f16) then 16 bytes of nibbles: pad the scale to a whole word.
        GgmlType::Q4_0 => {
            out.push(u16::from_le_bytes([raw[0], raw[1]]) as u32);
            out.extend(raw[2..18].chunks_exact(4).map(word));
        }
        GgmlType::Q8_0 => {
            out.push(u16::from_le_bytes([raw[0], raw[1]]) as u32);
            out.extend(raw[2..34].chunks_exact(4).map(word));
        }
        // Already word-aligned blocks.
        _ => out.extend(raw.chunks_exact(4).map(word)),
    }
}

/// Rearranges a `[rows][row_len]` GGUF tensor into the interleaved GPU layout.
/// `bytes` must hold exactly `rows · row_len` weights of type `ty` (checked by the reader).
pub fn interleave(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<Vec<u32>> {
    let wpb = words_per_block(ty)?;
    // Bytes of 32 weights in the file (float types have 1-element "blocks" in ggml).
    let elem_bytes_per_block = match ty {
        GgmlType::F32 => 128,
        GgmlType::F16 | GgmlType::BF16 => 64,
        _ => ty.block().1 as usize,
    };
    if rows == 0 || bytes.len() % (rows * elem_bytes_per_block) != 0 {
        return None;
    }
    let blocks_per_row = bytes.len() / rows / elem_bytes_per_block;
    let mut out = vec![0u32; rows * blocks_per_row * wpb];
    let mut words = Vec::with_capacity(wpb);
    for (i, raw) in bytes.chunks_exact(elem_bytes_per_block).enumerate() {
        let (o, b) = (i / blocks_per_row, i % blocks_per_row);
        words.clear();
        block_words(ty, raw, &mut words);
        for (k, &wd) in words.iter().enumerate() {
            out[(b * wpb + k) * rows + o] = wd;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_are_padded_and_interleaved() {
        // 2 rows × 1 block each.
        let mut bytes = Vec::new();
        for r in 0..2u8 {
            bytes.extend([0x00, 0x3C]); // d = 1.0
            bytes.extend((0..32).map(|i| i + 32 * r));
        }
        let w = interleave(GgmlType::Q8_0, &bytes, 2).unwrap();
        assert_eq!(w.len(), 18);
        assert_eq!(w[0], 0x3C00); // row 0's scale
        assert_eq!(w[1], 0x3C00); // row 1's scale
        assert_eq!(w[2], u32::from_le_bytes([0, 1, 2, 3])); // row 0, word 1
        assert_eq!(w[3], u32::from_le_bytes([32, 33, 34, 35])); // row 1, word 1
    }
}
