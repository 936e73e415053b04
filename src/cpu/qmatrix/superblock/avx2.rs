//! The AVX2 super-block kernel (x86_64, chosen at run time where the CPU has AVX2 and F16C),
//! llama.cpp's approach (ggml-cpu `arch/x86/quants.c`): the weights unpacked to unsigned bytes
//! (0..63), `maddubs` multiplies them with 32 activations at a time into 16 pair sums (i16: at
//! most 2·63·127), `madd` scales those by their sub-block's integer scale (picked from the
//! super-block's scales by a byte shuffle) into 8 i32 lanes; Q6_K's −32 and Q3_K's −4 are
//! taken off once per super-block as 32 (or 4)·Σ s·bsums, the minimums are Σ m·bsums. Each
//! token's lanes are summed to its exact `sumi` (and `summ`) at the end of the super-block,
//! and the f32 steps are `superblock::row_dot`'s (d and dmin converted by F16C, exactly), so
//! the f32 are the plain kernel's, bit for bit (tested in `tests.rs`).

use super::SuperBlocks;
use super::{row_dot, rows_dot_with, scales_mins_k4, scales_q3k_biased, KQuant, Sums};
use crate::cpu::qmatrix::q8k::{XBlocks, XRow};
use crate::cpu::qmatrix::GROUP;
use crate::gguf::QK_K;
use bytemuck::pod_read_unaligned as load;
use std::arch::x86_64::*;

/// [`super::rows_dot`] compiled for AVX2, the kernel of the matrix's type inlined into its
/// loops.
#[target_feature(enable = "avx2,f16c")]
pub(super) fn rows_dot(m: &SuperBlocks, xs: &[XRow<'_, i8>], first: usize, out: &mut [f32]) {
    by_type!(m.k, rows_dot_as(m, xs, first, out))
}

#[target_feature(enable = "avx2,f16c")]
#[inline]
fn rows_dot_as<const K: u8>(m: &SuperBlocks, xs: &[XRow<'_, i8>], first: usize, out: &mut [f32]) {
    let one = |w: &[u8], x: &XRow<'_, i8>| {
        row_dot::<K, 1, _>(w, [x], |b, x| sums::<K, 1>(b, x), |b| d_dmin::<K>(b))[0]
    };
    let group = |w: &[u8], xs: [&XRow<'_, i8>; GROUP]| {
        row_dot::<K, GROUP, _>(w, xs, |b, x| sums::<K, GROUP>(b, x), |b| d_dmin::<K>(b))
    };
    rows_dot_with(m, xs, first, out, group, one)
}

/// A super-block's d and dmin (0 for the types without) by F16C: `superblock::d_dmin`'s f32.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn d_dmin<const K: u8>(blk: &[u8]) -> [f32; 2] {
    let (at, dmin) = KQuant::id(K).scales_at();
    let bits = match dmin {
        Some(_) => u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]),
        None => u16::from_le_bytes([blk[at], blk[at + 1]]) as u32,
    };
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    [_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v))]
}

/// The integer sums of super-block `blk` (type `K`) with `N` tokens' blocks, the weights
/// unpacked once for all.
#[target_feature(enable = "avx2")]
#[inline]
fn sums<const K: u8, const N: usize>(blk: &[u8], xs: XBlocks<'_, '_, i8, N>) -> Sums<N> {
    let k = KQuant::id(K);
    let (blk, x) = (&blk[..k.bytes()], Tokens(xs));
    match k {
        KQuant::Q4K => q45k::<N, false>(blk, &x),
        KQuant::Q5K => q45k::<N, true>(blk, &x),
        KQuant::Q6K => q6k(blk, &x),
        KQuant::Q3K => q3k(blk, &x),
        KQuant::Q2K => q2k(blk, &x),
    }
}

/// `N` tokens' blocks.
struct Tokens<'a, 'r, const N: usize>(XBlocks<'a, 'r, i8, N>);

impl<const N: usize> Tokens<'_, '_, N> {
    /// Each token's lanes grown by 32 unsigned weights `u` · its activations `at..at + 32`,
    /// scaled by `s` (16 i16 lanes: one scale per 16 weights).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn add_run(&self, acc: &mut [__m256i; N], u: __m256i, s: __m256i, at: usize) {
        for (t, a) in acc.iter_mut().enumerate() {
            let x: &[u8] = bytemuck::cast_slice(&self.0.q(t)[..QK_K]);
            let p = _mm256_maddubs_epi16(u, load(&x[at..at + 32]));
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(p, s));
        }
    }

    /// Token `t`'s 16 sums.
    #[inline(always)]
    fn bsums(&self, t: usize) -> __m256i {
        load(bytemuck::cast_slice(&self.0.bsums(t)[..16]))
    }
}

/// The sum of the 8 i32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01)))
}

/// [Σ of the 8 lanes of `s`, Σ of the 4 lanes of `m`], reduced together.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum2(s: __m256i, m: __m128i) -> [i32; 2] {
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    let h = _mm_hadd_epi32(s, m);
    let h = _mm_hadd_epi32(h, h);
    [_mm_cvtsi128_si32(h), _mm_extract_epi32(h, 1)]
}

/// 8 scales (bytes, unsigned or signed) as i16, in both halves of a 256-bit vector, for
/// [`pick`].
#[target_feature(enable = "avx2")]
#[inline]
fn scales16(b: [u8; 8], signed: bool) -> __m256i {
    let v = _mm_cvtsi64_si128(i64::from_le_bytes(b));
    let v = if signed {
        _mm_cvtepi8_epi16(v)
    } else {
        _mm_cvtepu8_epi16(v)
    };
    _mm256_broadcastsi128_si256(v)
}

/// From [`scales16`]'s vector, scale `lo` in the low 8 i16 lanes and `hi` in the high 8.
#[target_feature(enable = "avx2")]
#[inline]
fn pick(s: __m256i, lo: usize, hi: usize) -> __m256i {
    let at = |j: usize| (((2 * j + 1) << 8) | (2 * j)) as i16;
    _mm256_shuffle_epi8(
        s,
        _mm256_set_m128i(_mm_set1_epi16(at(hi)), _mm_set1_epi16(at(lo))),
    )
}

/// Bytes `at..at + 8`.
#[inline(always)]
fn eight(b: &[u8], at: usize) -> [u8; 8] {
    std::array::from_fn(|i| b[at + i])
}

/// Q4_K or Q5_K: 4 groups of 64, the low then the high nibbles of 32 bytes of `qs`
/// (sub-blocks 2g, 2g + 1), for Q5_K bit j of each `qh` byte as sub-block j's fifth bit;
/// minimums per 32 against the pair sums of `bsums`.
#[target_feature(enable = "avx2")]
#[inline]
fn q45k<const N: usize, const FIVE: bool>(blk: &[u8], x: &Tokens<'_, '_, N>) -> Sums<N> {
    let five = FIVE;
    let (sc, mn) = scales_mins_k4(&blk[4..16]);
    let sc = scales16(sc, false);
    let qs = if five { &blk[48..176] } else { &blk[16..144] };
    let (nibble, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(1));
    let mut qh: __m256i = if five {
        load(&blk[16..48])
    } else {
        _mm256_setzero_si256()
    };
    // Sub-block j's fifth bits at bit 4 (bit j of each byte: `qh` shifts on by one each time).
    let mut fifth = || {
        let h = _mm256_slli_epi16(_mm256_and_si256(qh, one), 4);
        qh = _mm256_srli_epi16(qh, 1);
        h
    };
    let mut acc = [_mm256_setzero_si256(); N];
    for g in 0..4 {
        let raw: __m256i = load(&qs[32 * g..32 * g + 32]);
        let mut lo = _mm256_and_si256(raw, nibble);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
        if five {
            lo = _mm256_or_si256(lo, fifth());
            hi = _mm256_or_si256(hi, fifth());
        }
        x.add_run(&mut acc, lo, pick(sc, 2 * g, 2 * g), 64 * g);
        x.add_run(&mut acc, hi, pick(sc, 2 * g + 1, 2 * g + 1), 64 * g + 32);
    }
    let mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(i64::from_le_bytes(mn)));
    let mut out = [[0; 2]; N];
    for t in 0..N {
        let b = x.bsums(t);
        let pairs = _mm_hadd_epi16(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
        out[t] = hsum2(acc[t], _mm_madd_epi16(pairs, mins));
    }
    out
}

/// Q6_K: 2 halves of 128, each 4 runs of 32 from the low or high nibbles of `ql[0..32]` or
/// `ql[32..64]` with 2 high bits from `qh` at shift 2·run; unsigned (0..63), then −32·Σ s·bsums.
#[target_feature(enable = "avx2")]
#[inline]
fn q6k<const N: usize>(blk: &[u8], x: &Tokens<'_, '_, N>) -> Sums<N> {
    let sc = &blk[192..208];
    let (nibble, high) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x30));
    let mut acc = [_mm256_setzero_si256(); N];
    for n in 0..2 {
        let ql0: __m256i = load(&blk[64 * n..64 * n + 32]);
        let ql1: __m256i = load(&blk[64 * n + 32..64 * n + 64]);
        let qh: __m256i = load(&blk[128 + 32 * n..160 + 32 * n]);
        let s = scales16(eight(sc, 8 * n), true);
        // Low 4 bits, and ((qh >> 2·run) & 3) << 4, for runs 0..3.
        let low = [
            _mm256_and_si256(ql0, nibble),
            _mm256_and_si256(ql1, nibble),
            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), nibble),
            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), nibble),
        ];
        let h = [
            _mm256_and_si256(_mm256_slli_epi16(qh, 4), high),
            _mm256_and_si256(_mm256_slli_epi16(qh, 2), high),
            _mm256_and_si256(qh, high),
            _mm256_and_si256(_mm256_srli_epi16(qh, 2), high),
        ];
        for run in 0..4 {
            let u = _mm256_or_si256(low[run], h[run]);
            x.add_run(
                &mut acc,
                u,
                pick(s, 2 * run, 2 * run + 1),
                128 * n + 32 * run,
            );
        }
    }
    offset_by_bsums(acc, x, load(sc), 5)
}

/// Each token's `sumi` less 2^`shift`·Σ s·bsums (`sc` the 16 i8 scales): Q6_K's −32 and
/// Q3_K's −4 on their unsigned weights.
#[target_feature(enable = "avx2")]
#[inline]
fn offset_by_bsums<const N: usize>(
    acc: [__m256i; N],
    x: &Tokens<'_, '_, N>,
    sc: __m128i,
    shift: i32,
) -> Sums<N> {
    let s16 = _mm256_cvtepi8_epi16(sc);
    let count = _mm_cvtsi32_si128(shift);
    let mut out = [[0; 2]; N];
    for t in 0..N {
        let off = _mm256_sll_epi32(_mm256_madd_epi16(s16, x.bsums(t)), count);
        out[t] = [hsum(_mm256_sub_epi32(acc[t], off)), 0];
    }
    out
}

/// Q3_K: 2 halves of 128, each 4 shifts of 32 from 32 bytes of `qs`, the third bit from
/// `hmask` (bit 4·half + shift): unsigned q + 4·bit (0..7), then −4·Σ s·bsums.
#[target_feature(enable = "avx2")]
#[inline]
fn q3k<const N: usize>(blk: &[u8], x: &Tokens<'_, '_, N>) -> Sums<N> {
    let biased: __m128i = bytemuck::cast(scales_q3k_biased(&blk[96..108]));
    let sc = _mm_sub_epi8(biased, _mm_set1_epi8(32));
    let (two, one) = (_mm256_set1_epi8(3), _mm256_set1_epi8(1));
    let mut hm: __m256i = load(&blk[0..32]);
    let mut acc = [_mm256_setzero_si256(); N];
    for n in 0..2 {
        let mut q: __m256i = load(&blk[32 + 32 * n..64 + 32 * n]);
        let half = if n == 0 { sc } else { _mm_srli_si128(sc, 8) };
        let s = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(half));
        for shift in 0..4 {
            let third = _mm256_slli_epi16(_mm256_and_si256(hm, one), 2);
            let u = _mm256_or_si256(_mm256_and_si256(q, two), third);
            let at = 128 * n + 32 * shift;
            x.add_run(&mut acc, u, pick(s, 2 * shift, 2 * shift + 1), at);
            q = _mm256_srli_epi16(q, 2);
            hm = _mm256_srli_epi16(hm, 1);
        }
    }
    offset_by_bsums(acc, x, sc, 2)
}

/// Q2_K: 2 halves of 128, each 4 shifts of 32 from 32 bytes of `qs`; per 16 a byte of
/// `scales`, the scale in its low nibble, the minimum in its high one.
#[target_feature(enable = "avx2")]
#[inline]
fn q2k<const N: usize>(blk: &[u8], x: &Tokens<'_, '_, N>) -> Sums<N> {
    let raw: __m128i = load(&blk[0..16]);
    let nibble = _mm_set1_epi8(15);
    let sc: [u8; 16] = bytemuck::cast(_mm_and_si128(raw, nibble));
    let two = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_si256(); N];
    for n in 0..2 {
        let mut q: __m256i = load(&blk[16 + 32 * n..48 + 32 * n]);
        let s = scales16(eight(&sc, 8 * n), false);
        for shift in 0..4 {
            let u = _mm256_and_si256(q, two);
            x.add_run(
                &mut acc,
                u,
                pick(s, 2 * shift, 2 * shift + 1),
                128 * n + 32 * shift,
            );
            q = _mm256_srli_epi16(q, 2);
        }
    }
    let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), nibble));
    let mut out = [[0; 2]; N];
    for t in 0..N {
        let m = _mm256_madd_epi16(mins, x.bsums(t));
        let m = _mm_add_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
        out[t] = hsum2(acc[t], m);
    }
    out
}
