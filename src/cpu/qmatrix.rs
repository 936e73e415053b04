//! Quantized matrix products for the `cpu-q8` backend, on weights of every block type the
//! GGUF reader dequantizes (not the float ones), in two forms:
//!
//! - **K-quants** (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) stay in their GGUF super-blocks of 256
//!   weights, the file's bytes, and multiply activations quantized as ggml's Q8_K (256 values
//!   to an f32 scale, `q8k.rs`) super-block by super-block, as llama.cpp's
//!   `ggml_vec_dot_q*_K_q8_K` do (`superblock.rs`, which says how);
//! - the **legacy types** (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are repacked at load into blocks of
//!   32 small integers q with an f32 scale d and, for the types with one, an f32 offset b
//!   (`repack.rs`), so that every weight q·d + b is `gguf::dequantize`'s, bit for bit, and
//!   multiply activations quantized per 32 values to int8 with one f32 scale (llama.cpp's
//!   Q8_1 idea, [`Q8Rows`]), each block's dot product an integer sum:
//!
//!   Σ_i w_i·x_i ≈ d_w·d_x·Σ_i q_w,i·q_x,i + b_w·s_x
//!
//!   where s_x = d_x·Σ_i q_x,i (Q4_0: b_w = −8·d_w; Q8_0, Q5_0: no offset).
//!
//! Either way `QMatrix::row` gives back `gguf::dequantize`'s f32 (tested). The error against
//! f32 is the activations' rounding (≤ d_x/2 per value); against the dequantized weights times
//! the same quantized activations, only f32 rounding (tested to 10⁻⁶ of Σ|w·x|). Bytes per
//! weight held:
//!
//! | type | held as | bytes per weight here | in the file |
//! |---|---|---|---|
//! | Q4_0, Q4_1 | nibbles, d and b per 32 | 0.75 | 0.5625, 0.625 |
//! | Q8_0, Q5_0 | i8, d per 32 | 1.125 | 1.0625, 0.6875 |
//! | Q5_1 | i8, d and b per 32 | 1.25 | 0.75 |
//! | Q2_K, Q3_K, Q4_K, Q5_K, Q6_K | the file's super-blocks | 0.3281, 0.4297, 0.5625, 0.6875, 0.8203 | the same |
//!
//! The legacy blocks are unpacked at load (Q5's fifth bits, Q4_0's −8) so that three loops
//! (nibbles, bytes, with or without offsets) serve five types; their activations stay in blocks
//! of 32 as the weights' scales are. Five bits kept as nibbles plus a 32-bit mask (0.75 bytes a
//! Q5_0 weight) were tried and dropped: unpacking the mask made Q5_0 products 60% slower in
//! cache and decode's layers 12% slower. The K-quants were repacked the same way until their
//! super-block kernels: 0.75–1.5 bytes a weight against the file's 0.33–0.82, and eight f32
//! multiply-adds per 32 weights (the lanes) where a super-block has one or two per 256. In
//! cache, one thread, a 640 × 2048 matrix (`superblock::tests::products_in_cache`, AVX2 on
//! the benches' 2-core AMD EPYC), µs for 1 / 4 / 64 tokens, repacked then super-blocks:
//!
//! | type | 1 token | 4 tokens | 64 tokens |
//! |---|---|---|---|
//! | Q2_K | 50.5 → 29.1 | 154 → 78 | 2419 → 1252 |
//! | Q3_K | 33.7 → 52.1 | 98 → 96 | 1532 → 1538 |
//! | Q4_K | 37.1 → 34.1 | 124 → 77 | 1964 → 1243 |
//! | Q5_K | 36.5 → 40.4 | 126 → 85 | 1981 → 1367 |
//! | Q6_K | 33.9 → 34.6 | 97 → 81 | 1529 → 1296 |
//!
//! Q3_K alone is slower for one token: its third bit and 6-bit scales cost more unpacking per
//! super-block than the repacked bytes did, and it is the rarest of the five (one layer of the
//! K-quant SmolLM2, none of Gemma 3's).
//!
//! Written by hand: the crates that multiply GGUF blocks (candle, ggml bindings) are large or
//! need a C toolchain. Each form has a plain Rust kernel (the reference: `row_dot_plain` here,
//! `superblock/plain.rs`), an AVX2 one chosen at run time on x86_64 (`avx2.rs`,
//! `superblock/avx2.rs`, which also wants F16C; the only `unsafe` of the crate: calling them
//! after the CPU check) and a SIMD128 one chosen at build time for wasm32 (`simd128.rs`,
//! `superblock/simd128.rs`). The plain loop stays scalar at x86-64's SSE2 baseline (about 8 ns
//! a block of 32, AVX2 about 1).
//!
//! All three give the same f32, bit for bit (tests: `*_is_the_plain_one_to_the_bit`, the
//! SIMD128 ones in node), so the browser's greedy tokens are the native ones: no fused
//! multiply-add anywhere (WebAssembly has none that is deterministic), the f32 operations in
//! one fixed order, the integer sums exact. For the legacy blocks the order is fixed as AVX2
//! computes it most cheaply — eight lanes per block, lane k the exact integer sum over
//! activations 4k..4k+3, scaled by a multiply and an add; with fused multiply-adds (and
//! whole-block sums in the plain loop) the kernels agreed only to within 1e-5. The K-quants'
//! order is `superblock.rs`'s: one exact integer sum per super-block, then its f32 terms.
//!
//! Prefill multiplies each weight row by several tokens: the kernels take `GROUP` of them at
//! once, loading and unpacking each weight block once for all, each token with its own sums
//! in the order above, so a token's f32 do not depend on its neighbours (tested against the
//! single-token kernels for 1..9 tokens). Against one token at a time: prefill about +25% in
//! wasm (SIMD128, which also widens the activations once, `simd128.rs`) and +16% natively
//! (AVX2, one thread), native decode unchanged (benches/README.md, benches/HISTORY.md).

use crate::gguf::GgmlType;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod q8k;
mod repack;
mod superblock;

#[cfg(target_arch = "x86_64")]
use avx2::rows_dot_avx2;
pub use q8k::Q8KRows;
use superblock::SuperBlocks;

/// A `[rows][n_in]` weight matrix from its GGUF blocks, in the form its type multiplies in
/// (the module says which): the activations it takes are [`QMatrix::activations`]'.
pub struct QMatrix(Form);

enum Form {
    Repacked(Repacked),
    SuperBlocks(SuperBlocks),
}

/// The quantized form of a product's activations a matrix takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activations {
    /// [`Q8Rows`]: per 32 values (the legacy types).
    Q8,
    /// [`Q8KRows`]: per 256 values (the K-quants).
    Q8K,
}

impl QMatrix {
    /// `bytes` hold `rows · n_in` weights of type `ty` (checked by the GGUF reader); `None`
    /// for types this backend does not multiply in blocks.
    pub fn new(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<Self> {
        match SuperBlocks::new(ty, bytes, rows) {
            Some(m) => Some(QMatrix(Form::SuperBlocks(m))),
            None => Repacked::new(ty, bytes, rows).map(|m| QMatrix(Form::Repacked(m))),
        }
    }

    pub fn rows(&self) -> usize {
        match &self.0 {
            Form::Repacked(m) => m.rows,
            Form::SuperBlocks(m) => m.rows(),
        }
    }

    pub fn n_in(&self) -> usize {
        match &self.0 {
            Form::Repacked(m) => m.n_in,
            Form::SuperBlocks(m) => m.n_in(),
        }
    }

    /// Which quantized activations [`QMatrix::matmul`] or [`QMatrix::matmul_k`] takes.
    pub fn activations(&self) -> Activations {
        match &self.0 {
            Form::Repacked(_) => Activations::Q8,
            Form::SuperBlocks(_) => Activations::Q8K,
        }
    }

    /// Row `o` dequantized (an embedding lookup): `gguf::dequantize`'s f32, bit for bit.
    pub fn row(&self, o: usize) -> Option<Vec<f32>> {
        match &self.0 {
            Form::Repacked(m) => m.row(o),
            Form::SuperBlocks(m) => m.row(o),
        }
    }

    /// `out[t][o] = Σ_i W[o][i]·x[t][i]` for `x` (`[t][n_in]`) quantized per 32 values; out:
    /// `[t][rows]`. Panics if the matrix takes [`Activations::Q8K`].
    pub fn matmul(&self, x: &Q8Rows) -> Vec<f32> {
        match &self.0 {
            Form::Repacked(m) => m.matmul(x),
            Form::SuperBlocks(_) => panic!("a K-quant matrix takes Q8_K activations"),
        }
    }

    /// The same for `x` quantized per 256 values (Q8_K). Panics if the matrix takes
    /// [`Activations::Q8`].
    pub fn matmul_k(&self, x: &Q8KRows) -> Vec<f32> {
        match &self.0 {
            Form::SuperBlocks(m) => m.matmul(x),
            Form::Repacked(_) => panic!("a legacy-type matrix takes Q8 activations"),
        }
    }

    /// `x` (`[t][n_in]`, f32) quantized as this matrix takes it, times the matrix.
    pub fn matmul_f32(&self, x: &[f32]) -> Vec<f32> {
        match self.activations() {
            Activations::Q8 => self.matmul(&Q8Rows::quantize(x, self.n_in())),
            Activations::Q8K => self.matmul_k(&Q8KRows::quantize(x, self.n_in())),
        }
    }
}

/// Values per quantization block of the legacy types.
pub(super) const QK: usize = 32;

/// How a legacy matrix's blocks of 32 weights are stored (`repack.rs` says which GGUF type
/// takes which): the kernels have one loop per layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// 16 bytes: weight j (0..15) in the low nibble of byte j, j + 16 in the high; one scale.
    Nibbles,
    /// 32 × i8; one scale.
    Bytes,
}

impl Layout {
    /// Bytes of quants per block.
    pub(super) fn quant_bytes(self) -> usize {
        match self {
            Layout::Nibbles => QK / 2,
            Layout::Bytes => QK,
        }
    }
}

/// A legacy-type matrix repacked at load into blocks of 32 weights (`repack.rs`): small
/// integers q as bytes or nibbles ([`Layout`]), a scale d per 32 weights and, for the types
/// with one, an offset b, all f32, so that a weight is q·d + b exactly as `gguf::dequantize`
/// computes it. The types without offsets (Q8_0, Q5_0) store none, which spares decode 4 of
/// every 40 bytes it reads of the output head.
pub(super) struct Repacked {
    ty: GgmlType,
    layout: Layout,
    /// `[rows·nb][layout.quant_bytes()]`.
    qs: Vec<u8>,
    d: Vec<f32>, // [rows·nb]
    b: Vec<f32>, // as `d`, or empty
    rows: usize,
    n_in: usize,
}

/// Activations `[t][n_in]` quantized per block: `q` int8, `d` the scale, `s` = d·Σq of each
/// block.
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
            // A NaN or infinity stays one: a NaN scale makes the block's products NaN (`max`
            // skips NaN, and `NaN as i8` is 0, which would hide damaged weights upstream).
            let finite = b.iter().all(|v| v.is_finite());
            let scale = if finite { amax / 127.0 } else { f32::NAN };
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

    /// Token `tt`'s blocks (`nb` per token).
    fn row(&self, tt: usize, nb: usize) -> Blocks<'_> {
        let blocks = tt * nb..(tt + 1) * nb;
        Blocks {
            q: bytemuck::cast_slice(&self.q[blocks.start * QK..blocks.end * QK]),
            d: &self.d[blocks.clone()],
            b: &self.s[blocks],
        }
    }
}

impl Repacked {
    /// As [`QMatrix::new`], for the types `repack.rs` takes.
    pub(super) fn new(ty: GgmlType, bytes: &[u8], rows: usize) -> Option<Self> {
        let (layout, offsets) = repack::layout(ty)?;
        let (per_block, bb) = ty.block();
        let (per_block, bb) = (per_block as usize, bb as usize);
        let n_blocks = bytes.len() / bb;
        if rows == 0 || !bytes.len().is_multiple_of(bb) || !n_blocks.is_multiple_of(rows) {
            return None;
        }
        let mut out = repack::Sink::default();
        out.qs.reserve_exact(n_blocks * layout.quant_bytes());
        out.d.reserve_exact(n_blocks);
        if offsets {
            out.b.reserve_exact(n_blocks);
        }
        for blk in bytes.chunks_exact(bb) {
            repack::block(ty, blk, &mut out);
        }
        Some(Repacked {
            ty,
            layout,
            qs: out.qs,
            d: out.d,
            b: out.b,
            rows,
            n_in: n_blocks / rows * per_block,
        })
    }

    /// Weight row `o`'s blocks.
    fn row_blocks(&self, o: usize) -> Blocks<'_> {
        let (nb, qb) = (self.n_in / QK, self.layout.quant_bytes());
        let scales = o * nb..(o + 1) * nb;
        Blocks {
            q: &self.qs[o * nb * qb..(o + 1) * nb * qb],
            d: &self.d[scales.clone()],
            b: self.b.get(scales).unwrap_or(&[]),
        }
    }

    /// Row `o` dequantized: `gguf::dequantize`'s f32, bit for bit, signed zeros included (so
    /// Q4_0 as (q − 8)·d and Q5_0 with its + 0.0, as it computes them).
    fn row(&self, o: usize) -> Option<Vec<f32>> {
        if o >= self.rows {
            return None;
        }
        let w = self.row_blocks(o);
        let mut out = Vec::with_capacity(self.n_in);
        for (i, q) in w.q.chunks_exact(self.layout.quant_bytes()).enumerate() {
            for j in 0..QK {
                let (q, d) = (self.layout.weight(q, j) as f32, w.d[i]);
                out.push(match (self.ty, w.b.get(i)) {
                    (GgmlType::Q4_0, _) => (q - 8.0) * d,
                    (GgmlType::Q5_0, _) => q * d + 0.0,
                    (_, Some(b)) => q * d + b,
                    (_, None) => q * d,
                });
            }
        }
        Some(out)
    }

    /// `out[t][o] = Σ_i W[o][i]·x[t][i]` for quantized `x` (`[t][n_in]`); out: `[t][rows]`.
    fn matmul(&self, x: &Q8Rows) -> Vec<f32> {
        assert_eq!(x.n_in, self.n_in, "activation width");
        let t = x.d.len() * QK / self.n_in;
        // A few tasks per thread, each of at least 64 rows: a task costs a few µs to hand
        // out, a 576-wide row about 0.1 µs to compute.
        let per_task = (self.rows / (4 * crate::ops::threads())).max(64);
        crate::ops::by_weight_rows(self.rows, t, per_task, |o0, chunk| {
            rows_dot(self, x, o0, chunk)
        })
    }
}

impl Layout {
    /// Weight j (0..32) of a block's quants `q`.
    #[inline(always)]
    fn weight(self, q: &[u8], j: usize) -> i32 {
        match (self, j < QK / 2) {
            (Layout::Nibbles, true) => (q[j] & 15) as i32,
            (Layout::Nibbles, false) => (q[j - QK / 2] >> 4) as i32,
            _ => q[j] as i8 as i32,
        }
    }
}

/// A row's blocks: quants, scales and offsets (for weights: as [`Repacked`] keeps them, no
/// offsets for the types without; for activations: i8 quants as bytes — for the SIMD128
/// kernel widened to i16, `simd128::widen` —, d, and the sums s = d·Σq per block).
pub(super) struct Blocks<'a> {
    pub(super) q: &'a [u8],
    pub(super) d: &'a [f32],
    pub(super) b: &'a [f32],
}

/// Tokens whose products with one weight row a kernel computes together: each weight block is
/// loaded and unpacked once for all of them (prefill), each token keeping its own sums in
/// [`row_dot_plain`]'s order, so the f32 are the single-token ones. The tokens left over
/// (and decode's one) go one at a time.
pub(super) const GROUP: usize = 4;

/// `out[(o - first)·t + tt]` = W[o]·x[tt] for the weight rows from `first` that `out` covers
/// (`[rows][t]`). The kernel is chosen at build time for wasm32 with SIMD128, at run time on
/// x86_64 (AVX2); all of them give the same f32 ([`row_dot_plain`] says how).
fn rows_dot(m: &Repacked, x: &Q8Rows, first: usize, out: &mut [f32]) {
    let nb = m.n_in / QK;
    let xs: Vec<Blocks<'_>> = (0..x.d.len() / nb).map(|tt| x.row(tt, nb)).collect();
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        use super::simd128::{row_dot, widen};
        // SIMD128 reads the activations widened to i16 (`widen`): once here for all the rows.
        let wide = widen(&x.q);
        let wide: &[u8] = bytemuck::cast_slice(&wide);
        let xs: Vec<Blocks<'_>> = (xs.iter().zip(wide.chunks_exact(2 * m.n_in)))
            .map(|(x, q)| Blocks { q, d: x.d, b: x.b })
            .collect();
        let one = |l, w: &Blocks<'_>, x: &Blocks<'_>| row_dot::<1>(l, w, [x])[0];
        return rows_dot_with(m, &xs, first, out, row_dot::<GROUP>, one);
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), all that `rows_dot_avx2` needs.
        return unsafe { rows_dot_avx2(m, &xs, first, out) };
    }
    #[allow(unreachable_code)] // wasm32 with SIMD128 returned above
    rows_dot_with(
        m,
        &xs,
        first,
        out,
        |l, w, xs| xs.map(|x| row_dot_plain(l, w, x)),
        row_dot_plain,
    )
}

/// [`rows_dot`] on the tokens `xs` with the kernels given: `group` for [`GROUP`] tokens at a
/// time, `one` for the rest.
#[inline(always)]
pub(super) fn rows_dot_with(
    m: &Repacked,
    xs: &[Blocks<'_>],
    first: usize,
    out: &mut [f32],
    group: impl Fn(Layout, &Blocks<'_>, [&Blocks<'_>; GROUP]) -> [f32; GROUP],
    one: impl Fn(Layout, &Blocks<'_>, &Blocks<'_>) -> f32,
) {
    for (r, row_out) in out.chunks_mut(xs.len()).enumerate() {
        let w = m.row_blocks(first + r);
        let mut ys = row_out.chunks_exact_mut(GROUP);
        let mut xg = xs.chunks_exact(GROUP);
        for (y, xg) in (&mut ys).zip(&mut xg) {
            y.copy_from_slice(&group(m.layout, &w, std::array::from_fn(|k| &xg[k])));
        }
        for (y, xr) in ys.into_remainder().iter_mut().zip(xg.remainder()) {
            *y = one(m.layout, &w, xr);
        }
    }
}

/// Running f32 sums of a row's dot product: lane k takes activations 4k..4k+3 of each block.
pub(super) const LANES: usize = 8;

/// One weight row · one quantized activation row: Σ_blocks d_w·d_x·Σq_w·q_x + Σ b_w·s_x.
///
/// Every kernel computes exactly this, so that they all give the same f32 (the browser's greedy
/// tokens are then the native ones): per block, eight integer sums, lane k = Σ q_w·q_x over
/// activations 4k..4k+3 (exact); lane k's f32 sum grows by `(lane as f32)·(d_w·d_x)`, rounded
/// after the product and after the sum (no fused multiply-add: WebAssembly has none that is
/// deterministic); then [`finish`].
fn row_dot_plain(layout: Layout, w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    let mut acc = [0.0f32; LANES];
    let blocks =
        w.q.chunks_exact(layout.quant_bytes())
            .zip(x.q.chunks_exact(QK));
    for (i, (wq, xq)) in blocks.enumerate() {
        let wq: [i32; QK] = std::array::from_fn(|j| layout.weight(wq, j));
        let dd = w.d[i] * x.d[i];
        for (k, a) in acc.iter_mut().enumerate() {
            let lane: i32 = (4 * k..4 * k + 4).map(|j| wq[j] * xq[j] as i8 as i32).sum();
            *a += lane as f32 * dd;
        }
    }
    finish(acc, w, x)
}

/// The end of every kernel: `(acc_0 + acc_4) + (acc_1 + acc_5) + …` summed in order, plus
/// [`offsets`].
#[inline(always)]
pub(super) fn finish(acc: [f32; LANES], w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    end(acc, offsets(w, x))
}

/// Σ b_w·s_x over the blocks in order, from −0.0 (as `Iterator::sum` does, so
/// that a row without offsets adds nothing, not even to a zero's sign). The AVX2 kernel sums
/// them in the same order as it goes, beside the lanes.
#[inline(always)]
fn offsets(w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    w.b.iter().zip(x.b).fold(-0.0, |a, (b, s)| a + b * s)
}

/// The lanes summed as [`finish`] says, plus the offsets' sum.
#[inline(always)]
fn end(acc: [f32; LANES], offsets: f32) -> f32 {
    let half: [f32; LANES / 2] = std::array::from_fn(|k| acc[k] + acc[k + LANES / 2]);
    half.iter().sum::<f32>() + offsets
}

#[cfg(test)]
pub(super) mod tests;
