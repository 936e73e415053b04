//! K-quant super-blocks (256 weights) dequantized to f32, as ggml's `dequantize_row_q*_K`
//! (`ggml-quants.c`): an f16 scale `d` (and minimum scale `dmin`) per super-block, and small
//! integer scales per sub-block of 16 or 32 weights. Layouts: the `BlockQ*K` structs in
//! `quant.rs`.

use super::quant::f16_at;

/// Scale and minimum of sub-block `j` (0..8) from the 12 packed bytes of Q4_K/Q5_K
/// (ggml's `get_scale_min_k4`): 6 bits each, the high two bits of 4..8 spread over 0..8.
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K or Q5_K: 4 groups of 64 weights, each the low then the high nibbles of 32 bytes of
/// `qs` (sub-blocks 2i and 2i+1), plus for Q5_K bits 2i and 2i+1 of `qh[l]` as the fifth bit.
pub(super) fn dequant_q45_k(b: &[u8], out: &mut Vec<f32>, five: bool) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let (qh, qs) = if five {
        (&b[16..48], &b[48..176])
    } else {
        (&[][..], &b[16..144])
    };
    for i in 0..4 {
        let q = &qs[32 * i..32 * i + 32];
        for (half, shift) in [(0, 0), (1, 4)] {
            let (sc, m) = scale_min_k4(2 * i + half, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let bit = 2 * i + half;
            out.extend((0..32).map(|l| {
                let hi = if five { ((qh[l] >> bit) & 1) << 4 } else { 0 };
                dl * (((q[l] >> shift) & 0x0F) | hi) as f32 - ml
            }));
        }
    }
}

/// Q6_K: 2 halves of 128 weights; in each, 4 runs of 32 (low/high nibbles of `ql[0..32]`
/// and `ql[32..64]`, 2 high bits from `qh[l]` at shifts 0, 2, 4, 6), one i8 scale per 16.
pub(super) fn dequant_q6_k(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        for run in 0..4 {
            let (lo, shift) = ([0, 32, 0, 32][run], [0, 0, 4, 4][run]);
            out.extend((0..32).map(|l| {
                let q = ((ql[lo + l] >> shift) & 0x0F) | (((qh[l] >> (2 * run)) & 3) << 4);
                d * sc[l / 16 + 2 * run] as i8 as f32 * (q as i32 - 32) as f32
            }));
        }
    }
}

/// Q2_K: 2 halves of 128 weights; in each 4 shifts × 2 sub-blocks of 16 from `qs[0..32]`.
pub(super) fn dequant_q2_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut is = 0;
    for n in 0..2 {
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let sc = b[is];
                is += 1;
                let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
                let q = &q[16 * half..16 * half + 16];
                out.extend(q.iter().map(|&x| dl * ((x >> shift) & 3) as f32 - ml));
            }
        }
    }
}

/// Q3_K's 16 six-bit scales (minus 32) from their 12 packed bytes: the low 4 bits in bytes
/// 0..8, the high 2 in bytes 8..12 (ggml's `kmask1`/`kmask2` shuffle).
pub fn q3_k_scales(p: &[u8]) -> [i8; 16] {
    let mut s = [0i8; 16];
    for (j, v) in s.iter_mut().enumerate() {
        let low = if j < 8 { p[j] & 0x0F } else { p[j - 8] >> 4 };
        let high = (p[8 + j % 4] >> (2 * (j / 4))) & 3;
        *v = (low | (high << 4)) as i8 - 32;
    }
    s
}

/// Q3_K: as Q2_K with signed scales and a third bit from `hmask` (set: +0, clear: −4).
pub(super) fn dequant_q3_k(b: &[u8], out: &mut Vec<f32>) {
    let d = f16_at(b, 108);
    let (hmask, scales) = (&b[0..32], q3_k_scales(&b[96..108]));
    let mut is = 0;
    let mut m = 1u8;
    for n in 0..2 {
        let q = &b[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0, 2, 4, 6] {
            for half in 0..2 {
                let dl = d * scales[is] as f32;
                is += 1;
                out.extend((16 * half..16 * half + 16).map(|l| {
                    let low = ((q[l] >> shift) & 3) as i32;
                    dl * (low - if hmask[l] & m != 0 { 0 } else { 4 }) as f32
                }));
            }
            m <<= 1;
        }
    }
}
