//! The matrix products (`src/gpu/ops/product.rs`): matvec.wgsl and matmul.wgsl for every
//! weight type, the RMSNorm split over two products, uniform windows, texture rows, and
//! stacked weights.

use crate::common::Rng;
use crate::{assert_close, f32s, gpu, random_weights, read, run, step, weight, widths, TYPES};
use gqa_lab::gguf::{dequantize, GgmlType, Gguf};
use gqa_lab::gpu::kernels::ProductMode;
use gqa_lab::gpu::ops::{self as gpu_ops, *};
use gqa_lab::gpu::{Buf, Gpu, Stack, Weight};
use gqa_lab::ops;

/// y (+)= W[row0..]·x for the `t` rows of x with matmul.wgsl, one dispatch per uniform
/// window of x's rows (the engine's constructor).
fn run_matmul(
    gpu: &Gpu,
    (w, row0): (&Weight, u32),
    x: &[f32],
    y0: &[f32],
    t: usize,
    mode: ProductMode,
) -> Vec<f32> {
    let (n_in, n_out) = (x.len() / t, y0.len() / t);
    let xb = gpu.activation("x", (x.len() * 4) as u64).unwrap();
    gpu.queue
        .write_buffer(&xb.buffer, 0, bytemuck::cast_slice(x));
    let yb = f32s(gpu, y0);
    let st = step(gpu, 0, t);
    let p = ProductParams::new(n_in as u32, n_out as u32, mode, row0);
    for spec in gpu_ops::matmul(w, p, &xb, &yb, t) {
        run(gpu, &spec, Some(&st), 0, t);
    }
    read(gpu, &yb, t * n_out)
}

/// matmul.wgsl (prefill) vs dequantize + ops::matmul, every supported type, T = 1 and T = 7,
/// with and without accumulate; tolerance 1e-4 relative (f32 sums of 160 products, 256 for
/// the K-quants).
#[test]
fn matmul_matches_cpu_for_every_type() {
    let gpu = gpu();
    let mut rng = Rng(1);
    let n_out = 70usize;
    for ty in TYPES {
        let n_in = widths(ty, [160, 224])[0];
        let (w, w_f32) = weight(gpu, &mut rng, ty, n_in, n_out);
        for (t, mode) in [(1usize, ProductMode::Store), (7, ProductMode::Accumulate)] {
            let x = rng.vec(t * n_in);
            let y0 = rng.vec(t * n_out);
            let mut want = ops::matmul(&x, &w_f32, n_in);
            if mode == ProductMode::Accumulate {
                want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
            }
            assert_close(
                &format!("matmul {} T={t}", ty.name()),
                &run_matmul(gpu, (&w, 0), &x, &y0, t, mode),
                &want,
                1e-4,
            );
        }
    }
}

/// y (+)= W[row0..]·x with matvec.wgsl (x bound as a uniform window, as the engine does).
fn run_matvec(
    gpu: &Gpu,
    (w, row0): (&Weight, u32),
    x: &[f32],
    y0: &[f32],
    mode: ProductMode,
) -> Vec<f32> {
    let (n_in, n_out) = (x.len(), y0.len());
    let xb = activation(gpu, x);
    let yb = f32s(gpu, y0);
    let p = ProductParams::new(n_in as u32, n_out as u32, mode, row0);
    let [gamma, xn, parts] = unused(gpu);
    dispatch_matvec(gpu, w, p, &xb, &yb, [&gamma, &xn, &parts]);
    read(gpu, &yb, n_out)
}

/// Buffers for the RMSNorm bindings of a matvec that does not use them: distinct ones, as
/// WebGPU forbids binding one buffer to two writable bindings of a dispatch.
fn unused(gpu: &Gpu) -> [Buf; 3] {
    [(); 3].map(|_| f32s(gpu, &[0.0; 4]))
}

/// An activation buffer (bindable as a uniform window) holding `v`.
fn activation(gpu: &Gpu, v: &[f32]) -> Buf {
    let b = gpu.activation("x", (v.len() * 4) as u64).unwrap();
    gpu.queue
        .write_buffer(&b.buffer, 0, bytemuck::cast_slice(v));
    b
}

/// One matvec.wgsl dispatch: x as a uniform window, y, and the RMSNorm buffers γ, xn, parts
/// (bindings 6–8).
fn dispatch_matvec(gpu: &Gpu, w: &Weight, p: ProductParams, x: &Buf, y: &Buf, norm: [&Buf; 3]) {
    let [gamma, xn, parts] = norm.map(|b| b.binding());
    let norm = NormBinds { gamma, xn, parts };
    run(
        gpu,
        &gpu_ops::matvec(w, p, x.uniform_window(), y, norm),
        None,
        0,
        1,
    );
}

/// matvec.wgsl (decode) vs dequantize + ops::matmul, every supported type, with and without
/// accumulate, rows of 5 and 7 blocks (K-quants: 1 and 3 super-blocks); tolerance 1e-4
/// relative (f32 sums of ≤ 768 products, scales folded out of the sums).
#[test]
fn matvec_matches_cpu_for_every_type() {
    let gpu = gpu();
    let mut rng = Rng(11);
    let n_out = 70usize;
    for (ty, n_in) in TYPES
        .into_iter()
        .flat_map(|ty| widths(ty, [160, 224]).map(|n| (ty, n)))
    {
        let (w, w_f32) = weight(gpu, &mut rng, ty, n_in, n_out);
        for accumulate in [false, true] {
            let (x, y0) = (rng.vec(n_in), rng.vec(n_out));
            let mut want = ops::matmul(&x, &w_f32, n_in);
            if accumulate {
                want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
            }
            let mode = [ProductMode::Store, ProductMode::Accumulate][accumulate as usize];
            let got = run_matvec(gpu, (&w, 0), &x, &y0, mode);
            let what = format!("matvec {} n_in {n_in}", ty.name());
            assert_close(&what, &got, &want, 1e-4);
        }
    }
}

/// Decode's RMSNorm split over two products: a product that adds to the residual stream in
/// mode AccumulateForNorm also leaves γ ⊙ h and Σ h² by workgroup; a product that reads those
/// (`norm_parts`) equals CPU rmsnorm then matmul, as a plain product and as the SwiGLU of a
/// stacked gate|up. A 576-wide stream, as the default model's: 5 workgroups of partial sums,
/// the last one part-full. Tolerance 1e-4 relative.
#[test]
fn matvec_splits_rmsnorm_over_two_products() {
    let gpu = gpu();
    let mut rng = Rng(17);
    let (n_in, dim, n_out, eps) = (160usize, 576usize, 70usize, 1e-5f32);
    let ty = GgmlType::Q4_1;
    let (w1, w1_f32) = weight(gpu, &mut rng, ty, n_in, dim);
    let (x, h0, gamma) = (rng.vec(n_in), rng.vec(dim), rng.vec(dim));
    let mut h = ops::matmul(&x, &w1_f32, n_in);
    h.iter_mut().zip(&h0).for_each(|(a, b)| *a += b);
    let count = norm_parts(dim as u32);
    assert_eq!(count, 5);
    let (hb, gb, parts) = (f32s(gpu, &h0), f32s(gpu, &gamma), f32s(gpu, &[0.0; 5]));
    let xn = activation(gpu, &vec![0.0; dim]);
    let p = ProductParams::new(n_in as u32, dim as u32, ProductMode::AccumulateForNorm, 0);
    dispatch_matvec(gpu, &w1, p, &activation(gpu, &x), &hb, [&gb, &xn, &parts]);
    assert_close("residual", &read(gpu, &hb, dim), &h, 1e-4);
    let gh: Vec<f32> = gamma.iter().zip(&h).map(|(g, v)| g * v).collect();
    assert_close("γ ⊙ h", &read(gpu, &xn, dim), &gh, 1e-4);
    let ss: f32 = read(gpu, &parts, 5).iter().sum();
    assert_close("Σ h²", &[ss], &[h.iter().map(|v| v * v).sum()], 1e-4);

    let xb = ops::rmsnorm(&h, &gamma, eps);
    let consume = |w: &Weight, n_out: usize, mode: ProductMode| {
        let mut p = ProductParams::new(dim as u32, n_out as u32, mode, 0);
        (p.norm_parts, p.eps) = (count, eps);
        let y = f32s(gpu, &vec![0.0; n_out]);
        let [g, n, _] = unused(gpu);
        dispatch_matvec(gpu, w, p, &xn, &y, [&g, &n, &parts]);
        read(gpu, &y, n_out)
    };
    let (w2, w2_f32) = weight(gpu, &mut rng, ty, dim, n_out);
    let got = consume(&w2, n_out, ProductMode::Store);
    assert_close(
        "normed product",
        &got,
        &ops::matmul(&xb, &w2_f32, dim),
        1e-4,
    );

    let raw: Vec<Vec<u8>> = (0..2)
        .map(|_| random_weights(&mut rng, ty, dim * n_out))
        .collect();
    let stacked: Vec<_> = raw.iter().map(|r| ("w", ty, &r[..], n_out)).collect();
    let stack = Stack::upload(gpu, "gate|up", &stacked).unwrap();
    let [gate, up] = [0, 1].map(|i| {
        let w_f32 = dequantize(ty, &raw[i], dim * n_out).unwrap();
        ops::matmul(&xb, &w_f32, dim)
    });
    let got = consume(stack.whole().unwrap(), n_out, ProductMode::SwiGlu);
    assert_close("normed SwiGLU", &got, &ops::swiglu(&gate, &up), 1e-4);
}

/// Activations wider than a uniform window's worth of tokens go through several windows:
/// 4096-wide rows (4 per 64 KiB window), 10 tokens = windows at rows 0, 4, 8, with
/// accumulate (1e-4 relative).
#[test]
fn matmul_covers_tokens_past_one_window() {
    let gpu = gpu();
    let mut rng = Rng(15);
    let (n_in, n_out, t) = (4096usize, 40usize, 10usize);
    assert_eq!(window_tokens(n_in, UNIFORM_ALIGN), Some(4));
    let (w, w_f32) = weight(gpu, &mut rng, GgmlType::Q4_1, n_in, n_out);
    let (x, y0) = (rng.vec(t * n_in), rng.vec(t * n_out));
    let mut want = ops::matmul(&x, &w_f32, n_in);
    want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
    let got = run_matmul(gpu, (&w, 0), &x, &y0, t, ProductMode::Accumulate);
    assert_close("matmul windows", &got, &want, 1e-4);
}

/// Blocks past the first texture row (4096 texels) are read from the rows below it: a
/// 4160-row matrix through matvec.wgsl against the CPU (1e-4 relative), with scale texels of
/// one word (Q4_1), two (Q5_0), four (Q6_K) and none (Q3_K).
#[test]
fn matvec_reads_past_a_texture_row() {
    let gpu = gpu();
    let mut rng = Rng(12);
    let n_out = gqa_lab::gpu::layout::WIDTH + 64;
    for ty in [GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q6K, GgmlType::Q3K] {
        let n_in = widths(ty, [64, 64])[0];
        let (w, w_f32) = weight(gpu, &mut rng, ty, n_in, n_out);
        let x = rng.vec(n_in);
        let got = run_matvec(gpu, (&w, 0), &x, &vec![0.0; n_out], ProductMode::Store);
        assert_close(
            &format!("matvec texture rows {}", ty.name()),
            &got,
            &ops::matmul(&x, &w_f32, n_in),
            1e-4,
        );
    }
}

/// A stacked gate|up (as the engine uploads it, [`Stack`]) through matvec.wgsl: each part
/// alone from its first row (also through matmul.wgsl), and SwiGLU mode, silu(gate·x)·(up·x) in one pass, against
/// dequantize + ops::matmul + ops::swiglu (1e-4 relative). The parts are 70 rows of 160 (of
/// 256 for the K-quants), so the second starts inside a group of LANES rows.
#[test]
fn matvec_reads_stacked_parts_and_fuses_swiglu() {
    let gpu = gpu();
    let mut rng = Rng(13);
    let n_out = 70usize;
    let types = [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::Q5_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ];
    for ty in types {
        let n_in = widths(ty, [160, 160])[0];
        let raw: Vec<Vec<u8>> = (0..2)
            .map(|_| random_weights(&mut rng, ty, n_in * n_out))
            .collect();
        let parts: Vec<_> = raw.iter().map(|r| ("w", ty, &r[..], n_out)).collect();
        let stack = Stack::upload(gpu, "gate|up", &parts).unwrap();
        assert!(stack.whole().is_some(), "parts of one type stack");
        let x = rng.vec(n_in);
        let y0 = vec![0.0; n_out];
        let [gate, up] = [0, 1].map(|i| {
            let w_f32 = dequantize(ty, &raw[i], n_in * n_out).unwrap();
            let want = ops::matmul(&x, &w_f32, n_in);
            let got = run_matvec(gpu, stack.part(i), &x, &y0, ProductMode::Store);
            assert_close(&format!("{} part {i}", ty.name()), &got, &want, 1e-4);
            // matmul.wgsl (prefill) reads the same part for 5 tokens.
            let x5: Vec<f32> = x.iter().cycle().take(5 * n_in).copied().collect();
            let got = run_matmul(
                gpu,
                stack.part(i),
                &x5,
                &vec![0.0; 5 * n_out],
                5,
                ProductMode::Store,
            );
            assert_close(
                &format!("{} part {i}, matmul", ty.name()),
                &got,
                &ops::matmul(&x5, &w_f32, n_in),
                1e-4,
            );
            want
        });
        let whole = (stack.whole().unwrap(), 0);
        let got = run_matvec(gpu, whole, &x, &y0, ProductMode::SwiGlu);
        let want = ops::swiglu(&gate, &up);
        assert_close(&format!("{} swiglu", ty.name()), &got, &want, 1e-4);
    }
}

/// Parts of different types are not stacked; each is read alone from row 0.
#[test]
fn stack_keeps_parts_of_different_types_apart() {
    let gpu = gpu();
    let mut rng = Rng(14);
    let (n_in, n_out) = (64usize, 8usize);
    let a = random_weights(&mut rng, GgmlType::Q4_1, n_in * n_out);
    let b = random_weights(&mut rng, GgmlType::Q8_0, n_in * n_out);
    let parts = [
        ("a", GgmlType::Q4_1, &a[..], n_out),
        ("b", GgmlType::Q8_0, &b[..], n_out),
    ];
    let stack = Stack::upload(gpu, "a|b", &parts).unwrap();
    assert!(stack.whole().is_none());
    let (w, row0) = stack.part(1);
    assert_eq!((w.ty, row0), (GgmlType::Q8_0, 0));
    let x = rng.vec(n_in);
    let want = ops::matmul(
        &x,
        &dequantize(GgmlType::Q8_0, &b, n_in * n_out).unwrap(),
        n_in,
    );
    let got = run_matvec(gpu, (w, row0), &x, &vec![0.0; n_out], ProductMode::Store);
    assert_close("second part", &got, &want, 1e-4);
}

/// Gemma 3 270M's own weights, as llama.cpp quantized them: for each type of its layers
/// (Q5_0, Q4_K, Q6_K, Q8_0) the first such matrix through matvec.wgsl and matmul.wgsl (3
/// tokens) against dequantize + ops::matmul, and its tied output head (Q8_0, 262,144 rows: a
/// texture 2560 rows tall) through matvec.wgsl on every 97th row and the last; 1e-4 relative.
#[test]
fn gemmas_weights_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng(18);
    let g = Gguf::parse(crate::common::gemma_bytes()).unwrap();
    for ty in [GgmlType::Q5_0, GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8_0] {
        let t = g
            .tensors
            .iter()
            .find(|t| t.name.starts_with("blk.") && t.dims.len() == 2 && t.ggml_type == ty)
            .unwrap_or_else(|| panic!("no {} matrix", ty.name()));
        let (n_in, n_out) = (t.dims[0] as usize, t.rows());
        let w = Weight::upload(gpu, t.name, ty, g.tensor_bytes(t), n_out).unwrap();
        let w_f32 = g.dequantize(t).unwrap();
        let x = rng.vec(3 * n_in);
        let what = format!("{} ({})", t.name, ty.name());
        let got = run_matvec(
            gpu,
            (&w, 0),
            &x[..n_in],
            &vec![0.0; n_out],
            ProductMode::Store,
        );
        let want = ops::matmul(&x[..n_in], &w_f32, n_in);
        assert_close(&format!("matvec {what}"), &got, &want, 1e-4);
        let got = run_matmul(
            gpu,
            (&w, 0),
            &x,
            &vec![0.0; 3 * n_out],
            3,
            ProductMode::Store,
        );
        let want = ops::matmul(&x, &w_f32, n_in);
        assert_close(&format!("matmul {what}"), &got, &want, 1e-4);
    }
    let t = g.tensor("token_embd.weight").unwrap();
    let (n_in, n_out) = (t.dims[0] as usize, t.rows());
    let data = g.tensor_bytes(t);
    let w = Weight::upload(gpu, t.name, t.ggml_type, data, n_out).unwrap();
    let x = rng.vec(n_in);
    let got = run_matvec(gpu, (&w, 0), &x, &vec![0.0; n_out], ProductMode::Store);
    let row_bytes = data.len() / n_out;
    let rows: Vec<usize> = (0..n_out).step_by(97).chain([n_out - 1]).collect();
    let want: Vec<f32> = rows
        .iter()
        .map(|&o| {
            let row = dequantize(t.ggml_type, &data[o * row_bytes..][..row_bytes], n_in).unwrap();
            ops::matmul(&x, &row, n_in)[0]
        })
        .collect();
    let got: Vec<f32> = rows.iter().map(|&o| got[o]).collect();
    assert_close("output head", &got, &want, 1e-4);
}

/// A weight taller than one 2D texture is split over the layers of a texture array
/// (`Gpu::texture_with`): here with one texture row per layer (the device's limit stands at
/// 8,192 or more), 1,200 rows of 256 weights take 3 layers of payload (and of scales), and
/// matvec, matmul and the embedding lookup read every layer as they read one texture
/// (tolerance 1e-4 relative; the rows to the bit).
#[test]
fn weights_split_over_texture_layers_match_cpu() {
    let mut gpu = pollster::block_on(Gpu::new()).expect("a GPU adapter (CI: lavapipe)");
    gpu.set_texture_rows(1);
    let gpu = &gpu;
    let mut rng = Rng(29);
    let (n_in, n_out) = (256usize, 1200usize);
    for ty in [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8_0, GgmlType::F16] {
        let (w, w_f32) = weight(gpu, &mut rng, ty, n_in, n_out);
        let layers = w.payload.texture.depth_or_array_layers();
        assert!(layers >= 3, "{}: {layers} layers", ty.name());
        let x = rng.vec(n_in);
        let want = ops::matmul(&x, &w_f32, n_in);
        let got = run_matvec(gpu, (&w, 0), &x, &vec![0.0; n_out], ProductMode::Store);
        assert_close(&format!("split matvec {}", ty.name()), &got, &want, 1e-4);
        let x = rng.vec(3 * n_in);
        let want = ops::matmul(&x, &w_f32, n_in);
        let got = run_matmul(
            gpu,
            (&w, 0),
            &x,
            &vec![0.0; 3 * n_out],
            3,
            ProductMode::Store,
        );
        assert_close(&format!("split matmul {}", ty.name()), &got, &want, 1e-4);
        let ids = [0u32, 517, 1199];
        let tokens = gpu.storage_with("ids", bytemuck::cast_slice(&ids)).unwrap();
        let xb = gpu.storage("x", (ids.len() * n_in * 4) as u64).unwrap();
        let st = step(gpu, 0, ids.len());
        let embed = gpu_ops::embed(&w, (n_in as u32, 1.0), &tokens, &xb);
        run(gpu, &embed, Some(&st), 0, ids.len());
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| w_f32[i as usize * n_in..(i as usize + 1) * n_in].to_vec())
            .collect();
        let got = read(gpu, &xb, ids.len() * n_in);
        assert_close(&format!("split embed {}", ty.name()), &got, &want, 0.0);
    }
}
