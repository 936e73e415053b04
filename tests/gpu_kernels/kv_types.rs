//! The KV cache's element types on the GPU (kv_f16.wgsl, kv_q8_0.wgsl, kv_quant.wgsl) against
//! their CPU twin, `model::KvRows`: what kv_store (and kv_quant) write reads back as the CPU
//! rounds the same rows, and attention and the probe over a cache of each type give what
//! `ops::causal_attention` and `ops::attention_weights` give over the CPU's rows.

use super::attention::{maps, GpuAttention};
use crate::common::Rng;
use crate::{assert_close, f32s, gpu, run, step};
use gqa_lab::gpu::ops::{self as gpu_ops, *};
use gqa_lab::gpu::{Buf, Gpu};
use gqa_lab::model::kv_type::{Q8_0_BLOCK, Q8_0_BYTES};
use gqa_lab::model::{rope_table, KvRows, KvType};
use gqa_lab::ops;
use gqa_lab::regroup::Grouping;
use half::f16;

fn bytes(gpu: &Gpu, b: &Buf) -> Vec<u8> {
    pollster::block_on(gpu.read(b)).unwrap()
}

/// q8_0 rows from the CPU's blocks (`[f16 d][32 × i8]` each) to the GPU's layout
/// (kv_q8_0.wgsl: a row's quants, then its scales two to a u32).
fn q8_0_to_gpu(blocks: &[u8], hd: usize) -> Vec<u8> {
    let nb = hd / Q8_0_BLOCK;
    let mut out = Vec::new();
    for row in blocks.chunks_exact(nb * Q8_0_BYTES) {
        let blocks = row.chunks_exact(Q8_0_BYTES);
        blocks.clone().for_each(|b| out.extend_from_slice(&b[2..]));
        let mut scales: Vec<u8> = blocks.flat_map(|b| [b[0], b[1]]).collect();
        scales.resize(4 * nb.div_ceil(2), 0);
        out.extend(scales);
    }
    out
}

/// The GPU's q8_0 rows (kv_q8_0.wgsl's layout) as f32, each block d·q.
fn q8_0_from_gpu(raw: &[u8], rows: usize, hd: usize) -> Vec<f32> {
    let words = hd / 4 + (hd / 32).div_ceil(2);
    let mut out = Vec::with_capacity(rows * hd);
    for row in raw.chunks_exact(4 * words).take(rows) {
        for (b, q) in row[..hd].chunks_exact(Q8_0_BLOCK).enumerate() {
            let d = f16::from_le_bytes([row[hd + 2 * b], row[hd + 2 * b + 1]]).to_f32();
            out.extend(q.iter().map(|&q| d * (q as i8) as f32));
        }
    }
    out
}

/// A cache of type `kv` holding `x` (`[rows][hd]`) as the CPU rounds it, and its GPU buffer.
fn typed(gpu: &Gpu, kv: KvType, x: &[f32], hd: usize) -> (KvRows, Buf) {
    let mut rows = KvRows::new(kv, x.len() / hd, hd);
    for (r, v) in x.chunks_exact(hd).enumerate() {
        rows.write(r, v);
    }
    let raw: Vec<u8> = match &rows {
        KvRows::F32(v) => bytemuck::cast_slice(v).to_vec(),
        KvRows::F16(v) => v.iter().flat_map(|h| h.to_le_bytes()).collect(),
        KvRows::Q8_0(b) => q8_0_to_gpu(b, hd),
    };
    let buf = gpu.storage_with("typed cache", &raw).unwrap();
    (rows, buf)
}

/// kv_store.wgsl writing f16 pairs, and kv_store then kv_quant.wgsl writing q8_0 blocks,
/// against the f32 rows kv_store writes rounded by the CPU: f16 within one f16 step (WGSL
/// lets pack2x16float round either way), q8_0 within one step of the block's scale (the GPU's
/// division may round the scale and the quotient differently near a tie), and equal for at
/// least 99% of the values. A cache whose rows wrap (position p in row p mod rows).
#[test]
fn kv_store_writes_each_type_as_the_cpu_rounds() {
    let gpu = gpu();
    let mut rng = Rng(29);
    let (hd, g0, nh, rows, t, pos0) = (64usize, 3usize, 9usize, 8usize, 5usize, 6usize);
    let rope = f32s(gpu, &rope_table(pos0 + t, hd, 10_000.0));
    for groups in [1usize, 3, 5] {
        let grouping = Grouping::new(nh, g0, groups).unwrap();
        let m = maps(&mut rng, grouping, hd, groups < 3);
        let kmap = f32s(gpu, &m.k.iter().flatten().copied().collect::<Vec<_>>());
        let vmap = f32s(gpu, &m.v_dense(grouping, hd));
        let qmap = f32s(gpu, &m.q_or_identity(nh, hd).concat());
        let slots = f32s(gpu, bytemuck::cast_slice(&m.slot_rows(grouping, hd / 2)));
        let (k0, v0) = (rng.vec(t * g0 * hd), rng.vec(t * g0 * hd));
        let p = KvStoreParams {
            groups: groups as u32,
            native_groups: g0 as u32,
            head_dim: hd as u32,
            capacity: rows as u32,
            n_heads: nh as u32,
            layer: 0,
            dense_v: 1,
            map_q: 1,
            group0: 0,
            _a: 0,
            _b: 0,
            _c: 0,
        };
        let st = step(gpu, pos0, t);
        // kv_store into `kc`, `vc` (or the staging rows) for a cache of type `kv`.
        let store = |kv: KvType, kc: &Buf, vc: &Buf| {
            let (k0b, v0b, qb) = (
                f32s(gpu, &k0),
                f32s(gpu, &v0),
                f32s(gpu, &rng_q(t * nh * hd)),
            );
            let binds = KvStoreBinds {
                k0: k0b.binding(),
                v0: v0b.binding(),
                kmap: &kmap,
                vmap: &vmap,
                qmap: &qmap,
                rope: &rope,
                kc,
                vc,
                q: qb.binding(),
                slots: &slots,
            };
            run(gpu, &gpu_ops::kv_store(p, binds, kv), Some(&st), pos0, t);
        };
        let n = groups * rows * hd;
        let (k32, v32) = (
            gpu.storage("k32", (n * 4) as u64).unwrap(),
            gpu.storage("v32", (n * 4) as u64).unwrap(),
        );
        store(KvType::F32, &k32, &v32);
        let want: Vec<Vec<f32>> = [&k32, &v32]
            .map(|b| bytemuck::pod_collect_to_vec(&bytes(gpu, b)[..n * 4]))
            .into();
        // f16: straight into the cache.
        let (k16, v16) = (
            gpu.storage("k16", (n * 2) as u64).unwrap(),
            gpu.storage("v16", (n * 2) as u64).unwrap(),
        );
        store(KvType::F16, &k16, &v16);
        // q8_0: staged, then blocks.
        let staged = [0, 1].map(|_| gpu.storage("staged", (t * groups * hd * 4) as u64).unwrap());
        store(KvType::Q8_0, &staged[0], &staged[1]);
        let words = (hd / 4 + (hd / 32).div_ceil(2)) * 4;
        let q8 = [0, 1].map(|_| gpu.storage("q8", (groups * rows * words) as u64).unwrap());
        let qp = KvQuantParams {
            groups: groups as u32,
            head_dim: hd as u32,
            rows: rows as u32,
            _pad: 0,
        };
        let quant = gpu_ops::kv_quant(qp, [&staged[0], &staged[1]], [&q8[0], &q8[1]]);
        run(gpu, &quant, Some(&st), pos0, t);
        for (i, name) in ["K", "V"].iter().enumerate() {
            let h: Vec<f32> = bytes(gpu, [&k16, &v16][i])[..n * 2]
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect();
            let q = q8_0_from_gpu(&bytes(gpu, &q8[i]), groups * rows, hd);
            // Only the rows this forward wrote: positions pos0.. in rows (pos0 + tt) mod rows.
            let written: Vec<usize> = (0..groups)
                .flat_map(|g| (0..t).map(move |tt| g * rows + (pos0 + tt) % rows))
                .collect();
            let mut same = [0usize; 2];
            for &r in &written {
                let x = &want[i][r * hd..(r + 1) * hd];
                let mut w16 = x.to_vec();
                KvType::F16.round(&mut w16);
                let mut w8 = x.to_vec();
                KvType::Q8_0.round(&mut w8);
                for (j, (&g, &w)) in h[r * hd..(r + 1) * hd].iter().zip(&w16).enumerate() {
                    let step = f16::from_f32(w).to_f32().abs() * 2f32.powi(-10) + 6e-8;
                    assert!(
                        (g - w).abs() <= step,
                        "{name} f16 G={groups} row {r} [{j}]: {g} vs {w}"
                    );
                    same[0] += (g == w) as usize;
                }
                for (b, xb) in x.chunks_exact(Q8_0_BLOCK).enumerate() {
                    let d = xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                    let at = r * hd + b * Q8_0_BLOCK;
                    for (j, (&g, &w)) in
                        q[at..at + Q8_0_BLOCK].iter().zip(&w8[b * 32..]).enumerate()
                    {
                        assert!(
                            (g - w).abs() <= 1.01 * d,
                            "{name} q8_0 G={groups} row {r} [{j}]: {g} vs {w}"
                        );
                        same[1] += (g == w) as usize;
                    }
                }
            }
            let total = written.len() * hd;
            for (s, ty) in same.iter().zip(["f16", "q8_0"]) {
                assert!(
                    *s * 100 >= total * 99,
                    "{name} {ty} G={groups}: {s} of {total} equal"
                );
            }
        }
    }
}

/// Random query heads (kv_store also rotates them; this test reads only K and V).
fn rng_q(n: usize) -> Vec<f32> {
    Rng(n as u64).vec(n)
}

/// attention.wgsl (prefill), attention_decode.wgsl with the reduction, and
/// attention_probe.wgsl over caches of f16 and q8_0 rows, against the CPU's attention over the
/// same rows (`KvRows`, decoded exactly on both sides): 1e-4 as for f32, 1e-5 for the probe.
#[test]
fn attention_reads_each_type_as_the_cpu() {
    let gpu = gpu();
    let mut rng = Rng(31);
    let (nh, cap) = (9usize, 192usize);
    for kv in [KvType::F16, KvType::Q8_0] {
        for (t, pos0, hd, window, rows, groups) in [
            (3usize, 147usize, 64usize, 0usize, cap, 3usize),
            (1, 149, 64, 0, cap, 1),
            (1, 170, 256, 40, 80, 2),
            (3, 150, 256, 20, cap, 9),
        ] {
            let grouping = Grouping::new(nh, 3, groups).unwrap();
            let q = rng.vec(t * nh * hd);
            let (kc, kb) = typed(gpu, kv, &rng.vec(groups * rows * hd), hd);
            let (vc, vb) = typed(gpu, kv, &rng.vec(groups * rows * hd), hd);
            let case = GpuAttention {
                t,
                pos0,
                hd,
                window,
                rows,
                grouping,
                kv,
            };
            let (got, _) = case.run(gpu, &q, (&kb, &vb), None);
            let want =
                ops::causal_attention(&q, &kc, &vc, &grouping.kv_heads(), rows, pos0, hd, window);
            let what = format!(
                "{} T={t} hd={hd} window={window} rows={rows} G={groups}",
                kv.name()
            );
            assert_close(&what, &got, &want, 1e-4);

            // The probe reads the same keys.
            for (h, row) in case.probe(gpu, &q, &kb, cap).iter().enumerate() {
                let w = case.probe_reference(&q, &kc, h);
                assert_close(&format!("probe {what} head {h}"), row, &w, 1e-5);
            }
        }
    }
}
