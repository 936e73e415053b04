//! The small kernels (`src/gpu/ops/rows.rs`): the embedding lookup, RMSNorm, SwiGLU,
//! argmax and sampling.

use crate::common::Rng;
use crate::{assert_close, f32s, gpu, read, run, step, weight, TYPES};
use gqa_lab::gguf::{dequantize, GgmlType, Gguf};
use gqa_lab::gpu::ops::{self as gpu_ops, *};
use gqa_lab::gpu::{Gpu, Weight};
use gqa_lab::ops;
use gqa_lab::sampling;

/// embed.wgsl vs dequantized rows, every weight type, rows of 256 (one K-quant super-block):
/// the same values up to the rounding of q·scale + min (a GPU may fuse it): 1e-6 relative.
#[test]
fn embed_matches_dequantized_rows_for_every_type() {
    let gpu = gpu();
    let mut rng = Rng(2);
    let (dim, vocab) = (256usize, 50usize);
    let ids = [3u32, 49, 0, 17];
    for ty in TYPES {
        let (w, table) = weight(gpu, &mut rng, ty, dim, vocab);
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| table[i as usize * dim..(i as usize + 1) * dim].to_vec())
            .collect();
        let got = lookup(gpu, &w, dim, &ids);
        assert_close(&format!("embed {}", ty.name()), &got, &want, 1e-6);
    }
}

/// The rows of `ids` from the table `w` through embed.wgsl.
fn lookup(gpu: &Gpu, w: &Weight, dim: usize, ids: &[u32]) -> Vec<f32> {
    let tokens = gpu.storage_with("ids", bytemuck::cast_slice(ids)).unwrap();
    let x = gpu.storage("x", (ids.len() * dim * 4) as u64).unwrap();
    let st = step(gpu, 0, ids.len());
    let n = ids.len();
    run(
        gpu,
        &gpu_ops::embed(w, (dim as u32, 1.0), &tokens, &x),
        Some(&st),
        0,
        n,
    );
    read(gpu, &x, n * dim)
}

/// Gemma 3 270M's embedding table (Q8_0, 262,144 × 640: 2560 texture rows) on the GPU: the
/// first, last and some middle rows as the reader dequantizes them (1e-6 relative).
#[test]
fn embed_reads_gemmas_whole_table() {
    let gpu = gpu();
    let bytes = crate::common::gemma_bytes();
    let g = Gguf::parse(bytes).unwrap();
    let t = g.tensor("token_embd.weight").unwrap();
    let (dim, vocab) = (t.dims[0] as usize, t.rows());
    assert_eq!((t.ggml_type, dim, vocab), (GgmlType::Q8_0, 640, 262_144));
    let data = g.tensor_bytes(t);
    let w = Weight::upload(gpu, t.name, t.ggml_type, data, vocab).unwrap();
    let ids = [0u32, 2, 106, 131_071, 200_003, 262_143];
    let row_bytes = data.len() / vocab;
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| {
            let row = &data[i as usize * row_bytes..][..row_bytes];
            dequantize(t.ggml_type, row, dim).unwrap()
        })
        .collect();
    assert_close("Gemma embedding", &lookup(gpu, &w, dim, &ids), &want, 1e-6);
}

/// rmsnorm.wgsl vs ops::rmsnorm (1e-5).
#[test]
fn rmsnorm_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(3);
    let (t, dim) = (3usize, 576usize);
    let (x, wt) = (rng.vec(t * dim), rng.vec(dim));
    let out = gpu.storage("out", (t * dim * 4) as u64).unwrap();
    let p = RmsNormParams {
        dim: dim as u32,
        eps: 1e-5,
        last_row_only: 0,
        add: 0,
    };
    let (xb, wb) = (f32s(gpu, &x), f32s(gpu, &wt));
    let st = step(gpu, 0, t);
    run(gpu, &gpu_ops::rmsnorm(p, &xb, &wb, &out), Some(&st), 0, t);
    assert_close(
        "rmsnorm",
        &read(gpu, &out, t * dim),
        &ops::rmsnorm(&x, &wt, 1e-5),
        1e-5,
    );
}

/// swiglu.wgsl vs ops::swiglu (1e-5).
#[test]
fn swiglu_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(4);
    let (t, f) = (2usize, 1536usize);
    let (g, u) = (rng.vec(t * f), rng.vec(t * f));
    let (gb, ub) = (f32s(gpu, &g), f32s(gpu, &u));
    let st = step(gpu, 0, t);
    run(
        gpu,
        &gpu_ops::swiglu(f as u32, false, &gb, &ub),
        Some(&st),
        0,
        t,
    );
    assert_close("swiglu", &read(gpu, &gb, t * f), &ops::swiglu(&g, &u), 1e-5);
}

/// swiglu.wgsl in GeGLU mode vs ops::geglu (1e-5; WGSL's tanh is not libm's), on values
/// large enough to saturate tanh.
#[test]
fn geglu_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(41);
    let (t, f) = (2usize, 2048usize);
    let g: Vec<f32> = rng.vec(t * f).iter().map(|v| v * 8.0).collect();
    let u = rng.vec(t * f);
    let (gb, ub) = (f32s(gpu, &g), f32s(gpu, &u));
    let st = step(gpu, 0, t);
    run(
        gpu,
        &gpu_ops::swiglu(f as u32, true, &gb, &ub),
        Some(&st),
        0,
        t,
    );
    assert_close("geglu", &read(gpu, &gb, t * f), &ops::geglu(&g, &u), 1e-5);
}

/// add_bias.wgsl vs ops::add_in_place on each row (exact: one f32 addition each), on a
/// range of a larger buffer as decode binds q, k0 and v0.
#[test]
fn add_bias_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(43);
    let (t, n) = (3usize, 576usize);
    let (x, bias) = (rng.vec(t * n), rng.vec(n));
    let (xb, bb) = (
        f32s(gpu, &[x.clone(), vec![7.0; 64]].concat()),
        f32s(gpu, &bias),
    );
    let st = step(gpu, 0, t);
    let range = xb.range(0, (t * n * 4) as u64);
    run(
        gpu,
        &gpu_ops::add_bias(n as u32, range, &bb),
        Some(&st),
        0,
        t,
    );
    let mut want = x.clone();
    for row in want.chunks_exact_mut(n) {
        ops::add_in_place(row, &bias);
    }
    want.extend([7.0; 64]); // past the range: untouched
    assert_close("add_bias", &read(gpu, &xb, t * n + 64), &want, 0.0);
}

/// head_norm.wgsl vs ops::rmsnorm with a `[head_dim]` weight, in place on `[T][heads][hd]`;
/// and rmsnorm.wgsl adding into its output (Gemma's post norms) (1e-5).
#[test]
fn head_norm_and_adding_rmsnorm_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng(42);
    let (t, heads, hd) = (3usize, 4usize, 256usize);
    let (x, wt) = (rng.vec(t * heads * hd), rng.vec(hd));
    let (xb, wb) = (f32s(gpu, &x), f32s(gpu, &wt));
    let p = HeadNormParams {
        heads: heads as u32,
        head_dim: hd as u32,
        eps: 1e-6,
        _pad: 0,
    };
    let st = step(gpu, 0, t);
    run(
        gpu,
        &gpu_ops::head_norm(p, xb.binding(), &wb),
        Some(&st),
        0,
        t,
    );
    let want = ops::rmsnorm(&x, &wt, 1e-6);
    assert_close("head_norm", &read(gpu, &xb, x.len()), &want, 1e-5);

    let dim = 640;
    let (x, wt, acc) = (rng.vec(t * dim), rng.vec(dim), rng.vec(t * dim));
    let (xb, wb, out) = (f32s(gpu, &x), f32s(gpu, &wt), f32s(gpu, &acc));
    let p = RmsNormParams {
        dim: dim as u32,
        eps: 1e-6,
        last_row_only: 0,
        add: 1,
    };
    run(gpu, &gpu_ops::rmsnorm(p, &xb, &wb, &out), Some(&st), 0, t);
    let mut want = acc.clone();
    ops::add_in_place(&mut want, &ops::rmsnorm(&x, &wt, 1e-6));
    assert_close("rmsnorm adding", &read(gpu, &out, t * dim), &want, 1e-5);
}

/// argmax.wgsl vs sampling::argmax, including a tie (the lowest index wins).
#[test]
fn argmax_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(7);
    let mut logits = rng.vec(49_152);
    logits[31_000] = 5.0;
    logits[40_000] = 5.0;
    let lb = f32s(gpu, &logits);
    let tok = gpu.storage("token", 4).unwrap();
    run(
        gpu,
        &gpu_ops::argmax(logits.len() as u32, &lb, &tok),
        None,
        0,
        1,
    );
    let got: u32 = bytemuck::pod_read_unaligned(&pollster::block_on(gpu.read(&tok)).unwrap()[..4]);
    assert_eq!(got, sampling::argmax(&logits));
    assert_eq!(got, 31_000);
}

/// sample.wgsl vs sampling::sample: the same token for every setting and step. Both find the
/// same thresholds; only a draw that lands within float rounding of a boundary could differ,
/// and none of these do.
#[test]
fn sampling_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(8);
    let logits: Vec<f32> = (0..5000).map(|_| rng.f() * 6.0).collect();
    let lb = f32s(gpu, &logits);
    let tok = gpu.storage("token", 4).unwrap();
    let settings = [
        (0.8, 40, 0.95),
        (1.0, 0, 0.9),
        (1.5, 5, 1.0),
        (0.7, 0, 1.0),
        (1.0, 1, 1.0),
    ];
    for (temperature, top_k, top_p) in settings {
        for step in 0..20u32 {
            let p = sampling::SamplingParams {
                temperature,
                top_k,
                top_p,
                seed: 11,
            };
            let u = SamplingUniform {
                vocab: logits.len() as u32,
                top_k: top_k as u32,
                top_p,
                temperature,
                seed: 11,
                step,
                _pad: [0; 2],
            };
            let ub = gpu.uniform_with(bytemuck::bytes_of(&u)).unwrap();
            run(gpu, &gpu_ops::sample(&ub, &lb, &tok), None, 0, 1);
            let got: u32 =
                bytemuck::pod_read_unaligned(&pollster::block_on(gpu.read(&tok)).unwrap()[..4]);
            assert_eq!(
                got,
                sampling::sample(&logits, &p, step),
                "T={temperature} k={top_k} p={top_p} step {step}"
            );
        }
    }
}
