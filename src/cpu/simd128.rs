//! The `cpu-q8` block dot product for WebAssembly with SIMD128 (`core::arch::wasm32`), chosen
//! at build time: `.cargo/config.toml` turns `simd128` on for every wasm32 build. Its
//! arithmetic is `qmatrix::row_dot_plain`'s to the bit, and so the AVX2 kernel's:
//! per block, eight exact integer lane sums (lane k: activations 4k..4k+3), each scaled in f32
//! and added to its own running sum without a fused multiply-add (WebAssembly's only one,
//! `relaxed_madd`, may or may not round in between), then the same final sum. So the browser
//! gives the native `cpu-q8` backend's logits exactly.
//!
//! Products: `i32x4.dot_i16x8_s` (x86's `pmaddwd`) of weights and activations widened to i16
//! (|q_w·q_x| ≤ 128·127, a pair's sum fits i32 exactly). Both are widened by shifts, the even
//! values of 16 apart from the odd ones ([`widen16`]), so that the pair sums of the two halves
//! add lane by lane into the four quad sums, with no shuffle. The activations are widened once
//! per product (`widen`: every weight row reads them), a weight block once for [`row_dot`]'s
//! `N` tokens. This is about a quarter faster in node, prefill and decode, than widening both
//! again in every block product by `i16x8.extmul` (several x86 instructions each in V8) and
//! adding the pairs across two vectors by two shuffles (benches/HISTORY.md). SIMD128 has no
//! u8·i8 pair product (AVX2's `maddubs`); the relaxed-SIMD one is not in every browser.
//!
//! Both layouts of `qmatrix::Layout` go through the same products: the i8 ones (Q8_0, Q5_0,
//! Q5_1) widened like the activations, the nibbles (Q4_0, Q4_1) by masks and shifts; a block's
//! two i32x4 quad sums (activations 0..15 and 16..31) are scaled by the block's scale. The
//! K-quants' super-blocks have their own SIMD128 kernel (`qmatrix/superblock/simd128.rs`),
//! which reads the activations widened by the same [`widen`].

use super::qmatrix::{finish, Blocks, Layout, LANES, QK};
use bytemuck::pod_read_unaligned as load;
use core::arch::wasm32::*;

/// 16 i8 widened to two i16x8 by shifts: the even values 0, 2, … 14, then the odd ones. Lane
/// k of the first's pair sums (values 4k, 4k+2) plus lane k of the second's (4k+1, 4k+3) is
/// the quad sum of values 4k..4k+3.
#[inline(always)]
fn widen16(v: v128) -> [v128; 2] {
    [i16x8_shr(i16x8_shl(v, 8), 8), i16x8_shr(v, 8)]
}

/// Quantized activations (`Q8Rows`' i8 quants) widened for [`row_dot`]: 64 bytes a block, the
/// halves of its values 0..15 then 16..31 ([`widen16`]).
pub(super) fn widen(q: &[i8]) -> Vec<v128> {
    let q: &[u8] = bytemuck::cast_slice(q);
    q.chunks_exact(16).flat_map(|c| widen16(load(c))).collect()
}

/// Lane k = the quad sum of activations 4k..4k+3: `w` and `x` as [`widen16`] gives them.
#[inline(always)]
fn quad_sums(w: [v128; 2], x: &[u8]) -> v128 {
    let (x0, x1): (v128, v128) = (load(&x[..16]), load(&x[16..32]));
    i32x4_add(i32x4_dot_i16x8(w[0], x0), i32x4_dot_i16x8(w[1], x1))
}

/// One weight row · `N` quantized activation rows (see `row_dot_plain`), their quants as
/// [`widen`] gives them: each weight block is loaded and unpacked once for the `N` tokens
/// (prefill), each token keeping its own sums.
#[inline(always)]
pub(super) fn row_dot<const N: usize>(
    layout: Layout,
    w: &Blocks<'_>,
    xs: [&Blocks<'_>; N],
) -> [f32; N] {
    // Per token, lanes 0..3 (activations 0..15 of each block) and 4..7 (16..31).
    let mut acc = [[f32x4_splat(0.0); 2]; N];
    // Block i, its weights 0..15 (`w0`) and 16..31 (`w1`) as `widen16` gives them, scaled by
    // `dw` into every token's sums.
    let mut add = |i: usize, w0: [v128; 2], w1: [v128; 2], dw: f32| {
        for (a, x) in acc.iter_mut().zip(xs) {
            let xq = &x.q[i * 2 * QK..(i + 1) * 2 * QK];
            let dd = f32x4_splat(dw * x.d[i]);
            a[0] = f32x4_add(a[0], f32x4_mul(f32x4_convert_i32x4(quad_sums(w0, xq)), dd));
            a[1] = f32x4_add(
                a[1],
                f32x4_mul(f32x4_convert_i32x4(quad_sums(w1, &xq[32..])), dd),
            );
        }
    };
    match layout {
        Layout::Bytes => {
            for (i, (wq, &dw)) in w.q.chunks_exact(QK).zip(w.d).enumerate() {
                add(i, widen16(load(&wq[..16])), widen16(load(&wq[16..])), dw);
            }
        }
        Layout::Nibbles => {
            // Byte j holds weight j (low nibble) and j + 16 (high); as i16 lanes, lane l holds
            // weights 2l, 2l + 16, 2l + 1, 2l + 17 from its lowest nibble up.
            let low = i16x8_splat(0x0F);
            for (i, (wq, &dw)) in w.q.chunks_exact(QK / 2).zip(w.d).enumerate() {
                let raw: v128 = load(wq);
                let w0 = [v128_and(raw, low), v128_and(u16x8_shr(raw, 8), low)];
                let w1 = [v128_and(u16x8_shr(raw, 4), low), u16x8_shr(raw, 12)];
                add(i, w0, w1, dw);
            }
        }
    }
    core::array::from_fn(|k| {
        let lanes: [f32; LANES] = bytemuck::cast(acc[k]);
        finish(lanes, w, xs[k])
    })
}

#[cfg(test)]
mod tests {
    use super::super::qmatrix::{
        tests::{same_as_plain, COMPARED},
        Blocks,
    };
    use super::{row_dot, widen};

    /// The SIMD128 kernel gives the plain one's f32 exactly (run by `wasm-bindgen-test-runner`:
    /// scripts/test.sh, "wasm32 tests").
    #[wasm_bindgen_test::wasm_bindgen_test]
    fn simd128_kernel_is_the_plain_one_to_the_bit() {
        let n = same_as_plain(|layout, w, x| {
            let wide = widen(bytemuck::cast_slice(x.q));
            let q = bytemuck::cast_slice(&wide);
            row_dot::<1>(layout, w, [&Blocks { q, d: x.d, b: x.b }])[0]
        });
        assert_eq!(n, COMPARED);
    }
}
