//! Each WGSL kernel against its CPU twin on seeded random inputs (lavapipe in CI). Every
//! shader also passes naga's validator. Tolerances are stated per test: f32 kernels agree to
//! ~1e-5 relative; differences come only from summation order and `exp`/`sqrt` rounding.
//!
//! One test binary; its modules mirror `src/gpu/ops/`: `product.rs` (matvec, matmul and
//! stacked weights), `attention.rs` (kv_store, attention and its reduction, the probe),
//! `kv_types.rs` (the same over f16 and q8_0 caches),
//! `rows.rs` (embedding, RMSNorm, SwiGLU, argmax, sampling), and `shaders.rs` (naga's
//! validation and reflection against the host's binding tables and parameter structs).
//! This file holds what they share: the device, buffers, running one op, comparing, and
//! random weights.

#[path = "../common/mod.rs"]
mod common;

mod attention;
mod kv_types;
mod product;
mod rows;
mod shaders;

use common::Rng;
use gqa_lab::gguf::{dequantize, GgmlType};
use gqa_lab::gpu::kernels::WEIGHT_TYPES;
use gqa_lab::gpu::ops::{self as gpu_ops, OpSpec, Step};
use gqa_lab::gpu::{Buf, Gpu, Weight};
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

/// Random GGUF bytes for `n` weights of type `ty`: valid blocks whose f16 scales are finite
/// and sized so that weights are about ±1 at most (the quants and packed sub-block scales are
/// random bits).
fn random_weights(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    use GgmlType::*;
    let mut b = Vec::new();
    let h = |x: f32| f16::from_f32(x).to_le_bytes();
    match ty {
        F32 => (0..n).for_each(|_| b.extend(rng.f().to_le_bytes())),
        F16 => (0..n).for_each(|_| b.extend(h(rng.f()))),
        BF16 => (0..n).for_each(|_| b.extend(half::bf16::from_f32(rng.f()).to_le_bytes())),
        Q4_0 | Q4_1 | Q8_0 => {
            for _ in 0..n / 32 {
                b.extend(h(0.01 + rng.f().abs() * 0.05));
                if ty == Q4_1 {
                    b.extend(h(rng.f() * 0.2));
                }
                let q = if ty == Q8_0 { 32 } else { 16 };
                (0..q).for_each(|_| b.push(rng.next() as u8));
            }
        }
        _ => {
            // (f16 fields: offset, largest magnitude) of each block; the rest random bits.
            let (fields, bytes): (&[(usize, f32)], usize) = match ty {
                Q5_0 => (&[(0, 0.06)], 22),
                Q5_1 => (&[(0, 0.03), (2, 0.2)], 24),
                Q4K => (&[(0, 0.001), (2, 0.001)], 144),
                Q5K => (&[(0, 0.0005), (2, 0.001)], 176),
                Q6K => (&[(208, 0.00025)], 210),
                Q2K => (&[(80, 0.02), (82, 0.02)], 84),
                Q3K => (&[(108, 0.008)], 110),
                _ => unreachable!("{} is no weight type", ty.name()),
            };
            let block = ty.block().0 as usize;
            for _ in 0..n / block {
                let mut raw: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
                for &(at, most) in fields {
                    let d = most * (0.2 + 0.8 * rng.f().abs());
                    raw[at..at + 2].copy_from_slice(&h(d));
                }
                b.extend(raw);
            }
        }
    }
    b
}

/// Every weight type the kernels read.
const TYPES: [GgmlType; 13] = WEIGHT_TYPES;

/// Two row lengths for a product test with `ty`: `[a, b]` weights, or for the K-quants
/// (super-blocks of 256) 256 and 768.
fn widths(ty: GgmlType, [a, b]: [usize; 2]) -> [usize; 2] {
    if ty.block().0 == 256 {
        [256, 768]
    } else {
        [a, b]
    }
}

/// A random `[n_out][n_in]` weight of type `ty` on the GPU, and its dequantized values.
fn weight(gpu: &Gpu, rng: &mut Rng, ty: GgmlType, n_in: usize, n_out: usize) -> (Weight, Vec<f32>) {
    let raw = random_weights(rng, ty, n_in * n_out);
    let w_f32 = dequantize(ty, &raw, n_in * n_out).unwrap();
    (Weight::upload(gpu, "w", ty, &raw, n_out).unwrap(), w_f32)
}
