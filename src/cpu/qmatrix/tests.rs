//! The `cpu-q8` products' tests, on seeded random blocks of every type the backend multiplies:
//! the rows are the dequantizer's to the bit and the products near the f32 product (every
//! type); for the legacy types' repacked blocks, the products are those weights times the
//! quantized activations (to f32 rounding) and every kernel (plain, AVX2, SIMD128; one token
//! or a group) gives the plain one's f32, bit for bit. The K-quants' super-block kernels have
//! the same tests in `superblock/tests.rs`.

use super::*;
use crate::gguf::dequantize;
use crate::ops;
use half::f16;

/// Every type `QMatrix` takes.
const ALL: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// The legacy types, repacked into blocks of 32.
const TYPES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
];

/// A deterministic pseudo-random stream in [-1, 1).
pub(in crate::cpu) fn noise(seed: u32, n: usize) -> Vec<f32> {
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

/// Byte offsets of a block's f16 fields: its scales (d) and its minimums (m, dmin).
pub(in crate::cpu) fn f16_fields(ty: GgmlType) -> (&'static [usize], &'static [usize]) {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => (&[0], &[]),
        Q4_1 | Q5_1 => (&[0], &[2]),
        Q4K | Q5K => (&[0], &[2]),
        Q2K => (&[80], &[82]),
        Q3K => (&[108], &[]),
        Q6K => (&[208], &[]),
        _ => unreachable!("not a block type of cpu-q8"),
    }
}

/// Random blocks of `ty`: every quant and packed sub-block scale byte uniformly random, scales
/// d in ±[0.01, 0.02) (one block in ten negative: signed zeros), Q4_1/Q5_1 minimums in
/// (−0.1, 0], K-quant dmin in [0.001, 0.002).
pub(in crate::cpu) fn blocks(ty: GgmlType, rows: usize, n_in: usize, seed: u32) -> Vec<u8> {
    let (per_block, bb) = ty.block();
    let (n, bb) = (rows * n_in / per_block as usize, bb as usize);
    let r = noise(seed, n * (bb + 2));
    let mut out = Vec::with_capacity(n * bb);
    let (scales, mins) = f16_fields(ty);
    for (b, r) in r.chunks_exact(bb + 2).enumerate() {
        let blk = out.len();
        out.extend(r[2..].iter().map(|v| ((v + 1.0) * 127.9) as u8));
        let sign = if b % 10 == 3 { -1.0 } else { 1.0 };
        let mut put = |at: usize, v: f32| {
            out[blk + at..blk + at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes())
        };
        for &at in scales {
            put(at, sign * (0.01 + 0.005 * (r[0] + 1.0)));
        }
        for &at in mins {
            let m = match ty {
                GgmlType::Q4_1 | GgmlType::Q5_1 => -0.1 * r[1].abs(),
                _ => 0.001 + 0.0005 * (r[1] + 1.0),
            };
            put(at, m);
        }
    }
    out
}

/// The quant of largest magnitude a type's repacked blocks can hold (nibbles: 15 in every
/// nibble).
fn extreme(ty: GgmlType) -> u8 {
    use GgmlType::*;
    (match ty {
        Q4_0 | Q4_1 => 0xFF_u8 as i8,
        Q8_0 => -128,
        Q5_0 => -16,
        Q5_1 => 31,
        _ => unreachable!(),
    }) as u8
}

/// Each type's rows (repacked weights, or the K-quants' super-blocks dequantized) are
/// `gguf::dequantize`'s f32, bit for bit (signed zeros included).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rows_are_the_dequantized_rows_to_the_bit() {
    let (rows, n_in) = (6, 512);
    for (seed, ty) in (1..).zip(ALL) {
        let raw = blocks(ty, rows, n_in, seed);
        let m = QMatrix::new(ty, &raw, rows).expect("a cpu-q8 type");
        assert_eq!((m.rows(), m.n_in()), (rows, n_in));
        let want = dequantize(ty, &raw, rows * n_in).unwrap();
        for o in 0..rows {
            let got = m.row(o).unwrap();
            for (i, (g, w)) in got.iter().zip(&want[o * n_in..]).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{} row {o} [{i}]: {g} vs {w}",
                    ty.name()
                );
            }
        }
        assert!(m.row(rows).is_none());
    }
}

/// Each legacy type's product is the dequantized weights times the quantized activations, computed
/// in f64 (`Σ_i w_i·q_x,i·d_x`): within 10⁻⁶ of `Σ_i |w_i·x_i|` (the f32 roundings of the
/// lane sums, scales and offsets over 32 blocks, each at most 6·10⁻⁸; the worst seen is
/// 3·10⁻⁸), 3 tokens, one of them all ±127 and one with a block of zeros.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn products_are_the_dequantized_weights_to_f32_rounding() {
    let (rows, n_in, t) = (16, 1024, 3);
    let mut worst = 0.0f64;
    for (seed, ty) in (1..).zip(TYPES) {
        let raw = blocks(ty, rows, n_in, seed + 30);
        let m = Repacked::new(ty, &raw, rows).expect("a legacy type");
        let mut x = noise(seed + 40, t * n_in);
        x[..n_in].iter_mut().for_each(|v| *v = v.signum());
        x[n_in + 64..n_in + 96].fill(0.0);
        let xq = Q8Rows::quantize(&x, n_in);
        let got = m.matmul(&xq);
        let w = dequantize(ty, &raw, rows * n_in).unwrap();
        for tt in 0..t {
            let xd: Vec<f64> = (0..n_in)
                .map(|i| xq.q[tt * n_in + i] as f64 * xq.d[(tt * n_in + i) / QK] as f64)
                .collect();
            for o in 0..rows {
                let wr = &w[o * n_in..(o + 1) * n_in];
                let want: f64 = wr.iter().zip(&xd).map(|(&w, x)| w as f64 * x).sum();
                let scale: f64 = wr.iter().zip(&xd).map(|(&w, x)| (w as f64 * x).abs()).sum();
                let err = (got[tt * rows + o] as f64 - want).abs() / scale;
                worst = worst.max(err);
                assert!(err <= 1e-6, "{} row {o} token {tt}: {err:e}", ty.name());
            }
        }
    }
    assert!(worst > 0.0, "the test compares something");
}

/// The quantized product against dequantize + f32 matmul on unquantized activations, every
/// type (K-quants against Q8_K activations), 3 tokens: within 1% of the largest output (the
/// int8 rounding of the activations).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn quantized_matmul_matches_f32() {
    let (rows, n_in, t) = (37, 256, 3);
    for ty in ALL {
        let raw = blocks(ty, rows, n_in, 7);
        let m = QMatrix::new(ty, &raw, rows).expect("a cpu-q8 type");
        let x = noise(3, t * n_in);
        let got = m.matmul_f32(&x);
        let w = dequantize(ty, &raw, rows * n_in).unwrap();
        let want = ops::matmul(&x, &w, n_in);
        let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 0.01 * scale, "{}: {g} vs {w}", ty.name());
        }
    }
}

/// Quantizing then dequantizing an activation block is off by at most half a step; the sums
/// per block are d·Σq.
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
        assert_eq!(q.s[b], q.d[b] * sum as f32);
    }
}

/// How many products [`same_as_plain`] compares: every type, 24 rows, 3 tokens.
pub(in crate::cpu) const COMPARED: usize = TYPES.len() * 24 * 3;

/// `kernel` against [`row_dot_plain`] on seeded random rows of every type, with the extremes
/// of the quants (row 0: every weight at its type's largest magnitude; token 0: activations
/// all ±127) and a block of zero activations (scale 0): the same f32, bit for bit. Returns
/// how many products it compared. The SIMD kernels' tests (here and in `simd128.rs`) call it.
pub(in crate::cpu) fn same_as_plain(
    kernel: impl Fn(Layout, &Blocks<'_>, &Blocks<'_>) -> f32,
) -> usize {
    let mut compared = 0;
    for (seed, ty) in (1..).zip(TYPES) {
        let (rows, n_in) = (24, 512);
        let mut m = Repacked::new(ty, &blocks(ty, rows, n_in, seed), rows).expect("a type");
        let row_bytes = m.qs.len() / rows;
        m.qs[..row_bytes].fill(extreme(ty));
        let mut xs = noise(seed + 100, 3 * n_in);
        xs[..n_in].iter_mut().for_each(|v| *v = v.signum()); // all ±127
        xs[n_in..n_in + QK].fill(0.0); // a block of zeros: scale 0
        let x = Q8Rows::quantize(&xs, n_in);
        for o in 0..rows {
            let w = m.row_blocks(o);
            for tt in 0..3 {
                let xr = x.row(tt, n_in / QK);
                let (plain, fast) = (row_dot_plain(m.layout, &w, &xr), kernel(m.layout, &w, &xr));
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

/// `rows` (a `rows_dot` with its kernels) on 1..=9 tokens of every type — whole groups of
/// [`GROUP`] and every remainder — against [`row_dot_plain`] token by token (which the
/// single-token kernels equal, above): the same f32, bit for bit.
fn groups_same_as_one(rows: impl Fn(&Repacked, &Q8Rows, usize, &mut [f32])) {
    for (seed, ty) in (1..).zip(TYPES) {
        let (n_rows, n_in) = (5, 256);
        let m = Repacked::new(ty, &blocks(ty, n_rows, n_in, seed), n_rows).expect("a type");
        let xs = noise(seed + 200, 9 * n_in);
        for t in 1..=9 {
            let x = Q8Rows::quantize(&xs[..t * n_in], n_in);
            let mut out = vec![0.0f32; (n_rows - 1) * t];
            rows(&m, &x, 1, &mut out); // from row 1: `first` is honoured
            for (i, got) in out.iter().enumerate() {
                let (o, tt) = (1 + i / t, i % t);
                let xr = x.row(tt, n_in / QK);
                let one = row_dot_plain(m.layout, &m.row_blocks(o), &xr);
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
            |l, w: &Blocks<'_>, xs: [&Blocks<'_>; GROUP]| xs.map(|x| row_dot_plain(l, w, x));
        rows_dot_with(m, &xs, first, out, group, row_dot_plain)
    });
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn other_types_are_not_taken() {
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8K,
        GgmlType::Iq4Nl,
    ] {
        let bytes = vec![0; ty.block().1 as usize * 256];
        assert!(QMatrix::new(ty, &bytes, 1).is_none(), "{}", ty.name());
    }
    assert!(QMatrix::new(GgmlType::Q4_1, &[0; 19], 1).is_none());
    assert!(QMatrix::new(GgmlType::Q4K, &[0; 3 * 144], 2).is_none()); // 1.5 blocks a row
    assert!(QMatrix::new(GgmlType::Q6K, &[0; 210], 0).is_none());
}

/// The AVX2 kernel gives the plain one's f32 exactly (same lane sums, same order).
#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_kernel_is_the_plain_one_to_the_bit() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return;
    }
    // SAFETY: AVX2 was detected above.
    let n = same_as_plain(|layout, w, x| match w.b.is_empty() {
        true => unsafe { super::avx2::row_dot_avx2::<1, false>(layout, w, [x])[0] },
        false => unsafe { super::avx2::row_dot_avx2::<1, true>(layout, w, [x])[0] },
    });
    assert_eq!(n, COMPARED);
}

/// Decode's products on Gemma 3 270M's shapes and types (q4_k_m: Q5_0 Q, K, gate, up; Q8_0 V;
/// Q4_K output; down Q6_K in half the layers, Q4_K in the others; the Q8_0 head 262144 × 640),
/// one thread, one token: the 18 layers' distinct matrices (about 100 MB in blocks, past the
/// L3 cache, as in decode), the head, and single matrices (in cache), each in blocks and as
/// the f32 fallback (dequantized; Q8_0 stays in blocks there too). Prints milliseconds:
/// `cargo test --release --lib qmatrix::tests::decode_products -- --ignored --nocapture`.
#[cfg(not(target_arch = "wasm32"))]
#[test]
#[ignore]
fn decode_products() {
    use std::time::Instant;
    let (dim, q, kv, ffn) = (640, 1024, 256, 2048);
    let shapes = |l: usize| {
        let down = [GgmlType::Q6K, GgmlType::Q4K][l % 2];
        [
            (GgmlType::Q5_0, q, dim),
            (GgmlType::Q5_0, kv, dim),
            (GgmlType::Q8_0, kv, dim),
            (GgmlType::Q4K, dim, q),
            (GgmlType::Q5_0, ffn, dim),
            (GgmlType::Q5_0, ffn, dim),
            (down, dim, ffn),
        ]
    };
    enum M {
        Blocks(QMatrix),
        F32(Vec<f32>, usize),
    }
    let product = |m: &M, x: &[f32]| match m {
        M::Blocks(m) => m.matmul_f32(x),
        M::F32(w, n_in) => ops::matmul(x, w, *n_in),
    };
    let load = |ty: GgmlType, rows: usize, n_in: usize, seed: u32, f32: bool| {
        let raw = blocks(ty, rows, n_in, seed);
        match f32 && ty != GgmlType::Q8_0 {
            true => M::F32(dequantize(ty, &raw, rows * n_in).unwrap(), n_in),
            false => M::Blocks(QMatrix::new(ty, &raw, rows).unwrap()),
        }
    };
    // Milliseconds per call of `f`, the best of 5 rounds of `reps`.
    let time = |reps: usize, f: &dyn Fn()| {
        f();
        (0..5)
            .map(|_| {
                let t0 = Instant::now();
                (0..reps).for_each(|_| f());
                t0.elapsed().as_secs_f64() * 1e3 / reps as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let x = noise(9, ffn);
        for f32 in [true, false] {
            let what = if f32 { "f32 fallback" } else { "blocks" };
            let layers: Vec<M> = (0..18)
                .flat_map(|l| shapes(l).map(|(ty, r, n)| load(ty, r, n, l as u32, f32)))
                .collect();
            let ms = time(5, &|| {
                for m in &layers {
                    let n_in = match m {
                        M::Blocks(m) => m.n_in(),
                        M::F32(_, n) => *n,
                    };
                    std::hint::black_box(product(m, &x[..n_in]));
                }
            });
            println!("{what}: 18 layers' products {ms:.2} ms");
            for (ty, rows, n_in) in shapes(0).into_iter().chain([(GgmlType::Q4K, dim, ffn)]) {
                let m = load(ty, rows, n_in, 1, f32);
                let ms = time(200, &|| drop(std::hint::black_box(product(&m, &x[..n_in]))));
                println!("{what}: {} {rows}×{n_in} {:.1} µs", ty.name(), ms * 1e3);
            }
        }
        let head = load(GgmlType::Q8_0, 262144, dim, 3, false);
        let ms = time(3, &|| drop(std::hint::black_box(product(&head, &x[..dim]))));
        println!("blocks: Q8_0 head 262144×640 {ms:.2} ms");
    });
}
