//! The SIMD128 super-block kernel (wasm32, chosen at build time). SIMD128 has no u8·i8 pair
//! product (AVX2's `maddubs`), so the products are `i32x4.dot_i16x8_s` on i16: the
//! activations widened once per product by `cpu::simd128::widen` (per 16 values, the even
//! ones then the odd ones), the weights unpacked to unsigned bytes (0..63) as the AVX2 kernel
//! does, split the same way by a mask and a shift, and multiplied by their sub-block's scale
//! in i16 (|u·s| ≤ 63·128; a pair of them times activations, ≤ 2·63·128·127, fits `dot`'s i32), once for all the tokens of a group; the offsets and minimums go
//! through the `bsums`. Each token's i32 lanes are summed to its exact `sumi`, and the f32
//! steps are `superblock::row_dot`'s, so the f32 are the plain kernel's, bit for bit (tested in
//! node: `tests.rs`).

use super::SuperBlocks;
use super::{d_dmin, row_dot, rows_dot_with, scales_mins_k4, scales_q3k_biased, KQuant, Sums};
use crate::cpu::qmatrix::q8k::{Q8KRows, XBlocks, XRow};
use crate::cpu::qmatrix::GROUP;
use crate::cpu::simd128::widen;
use bytemuck::pod_read_unaligned as load;
use core::arch::wasm32::*;

/// [`super::rows_dot`] with this kernel, for type `K` (the activations widened here, once
/// for all the rows).
pub(super) fn rows_dot<const K: u8>(m: &SuperBlocks, x: &Q8KRows, first: usize, out: &mut [f32]) {
    let wide = widen(&x.q);
    let xs: Vec<XRow<'_, v128>> = (0..x.tokens()).map(|tt| x.row(tt, &wide)).collect();
    let one =
        |w: &[u8], x: &XRow<'_, v128>| row_dot::<K, 1, _>(w, [x], sums::<K, 1>, d_dmin::<K>)[0];
    let group = |w: &[u8], xs: [&XRow<'_, v128>; GROUP]| {
        row_dot::<K, GROUP, _>(w, xs, sums::<K, GROUP>, d_dmin::<K>)
    };
    rows_dot_with(m, &xs, first, out, group, one)
}

/// The integer sums of super-block `blk` (type `K`) with `N` tokens' blocks (their quants
/// widened).
#[inline(always)]
fn sums<const K: u8, const N: usize>(blk: &[u8], xs: XBlocks<'_, '_, v128, N>) -> Sums<N> {
    let k = KQuant::id(K);
    let blk = &blk[..k.bytes()];
    let xs = Tokens {
        q: std::array::from_fn(|t| &xs.q(t)[..32]),
        x: xs,
    };
    match k {
        KQuant::Q4K => q45k::<N, false>(blk, &xs),
        KQuant::Q5K => q45k::<N, true>(blk, &xs),
        KQuant::Q6K => q6k(blk, &xs),
        KQuant::Q3K => q3k(blk, &xs),
        KQuant::Q2K => q2k(blk, &xs),
    }
}

/// 16 unsigned bytes as i16, the even ones then the odd ones (as `widen` splits the
/// activations), times the scale `s`.
#[inline(always)]
fn scaled(u: v128, s: i32) -> [v128; 2] {
    let s = i16x8_splat(s as i16);
    let even = v128_and(u, u16x8_splat(0x00FF));
    [i16x8_mul(even, s), i16x8_mul(u16x8_shr(u, 8), s)]
}

/// Each token's lanes grown by 16 scaled weights `w` · activations 16c..16c + 16.
#[inline(always)]
fn add16<const N: usize>(acc: &mut [v128; N], w: [v128; 2], xs: &Tokens<'_, '_, N>, c: usize) {
    for (t, a) in acc.iter_mut().enumerate() {
        let x = &xs.q[t][2 * c..2 * c + 2];
        let p = i32x4_add(i32x4_dot_i16x8(w[0], x[0]), i32x4_dot_i16x8(w[1], x[1]));
        *a = i32x4_add(*a, p);
    }
}

/// `N` tokens' blocks: their quants widened (32 × v128 each, sliced once per super-block),
/// and their sums.
struct Tokens<'a, 'r, const N: usize> {
    q: [&'a [v128]; N],
    x: XBlocks<'a, 'r, v128, N>,
}

/// The sum of the 4 i32 lanes.
#[inline(always)]
fn hsum(v: v128) -> i32 {
    let v = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    let v = i32x4_add(v, i32x4_shuffle::<1, 0, 3, 2>(v, v));
    i32x4_extract_lane::<0>(v)
}

/// Σ s·bsums over token `t`'s 16 sums, `s` as two i16x8.
#[inline(always)]
fn dot_bsums<const N: usize>(s: [v128; 2], xs: &Tokens<'_, '_, N>, t: usize) -> v128 {
    let b: &[u8] = bytemuck::cast_slice(&xs.x.bsums(t)[..16]);
    let b: [v128; 2] = [load(&b[..16]), load(&b[16..])];
    i32x4_add(i32x4_dot_i16x8(s[0], b[0]), i32x4_dot_i16x8(s[1], b[1]))
}

/// 16 bytes.
#[inline(always)]
fn bytes(b: &[u8], at: usize) -> v128 {
    load(&b[at..at + 16])
}

/// Q4_K or Q5_K: 4 groups of 64, the low then the high nibbles of 32 bytes of `qs`
/// (sub-blocks 2g, 2g + 1), for Q5_K bit j of each `qh` byte as sub-block j's fifth bit;
/// minimums per 32 (each twice, against the 16 `bsums`).
#[inline(always)]
fn q45k<const N: usize, const FIVE: bool>(blk: &[u8], xs: &Tokens<'_, '_, N>) -> Sums<N> {
    let five = FIVE;
    let (sc, mn) = scales_mins_k4(&blk[4..16]);
    let qs = if five { &blk[48..176] } else { &blk[16..144] };
    let (nibble, one) = (u8x16_splat(0x0F), u8x16_splat(1));
    // Sub-block j's fifth bits of weights 16c..16c + 16, at bit 4.
    let fifth = |j: u32, c: usize| {
        let qh = bytes(blk, 16 + 16 * c);
        i16x8_shl(v128_and(u16x8_shr(qh, j), one), 4)
    };
    let mut acc = [i32x4_splat(0); N];
    for g in 0..4 {
        for c in 0..2 {
            let raw = bytes(qs, 32 * g + 16 * c);
            let mut lo = v128_and(raw, nibble);
            let mut hi = v128_and(u16x8_shr(raw, 4), nibble);
            if five {
                lo = v128_or(lo, fifth(2 * g as u32, c));
                hi = v128_or(hi, fifth(2 * g as u32 + 1, c));
            }
            add16(&mut acc, scaled(lo, sc[2 * g] as i32), xs, 4 * g + c);
            add16(
                &mut acc,
                scaled(hi, sc[2 * g + 1] as i32),
                xs,
                4 * g + 2 + c,
            );
        }
    }
    let m: [i16; 16] = std::array::from_fn(|j| mn[j / 2] as i16);
    let m: [v128; 2] = [
        load(bytemuck::cast_slice(&m[..8])),
        load(bytemuck::cast_slice(&m[8..])),
    ];
    std::array::from_fn(|t| [hsum(acc[t]), hsum(dot_bsums(m, xs, t))])
}

/// Each token's `sumi` less 2^`shift`·Σ s·bsums (`sc` the 16 i8 scales): Q6_K's −32 and
/// Q3_K's −4 on their unsigned weights.
#[inline(always)]
fn offset_by_bsums<const N: usize>(
    acc: [v128; N],
    xs: &Tokens<'_, '_, N>,
    sc: &[u8],
    shift: u32,
) -> Sums<N> {
    let raw = bytes(sc, 0);
    let s = [i16x8_extend_low_i8x16(raw), i16x8_extend_high_i8x16(raw)];
    std::array::from_fn(|t| {
        let off = i32x4_shl(dot_bsums(s, xs, t), shift);
        [hsum(i32x4_sub(acc[t], off)), 0]
    })
}

/// Q6_K: 2 halves of 128, each 4 runs of 32 from the low or high nibbles of `ql[0..32]` or
/// `ql[32..64]` with 2 high bits from `qh` at shift 2·run; unsigned (0..63), then −32·Σ s·bsums.
#[inline(always)]
fn q6k<const N: usize>(blk: &[u8], xs: &Tokens<'_, '_, N>) -> Sums<N> {
    let sc = &blk[192..208];
    let (nibble, high) = (u8x16_splat(0x0F), u8x16_splat(0x30));
    let mut acc = [i32x4_splat(0); N];
    for n in 0..2 {
        for c in 0..2 {
            let ql0 = bytes(blk, 64 * n + 16 * c);
            let ql1 = bytes(blk, 64 * n + 32 + 16 * c);
            let qh = bytes(blk, 128 + 32 * n + 16 * c);
            let u = [
                v128_or(v128_and(ql0, nibble), v128_and(i16x8_shl(qh, 4), high)),
                v128_or(v128_and(ql1, nibble), v128_and(i16x8_shl(qh, 2), high)),
                v128_or(v128_and(u16x8_shr(ql0, 4), nibble), v128_and(qh, high)),
                v128_or(
                    v128_and(u16x8_shr(ql1, 4), nibble),
                    v128_and(u16x8_shr(qh, 2), high),
                ),
            ];
            for (run, u) in u.into_iter().enumerate() {
                let j = 8 * n + 2 * run + c;
                add16(&mut acc, scaled(u, sc[j] as i8 as i32), xs, j);
            }
        }
    }
    offset_by_bsums(acc, xs, sc, 5)
}

/// Q3_K: 2 halves of 128, each 4 shifts of 32 from 32 bytes of `qs`, the third bit from
/// `hmask` (bit 4·half + shift): unsigned q + 4·bit (0..7), then −4·Σ s·bsums.
#[inline(always)]
fn q3k<const N: usize>(blk: &[u8], xs: &Tokens<'_, '_, N>) -> Sums<N> {
    let sc = scales_q3k_biased(&blk[96..108]).map(|v| v as i8 - 32);
    let (two, one) = (u8x16_splat(3), u8x16_splat(1));
    let mut acc = [i32x4_splat(0); N];
    for n in 0..2 {
        for c in 0..2 {
            let q = bytes(blk, 32 + 32 * n + 16 * c);
            let hm = bytes(blk, 16 * c);
            for shift in 0..4 {
                let low = v128_and(u16x8_shr(q, 2 * shift as u32), two);
                let bit = v128_and(u16x8_shr(hm, (4 * n + shift) as u32), one);
                let j = 8 * n + 2 * shift + c;
                let u = v128_or(low, i16x8_shl(bit, 2));
                add16(&mut acc, scaled(u, sc[j] as i32), xs, j);
            }
        }
    }
    offset_by_bsums(acc, xs, bytemuck::cast_slice(&sc), 2)
}

/// Q2_K: 2 halves of 128, each 4 shifts of 32 from 32 bytes of `qs`; per 16 a byte of
/// `scales`, the scale in its low nibble, the minimum in its high one.
#[inline(always)]
fn q2k<const N: usize>(blk: &[u8], xs: &Tokens<'_, '_, N>) -> Sums<N> {
    let sc = &blk[0..16];
    let two = u8x16_splat(3);
    let mut acc = [i32x4_splat(0); N];
    for n in 0..2 {
        for c in 0..2 {
            let q = bytes(blk, 16 + 32 * n + 16 * c);
            for shift in 0..4 {
                let u = v128_and(u16x8_shr(q, 2 * shift as u32), two);
                let j = 8 * n + 2 * shift + c;
                add16(&mut acc, scaled(u, (sc[j] & 15) as i32), xs, j);
            }
        }
    }
    let mins = u8x16_shr(bytes(sc, 0), 4);
    let m = [u16x8_extend_low_u8x16(mins), u16x8_extend_high_u8x16(mins)];
    std::array::from_fn(|t| [hsum(acc[t]), hsum(dot_bsums(m, xs, t))])
}
