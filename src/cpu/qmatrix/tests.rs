//! The `cpu-q8` products' tests: against f32, the activations' rounding, and every kernel
//! (plain, AVX2, SIMD128; one token or a group) against the plain one to the bit.

use super::*;
use crate::gguf::dequantize;
use crate::ops;

/// A deterministic pseudo-random stream in [-1, 1).
fn noise(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Random blocks of `ty`: scales in [0.01, 0.02), quants uniformly random.
fn blocks(ty: GgmlType, rows: usize, n_in: usize, seed: u32) -> Vec<u8> {
    let (_, bb) = ty.block();
    let n = rows * n_in / QK;
    let r = noise(seed, n * 40);
    let mut out = Vec::new();
    for b in 0..n {
        let half = |v: f32| f16::from_f32(v).to_le_bytes();
        out.extend(half(0.01 + 0.005 * (r[b * 40] + 1.0)));
        if ty == GgmlType::Q4_1 {
            out.extend(half(-0.1 * r[b * 40 + 1].abs()));
        }
        let payload = bb as usize - if ty == GgmlType::Q4_1 { 4 } else { 2 };
        out.extend((0..payload).map(|j| ((r[b * 40 + 2 + j] + 1.0) * 127.9) as u8));
    }
    out
}

/// The quantized product against dequantize + f32 matmul, for every block type, 3 tokens:
/// within 1% of the largest output (the int8 rounding of the activations).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn quantized_matmul_matches_f32() {
    let (rows, n_in, t) = (37, 96, 3);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        let raw = blocks(ty, rows, n_in, 7);
        let m = QMatrix::new(ty, &raw, rows).expect("a supported type");
        assert_eq!((m.rows(), m.n_in()), (rows, n_in));
        let x = noise(3, t * n_in);
        let got = m.matmul(&Q8Rows::quantize(&x, n_in));
        let w = dequantize(ty, &raw, rows * n_in).unwrap();
        let want = ops::matmul(&x, &w, n_in);
        let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 0.01 * scale, "{}: {g} vs {w}", ty.name());
        }
    }
}

/// Quantizing then dequantizing an activation block is off by at most half a step.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn activation_rounding_is_half_a_step() {
    let x = noise(11, 64);
    let q = Q8Rows::quantize(&x, 64);
    for (b, xb) in x.chunks_exact(QK).enumerate() {
        for (j, v) in xb.iter().enumerate() {
            let back = q.q[b * QK + j] as f32 * q.d[b];
            assert!((back - v).abs() <= q.d[b] / 2.0 + 1e-7);
        }
        let sum: i32 = q.q[b * QK..(b + 1) * QK].iter().map(|&v| v as i32).sum();
        assert!((q.s[b] - q.d[b] * sum as f32).abs() < 1e-6);
    }
}

/// `kernel` against [`row_dot_plain`] on seeded random rows of every block type, with
/// the extremes of the quants (weights −128 and 15, activations ±127) in some rows: the
/// same f32, bit for bit. Returns how many products it compared. The SIMD kernels' tests
/// (here and in `simd128.rs`) call it.
pub(in crate::cpu) fn same_as_plain(
    kernel: impl Fn(bool, &Blocks<'_>, &Blocks<'_>) -> f32,
) -> usize {
    let mut compared = 0;
    for (seed, ty) in (1..).zip([GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0]) {
        let (rows, n_in) = (24, 576);
        let mut raw = blocks(ty, rows, n_in, seed);
        let bb = ty.block().1 as usize;
        let payload = if ty == GgmlType::Q4_1 { 4 } else { 2 };
        // Row 0: every quant at its largest magnitude (Q8_0: −128).
        for blk in raw[..n_in / QK * bb].chunks_exact_mut(bb) {
            blk[payload..].fill(if ty == GgmlType::Q8_0 { 0x80 } else { 0xFF });
        }
        let m = QMatrix::new(ty, &raw, rows).expect("a supported type");
        let mut xs = noise(seed + 100, 3 * n_in);
        xs[..n_in].iter_mut().for_each(|v| *v = v.signum()); // all ±127
        xs[n_in..n_in + QK].fill(0.0); // a block of zeros: scale 0
        let x = Q8Rows::quantize(&xs, n_in);
        let nb = n_in / QK;
        for o in 0..rows {
            let w = m.row_blocks(o);
            for tt in 0..3 {
                let xr = Blocks {
                    q: bytemuck::cast_slice(&x.q[tt * n_in..(tt + 1) * n_in]),
                    d: &x.d[tt * nb..(tt + 1) * nb],
                    b: &x.s[tt * nb..(tt + 1) * nb],
                };
                let int8 = ty == GgmlType::Q8_0;
                let (plain, fast) = (row_dot_plain(int8, &w, &xr), kernel(int8, &w, &xr));
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

/// `rows` (a `rows_dot` with its kernels) on 1..=9 tokens of every block type — whole
/// groups of [`GROUP`] and every remainder — against [`row_dot_plain`] token by token
/// (which the single-token kernels equal, above): the same f32, bit for bit.
fn groups_same_as_one(rows: impl Fn(&QMatrix, &Q8Rows, usize, &mut [f32])) {
    for (seed, ty) in (1..).zip([GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0]) {
        let (n_rows, n_in) = (5, 192);
        let m = QMatrix::new(ty, &blocks(ty, n_rows, n_in, seed), n_rows).expect("a type");
        let xs = noise(seed + 200, 9 * n_in);
        for t in 1..=9 {
            let x = Q8Rows::quantize(&xs[..t * n_in], n_in);
            let mut out = vec![0.0f32; (n_rows - 1) * t];
            rows(&m, &x, 1, &mut out); // from row 1: `first` is honoured
            for (i, got) in out.iter().enumerate() {
                let (o, tt) = (1 + i / t, i % t);
                let one = row_dot_plain(
                    ty == GgmlType::Q8_0,
                    &m.row_blocks(o),
                    &x.row(tt, n_in / QK),
                );
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

/// The same for the plain loop (the fallback of CPUs without AVX2).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn plain_token_groups_are_single_tokens_to_the_bit() {
    groups_same_as_one(|m, x, first, out| {
        let nb = m.n_in / QK;
        let xs: Vec<Blocks<'_>> = (0..x.d.len() / nb).map(|tt| x.row(tt, nb)).collect();
        let group =
            |i, w: &Blocks<'_>, xs: [&Blocks<'_>; GROUP]| xs.map(|x| row_dot_plain(i, w, x));
        rows_dot_with(m, &xs, first, out, group, row_dot_plain)
    });
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn other_types_are_not_taken() {
    assert!(QMatrix::new(GgmlType::F32, &[0; 128], 1).is_none());
    assert!(QMatrix::new(GgmlType::Q4_1, &[0; 19], 1).is_none());
}

/// The AVX2 kernel gives the plain one's f32 exactly (same lane sums, same order).
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_kernel_is_the_plain_one_to_the_bit() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    // SAFETY: AVX2 was detected above.
    let n = same_as_plain(|int8, w, x| unsafe { row_dot_avx2::<1>(int8, w, [x])[0] });
    assert_eq!(n, 3 * 24 * 3);
}
