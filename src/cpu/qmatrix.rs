//! Quantized matrix products for the `cpu-q8` backend: weights stay in their GGUF blocks
//! (Q4_0, Q4_1, Q8_0; ggml-common.h), activations are quantized per 32-value block to int8
//! with one f32 scale (llama.cpp's Q8_1 idea), and each block's dot product is an integer sum:
//!
//!   Σ_i w_i·x_i ≈ d_w·d_x·Σ_i q_w,i·q_x,i + b_w·s_x
//!
//! where w = q_w·d_w + b_w (Q4_1: b_w = m; Q4_0: q_w − 8, so b_w = −8·d_w; Q8_0: b_w = 0) and
//! s_x = d_x·Σ_i q_x,i. The error against f32 is the activations' rounding (≤ d_x/2 per value).
//!
//! Written by hand: the crates that multiply GGUF blocks (candle, ggml bindings) are large or
//! need a C toolchain. The kernel is plain Rust, with an AVX2 version chosen at run time on
//! x86_64 (the only `unsafe` of the crate: calling it after the CPU check).

use crate::gguf::GgmlType;
use half::f16;

/// Values per quantization block.
const QK: usize = 32;

/// A `[rows][n_in]` weight matrix from its GGUF blocks: per block the quants as they are
/// (16 bytes of nibbles or 32 × i8) and its scale d and offset b as f32 (converted from f16
/// once, at load), so that a weight is q·d + b. Q8_0 has no offset (b = 0) and stores none,
/// which spares decode 4 of every 40 bytes it reads of the output head.
pub struct QMatrix {
    ty: GgmlType,
    /// Q4_0/Q4_1: `[rows·nb][16]` bytes; Q8_0: `[rows·nb][32]`.
    qs: Vec<u8>,
    d: Vec<f32>, // [rows·nb]
    b: Vec<f32>, // [rows·nb]; empty for Q8_0
    rows: usize,
    n_in: usize,
}

/// Activations `[t][n_in]` quantized per block: `q` int8, `d` the scale and `s` = d·Σq of
/// each block.
pub struct Q8Rows {
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    n_in: usize,
}

impl Q8Rows {
    /// Quantizes `x` (`[t][n_in]`, n_in a multiple of 32): d = max|x|/127 per block.
    pub fn quantize(x: &[f32], n_in: usize) -> Self {
        let blocks = x.len() / QK;
        let (mut q, mut d, mut s) = (
            Vec::with_capacity(x.len()),
            Vec::with_capacity(blocks),
            Vec::with_capacity(blocks),
        );
        for b in x.chunks_exact(QK) {
            let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for &v in b {
                let qi = (v * inv).round() as i8;
                sum += qi as i32;
                q.push(qi);
            }
            d.push(scale);
            s.push(scale * sum as f32);
        }
        Q8Rows { q, d, s, n_in }
    }
}

impl QMatrix {
    /// `bytes` hold `rows · n_in` weights of type `ty` (checked by the GGUF reader); `None`
    /// for types this backend does not multiply in blocks.
    pub fn new(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<Self> {
        if !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) || rows == 0 {
            return None;
        }
        let bb = ty.block().1 as usize;
        let n_blocks = bytes.len() / bb;
        if !bytes.len().is_multiple_of(bb) || !n_blocks.is_multiple_of(rows) {
            return None;
        }
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        let (mut qs, mut d, mut b) = (Vec::new(), Vec::new(), Vec::new());
        for blk in bytes.chunks_exact(bb) {
            let dw = half(blk);
            let (bias, quants) = match ty {
                GgmlType::Q4_1 => (half(&blk[2..]), &blk[4..]),
                GgmlType::Q4_0 => (-8.0 * dw, &blk[2..]),
                _ => (0.0, &blk[2..]),
            };
            d.push(dw);
            if ty != GgmlType::Q8_0 {
                b.push(bias);
            }
            qs.extend_from_slice(quants);
        }
        Some(QMatrix {
            ty,
            qs,
            d,
            b,
            rows,
            n_in: n_blocks / rows * QK,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn n_in(&self) -> usize {
        self.n_in
    }

    /// Bytes of quants per block.
    fn qb(&self) -> usize {
        if self.ty == GgmlType::Q8_0 {
            QK
        } else {
            QK / 2
        }
    }

    /// Weight row `o`'s blocks.
    fn row_blocks(&self, o: usize) -> Blocks<'_> {
        let (nb, qb) = (self.n_in / QK, self.qb());
        Blocks {
            q: &self.qs[o * nb * qb..(o + 1) * nb * qb],
            d: &self.d[o * nb..(o + 1) * nb],
            b: self.b.get(o * nb..(o + 1) * nb).unwrap_or(&[]),
        }
    }

    /// Row `o` dequantized (an embedding lookup).
    pub fn row(&self, o: usize) -> Option<Vec<f32>> {
        let nb = self.n_in / QK;
        if o >= self.rows {
            return None;
        }
        let mut out = Vec::with_capacity(self.n_in);
        for blk in o * nb..(o + 1) * nb {
            let q = &self.qs[blk * self.qb()..(blk + 1) * self.qb()];
            let (d, b) = (self.d[blk], self.b.get(blk).copied().unwrap_or(0.0));
            if self.ty == GgmlType::Q8_0 {
                out.extend(q.iter().map(|&v| v as i8 as f32 * d + b));
            } else {
                out.extend(q.iter().map(|&v| (v & 15) as f32 * d + b));
                out.extend(q.iter().map(|&v| (v >> 4) as f32 * d + b));
            }
        }
        Some(out)
    }

    /// `out[t][o] = Σ_i W[o][i]·x[t][i]` for quantized `x` (`[t][n_in]`); out: `[t][rows]`.
    pub fn matmul(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.n_in, self.n_in, "activation width");
        let t = x.d.len() * QK / self.n_in;
        // A few tasks per thread, each of at least 64 rows: a task costs a few µs to hand
        // out, a 576-wide row about 0.1 µs to compute.
        let per_task = (self.rows / (4 * super::ops::threads())).max(64);
        super::ops::by_weight_rows(self.rows, t, per_task, |o0, chunk| {
            rows_dot(self, x, o0, chunk)
        })
    }
}

/// A row's blocks: quants, scales and offsets (none for Q8_0 weights; for activations: i8
/// quants as bytes, d, and s = d·Σq).
struct Blocks<'a> {
    q: &'a [u8],
    d: &'a [f32],
    b: &'a [f32],
}

/// `out[(o - first)·t + tt]` = W[o]·x[tt] for the weight rows from `first` that `out` covers
/// (`[rows][t]`).
fn rows_dot(m: &QMatrix, x: &Q8Rows, first: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above), all that `rows_dot_avx2`
        // needs.
        return unsafe { rows_dot_avx2(m, x, first, out) };
    }
    rows_dot_with(m, x, first, out, row_dot_plain)
}

/// [`rows_dot`] compiled for AVX2 and FMA, with [`row_dot_avx2`] inlined into its loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn rows_dot_avx2(m: &QMatrix, x: &Q8Rows, first: usize, out: &mut [f32]) {
    rows_dot_with(m, x, first, out, |int8, w, xr| row_dot_avx2(int8, w, xr))
}

#[inline(always)]
fn rows_dot_with(
    m: &QMatrix,
    x: &Q8Rows,
    first: usize,
    out: &mut [f32],
    dot: impl Fn(bool, &Blocks<'_>, &Blocks<'_>) -> f32,
) {
    let nb = m.n_in / QK;
    let t = x.d.len() / nb;
    let int8 = m.ty == GgmlType::Q8_0;
    for (r, row_out) in out.chunks_mut(t).enumerate() {
        let w = m.row_blocks(first + r);
        for (tt, y) in row_out.iter_mut().enumerate() {
            let blocks = tt * nb..(tt + 1) * nb;
            let xr = Blocks {
                q: bytemuck::cast_slice(&x.q[blocks.start * QK..blocks.end * QK]),
                d: &x.d[blocks.clone()],
                b: &x.s[blocks],
            };
            *y = dot(int8, &w, &xr);
        }
    }
}

/// One weight row · one quantized activation row: Σ_blocks d_w·d_x·Σq_w·q_x + b_w·s_x.
/// `int8`: Q8_0 weights, else 4-bit (byte j holds weight j low, j + 16 high).
fn row_dot_plain(int8: bool, w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    let qb = if int8 { QK } else { QK / 2 };
    let mut acc = 0.0f32;
    for (i, (wq, xq)) in w.q.chunks_exact(qb).zip(x.q.chunks_exact(QK)).enumerate() {
        let xi = |j: usize| xq[j] as i8 as i32;
        let isum: i32 = if int8 {
            (0..QK).map(|j| wq[j] as i8 as i32 * xi(j)).sum()
        } else {
            (0..QK / 2)
                .map(|j| (wq[j] & 15) as i32 * xi(j) + (wq[j] >> 4) as i32 * xi(j + 16))
                .sum()
        };
        acc += w.d[i] * x.d[i] * isum as f32;
    }
    acc + w.b.iter().zip(x.b).map(|(b, s)| b * s).sum::<f32>()
}

/// [`row_dot_plain`] with AVX2: per block, 32 products u8·i8 summed in pairs
/// (`maddubs`), then in fours (`madd`), scaled in f32 lanes (llama.cpp's approach).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn row_dot_avx2(int8: bool, w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    use bytemuck::pod_read_unaligned as load;
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let low = _mm_set1_epi8(0x0F);
    // Σ over blocks of (8 partial sums of block i, as f32) · d_w·d_x.
    let scaled = |pairs: __m256i, dw: f32, dx: f32, acc: __m256| {
        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
        _mm256_fmadd_ps(sums, _mm256_set1_ps(dw * dx), acc)
    };
    let xs = x.q.chunks_exact(QK).zip(x.d);
    let mut acc = _mm256_setzero_ps();
    if int8 {
        for ((wq, &dw), (xq, &dx)) in w.q.chunks_exact(QK).zip(w.d).zip(xs) {
            let wv: __m256i = load(wq);
            let xv: __m256i = load(xq);
            // |w| · (x with w's sign): maddubs wants its first operand unsigned.
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
            acc = scaled(pairs, dw, dx, acc);
        }
    } else {
        for ((wq, &dw), (xq, &dx)) in w.q.chunks_exact(QK / 2).zip(w.d).zip(xs) {
            let raw: __m128i = load(wq);
            let lo = _mm_and_si128(raw, low);
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
            let pairs = _mm256_maddubs_epi16(_mm256_set_m128i(hi, lo), load(xq));
            acc = scaled(pairs, dw, dx, acc);
        }
    }
    let bias: f32 = w.b.iter().zip(x.b).map(|(b, s)| b * s).sum();
    let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let lanes: [f32; 4] = bytemuck::cast(half);
    lanes.iter().sum::<f32>() + bias
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::ops;
    use crate::gguf::dequantize;

    /// A deterministic pseudo-random stream in [-1, 1).
    fn noise(seed: u32, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Random blocks of `ty`: scales in [0.01, 0.02), quants uniformly random.
    fn blocks(ty: GgmlType, rows: usize, n_in: usize, seed: u32) -> Vec<u8> {
        let (_, bb) = ty.block();
        let n = rows * n_in / QK;
        let r = noise(seed, n * 40);
        let mut out = Vec::new();
        for b in 0..n {
            let half = |v: f32| f16::from_f32(v).to_le_bytes();
            out.extend(half(0.01 + 0.005 * (r[b * 40] + 1.0)));
            if ty == GgmlType::Q4_1 {
                out.extend(half(-0.1 * r[b * 40 + 1].abs()));
            }
            let payload = bb as usize - if ty == GgmlType::Q4_1 { 4 } else { 2 };
            out.extend((0..payload).map(|j| ((r[b * 40 + 2 + j] + 1.0) * 127.9) as u8));
        }
        out
    }

    /// The quantized product against dequantize + f32 matmul, for every block type, 3 tokens:
    /// within 1% of the largest output (the int8 rounding of the activations).
    #[test]
    fn quantized_matmul_matches_f32() {
        let (rows, n_in, t) = (37, 96, 3);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let raw = blocks(ty, rows, n_in, 7);
            let m = QMatrix::new(ty, &raw, rows).expect("a supported type");
            assert_eq!((m.rows(), m.n_in()), (rows, n_in));
            let x = noise(3, t * n_in);
            let got = m.matmul(&Q8Rows::quantize(&x, n_in));
            let w = dequantize(ty, &raw, rows * n_in).unwrap();
            let want = ops::matmul(&x, &w, n_in);
            let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 0.01 * scale, "{}: {g} vs {w}", ty.name());
            }
        }
    }

    /// Quantizing then dequantizing an activation block is off by at most half a step.
    #[test]
    fn activation_rounding_is_half_a_step() {
        let x = noise(11, 64);
        let q = Q8Rows::quantize(&x, 64);
        for (b, xb) in x.chunks_exact(QK).enumerate() {
            for (j, v) in xb.iter().enumerate() {
                let back = q.q[b * QK + j] as f32 * q.d[b];
                assert!((back - v).abs() <= q.d[b] / 2.0 + 1e-7);
            }
            let sum: i32 = q.q[b * QK..(b + 1) * QK].iter().map(|&v| v as i32).sum();
            assert!((q.s[b] - q.d[b] * sum as f32).abs() < 1e-6);
        }
    }

    /// The AVX2 kernel and the plain one agree (integer sums exact; f32 lanes summed in another
    /// order: 1e-5 relative).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_build_agrees_with_plain() {
        if !std::arch::is_x86_feature_detected!("avx2")
            || !std::arch::is_x86_feature_detected!("fma")
        {
            return;
        }
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            let m = QMatrix::new(ty, &blocks(ty, 1, 256, 5), 1).unwrap();
            let x = Q8Rows::quantize(&noise(9, 256), 256);
            let w = Blocks {
                q: &m.qs,
                d: &m.d,
                b: &m.b,
            };
            let xr = Blocks {
                q: bytemuck::cast_slice(&x.q),
                d: &x.d,
                b: &x.s,
            };
            let int8 = ty == GgmlType::Q8_0;
            let plain = row_dot_plain(int8, &w, &xr);
            // SAFETY: AVX2 and FMA were detected above.
            let fast = unsafe { row_dot_avx2(int8, &w, &xr) };
            assert!(
                (plain - fast).abs() <= 1e-5 * plain.abs().max(1.0),
                "{}",
                ty.name()
            );
        }
    }

    #[test]
    fn other_types_are_not_taken() {
        assert!(QMatrix::new(GgmlType::F32, &[0; 128], 1).is_none());
        assert!(QMatrix::new(GgmlType::Q4_1, &[0; 19], 1).is_none());
    }
}
