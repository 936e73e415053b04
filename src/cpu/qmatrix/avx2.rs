//! The AVX2 kernels of `cpu-q8`'s products on the legacy types' 32-weight blocks (x86_64,
//! chosen at run time where the CPU has AVX2): the same f32 as [`super::row_dot_plain`], bit
//! for bit (tests in `tests.rs`). The K-quants' are in `superblock/avx2.rs`.

use super::{end, rows_dot_with, Blocks, Layout, Repacked, GROUP, QK};

/// [`rows_dot`] compiled for AVX2, with [`row_dot_avx2`] inlined into its loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn rows_dot_avx2(m: &Repacked, xs: &[Blocks<'_>], first: usize, out: &mut [f32]) {
    if m.b.is_empty() {
        let one = |l, w: &Blocks<'_>, x: &Blocks<'_>| row_dot_avx2::<1, false>(l, w, [x])[0];
        let group =
            |l, w: &Blocks<'_>, xs: [&Blocks<'_>; GROUP]| row_dot_avx2::<GROUP, false>(l, w, xs);
        rows_dot_with(m, xs, first, out, group, one)
    } else {
        let one = |l, w: &Blocks<'_>, x: &Blocks<'_>| row_dot_avx2::<1, true>(l, w, [x])[0];
        let group =
            |l, w: &Blocks<'_>, xs: [&Blocks<'_>; GROUP]| row_dot_avx2::<GROUP, true>(l, w, xs);
        rows_dot_with(m, xs, first, out, group, one)
    }
}

/// [`row_dot_plain`] with AVX2 for `N` tokens at once (each weight block loaded and
/// unpacked once for all of them): per block, 32 products u8·i8 summed in pairs (`maddubs`),
/// then in fours (`madd`): lane k of the 256-bit result is activations 4k..4k+3 (llama.cpp's
/// approach); scaled in f32 lanes with a multiply and an add, one sum per token. With
/// `OFFSETS`, each token's Σ b_w·s_x is summed block by block as the loop goes, in
/// `offsets`' order: a chain of its own beside the lanes', where after them it would be a
/// serial tail (Q4_K rows of 2048: a quarter of the time).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn row_dot_avx2<const N: usize, const OFFSETS: bool>(
    layout: Layout,
    w: &Blocks<'_>,
    xs: [&Blocks<'_>; N],
) -> [f32; N] {
    use bytemuck::pod_read_unaligned as load;
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let low = _mm_set1_epi8(0x0F);
    // A token's sums grow by (the 8 lane sums of a block's pairs, as f32) · d_w·d_x.
    let scaled = |pairs: __m256i, dd: __m256, acc: __m256| {
        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
        _mm256_add_ps(acc, _mm256_mul_ps(sums, dd))
    };
    // The pairs of signed weights `wv` with activations `xq`: |w| · (x with w's sign), as
    // `maddubs` wants its first operand unsigned (|w| ≤ 128, so a pair fits i16).
    let signed = |abs: __m256i, wv: __m256i, xq: &[u8]| {
        _mm256_maddubs_epi16(abs, _mm256_sign_epi8(load(xq), wv))
    };
    let mut acc = [_mm256_setzero_ps(); N];
    // Each token's offsets term, and its growth by block i's offset.
    let mut offs = [-0.0f32; N];
    let add_offsets = |i: usize, offs: &mut [f32; N]| {
        if OFFSETS {
            for (o, x) in offs.iter_mut().zip(xs) {
                *o += w.b[i] * x.b[i];
            }
        }
    };
    // Each token's blocks, walked along with the weight's (no index to check).
    let mut xb = xs.map(|x| x.q.chunks_exact(QK).zip(x.d));
    match layout {
        Layout::Bytes => {
            for (i, (wq, &dw)) in w.q.chunks_exact(QK).zip(w.d).enumerate() {
                let wv: __m256i = load(wq);
                let abs = _mm256_sign_epi8(wv, wv);
                for (a, b) in acc.iter_mut().zip(&mut xb) {
                    let Some((xq, &dx)) = b.next() else { continue };
                    *a = scaled(signed(abs, wv, xq), _mm256_set1_ps(dw * dx), *a);
                }
                add_offsets(i, &mut offs);
            }
        }
        Layout::Nibbles => {
            for (i, (wq, &dw)) in w.q.chunks_exact(QK / 2).zip(w.d).enumerate() {
                let raw: __m128i = load(wq);
                let lo = _mm_and_si128(raw, low);
                let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
                let wv = _mm256_set_m128i(hi, lo);
                for (a, b) in acc.iter_mut().zip(&mut xb) {
                    let Some((xq, &dx)) = b.next() else { continue };
                    let pairs = _mm256_maddubs_epi16(wv, load(xq));
                    *a = scaled(pairs, _mm256_set1_ps(dw * dx), *a);
                }
                add_offsets(i, &mut offs);
            }
        }
    }
    std::array::from_fn(|k| end(bytemuck::cast(acc[k]), offs[k]))
}
