//! The super-block products' tests, on seeded random K-quant blocks (`qmatrix/tests.rs`'s
//! generator) and crafted extremes: Q8_K activations follow ggml's rule, the matrices hold the
//! file's bytes, the products are the dequantized weights times the dequantized activations
//! to f32 rounding, and every kernel (AVX2 here, SIMD128 in node; one token or a group) gives
//! the plain one's f32, bit for bit. Their rows and their nearness to the f32 product are
//! tested with the other types in `qmatrix/tests.rs`.

use super::*;
use crate::cpu::qmatrix::tests::{blocks, f16_fields, noise};
use crate::gguf::{q3_k_scales, scale_min_k4};

/// The K-quant types.
const TYPES: [GgmlType; 5] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Row `o` of `m` times token `tt` of `x` by the plain kernel, one token at a time.
fn plain_one(m: &SuperBlocks, x: &Q8KRows, o: usize, tt: usize) -> f32 {
    by_type!(m.k, plain_one_as(m, x, o, tt))
}

fn plain_one_as<const K: u8>(m: &SuperBlocks, x: &Q8KRows, o: usize, tt: usize) -> f32 {
    let xr = x.row(tt, &x.q);
    row_dot::<K, 1, _>(m.row_bytes(o), [&xr], plain::sums::<K, 1>, d_dmin::<K>)[0]
}

#[test]
fn super_block_sizes_are_ggmls() {
    for ty in TYPES {
        let k = KQuant::of(ty).expect("a K-quant");
        assert_eq!(k.bytes(), ty.block().1 as usize);
        assert_eq!(KQuant::id(k as u8), k);
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn f16_scales_are_halfs() {
    for h in 0..=u16::MAX {
        let want = half::f16::from_bits(h).to_f32();
        assert_eq!(
            f16_at(&h.to_le_bytes(), 0).to_bits(),
            want.to_bits(),
            "{h:#06x}"
        );
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn packed_scales_are_the_dequantizers() {
    for seed in 1..200 {
        let p: Vec<u8> = noise(seed, 12)
            .iter()
            .map(|v| ((v + 1.0) * 127.9) as u8)
            .collect();
        let (sc, mn) = scales_mins_k4(&p);
        for j in 0..8 {
            assert_eq!((sc[j], mn[j]), scale_min_k4(j, &p), "{p:?} sub-block {j}");
        }
        let q3k = scales_q3k_biased(&p).map(|v| v as i8 - 32);
        assert_eq!(q3k, q3_k_scales(&p), "{p:?}");
    }
}

/// Q8_K on crafted blocks: the value of largest magnitude (the first) becomes −127 whatever
/// its sign and its negation 127; ties round to even; d = 1/(−127/max); a block of zeros is
/// d = 0; a NaN or an infinity makes d NaN, in its block only; the sums are per 16.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn q8k_follows_ggmls_rule() {
    let mut x = vec![0.0f32; 6 * QK_K];
    // Block 0: max negative (−127, so steps of 1): 2.5 → 2, 3.5 → 4, −2.5 → −2.
    x[..4].copy_from_slice(&[2.5, 3.5, -2.5, 1.0]);
    x[7] = -127.0;
    // Block 1: +2 first, then −2: +2 → −127, −2 → 127; d = −2/127.
    x[QK_K] = 2.0;
    x[QK_K + 1] = -2.0;
    x[QK_K + 2] = 0.5;
    // Block 2: zeros. Block 3: a NaN. Block 4: an infinity. Block 5: noise.
    x[3 * QK_K + 9] = f32::NAN;
    x[4 * QK_K + 200] = f32::NEG_INFINITY;
    x[5 * QK_K..].copy_from_slice(&noise(5, QK_K));
    let q = Q8KRows::quantize(&x, 2 * QK_K);
    assert_eq!(q.tokens(), 3);
    assert_eq!(q.d[0], 1.0);
    assert_eq!(&q.q[..8], &[2, 4, -2, 1, 0, 0, 0, -127]);
    assert_eq!(q.d[1], 1.0 / (-127.0f32 / 2.0));
    assert_eq!(&q.q[QK_K..QK_K + 4], &[-127, 127, -32, 0]);
    assert_eq!(q.d[2], 0.0);
    assert!(q.d[3].is_nan() && q.d[4].is_nan() && !q.d[5].is_nan());
    assert!(q.q[2 * QK_K..5 * QK_K].iter().all(|&v| v == 0));
    let b5 = &x[5 * QK_K..];
    let max = b5
        .iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let iscale = -127.0 / max;
    assert_eq!(q.d[5], 1.0 / iscale);
    for (v, &got) in b5.iter().zip(&q.q[5 * QK_K..]) {
        assert_eq!(got as f32, (v * iscale).round_ties_even().min(127.0));
    }
    for (j, s) in q.bsums.iter().enumerate() {
        let want: i32 = q.q[16 * j..16 * j + 16].iter().map(|&v| v as i32).sum();
        assert_eq!(*s as i32, want, "sum {j}");
    }
    assert_eq!(q.bsums[0], 2 + 4 - 2 + 1 - 127);
}

/// Rows 0 and 1 of every K-quant type set to extremes (row 0: every byte but the f16 fields
/// 0xFF; row 1: 0x00, Q6_K's scales −128), the others random; tokens: 0 with a block of −1
/// (all quants −127, sums −2032) and one of alternating ±1 (−127, 127), 1 with a block of
/// zeros (d = 0), 2 random. `n_in` 1024.
fn extreme_case(ty: GgmlType, seed: u32) -> (SuperBlocks, Q8KRows) {
    let (rows, n_in) = (24, 4 * QK_K);
    let mut raw = blocks(ty, rows, n_in, seed);
    let (scales, mins) = f16_fields(ty);
    let bb = ty.block().1 as usize;
    for (b, blk) in raw.chunks_exact_mut(bb).enumerate().take(8) {
        for (i, v) in blk.iter_mut().enumerate() {
            if !scales.iter().chain(mins).any(|&at| i == at || i == at + 1) {
                *v = if b < 4 { 0xFF } else { 0x00 };
            }
        }
        if b >= 4 && ty == GgmlType::Q6K {
            blk[192..208].fill(0x80);
        }
    }
    let mut x = noise(seed + 100, 3 * n_in);
    x[..QK_K].fill(-1.0);
    for (i, v) in x[QK_K..2 * QK_K].iter_mut().enumerate() {
        *v = if i % 2 == 0 { 1.0 } else { -1.0 };
    }
    x[n_in..n_in + QK_K].fill(0.0);
    let m = SuperBlocks::new(ty, &raw, rows).expect("a K-quant");
    assert_eq!(m.bytes, raw, "the file's bytes, as they are");
    (m, Q8KRows::quantize(&x, n_in))
}

/// How many products [`same_as_plain`] compares.
const COMPARED: usize = TYPES.len() * 24 * 3;

/// `kernel` (a `rows_dot`: matrix, activations, first row, out) on each row, the 3 tokens
/// one at a time (fewer than a group), against the plain kernel on [`extreme_case`]s of every
/// type: the same f32, bit for bit. Returns how many it compared.
fn same_as_plain(kernel: impl Fn(&SuperBlocks, &Q8KRows, usize, &mut [f32])) -> usize {
    let mut compared = 0;
    for (seed, ty) in (1..).zip(TYPES) {
        let (m, x) = extreme_case(ty, seed);
        for o in 0..m.rows {
            let mut out = [0.0f32; 3];
            kernel(&m, &x, o, &mut out);
            for (tt, &fast) in out.iter().enumerate() {
                let plain = plain_one(&m, &x, o, tt);
                assert_eq!(
                    plain.to_bits(),
                    fast.to_bits(),
                    "{} row {o} token {tt}: {plain} vs {fast}",
                    ty.name()
                );
                compared += 1;
            }
        }
    }
    compared
}

/// The AVX2 kernel gives the plain one's f32 exactly.
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_kernel_is_the_plain_one_to_the_bit() {
    if !is_x86_feature_detected!("avx2") || !is_x86_feature_detected!("f16c") {
        return;
    }
    let n = same_as_plain(|m, x, first, out| {
        let xs: Vec<XRow<'_, i8>> = (0..x.tokens()).map(|tt| x.row(tt, &x.q)).collect();
        // SAFETY: AVX2 and F16C were detected above.
        unsafe { avx2::rows_dot(m, &xs, first, out) }
    });
    assert_eq!(n, COMPARED);
}

/// The SIMD128 kernel gives the plain one's f32 exactly (run by `wasm-bindgen-test-runner`:
/// scripts/test.sh, "wasm32 tests").
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[wasm_bindgen_test::wasm_bindgen_test]
fn simd128_kernel_is_the_plain_one_to_the_bit() {
    let n = same_as_plain(|m, x, first, out| by_type!(m.k, simd128_rows_dot(m, x, first, out)));
    assert_eq!(n, COMPARED);
}

/// Each type's product is the dequantized weights times the dequantized Q8_K activations,
/// computed in f64: within 10⁻⁶ of Σ_i |w_i·x_i| (the roundings of `row_dot`'s f32 steps over
/// 4 super-blocks, each at most 6·10⁻⁸ of its terms; the worst seen is printed), on the
/// [`extreme_case`]s.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn products_are_the_dequantized_weights_to_f32_rounding() {
    let mut worst = 0.0f64;
    for (seed, ty) in (1..).zip(TYPES) {
        let (m, x) = extreme_case(ty, seed + 30);
        let got = m.matmul(&x);
        let n_in = m.n_in;
        for tt in 0..3 {
            let xd: Vec<f64> = (0..n_in)
                .map(|i| x.q[tt * n_in + i] as f64 * x.d[(tt * n_in + i) / QK_K] as f64)
                .collect();
            for o in 0..m.rows {
                let w = m.row(o).expect("a row");
                let want: f64 = w.iter().zip(&xd).map(|(&w, x)| w as f64 * x).sum();
                let scale: f64 = w.iter().zip(&xd).map(|(&w, x)| (w as f64 * x).abs()).sum();
                let err = (got[tt * m.rows + o] as f64 - want).abs() / scale.max(f64::MIN_POSITIVE);
                worst = worst.max(err);
                assert!(err <= 1e-6, "{} row {o} token {tt}: {err:e}", ty.name());
            }
        }
    }
    println!("worst relative error: {worst:e}");
    assert!(worst > 0.0, "the test compares something");
}

/// A NaN activation makes its super-blocks' products NaN, in every row.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_nan_activation_stays_visible() {
    for (seed, ty) in (1..).zip(TYPES) {
        let m = SuperBlocks::new(ty, &blocks(ty, 3, 2 * QK_K, seed), 3).expect("a K-quant");
        let mut x = noise(seed, 2 * QK_K);
        x[300] = f32::NAN;
        assert!(m
            .matmul(&Q8KRows::quantize(&x, 2 * QK_K))
            .iter()
            .all(|v| v.is_nan()));
    }
}

/// `rows` (a `rows_dot` with its kernels) on 1..=9 tokens of every type — whole groups of
/// [`GROUP`] and every remainder — against the plain kernel token by token: the same f32.
fn groups_same_as_one(rows: impl Fn(&SuperBlocks, &Q8KRows, usize, &mut [f32])) {
    for (seed, ty) in (1..).zip(TYPES) {
        let (n_rows, n_in) = (5, 2 * QK_K);
        let m = SuperBlocks::new(ty, &blocks(ty, n_rows, n_in, seed), n_rows).expect("a type");
        let xs = noise(seed + 200, 9 * n_in);
        for t in 1..=9 {
            let x = Q8KRows::quantize(&xs[..t * n_in], n_in);
            let mut out = vec![0.0f32; (n_rows - 1) * t];
            rows(&m, &x, 1, &mut out); // from row 1: `first` is honoured
            for (i, got) in out.iter().enumerate() {
                let (o, tt) = (1 + i / t, i % t);
                let one = plain_one(&m, &x, o, tt);
                assert_eq!(
                    got.to_bits(),
                    one.to_bits(),
                    "{} t {t} row {o} token {tt}",
                    ty.name()
                );
            }
        }
    }
}

/// The kernel [`rows_dot`] chooses here (AVX2 natively where the CPU has it, SIMD128 in
/// wasm32), several tokens at a time: the single-token f32.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn token_groups_are_single_tokens_to_the_bit() {
    groups_same_as_one(rows_dot);
}

/// The same for the plain kernel (the fallback of CPUs without AVX2).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn plain_token_groups_are_single_tokens_to_the_bit() {
    groups_same_as_one(|m, x, first, out| {
        let xs: Vec<XRow<'_, i8>> = (0..x.tokens()).map(|tt| x.row(tt, &x.q)).collect();
        by_type!(m.k, plain_rows_dot(m, &xs, first, out))
    });
}

/// The super-block products of every type on one matrix of Gemma 3 270M's ffn_down shape
/// (640 × 2048), one thread, in cache: 1, 4 (a group) and 64 tokens, and the Q8_K
/// quantization of one token. Prints microseconds:
/// `cargo test --release --lib superblock::tests::products_in_cache -- --ignored --nocapture`.
#[cfg(not(target_arch = "wasm32"))]
#[test]
#[ignore]
fn products_in_cache() {
    use std::time::Instant;
    // Microseconds per call of `f`, the best of 7 rounds of `reps`.
    let time = |reps: usize, f: &dyn Fn()| {
        f();
        (0..7)
            .map(|_| {
                let t0 = Instant::now();
                (0..reps).for_each(|_| f());
                t0.elapsed().as_secs_f64() * 1e6 / reps as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
    pool.expect("a thread pool").install(|| {
        let (rows, n_in) = (640, 2048);
        let x = noise(9, 64 * n_in);
        let us = time(2000, &|| {
            drop(std::hint::black_box(Q8KRows::quantize(&x[..n_in], n_in)))
        });
        println!("Q8_K quantization of {n_in} values: {us:.2} µs");
        for ty in TYPES {
            let m = SuperBlocks::new(ty, &blocks(ty, rows, n_in, 3), rows).expect("a K-quant");
            let us: Vec<String> = [(1, 300), (4, 100), (64, 10)]
                .into_iter()
                .map(|(t, reps)| {
                    let xq = Q8KRows::quantize(&x[..t * n_in], n_in);
                    let us = time(reps, &|| drop(std::hint::black_box(m.matmul(&xq))));
                    format!("{t} tokens {us:.1} µs")
                })
                .collect();
            println!("{} {rows}×{n_in}: {}", ty.name(), us.join(", "));
        }
    });
}
