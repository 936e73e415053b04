//! Each WGSL kernel against its CPU twin on seeded random inputs (lavapipe in CI). Every
//! shader also passes naga's validator. Tolerances are stated per test: f32 kernels agree to
//! ~1e-5 relative; differences come only from summation order and `exp`/`sqrt` rounding.

mod common;

use common::Rng;
use gqa_lab::cpu::ops;
use gqa_lab::gguf::{dequantize, GgmlType};
use gqa_lab::gpu::kernels::*;
use gqa_lab::gpu::ops::{self as gpu_ops, *};
use gqa_lab::gpu::{Buf, Gpu, Stack, Weight};
use gqa_lab::model::{pooling_matrix, rope_table, Grouping, LayerMaps, VMap};
use gqa_lab::sampling;
use half::f16;
use std::sync::OnceLock;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        pollster::block_on(Gpu::new())
            .expect("a GPU adapter (CI: lavapipe from mesa-vulkan-drivers)")
    })
}

fn f32s(gpu: &Gpu, v: &[f32]) -> Buf {
    gpu.storage_with("test", bytemuck::cast_slice(v)).unwrap()
}

fn read(gpu: &Gpu, b: &Buf, n: usize) -> Vec<f32> {
    let bytes = pollster::block_on(gpu.read(b)).unwrap();
    bytemuck::pod_collect_to_vec::<u8, f32>(&bytes[..n * 4])
}

/// The Step uniform of a forward of `n_tokens` tokens from position `pos0`.
fn step(gpu: &Gpu, pos0: usize, n_tokens: usize) -> Buf {
    gpu.uniform_with(bytemuck::bytes_of(&Step::new(pos0, n_tokens)))
        .unwrap()
}

/// Runs one op as the engine builds it, for `t` tokens over the chunks of `st`.
fn run(gpu: &Gpu, spec: &OpSpec<'_>, st: Option<&Buf>, pos0: usize, t: usize) {
    let n_chunks = Step::new(pos0, t).n_chunks;
    gpu_ops::run(gpu, spec, st, t as u32, n_chunks).unwrap();
}

fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{name}[{i}]: GPU {g} vs CPU {w} (tol {tol})"
        );
    }
}

#[test]
fn every_shader_validates_with_naga() {
    for k in Kernel::ALL {
        let module = parse(k);
        // unpack2x16float (core WGSL) is what naga files under SHADER_FLOAT16_IN_FLOAT32.
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32,
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {e:?}", k.name()));
    }
}

fn parse(k: Kernel) -> naga::Module {
    let src = k.source();
    naga::front::wgsl::parse_str(&src)
        .unwrap_or_else(|e| panic!("{}: {}", k.name(), e.emit_to_string(&src)))
}

/// What a WGSL global binds, in the terms of [`Slot`] (`Params` and `Step` are uniforms).
fn slot_of(v: &naga::GlobalVariable) -> &'static str {
    use naga::{AddressSpace, StorageAccess};
    match v.space {
        AddressSpace::Uniform => "uniform",
        AddressSpace::Storage { access } if access.contains(StorageAccess::STORE) => "read_write",
        AddressSpace::Storage { .. } => "read",
        AddressSpace::Handle => "texture",
        _ => "other",
    }
}

/// Each kernel's bindings (numbers and kinds) are those of [`Kernel::bindings`], which the
/// op constructors fill; each parameter struct's named fields lie at the offsets and have the
/// sizes of its WGSL twin, and the structs are the same size (naga's reflection).
#[test]
fn bindings_and_parameter_structs_match_the_shaders() {
    for k in Kernel::ALL {
        let module = parse(k);
        let mut found: Vec<(u32, &str)> = module
            .global_variables
            .iter()
            .filter_map(|(_, v)| Some((v.binding.as_ref()?.binding, slot_of(v))))
            .collect();
        found.sort();
        let want: Vec<(u32, &str)> = k
            .bindings()
            .iter()
            .map(|&(n, slot)| {
                let kind = match slot {
                    Slot::Params | Slot::Step | Slot::Uniform => "uniform",
                    Slot::Read => "read",
                    Slot::ReadWrite => "read_write",
                    Slot::Texture => "texture",
                };
                (n, kind)
            })
            .collect();
        assert_eq!(found, want, "{}: bindings", k.name());
    }
    let mut checked = 0;
    for (wgsl, kernels, size, fields) in params_layouts() {
        for &k in kernels {
            let module = parse(k);
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            let (_, ty) = module
                .types
                .iter()
                .find(|(_, t)| t.name.as_deref() == Some(wgsl))
                .unwrap_or_else(|| panic!("{}: no struct {wgsl}", k.name()));
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("{}: {wgsl} is not a struct", k.name());
            };
            assert_eq!(*span as usize, size, "{}: size of {wgsl}", k.name());
            for (name, offset, bytes) in fields.iter().filter(|f| !f.0.starts_with('_')) {
                let m = members
                    .iter()
                    .find(|m| m.name.as_deref() == Some(*name))
                    .unwrap_or_else(|| panic!("{}: {wgsl} has no field {name}", k.name()));
                let at = (m.offset as usize, layouter[m.ty].size as usize);
                assert_eq!(at, (*offset, *bytes), "{}: {wgsl}.{name}", k.name());
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} fields checked");
}

/// Random GGUF bytes for `n` weights of type `ty` (valid scales).
fn random_weights(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    let h = |x: f32| f16::from_f32(x).to_le_bytes();
    match ty {
        GgmlType::F32 => (0..n).for_each(|_| b.extend(rng.f().to_le_bytes())),
        GgmlType::F16 => (0..n).for_each(|_| b.extend(h(rng.f()))),
        GgmlType::BF16 => {
            (0..n).for_each(|_| b.extend(half::bf16::from_f32(rng.f()).to_le_bytes()))
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => {
            for _ in 0..n / 32 {
                b.extend(h(0.01 + rng.f().abs() * 0.05));
                if ty == GgmlType::Q4_1 {
                    b.extend(h(rng.f() * 0.2));
                }
                let q = if ty == GgmlType::Q8_0 { 32 } else { 16 };
                (0..q).for_each(|_| b.push(rng.next() as u8));
            }
        }
        _ => unreachable!(),
    }
    b
}

const TYPES: [GgmlType; 6] = [
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

/// A random `[n_out][n_in]` weight of type `ty` on the GPU, and its dequantized values.
fn weight(gpu: &Gpu, rng: &mut Rng, ty: GgmlType, n_in: usize, n_out: usize) -> (Weight, Vec<f32>) {
    let raw = random_weights(rng, ty, n_in * n_out);
    let w_f32 = dequantize(ty, &raw, n_in * n_out).unwrap();
    (Weight::upload(gpu, "w", ty, &raw, n_out).unwrap(), w_f32)
}

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
/// with and without accumulate; tolerance 1e-4 relative (f32 sums of 160 products).
#[test]
fn matmul_matches_cpu_for_every_type() {
    let gpu = gpu();
    let mut rng = Rng(1);
    let (n_in, n_out) = (160usize, 70usize);
    for ty in TYPES {
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
/// accumulate, rows of 5 and 7 blocks; tolerance 1e-4 relative (f32 sums of ≤ 224 products,
/// scale folded out).
#[test]
fn matvec_matches_cpu_for_every_type() {
    let gpu = gpu();
    let mut rng = Rng(11);
    let n_out = 70usize;
    for (ty, n_in) in TYPES.into_iter().flat_map(|ty| [(ty, 160usize), (ty, 224)]) {
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
/// 4160-row matrix through matvec.wgsl against the CPU (1e-4 relative).
#[test]
fn matvec_reads_past_a_texture_row() {
    let gpu = gpu();
    let mut rng = Rng(12);
    let (n_in, n_out) = (64usize, gqa_lab::gpu::layout::WIDTH + 64);
    let (w, w_f32) = weight(gpu, &mut rng, GgmlType::Q4_1, n_in, n_out);
    let x = rng.vec(n_in);
    let got = run_matvec(gpu, (&w, 0), &x, &vec![0.0; n_out], ProductMode::Store);
    assert_close(
        "matvec texture rows",
        &got,
        &ops::matmul(&x, &w_f32, n_in),
        1e-4,
    );
}

/// A stacked gate|up (as the engine uploads it, [`Stack`]) through matvec.wgsl: each part
/// alone from its first row (also through matmul.wgsl), and SwiGLU mode, silu(gate·x)·(up·x) in one pass, against
/// dequantize + ops::matmul + ops::swiglu (1e-4 relative). The parts are 70 rows of 160, so
/// the second starts inside a group of LANES rows.
#[test]
fn matvec_reads_stacked_parts_and_fuses_swiglu() {
    let gpu = gpu();
    let mut rng = Rng(13);
    let (n_in, n_out) = (160usize, 70usize);
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F16] {
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

/// embed.wgsl vs dequantized rows (exact up to the f16 scale: 1e-6).
#[test]
fn embed_matches_dequantized_rows() {
    let gpu = gpu();
    let mut rng = Rng(2);
    let (dim, vocab) = (96usize, 50usize);
    let (w, table) = weight(gpu, &mut rng, GgmlType::Q8_0, dim, vocab);
    let ids = [3u32, 49, 0, 17];
    let tokens = gpu.storage_with("ids", bytemuck::cast_slice(&ids)).unwrap();
    let x = gpu.storage("x", (ids.len() * dim * 4) as u64).unwrap();
    let st = step(gpu, 0, ids.len());
    run(
        gpu,
        &gpu_ops::embed(&w, dim as u32, &tokens, &x),
        Some(&st),
        0,
        ids.len(),
    );
    let want: Vec<f32> = ids
        .iter()
        .flat_map(|&i| table[i as usize * dim..(i as usize + 1) * dim].to_vec())
        .collect();
    assert_close("embed", &read(gpu, &x, want.len()), &want, 1e-6);
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
        _pad: 0,
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
    run(gpu, &gpu_ops::swiglu(f as u32, &gb, &ub), Some(&st), 0, t);
    assert_close("swiglu", &read(gpu, &gb, t * f), &ops::swiglu(&g, &u), 1e-5);
}

/// Layer maps for `grouping` (`model/regroup.rs`): the GQA paper's mean-pooling, or random
/// maps of every kind a calibrated merge has (complex K scalars, a dense V map, q and output
/// maps).
fn maps(rng: &mut Rng, grouping: Grouping, hd: usize, random: bool) -> LayerMaps {
    let mut m = LayerMaps::pooled(grouping, hd);
    if random {
        let (g0, h) = (grouping.native_groups(), grouping.n_heads());
        m.k = (0..grouping.groups() * g0 * hd / 2)
            .map(|_| [rng.f(), rng.f()])
            .collect();
        m.v = VMap::Dense(rng.vec(grouping.groups() * hd * g0 * hd));
        m.q = Some((0..h * hd / 2).map(|_| [rng.f(), rng.f()]).collect());
        m.o = Some(rng.vec(h * hd * hd));
    }
    m
}

/// kv_store.wgsl vs its CPU twin (`LayerMaps::map_q`, `map_k`, `map_v`, then ops::rope),
/// regrouping 3 native heads to G = 1, 2, 3, 5, 9, with the paper's mean-pooling and with
/// random calibrated-merge maps; the maps of the second of two layers (1e-4 relative).
#[test]
fn kv_store_maps_ropes_and_appends() {
    let gpu = gpu();
    let mut rng = Rng(5);
    let (hd, g0, cap, t, pos0, nh) = (64usize, 3usize, 16usize, 2usize, 5usize, 9usize);
    let rope = f32s(gpu, &rope_table(cap, hd, 10_000.0));
    for (groups, random) in [
        (1, false),
        (1, true),
        (2, true),
        (3, false),
        (5, false),
        (9, false),
        (2, false),
    ] {
        let grouping = Grouping::new(nh, g0, groups).unwrap();
        let layers = [
            maps(&mut rng, grouping, hd, random),
            maps(&mut rng, grouping, hd, random),
        ];
        let m = &layers[1];
        let (k0, v0) = (rng.vec(t * g0 * hd), rng.vec(t * g0 * hd));
        let q = rng.vec(t * nh * hd);
        let qb = f32s(gpu, &q);
        let kc = gpu.storage("kc", (groups * cap * hd * 4) as u64).unwrap();
        let vc = gpu.storage("vc", (groups * cap * hd * 4) as u64).unwrap();
        let flat = |f: &dyn Fn(&LayerMaps) -> Vec<f32>| {
            f32s(gpu, &layers.iter().flat_map(f).collect::<Vec<_>>())
        };
        let kmap = flat(&|m| m.k.iter().flatten().copied().collect());
        let vmap = flat(&|m| match random {
            true => m.v_dense(grouping, hd),
            false => pooling_matrix(grouping),
        });
        let qmap = flat(&|m| m.q_or_identity(nh, hd).into_iter().flatten().collect());
        let p = KvStoreParams {
            groups: groups as u32,
            native_groups: g0 as u32,
            head_dim: hd as u32,
            capacity: cap as u32,
            n_heads: nh as u32,
            layer: 1,
            dense_v: random as u32,
            map_q: random as u32,
        };
        let (k0b, v0b) = (f32s(gpu, &k0), f32s(gpu, &v0));
        let binds = KvStoreBinds {
            k0: k0b.binding(),
            v0: v0b.binding(),
            kmap: &kmap,
            vmap: &vmap,
            qmap: &qmap,
            rope: &rope,
            kc: &kc,
            vc: &vc,
            q: qb.binding(),
        };
        let st = step(gpu, pos0, t);
        run(gpu, &gpu_ops::kv_store(p, binds), Some(&st), pos0, t);
        let (kg, vg) = (
            read(gpu, &kc, groups * cap * hd),
            read(gpu, &vc, groups * cap * hd),
        );
        let qg = read(gpu, &qb, t * nh * hd);
        let mut want_q = q.clone();
        m.map_q(&mut want_q, nh, hd);
        let (mut want_k, want_v) = (m.map_k(&k0, grouping, hd), m.map_v(&v0, grouping, hd));
        for tt in 0..t {
            let row = |v: &mut [f32], n: usize| {
                ops::rope(
                    &mut v[tt * n * hd..(tt + 1) * n * hd],
                    hd,
                    pos0 + tt,
                    10_000.0,
                )
            };
            row(&mut want_q, nh);
            row(&mut want_k, groups);
            let what = format!("G={groups} random={random} t={tt}");
            assert_close(
                &format!("q {what}"),
                &qg[tt * nh * hd..][..nh * hd],
                &want_q[tt * nh * hd..][..nh * hd],
                1e-4,
            );
            for g in 0..groups {
                let at = (g * cap + pos0 + tt) * hd;
                let want = (tt * groups + g) * hd;
                assert_close(
                    &format!("K g={g} {what}"),
                    &kg[at..at + hd],
                    &want_k[want..want + hd],
                    1e-4,
                );
                assert_close(
                    &format!("V g={g} {what}"),
                    &vg[at..at + hd],
                    &want_v[want..want + hd],
                    1e-4,
                );
            }
        }
    }
}

/// Plain causal GQA attention on the CPU: query head h (already rotated) at position `pos`
/// reads KV head `g` over positions 0..=pos.
fn attention_cpu(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    cap: usize,
    hd: usize,
    pos: usize,
    g: usize,
) -> Vec<f32> {
    let scale = 1.0 / (hd as f32).sqrt();
    let row = |c: &'_ [f32], p: usize| c[(g * cap + p) * hd..(g * cap + p + 1) * hd].to_vec();
    let mut s: Vec<f32> = (0..=pos)
        .map(|p| ops::dot(q, &row(kc, p)) * scale)
        .collect();
    ops::softmax(&mut s);
    let mut out = vec![0.0f32; hd];
    for (p, a) in s.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(row(vc, p)) {
            *o += a * v;
        }
    }
    out
}

/// attention.wgsl (prefill, T = 3) and attention_decode.wgsl (T = 1; head_dim 64, 48 and
/// 128, as it is specialised per head size), each followed by attention_reduce.wgsl, vs
/// [`attention_cpu`] over 131–173 cached positions (3 chunks; the last one less than half
/// full or more than half full), G = 1, 2, 3, 4, 9 (2 and 4 with groups of unequal sizes),
/// and with an output map (a calibrated merge's) on the reduction (1e-4).
#[test]
fn attention_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(6);
    let (nh, cap) = (9usize, 192usize);
    let max_chunks = cap.div_ceil(ATTENTION_CHUNK);
    // attention_decode is specialised per (largest group, head_dim): three head sizes.
    for (kernel, t, pos0, hd) in [
        (Kernel::Attention, 3usize, 147usize, 64usize),
        (Kernel::AttentionDecode, 1, 149, 64),
        (Kernel::AttentionDecode, 1, 172, 48),
        (Kernel::AttentionDecode, 1, 140, 128),
    ] {
        for (groups, map_o) in [
            (1usize, false),
            (2, true),
            (3, false),
            (4, false),
            (9, true),
        ] {
            let grouping = Grouping::new(nh, 3, groups).unwrap();
            let q = rng.vec(t * nh * hd);
            let kc = rng.vec(groups * cap * hd);
            let vc = rng.vec(groups * cap * hd);
            let ml = gpu.storage("ml", (t * nh * max_chunks * 8) as u64).unwrap();
            let part = gpu
                .storage("part", (t * nh * max_chunks * hd * 4) as u64)
                .unwrap();
            let out = gpu.storage("out", (t * nh * hd * 4) as u64).unwrap();
            let st = step(gpu, pos0, t);
            let p = AttentionParams {
                n_heads: nh as u32,
                groups: groups as u32,
                head_dim: hd as u32,
                capacity: cap as u32,
                max_chunks: max_chunks as u32,
                scale: 1.0 / (hd as f32).sqrt(),
                _pad: [0; 2],
            };
            let qb = gpu.activation("q", (q.len() * 4) as u64).unwrap();
            gpu.queue
                .write_buffer(&qb.buffer, 0, bytemuck::cast_slice(&q));
            let (kb, vb) = (f32s(gpu, &kc), f32s(gpu, &vc));
            let starts = starts_table(gpu, grouping);
            let pass = Pass::of(t);
            let binds = AttentionBinds {
                q: match pass {
                    Pass::Decode => qb.uniform_window(),
                    Pass::Prefill => qb.binding(),
                },
                kc: &kb,
                vc: &vb,
                ml: &ml,
                part: &part,
                starts: &starts,
            };
            let attention = gpu_ops::attention(p, binds, pass, grouping.max_rep());
            assert_eq!(attention.kernel, kernel);
            run(gpu, &attention, Some(&st), pos0, t);
            // The output maps of two layers; the op reads the second's.
            let o = maps(&mut rng, grouping, hd, true).o.unwrap();
            let omap = f32s(gpu, &[rng.vec(nh * hd * hd), o.clone()].concat());
            let rp = ReduceParams {
                n_heads: nh as u32,
                head_dim: hd as u32,
                max_chunks: max_chunks as u32,
                map_o: map_o as u32,
                layer: 1,
                _pad: [0; 3],
            };
            let reduce = gpu_ops::attention_reduce(rp, &ml, &part, &omap, &out);
            run(gpu, &reduce, Some(&st), pos0, t);
            let got = read(gpu, &out, t * nh * hd);
            let mut want: Vec<f32> = (0..t)
                .flat_map(|tt| (0..nh).map(move |h| (tt, h)))
                .flat_map(|(tt, h)| {
                    let at = (tt * nh + h) * hd;
                    let g = grouping.kv_head(h);
                    attention_cpu(&q[at..at + hd], &kc, &vc, cap, hd, pos0 + tt, g)
                })
                .collect();
            if map_o {
                let mut m = LayerMaps::pooled(grouping, hd);
                m.o = Some(o);
                m.map_o(&mut want, nh, hd);
            }
            let what = format!("{} G={groups} map_o={map_o}", kernel.name());
            assert_close(&what, &got, &want, 1e-4);
        }
    }
}

/// The `starts` table of the attention kernels for `grouping`: `[G + 1]`, KV head g's query
/// heads being `starts[g] .. starts[g + 1]`.
fn starts_table(gpu: &Gpu, grouping: Grouping) -> Buf {
    let starts: Vec<u32> = (0..grouping.groups())
        .map(|g| grouping.members(g).start as u32)
        .chain([grouping.n_heads() as u32])
        .collect();
    gpu.storage_with("starts", bytemuck::cast_slice(&starts))
        .unwrap()
}

/// attention_probe.wgsl vs cpu::ops::attention_weights: the last token's weights of every
/// query head over its KV head's positions (1e-5), for equal and unequal groups, a decode
/// step and a prefill chunk, contexts shorter and longer than a workgroup; each row sums to 1.
#[test]
fn attention_probe_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(16);
    let (nh, cap, hd) = (9usize, 300usize, 64usize);
    for (t, pos0) in [(1usize, 0usize), (1, 40), (1, 257), (4, 90)] {
        for groups in [1usize, 2, 3, 9] {
            let grouping = Grouping::new(nh, 3, groups).unwrap();
            let q = rng.vec(t * nh * hd);
            let kc = rng.vec(groups * cap * hd);
            let qb = f32s(gpu, &q);
            let kb = f32s(gpu, &kc);
            let starts = starts_table(gpu, grouping);
            let out = gpu.storage("out", (nh * cap * 4) as u64).unwrap();
            let p = ProbeParams {
                n_heads: nh as u32,
                groups: groups as u32,
                head_dim: hd as u32,
                capacity: cap as u32,
                scale: 1.0 / (hd as f32).sqrt(),
                _pad: [0; 3],
            };
            let probe = gpu_ops::attention_probe(p, qb.binding(), &kb, &starts, &out);
            run(gpu, &probe, Some(&step(gpu, pos0, t)), pos0, t);
            let got = read(gpu, &out, nh * cap);
            let seen = pos0 + t; // positions 0 ..= pos0 + t - 1
            for h in 0..nh {
                let g = grouping.kv_head(h);
                let at = ((t - 1) * nh + h) * hd;
                let k = &kc[g * cap * hd..(g * cap + seen) * hd];
                let want = ops::attention_weights(&q[at..at + hd], k, p.scale);
                let row = &got[h * cap..h * cap + seen];
                let what = format!("probe T={t} pos0={pos0} G={groups} head {h}");
                assert_close(&what, row, &want, 1e-5);
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "{what}: weights sum to {sum}");
            }
        }
    }
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
