//! The `cpu-q8` block dot product for WebAssembly with SIMD128 (`core::arch::wasm32`), chosen
//! at build time: `.cargo/config.toml` turns `simd128` on for every wasm32 build. Its
//! arithmetic is `qmatrix::row_dot_plain`'s to the bit, and so the AVX2 kernel's:
//! per block, eight exact integer lane sums (lane k: activations 4k..4k+3), each scaled in f32
//! and added to its own running sum without a fused multiply-add (WebAssembly's only one,
//! `relaxed_madd`, may or may not round in between), then the same final sum. So the browser
//! gives the native `cpu-q8` backend's logits exactly.
//!
//! Products: `i16x8.extmul` of 16 i8 weights (4-bit ones as 0..15) with 16 i8 activations
//! (|q_w·q_x| ≤ 128·127 fits i16), pairs summed to i32 (`extadd_pairwise`), then neighbouring
//! pairs added across two vectors by two shuffles. SIMD128 has no u8·i8 pair product
//! (AVX2's `maddubs`); the relaxed-SIMD one is not in every browser.

use super::qmatrix::{finish, Blocks, LANES, QK};
use bytemuck::pod_read_unaligned as load;
use core::arch::wasm32::*;

/// Lane k = Σ_{j=4k}^{4k+3} w_j·x_j of 16 signed bytes each, as i32.
#[inline(always)]
fn quad_sums(w: v128, x: v128) -> v128 {
    let lo = i32x4_extadd_pairwise_i16x8(i16x8_extmul_low_i8x16(w, x)); // pairs 0..7
    let hi = i32x4_extadd_pairwise_i16x8(i16x8_extmul_high_i8x16(w, x)); // pairs 8..15
    i32x4_add(
        i32x4_shuffle::<0, 2, 4, 6>(lo, hi),
        i32x4_shuffle::<1, 3, 5, 7>(lo, hi),
    )
}

/// One weight row · one quantized activation row (see `row_dot_plain`).
#[inline(always)]
pub(super) fn row_dot(int8: bool, w: &Blocks<'_>, x: &Blocks<'_>) -> f32 {
    // Lanes 0..3 (activations 0..15 of each block) and 4..7 (16..31).
    let (mut acc_lo, mut acc_hi) = (f32x4_splat(0.0), f32x4_splat(0.0));
    let mut add = |lo: v128, hi: v128, dd: f32| {
        let dd = f32x4_splat(dd);
        acc_lo = f32x4_add(acc_lo, f32x4_mul(f32x4_convert_i32x4(lo), dd));
        acc_hi = f32x4_add(acc_hi, f32x4_mul(f32x4_convert_i32x4(hi), dd));
    };
    let xs = x.q.chunks_exact(QK).zip(x.d);
    if int8 {
        for ((wq, &dw), (xq, &dx)) in w.q.chunks_exact(QK).zip(w.d).zip(xs) {
            let (w0, w1): (v128, v128) = (load(&wq[..16]), load(&wq[16..]));
            let (x0, x1): (v128, v128) = (load(&xq[..16]), load(&xq[16..]));
            add(quad_sums(w0, x0), quad_sums(w1, x1), dw * dx);
        }
    } else {
        let low = u8x16_splat(0x0F);
        for ((wq, &dw), (xq, &dx)) in w.q.chunks_exact(QK / 2).zip(w.d).zip(xs) {
            let raw: v128 = load(wq);
            let (x0, x1): (v128, v128) = (load(&xq[..16]), load(&xq[16..]));
            let (w0, w1) = (v128_and(raw, low), u8x16_shr(raw, 4));
            add(quad_sums(w0, x0), quad_sums(w1, x1), dw * dx);
        }
    }
    let lanes: [f32; LANES] = bytemuck::cast([acc_lo, acc_hi]);
    finish(lanes, w, x)
}
