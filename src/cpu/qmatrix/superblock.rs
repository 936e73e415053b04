//! K-quant weights (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) multiplied in their GGUF super-blocks of
//! 256, the file's bytes kept as they are, against activations quantized as Q8_K (`q8k.rs`):
//! llama.cpp's `ggml_vec_dot_q{2,3,4,5,6}_K_q8_K` (ggml-cpu `quants.c` and its `arch/`
//! kernels), written anew.
//!
//! Per super-block i of a row, with its activations' block (scale d_x, quants q_x, sums of 16
//! `bsums`), two exact integer sums:
//!
//!   sumi = Σ_j s_j·Σ_{v ∈ sub-block j} q_v·q_x,v      summ = Σ_j m_j·Σ_{v ∈ j} q_x,v
//!
//! over its sub-blocks j (8 of 32 weights for Q4_K and Q5_K, 16 of 16 for the others) with
//! their integer scales s_j and, for Q2_K, Q4_K, Q5_K, minimums m_j; q_v is the weight's signed
//! integer (Q6_K's q − 32, Q3_K's q − 4 where its high bit is clear), so that a weight is
//! d·s_j·q_v − dmin·m_j (ggml's `dequantize_row_q*_K`). Then, in f32, the same in every kernel:
//!
//!   a ← a + (sumi as f32)·(d_w·d_x)      m ← m + (summ as f32)·(dmin·d_x)
//!
//! from a = m = 0, super-block by super-block, each product and sum rounded (no fused
//! multiply-add), and the row's product is a − m (a for the types without minimums). The
//! integer sums are exact in i32 whatever their order: |sumi| ≤ 16 sub-blocks · 16 values ·
//! 32 (|Q6_K q|) · 127 (|q_x|) · 128 (|Q6_K s|) < 2^27, with Q6_K's SIMD form (unsigned q
//! minus 32·Σ s·bsums) at most twice that; the i16 steps of the SIMD kernels (pair sums
//! u·q_x ≤ 2·63·127, `maddubs`) fit too. So the kernels only have to agree on the integers,
//! and they are free to sum them as their instructions like: the plain one as ggml's reference
//! loop does (`plain.rs`, signed weights), AVX2 (`avx2.rs`) and SIMD128 (`simd128.rs`) with
//! the weights unsigned and their offsets through the `bsums` (llama.cpp's way), each tested to
//! give the plain one's f32 bit for bit.
//!
//! Against the repacked blocks of 32 the K-quants had before: the file's bytes (0.33–0.82 a
//! weight against 0.75–1.5), one or two f32 multiply-and-adds per 256 weights instead of one
//! per 4 (the lanes), and the activations quantized per 256 values (an activation that both
//! kinds of matrix read is quantized in both forms, once each: `cpu::Act`; in Gemma 3 and the
//! K-quant SmolLM2 none is, as only rows of a multiple of 256 can be K-quants).

use super::q8k::{Q8KRows, XBlocks, XRow};
use super::GROUP;
use crate::gguf::{dequantize, GgmlType, QK_K};

/// `$f::<K>(args)` with `K` the kernels' const parameter for the K-quant type `$k`: each
/// kernel is compiled once per type, the type's branches resolved outside its loops.
macro_rules! by_type {
    ($k:expr, $f:ident($($arg:expr),*)) => {
        match $k {
            KQuant::Q2K => $f::<{ KQuant::Q2K as u8 }>($($arg),*),
            KQuant::Q3K => $f::<{ KQuant::Q3K as u8 }>($($arg),*),
            KQuant::Q4K => $f::<{ KQuant::Q4K as u8 }>($($arg),*),
            KQuant::Q5K => $f::<{ KQuant::Q5K as u8 }>($($arg),*),
            KQuant::Q6K => $f::<{ KQuant::Q6K as u8 }>($($arg),*),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
mod plain;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

/// The K-quant types (as a kernel's const parameter `K`: `KQuant::X as u8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum KQuant {
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

impl KQuant {
    /// The type a kernel's const parameter `K` names.
    pub(super) const fn id(k: u8) -> Self {
        match k {
            0 => KQuant::Q2K,
            1 => KQuant::Q3K,
            2 => KQuant::Q4K,
            3 => KQuant::Q5K,
            _ => KQuant::Q6K,
        }
    }

    fn of(ty: GgmlType) -> Option<Self> {
        Some(match ty {
            GgmlType::Q2K => KQuant::Q2K,
            GgmlType::Q3K => KQuant::Q3K,
            GgmlType::Q4K => KQuant::Q4K,
            GgmlType::Q5K => KQuant::Q5K,
            GgmlType::Q6K => KQuant::Q6K,
            _ => return None,
        })
    }

    fn ggml(self) -> GgmlType {
        match self {
            KQuant::Q2K => GgmlType::Q2K,
            KQuant::Q3K => GgmlType::Q3K,
            KQuant::Q4K => GgmlType::Q4K,
            KQuant::Q5K => GgmlType::Q5K,
            KQuant::Q6K => GgmlType::Q6K,
        }
    }

    /// Bytes of a super-block.
    pub(super) const fn bytes(self) -> usize {
        match self {
            KQuant::Q2K => 84,
            KQuant::Q3K => 110,
            KQuant::Q4K => 144,
            KQuant::Q5K => 176,
            KQuant::Q6K => 210,
        }
    }

    /// Byte offsets of the f16 d and, for the types with minimums, dmin (right after d).
    pub(super) const fn scales_at(self) -> (usize, Option<usize>) {
        match self {
            KQuant::Q2K => (80, Some(82)),
            KQuant::Q3K => (108, None),
            KQuant::Q4K | KQuant::Q5K => (0, Some(2)),
            KQuant::Q6K => (208, None),
        }
    }
}

/// Integer sums of one weight super-block with `N` tokens' activation blocks: `[sumi, summ]`
/// each (summ 0 for the types without minimums).
pub(super) type Sums<const N: usize> = [[i32; 2]; N];

/// A K-quant matrix: `rows` rows of `n_in / 256` super-blocks, as in the file.
pub(super) struct SuperBlocks {
    k: KQuant,
    bytes: Vec<u8>,
    rows: usize,
    n_in: usize,
}

impl SuperBlocks {
    /// `None` unless `ty` is a K-quant and `bytes` whole rows of its super-blocks.
    pub(super) fn new(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<Self> {
        let k = KQuant::of(ty)?;
        let n_blocks = bytes.len() / k.bytes();
        if rows == 0 || !bytes.len().is_multiple_of(k.bytes()) || !n_blocks.is_multiple_of(rows) {
            return None;
        }
        Some(SuperBlocks {
            k,
            bytes: bytes.to_vec(),
            rows,
            n_in: n_blocks / rows * QK_K,
        })
    }

    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    pub(super) fn n_in(&self) -> usize {
        self.n_in
    }

    /// Row `o`'s super-blocks.
    fn row_bytes(&self, o: usize) -> &[u8] {
        let n = self.n_in / QK_K * self.k.bytes();
        &self.bytes[o * n..(o + 1) * n]
    }

    /// Row `o` dequantized by `gguf::dequantize` itself.
    pub(super) fn row(&self, o: usize) -> Option<Vec<f32>> {
        if o >= self.rows {
            return None;
        }
        dequantize(self.k.ggml(), self.row_bytes(o), self.n_in).ok()
    }

    /// `out[t][o] = Σ_i W[o][i]·x[t][i]`; out: `[t][rows]`.
    pub(super) fn matmul(&self, x: &Q8KRows) -> Vec<f32> {
        assert_eq!(x.n_in, self.n_in, "activation width");
        // As the legacy products: a few tasks per thread, each of at least 64 rows.
        let per_task = (self.rows / (4 * crate::ops::threads())).max(64);
        crate::ops::by_weight_rows(self.rows, x.tokens(), per_task, |o0, chunk| {
            rows_dot(self, x, o0, chunk)
        })
    }
}

/// `out[(o - first)·t + tt]` = W[o]·x[tt] for the weight rows from `first` that `out` covers
/// (`[rows][t]`), with the kernel chosen at build time for wasm32 with SIMD128, at run time on
/// x86_64 (AVX2), else the plain one; all give the same f32.
fn rows_dot(m: &SuperBlocks, x: &Q8KRows, first: usize, out: &mut [f32]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return by_type!(m.k, simd128_rows_dot(m, x, first, out));
    #[allow(unreachable_code)] // wasm32 with SIMD128 returned above
    let xs: Vec<XRow<'_, i8>> = (0..x.tokens()).map(|tt| x.row(tt, &x.q)).collect();
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has AVX2 and F16C (checked just above), all that `avx2` needs.
        return unsafe { avx2::rows_dot(m, &xs, first, out) };
    }
    by_type!(m.k, plain_rows_dot(m, &xs, first, out))
}

/// [`rows_dot`] with the plain kernel, for type `K`.
fn plain_rows_dot<const K: u8>(
    m: &SuperBlocks,
    xs: &[XRow<'_, i8>],
    first: usize,
    out: &mut [f32],
) {
    let one = |w: &[u8], x: &XRow<'_, i8>| {
        row_dot::<K, 1, _>(w, [x], plain::sums::<K, 1>, d_dmin::<K>)[0]
    };
    let group = |w: &[u8], xs: [&XRow<'_, i8>; GROUP]| {
        row_dot::<K, GROUP, _>(w, xs, plain::sums::<K, GROUP>, d_dmin::<K>)
    };
    rows_dot_with(m, xs, first, out, group, one)
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use simd128::rows_dot as simd128_rows_dot;

/// [`rows_dot`] on the tokens `xs` with the row kernels given: `group` for [`GROUP`] tokens at
/// a time (each weight super-block unpacked once for all), `one` for the rest.
#[inline(always)]
fn rows_dot_with<Q>(
    m: &SuperBlocks,
    xs: &[XRow<'_, Q>],
    first: usize,
    out: &mut [f32],
    group: impl Fn(&[u8], [&XRow<'_, Q>; GROUP]) -> [f32; GROUP],
    one: impl Fn(&[u8], &XRow<'_, Q>) -> f32,
) {
    for (r, row_out) in out.chunks_mut(xs.len()).enumerate() {
        let w = m.row_bytes(first + r);
        let mut ys = row_out.chunks_exact_mut(GROUP);
        let mut xg = xs.chunks_exact(GROUP);
        for (y, xg) in (&mut ys).zip(&mut xg) {
            y.copy_from_slice(&group(w, std::array::from_fn(|k| &xg[k])));
        }
        for (y, xr) in ys.into_remainder().iter_mut().zip(xg.remainder()) {
            *y = one(w, xr);
        }
    }
}

/// One weight row `w` (its super-blocks of type `K`) · `N` tokens, `sums` giving each
/// super-block's integer sums and `scales` its d and dmin as f32: the f32 arithmetic of every
/// kernel, as the module says. A token's f32 depend only on its own sums, so they are the
/// same in a group as alone.
#[inline(always)]
pub(super) fn row_dot<const K: u8, const N: usize, Q>(
    w: &[u8],
    xs: [&XRow<'_, Q>; N],
    sums: impl Fn(&[u8], XBlocks<'_, '_, Q, N>) -> Sums<N>,
    scales: impl Fn(&[u8]) -> [f32; 2],
) -> [f32; N] {
    let k = KQuant::id(K);
    let mins = k.scales_at().1.is_some();
    let mut a = [0.0f32; N];
    let mut m = [0.0f32; N];
    for (i, blk) in w.chunks_exact(k.bytes()).enumerate() {
        let s = sums(blk, XBlocks { rows: xs, i });
        let [d, dmin] = scales(blk);
        for t in 0..N {
            let dx = xs[t].d[i];
            a[t] += s[t][0] as f32 * (d * dx);
            if mins {
                m[t] += s[t][1] as f32 * (dmin * dx);
            }
        }
    }
    if mins {
        std::array::from_fn(|t| a[t] - m[t])
    } else {
        a
    }
}

/// A super-block's d and dmin (0 for the types without) as f32.
#[inline(always)]
pub(super) fn d_dmin<const K: u8>(blk: &[u8]) -> [f32; 2] {
    let (d_at, dmin_at) = KQuant::id(K).scales_at();
    [f16_at(blk, d_at), dmin_at.map_or(0.0, |at| f16_at(blk, at))]
}

/// The f16 at byte `i` of `b` as f32, exactly (`half`'s conversion, tested; written out so
/// that it inlines into every kernel, where `half` checks the CPU for F16C at each call).
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    let h = u16::from_le_bytes([b[i], b[i + 1]]);
    let (e, m) = ((h >> 10) & 31, (h & 0x3ff) as u32);
    let v = match e {
        0 => m as f32 * f32::from_bits(0x3380_0000), // subnormal: m·2⁻²⁴
        31 if m == 0 => f32::INFINITY,
        31 => f32::from_bits(0x7fc0_0000 | (m << 13)), // a quiet NaN
        _ => f32::from_bits(((e as u32 + 112) << 23) | (m << 13)),
    };
    if h & 0x8000 != 0 {
        -v
    } else {
        v
    }
}

/// Q4_K's and Q5_K's 8 six-bit scales and 8 minimums from their 12 packed bytes, four at a
/// time in u32 words (ggml's `kmask` arithmetic; the same as `gguf::scale_min_k4`, tested):
/// bytes 0..4 hold scales 0..3 and bytes 4..8 minimums 0..3 in their low 6 bits, bytes 8..12
/// the low 4 bits of scales (low nibble) and minimums (high nibble) 4..7, whose high 2 bits
/// are the top bits of bytes 0..4 and 4..8.
#[inline(always)]
pub(super) fn scales_mins_k4(p: &[u8]) -> ([u8; 8], [u8; 8]) {
    let word = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let (six, four, two) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    let sc = [a & six, (c & four) | (((a >> 6) & two) << 4)];
    let mn = [b & six, ((c >> 4) & four) | (((b >> 6) & two) << 4)];
    let bytes = |w: [u32; 2]| {
        let (lo, hi) = (w[0].to_le_bytes(), w[1].to_le_bytes());
        std::array::from_fn(|j| if j < 4 { lo[j] } else { hi[j - 4] })
    };
    (bytes(sc), bytes(mn))
}

/// Q3_K's 16 six-bit scales (plus 32: 0..63, one a byte; the same as `gguf::q3_k_scales`
/// plus 32, tested) from their 12 packed bytes, as [`scales_mins_k4`] does it: scales 0..8 take the low nibbles of bytes 0..8 and 8..16 the
/// high ones; their high 2 bits are bits 2·(j/4) of byte 8 + j % 4.
#[inline(always)]
pub(super) fn scales_q3k_biased(p: &[u8]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let (four, two) = (0x0f0f_0f0f, 0x0303_0303);
    let w = [
        (a & four) | ((c & two) << 4),
        (b & four) | (((c >> 2) & two) << 4),
        ((a >> 4) & four) | (((c >> 4) & two) << 4),
        ((b >> 4) & four) | (((c >> 6) & two) << 4),
    ];
    bytemuck::cast(w.map(u32::to_le))
}

#[cfg(test)]
pub(super) mod tests;
