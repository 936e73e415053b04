//! The arithmetic of the forward pass, plainly, on f32 slices. These are also the CPU twins of
//! the GPU kernels. Row-major throughout: a matrix `[rows][cols]` is `rows` runs of `cols`.

use crate::model::KvRows;
use std::ops::Range;
/// Runs `f(i, chunk)` over consecutive `chunk_len` pieces of `out`, on all cores natively.
pub fn for_each_chunk<F>(out: &mut [f32], chunk_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
    #[cfg(target_arch = "wasm32")]
    out.chunks_mut(chunk_len)
        .enumerate()
        .for_each(|(i, c)| f(i, c));
}

/// Runs `f` on a worker thread of the pool that [`for_each_chunk`] uses (natively; in place in
/// wasm32), so that the forward pass's ~240 parallel loops per token are each forked and
/// joined among workers that spin between loops. Called from outside the pool, every loop
/// would put the caller to sleep on a lock and wake it: ~500 context switches per token,
/// measured to cost 20–30% of decode speed on 2 cores.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(not(target_arch = "wasm32"))]
    return rayon::scope(|_| f()); // a scope's body runs on a worker of the global pool
    #[cfg(target_arch = "wasm32")]
    return f();
}

/// Worker threads [`for_each_chunk`] spreads over (1 in wasm32).
pub fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    return rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    return 1;
}

/// Σ a[i]·b[i], with 8 running partial sums so the compiler can use SIMD lanes.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out[t][o] = Σ_i x[t][i] · w[o][i]` — x: `[t][n_in]`, w: `[n_out][n_in]`, out: `[t][n_out]`.
pub fn matmul(x: &[f32], w: &[f32], n_in: usize) -> Vec<f32> {
    let t = x.len() / n_in;
    let n_out = w.len() / n_in;
    by_weight_rows(n_out, t, 16, |o0, chunk| {
        for (r, row_out) in chunk.chunks_mut(t).enumerate() {
            let o = o0 + r;
            let w_row = &w[o * n_in..(o + 1) * n_in];
            for (tt, y) in row_out.iter_mut().enumerate() {
                *y = dot(w_row, &x[tt * n_in..(tt + 1) * n_in]);
            }
        }
    })
}

/// A matrix product's `[t][n_out]`, computed as its transpose (`[n_out][t]`) so that each
/// task owns whole weight rows: `fill(o0, chunk)` writes rows `o0..` of the transpose,
/// `rows_per_task` of them (fewer at the end), on all cores; then transposed back.
pub fn by_weight_rows<F>(n_out: usize, t: usize, rows_per_task: usize, fill: F) -> Vec<f32>
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let mut out_t = vec![0.0f32; n_out * t];
    for_each_chunk(&mut out_t, rows_per_task * t, |c, chunk| {
        fill(c * rows_per_task, chunk)
    });
    if t == 1 {
        return out_t;
    }
    let mut out = vec![0.0f32; t * n_out];
    for o in 0..n_out {
        for tt in 0..t {
            out[tt * n_out + o] = out_t[o * t + tt];
        }
    }
    out
}

/// RMSNorm (Zhang & Sennrich 2019) of each row: `x / sqrt(mean(x²) + eps) · weight`.
/// x: `[t][dim]`, weight: `[dim]`.
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let dim = weight.len();
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(dim) {
        let ss = row.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let scale = 1.0 / (ss + eps).sqrt();
        out.extend(row.iter().zip(weight).map(|(v, w)| v * scale * w));
    }
    out
}

/// RoPE (Su et al. 2021) as llama.cpp applies it to GGUF llama models ("NORM" mode): the
/// adjacent pair `(v[2i], v[2i+1])` of each head rotates by `pos · base^(−2i/head_dim)`.
/// v: `[n_heads][head_dim]` for one token.
pub fn rope(v: &mut [f32], head_dim: usize, pos: usize, base: f32) {
    // (cos, sin) of each pair's angle, the same for every head.
    let turns = crate::model::rope_turns(pos, head_dim, base);
    for head in v.chunks_exact_mut(head_dim) {
        for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(&turns) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = a * sin + b * cos;
        }
    }
}

/// e^x, the same to the bit natively and in WebAssembly: the `libm` crate's `expf` (FreeBSD's
/// algorithm, under 1 ulp), which is what wasm32's std calls for `f32::exp`; natively std calls
/// glibc's, which rounds differently in the last bit for some inputs (0.45% of the finite
/// f32, counted exhaustively: benches/HISTORY.md). Every other operation of the forward is
/// IEEE-exact (+, −, ×, ÷, √, rounding) and unfused, so with this the browser's logits are the
/// native ones.
#[inline]
pub fn exp(x: f32) -> f32 {
    libm::expf(x)
}

/// In-place softmax with the maximum subtracted first.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = exp(*v - max);
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Rows of `hd` values as attention reads them: an f32 slice (`[rows][hd]`), or a KV cache's
/// rows in their element type (`model::KvRows`), decoded as they are read.
pub trait Rows: Sync {
    /// Row `r`: borrowed, or decoded into `buf` (`hd` long).
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32];
}

impl Rows for [f32] {
    #[inline]
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        let hd = buf.len();
        &self[r * hd..(r + 1) * hd]
    }
}

impl Rows for Vec<f32> {
    #[inline]
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        self.as_slice().row(r, buf)
    }
}

impl Rows for KvRows {
    #[inline]
    fn row<'a>(&'a self, r: usize, buf: &'a mut [f32]) -> &'a [f32] {
        self.read(r, buf)
    }
}

/// The attention of the query heads that share one KV head, for one query token: each head
/// h's `o_h` (`[hd]`) = Σ_p softmax_p(scale · q_h·k_p) · v_p over rows `rows` of k and v, read
/// one range after the other (a ring cache's visible rows are at most two ranges). q and o:
/// `[n][hd]`, the group's heads. Each K and V row is read (and, kept as f16 or q8_0, decoded
/// exactly to f32) once for all of them, as GQA's shared head wants; each head's arithmetic
/// is the single head's, in the same order. Compiled twice, plainly and for AVX2 + FMA, and
/// the second chosen at run time where the CPU has them (the `multiversion` crate): the same
/// arithmetic in the same order, 8 lanes wide instead of 4 (Rust fuses no multiply-add by
/// itself, so the results are identical).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
pub fn attend<R: Rows + ?Sized>(
    q: &[f32],
    k: &R,
    v: &R,
    rows: &[Range<usize>],
    hd: usize,
    scale: f32,
    o: &mut [f32],
) {
    let n = q.len() / hd;
    let seen: usize = rows.iter().map(Range::len).sum();
    let mut buf = vec![0.0f32; hd];
    let mut scores = vec![0.0f32; n * seen]; // [n][seen]
    let each = || rows.iter().flat_map(Range::clone).enumerate();
    for (p, r) in each() {
        let k_p = k.row(r, &mut buf);
        for (h, q_h) in q.chunks_exact(hd).enumerate() {
            scores[h * seen + p] = dot(q_h, k_p) * scale;
        }
    }
    scores.chunks_exact_mut(seen.max(1)).for_each(softmax);
    for (p, r) in each() {
        let v_p = v.row(r, &mut buf);
        for (h, o_h) in o.chunks_exact_mut(hd).enumerate() {
            let a = scores[h * seen + p];
            o_h.iter_mut().zip(v_p).for_each(|(o, v)| *o += a * v);
        }
    }
}

/// The rows of a head's cache of `rows` rows that hold positions `first..=pos`, in position
/// order: one range, or two where a ring cache (position p in row p mod rows) wraps.
pub fn ring_rows(first: usize, pos: usize, rows: usize) -> [std::ops::Range<usize>; 2] {
    let (a, b) = (first % rows, pos % rows);
    match pos < rows || a <= b {
        true => [a..b + 1, 0..0],
        false => [a..rows, 0..b + 1],
    }
}

/// Causal attention of `t` new queries at positions `len0..len0 + t`: q `[t][H·hd]` (after
/// RoPE); k and v `[G][stride][hd]` ([`Rows`]: f32, or a cache's rows in their type), rows
/// `0..len0 + t` of each KV head filled (k after RoPE); `kv_head[h]` the KV head query head h
/// reads. Returns `[t][H·hd]`. The shared head is indexed, never copied (no `repeat_kv`).
/// With `window` > 0 the query at position p sees only positions `p + 1 − window ..= p`
/// (sliding-window attention; 0: all of `0..=p`), read from a ring of `stride` rows per head
/// (position p in row p mod stride, [`ring_rows`]). The CPU engines' attention over their
/// cache (`stride` = its capacity, or a sliding-window layer's ring), the regroup fit's over
/// one calibration sequence, and the GPU kernels' CPU twin.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention<R: Rows + ?Sized>(
    q: &[f32],
    k: &R,
    v: &R,
    kv_head: &[usize],
    stride: usize,
    len0: usize,
    hd: usize,
    window: usize,
) -> Vec<f32> {
    let n_heads = kv_head.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0f32; q.len()];
    // One task per (token i, run of query heads that read one KV head): out[i][run]. A run
    // longer than `most` heads is cut, so that one token's attention (decode) still has work
    // for every core (at G = 1 a single run would leave all but one idle).
    let most = n_heads.div_ceil(2 * threads()).max(1);
    let runs = head_runs(kv_head, most);
    let mut tasks = Vec::with_capacity(q.len() / (n_heads * hd).max(1) * runs.len());
    for (i, mut o_i) in out.chunks_mut(n_heads * hd).enumerate() {
        for heads in &runs {
            let (o, rest) = std::mem::take(&mut o_i).split_at_mut(heads.len() * hd);
            tasks.push((i, heads.clone(), o));
            o_i = rest;
        }
    }
    for_each_task(tasks, |(i, heads, o)| {
        let base = kv_head[heads.start] * stride;
        let pos = len0 + i;
        let first = window_start(pos, window);
        // positions first..=pos, in order
        let rows = ring_rows(first, pos, stride).map(|r| base + r.start..base + r.end);
        let q_run = &q[(i * n_heads + heads.start) * hd..(i * n_heads + heads.end) * hd];
        attend(q_run, k, v, &rows, hd, scale, o);
    });
    out
}

/// The runs of consecutive query heads that read the same KV head (a grouping's groups), each
/// of at most `most` heads.
fn head_runs(kv_head: &[usize], most: usize) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for (h, g) in kv_head.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if kv_head[r.start] == *g && r.len() < most => r.end = h + 1,
            _ => runs.push(h..h + 1),
        }
    }
    runs
}

/// Runs `f` on each task, on all cores natively.
fn for_each_task<T: Send>(tasks: Vec<T>, f: impl Fn(T) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        tasks.into_par_iter().for_each(f);
    }
    #[cfg(target_arch = "wasm32")]
    tasks.into_iter().for_each(f);
}

/// The first position a query at `pos` sees with a sliding window of `window` (0: none).
pub fn window_start(pos: usize, window: usize) -> usize {
    match window {
        0 => 0,
        w => (pos + 1).saturating_sub(w),
    }
}

/// One query head's attention weights over the rows of k (`[positions][hd]`):
/// softmax_p(scale · q·k_p). What the page's attention view shows; the CPU twin of
/// attention_probe.wgsl (and the weights [`attend`] uses).
pub fn attention_weights(q_h: &[f32], k: &[f32], scale: f32) -> Vec<f32> {
    let mut scores: Vec<f32> = k
        .chunks_exact(q_h.len())
        .map(|k_p| dot(q_h, k_p) * scale)
        .collect();
    softmax(&mut scores);
    scores
}

/// SwiGLU (Shazeer 2020): `silu(gate) · up`, element-wise.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(g, u)| g / (1.0 + exp(-g)) * u)
        .collect()
}

/// GeGLU (Shazeer 2020) with the tanh approximation of GELU (Hendrycks & Gimpel 2016), as
/// Gemma and ggml's `ggml_gelu` compute it: `0.5·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))) · up`.
pub fn geglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    gate.iter()
        .zip(up)
        .map(|(&g, u)| {
            let inner = SQRT_2_OVER_PI * (g + 0.044715 * g * g * g);
            0.5 * g * (1.0 + libm::tanhf(inner)) * u
        })
        .collect()
}

/// `x += y`, element-wise.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_naive() {
        let (t, n_in, n_out) = (3, 19, 37);
        let x: Vec<f32> = (0..t * n_in).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n_out * n_in).map(|i| (i as f32 * 0.11).cos()).collect();
        let y = matmul(&x, &w, n_in);
        for tt in 0..t {
            for o in 0..n_out {
                let want: f32 = (0..n_in).map(|i| x[tt * n_in + i] * w[o * n_in + i]).sum();
                assert!((y[tt * n_out + o] - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn rope_rotates_adjacent_pairs() {
        let mut v = vec![1.0, 0.0, 1.0, 0.0];
        rope(&mut v, 4, 1, 10_000.0);
        // Pair 0 turns by 1 radian, pair 1 by 10000^(-1/2) = 0.01 radian.
        assert!((v[0] - 1f32.cos()).abs() < 1e-6 && (v[1] - 1f32.sin()).abs() < 1e-6);
        assert!((v[2] - 0.01f32.cos()).abs() < 1e-6 && (v[3] - 0.01f32.sin()).abs() < 1e-6);
    }

    /// Attention over a cache kept as f16 or q8_0 (`model::KvRows`, decoded as it is read) is
    /// attention over the rows those types give back, to the bit; natively and in WebAssembly
    /// (the browser's CPU engine: `wasm-bindgen-test-runner`, scripts/test.sh).
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    fn attention_over_typed_rows_is_attention_over_their_values() {
        use crate::model::KvType;
        let (hd, groups, len0, t) = (64, 2, 9, 3);
        let n = len0 + t;
        let val = |i: usize| ((i as f32) * 0.618).sin() * 3.0;
        let (k, v): (Vec<f32>, Vec<f32>) =
            (0..groups * n * hd).map(|i| (val(i), val(i + 7))).unzip();
        let q: Vec<f32> = (0..t * 4 * hd).map(|i| val(3 * i + 1)).collect();
        let kv_head = [0, 0, 1, 1];
        for ty in KvType::ALL {
            let typed = |x: &[f32]| {
                let mut rows = KvRows::new(ty, groups * n, hd);
                let mut back = x.to_vec();
                for (r, row) in x.chunks_exact(hd).enumerate() {
                    rows.write(r, row);
                    ty.round(&mut back[r * hd..(r + 1) * hd]);
                }
                (rows, back)
            };
            let ((kr, kb), (vr, vb)) = (typed(&k), typed(&v));
            let got = causal_attention(&q, &kr, &vr, &kv_head, n, len0, hd, 0);
            let want = causal_attention(&q, &kb, &vb, &kv_head, n, len0, hd, 0);
            assert_eq!(got, want, "{}", ty.name());
            if ty != KvType::F32 {
                let exact = causal_attention(&q, &k, &v, &kv_head, n, len0, hd, 0);
                assert_ne!(got, exact, "{} rounds", ty.name());
            }
        }
    }

    /// A sliding window read from a ring (position p in row p mod rows) gives the full
    /// cache's result to the bit: the same rows in the same order.
    #[test]
    fn attention_over_a_ring_is_attention_over_the_window() {
        let (hd, window, rows, len0, t) = (8, 5, 7, 20, 3);
        let n = len0 + t; // positions 0..n
        let k: Vec<f32> = (0..n * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let v: Vec<f32> = (0..n * hd).map(|i| (i as f32 * 0.11).cos()).collect();
        let q: Vec<f32> = (0..t * 2 * hd).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut ring_k = vec![0.0; rows * hd];
        let mut ring_v = vec![0.0; rows * hd];
        for p in n - rows..n {
            let (r, src) = ((p % rows) * hd, p * hd);
            ring_k[r..r + hd].copy_from_slice(&k[src..src + hd]);
            ring_v[r..r + hd].copy_from_slice(&v[src..src + hd]);
        }
        let full = causal_attention(&q, &k, &v, &[0, 0], n, len0, hd, window);
        let ring = causal_attention(&q, &ring_k, &ring_v, &[0, 0], rows, len0, hd, window);
        assert_eq!(full, ring);
        assert_eq!(ring_rows(18, 22, 7), [4..7, 0..2]);
        assert_eq!(ring_rows(3, 5, 7), [3..6, 0..0]);
    }

    #[test]
    fn softmax_and_rmsnorm() {
        let mut p = vec![1.0, 2.0, 3.0];
        softmax(&mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6 && p[2] > p[1]);
        let y = rmsnorm(&[3.0, 4.0], &[1.0, 2.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 8.0 / r).abs() < 1e-6);
    }
}
