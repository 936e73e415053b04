//! The `cpu-q8` block dot product for x86_64 with AVX2 (`core::arch::x86_64`), chosen at run
//! time: `qmatrix::rows_dot` calls [`rows_dot`] once the CPU is found to have AVX2. Its
//! arithmetic is `qmatrix::row_dot_plain`'s to the bit, and so the SIMD128 kernel's
//! (`simd128.rs`): per block, eight exact integer lane sums (lane k: activations 4k..4k+3),
//! each scaled in f32 and added to its own running sum without a fused multiply-add, then the
//! same final sum (`qmatrix::finish`).
//!
//! Products: `maddubs` (u8·i8 summed in pairs; llama.cpp's approach), then `madd` with ones
//! (pairs summed into fours). A weight block is loaded and unpacked once for [`row_dot`]'s `N`
//! tokens; the whole loop over a task's rows is compiled for AVX2 ([`rows_dot`]), so that the
//! kernel is inlined into it.

use super::qmatrix::{finish, rows_dot_with, Blocks, QMatrix, GROUP, QK};

/// `qmatrix::rows_dot` compiled for AVX2, with [`row_dot`] inlined into its loop.
#[target_feature(enable = "avx2")]
pub(super) fn rows_dot(m: &QMatrix, xs: &[Blocks<'_>], first: usize, out: &mut [f32]) {
    let one = |i, w: &Blocks<'_>, x: &Blocks<'_>| row_dot::<1>(i, w, [x])[0];
    rows_dot_with(
        m,
        xs,
        first,
        out,
        |i, w, xs| row_dot::<GROUP>(i, w, xs),
        one,
    )
}

/// `qmatrix::row_dot_plain` with AVX2 for `N` tokens at once (each weight block loaded and
/// unpacked once for all of them): per block, 32 products u8·i8 summed in pairs (`maddubs`), then in
/// fours (`madd`): lane k of the 256-bit result is activations 4k..4k+3 (llama.cpp's
/// approach); scaled in f32 lanes with a multiply and an add, one sum per token.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn row_dot<const N: usize>(
    int8: bool,
    w: &Blocks<'_>,
    xs: [&Blocks<'_>; N],
) -> [f32; N] {
    use bytemuck::pod_read_unaligned as load;
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let low = _mm_set1_epi8(0x0F);
    // A token's sums grow by (the 8 lane sums of a block's pairs, as f32) · d_w·d_x.
    let scaled = |pairs: __m256i, dd: f32, acc: __m256| {
        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
        _mm256_add_ps(acc, _mm256_mul_ps(sums, _mm256_set1_ps(dd)))
    };
    let mut acc = [_mm256_setzero_ps(); N];
    // Each token's blocks, walked along with the weight's (no index to check).
    let mut xb = xs.map(|x| x.q.chunks_exact(QK).zip(x.d));
    if int8 {
        for (wq, &dw) in w.q.chunks_exact(QK).zip(w.d) {
            let wv: __m256i = load(wq);
            // |w| · (x with w's sign): maddubs wants its first operand unsigned.
            let abs = _mm256_sign_epi8(wv, wv);
            for (a, b) in acc.iter_mut().zip(&mut xb) {
                let Some((xq, &dx)) = b.next() else { continue };
                let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(load(xq), wv));
                *a = scaled(pairs, dw * dx, *a);
            }
        }
    } else {
        for (wq, &dw) in w.q.chunks_exact(QK / 2).zip(w.d) {
            let raw: __m128i = load(wq);
            let lo = _mm_and_si128(raw, low);
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
            let wv = _mm256_set_m128i(hi, lo);
            for (a, b) in acc.iter_mut().zip(&mut xb) {
                let Some((xq, &dx)) = b.next() else { continue };
                *a = scaled(_mm256_maddubs_epi16(wv, load(xq)), dw * dx, *a);
            }
        }
    }
    std::array::from_fn(|k| finish(bytemuck::cast(acc[k]), w, xs[k]))
}

#[cfg(test)]
mod tests {
    use super::super::qmatrix::tests::same_as_plain;

    /// The AVX2 kernel gives the plain one's f32 exactly (same lane sums, same order).
    #[test]
    fn avx2_kernel_is_the_plain_one_to_the_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        // SAFETY: AVX2 was detected above.
        let n = same_as_plain(|int8, w, x| unsafe { super::row_dot::<1>(int8, w, [x])[0] });
        assert_eq!(n, 3 * 24 * 3);
    }
}
