//! The plain Rust super-block kernel, the reference the SIMD ones are tested against: each
//! super-block unpacked to its 256 signed integer weights and 16 scales (and minimums) per 16
//! weights, as ggml's `dequantize_row_q*_K` reads them (`gguf/kquant.rs`), then the integer
//! sums of ggml's generic `ggml_vec_dot_q*_K_q8_K` loops.

use super::{KQuant, Sums};
use crate::cpu::qmatrix::q8k::{XBlocks, BSUMS};
use crate::gguf::{q3_k_scales, scale_min_k4, QK_K};

/// A super-block unpacked: weight v is `q[v]` with scale `s[v / 16]` and minimum `m[v / 16]`
/// (0 for the types without).
struct Unpacked {
    q: [i8; QK_K],
    s: [i32; BSUMS],
    m: [i32; BSUMS],
}

/// The integer sums of super-block `blk` with each token's block (the weights unpacked once).
pub(super) fn sums<const K: u8, const N: usize>(blk: &[u8], xs: XBlocks<'_, '_, i8, N>) -> Sums<N> {
    let w = unpack(KQuant::id(K), blk);
    std::array::from_fn(|t| {
        let mut sumi = 0i32;
        for ((wq, xq), s) in w.q.chunks_exact(16).zip(xs.q(t).chunks_exact(16)).zip(w.s) {
            let dot: i32 = wq.iter().zip(xq).map(|(&a, &b)| a as i32 * b as i32).sum();
            sumi += s * dot;
        }
        let summ =
            w.m.iter()
                .zip(xs.bsums(t))
                .map(|(&m, &b)| m * b as i32)
                .sum();
        [sumi, summ]
    })
}

fn unpack(k: KQuant, b: &[u8]) -> Unpacked {
    let mut u = Unpacked {
        q: [0; QK_K],
        s: [0; BSUMS],
        m: [0; BSUMS],
    };
    match k {
        KQuant::Q4K | KQuant::Q5K => {
            // 4 groups of 64: the low then the high nibbles of 32 bytes of `qs` (sub-blocks
            // 2g and 2g + 1 of 32), for Q5_K bit 2g or 2g + 1 of `qh[l]` as the fifth.
            let five = k == KQuant::Q5K;
            let (qh, qs) = if five {
                (&b[16..48], &b[48..176])
            } else {
                (&[][..], &b[16..144])
            };
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &b[4..16]);
                u.s[2 * j..2 * j + 2].fill(sc as i32);
                u.m[2 * j..2 * j + 2].fill(m as i32);
                for l in 0..32 {
                    let nibble = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
                    let fifth = if five { ((qh[l] >> j) & 1) << 4 } else { 0 };
                    u.q[32 * j + l] = (nibble | fifth) as i8;
                }
            }
        }
        KQuant::Q6K => {
            // 2 halves of 128, each 4 runs of 32: low 4 bits from `ql`, high 2 from `qh`.
            for n in 0..2 {
                let (ql, qh) = (&b[64 * n..64 * n + 64], &b[128 + 32 * n..160 + 32 * n]);
                for run in 0..4 {
                    let (lo, shift) = ([0, 32, 0, 32][run], [0, 0, 4, 4][run]);
                    for l in 0..32 {
                        let q = ((ql[lo + l] >> shift) & 15) | (((qh[l] >> (2 * run)) & 3) << 4);
                        u.q[128 * n + 32 * run + l] = q as i8 - 32;
                    }
                }
            }
            for (s, &sc) in u.s.iter_mut().zip(&b[192..208]) {
                *s = sc as i8 as i32;
            }
        }
        KQuant::Q3K | KQuant::Q2K => {
            // 2 halves of 128, each 4 shifts of 32 from 32 bytes of `qs`; Q3_K's third bit
            // from `hmask` (clear: −4).
            let three = k == KQuant::Q3K;
            let qs = if three { &b[32..96] } else { &b[16..80] };
            for n in 0..2 {
                for shift in 0..4 {
                    let bit = 1u8 << (4 * n + shift);
                    for l in 0..32 {
                        let low = ((qs[32 * n + l] >> (2 * shift)) & 3) as i8;
                        let high = three && b[l] & bit == 0;
                        u.q[128 * n + 32 * shift + l] = low - if high { 4 } else { 0 };
                    }
                }
            }
            if three {
                u.s = q3_k_scales(&b[96..108]).map(|s| s as i32);
            } else {
                for (j, &sc) in b[..16].iter().enumerate() {
                    (u.s[j], u.m[j]) = ((sc & 15) as i32, (sc >> 4) as i32);
                }
            }
        }
    }
    u
}
