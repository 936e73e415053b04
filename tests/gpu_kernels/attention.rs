//! Attention (`src/gpu/ops/attention.rs`): the KV-cache append with its regrouping maps and
//! RoPE, attention for a prefill chunk and for one token with its chunk reduction, and the
//! attention view's probe.

use crate::common::Rng;
use crate::{assert_close, f32s, gpu, read, run, step};
use gqa_lab::gpu::kernels::{Kernel, ATTENTION_CHUNK};
use gqa_lab::gpu::ops::{self as gpu_ops, *};
use gqa_lab::gpu::{Buf, Gpu};
use gqa_lab::model::{rope_table, rope_turns, KvType};
use gqa_lab::ops;
use gqa_lab::regroup::{pooling_matrix, Grouping, LayerMaps, VMap};

/// Layer maps for `grouping` (`model/regroup.rs`): the GQA paper's mean-pooling, or random
/// maps of every kind a calibrated merge has (complex K scalars, a dense V map, q and output
/// maps, K slots carrying random pairs).
pub(crate) fn maps(rng: &mut Rng, grouping: Grouping, hd: usize, random: bool) -> LayerMaps {
    let mut m = LayerMaps::pooled(grouping, hd);
    if random {
        let (g0, h) = (grouping.native_groups(), grouping.n_heads());
        m.k = (0..grouping.groups() * g0 * hd / 2)
            .map(|_| [rng.f(), rng.f()])
            .collect();
        m.v = VMap::Dense(rng.vec(grouping.groups() * hd * g0 * hd));
        m.q = Some((0..h * hd / 2).map(|_| [rng.f(), rng.f()]).collect());
        m.o = Some(rng.vec(h * hd * hd));
        let pairs = hd / 2;
        let slots = (0..grouping.groups() * pairs).map(|_| (rng.next() % pairs as u64) as u32);
        m.slots = Some(slots.collect());
    }
    m
}

/// kv_store.wgsl vs its CPU twin (`LayerMaps::map_q`, `map_k`, `map_v`, then
/// `LayerMaps::rotate`),
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
        let slots: Vec<u32> = layers
            .iter()
            .flat_map(|m| m.slot_rows(grouping, hd / 2))
            .collect();
        let slots = f32s(gpu, bytemuck::cast_slice(&slots));
        let p = KvStoreParams {
            groups: groups as u32,
            native_groups: g0 as u32,
            head_dim: hd as u32,
            capacity: cap as u32,
            n_heads: nh as u32,
            layer: 1,
            dense_v: random as u32,
            map_q: random as u32,
            group0: groups as u32,
            _a: 0,
            _b: 0,
            _c: 0,
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
            slots: &slots,
        };
        let st = step(gpu, pos0, t);
        run(
            gpu,
            &gpu_ops::kv_store(p, binds, KvType::F32),
            Some(&st),
            pos0,
            t,
        );
        let (kg, vg) = (
            read(gpu, &kc, groups * cap * hd),
            read(gpu, &vc, groups * cap * hd),
        );
        let qg = read(gpu, &qb, t * nh * hd);
        let mut want_q = q.clone();
        m.map_q(&mut want_q, grouping, hd);
        let (mut want_k, want_v) = (m.map_k(&k0, grouping, hd), m.map_v(&v0, grouping, hd));
        for tt in 0..t {
            let turns = rope_turns(pos0 + tt, hd, 10_000.0);
            let (q_kv, k_kv): (Vec<usize>, Vec<usize>) =
                (grouping.kv_heads(), (0..groups).collect());
            m.rotate(&mut want_q[tt * nh * hd..(tt + 1) * nh * hd], &turns, &q_kv);
            m.rotate(
                &mut want_k[tt * groups * hd..(tt + 1) * groups * hd],
                &turns,
                &k_kv,
            );
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

/// attention.wgsl (prefill, T = 3) and attention_decode.wgsl (T = 1; head_dim 64, 48, 128
/// and 256, as it is specialised per head size), each followed by attention_reduce.wgsl, with
/// and without a sliding window (one that starts inside a chunk, one that skips whole
/// chunks), vs
/// `ops::causal_attention` (the CPU engines' attention) over 131–173 cached positions (3 chunks; the last one less than half
/// full or more than half full), G = 1, 2, 3, 4, 9 (2 and 4 with groups of unequal sizes),
/// and with an output map (a calibrated merge's) on the reduction (1e-4).
#[test]
fn attention_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(6);
    let (nh, cap) = (9usize, 192usize);
    // attention_decode is specialised per (largest group, head_dim): three head sizes.
    // (kernel, T, pos0, head_dim, window, rows per KV head: the capacity, or a ring that the
    // window wraps around, as a sliding-window layer's cache holds it)
    for (kernel, t, pos0, hd, window, rows) in [
        (Kernel::Attention, 3usize, 147usize, 64usize, 0usize, cap),
        (Kernel::Attention, 3, 147, 64, 100, cap),
        (Kernel::Attention, 3, 150, 256, 20, cap),
        (Kernel::Attention, 3, 150, 64, 40, 70),
        (Kernel::AttentionDecode, 1, 149, 64, 0, cap),
        (Kernel::AttentionDecode, 1, 149, 64, 70, cap),
        (Kernel::AttentionDecode, 1, 172, 48, 0, cap),
        (Kernel::AttentionDecode, 1, 140, 128, 0, cap),
        (Kernel::AttentionDecode, 1, 170, 256, 40, cap),
        (Kernel::AttentionDecode, 1, 170, 64, 70, 80),
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
            let kc = rng.vec(groups * rows * hd);
            let vc = rng.vec(groups * rows * hd);
            let (kb, vb) = (f32s(gpu, &kc), f32s(gpu, &vc));
            // The output maps of two layers; the reduction reads the second's.
            let o = maps(&mut rng, grouping, hd, true).o.unwrap();
            let omap = f32s(gpu, &[rng.vec(nh * hd * hd), o.clone()].concat());
            let case = GpuAttention {
                t,
                pos0,
                hd,
                window,
                rows,
                grouping,
                kv: KvType::F32,
            };
            let (got, ran) = case.run(gpu, &q, (&kb, &vb), map_o.then_some(&omap));
            assert_eq!(ran, kernel);
            let kv_head = grouping.kv_heads();
            let mut want = ops::causal_attention(&q, &kc, &vc, &kv_head, rows, pos0, hd, window);
            if map_o {
                let mut m = LayerMaps::pooled(grouping, hd);
                m.o = Some(o);
                m.map_o(&mut want, nh, hd);
            }
            let what = format!(
                "{} hd={hd} window={window} rows={rows} G={groups} map_o={map_o}",
                kernel.name()
            );
            assert_close(&what, &got, &want, 1e-4);
        }
    }
}

/// One attention of a test on the GPU: T query tokens from `pos0` over a cache of `rows` rows
/// per KV head (a ring when `window` wraps it), of type `kv`.
pub(crate) struct GpuAttention {
    pub t: usize,
    pub pos0: usize,
    pub hd: usize,
    pub window: usize,
    pub rows: usize,
    pub grouping: Grouping,
    pub kv: KvType,
}

impl GpuAttention {
    /// attention.wgsl (T > 1) or attention_decode.wgsl (T = 1) on q (`[T][H][hd]`) and the
    /// cache buffers, then attention_reduce.wgsl (through the second layer's output map of
    /// `omap` if given): `[T][H][hd]`, and the attention kernel that ran.
    pub fn run(
        &self,
        gpu: &Gpu,
        q: &[f32],
        (kb, vb): (&Buf, &Buf),
        omap: Option<&Buf>,
    ) -> (Vec<f32>, Kernel) {
        let (t, hd, nh) = (self.t, self.hd, self.grouping.n_heads());
        let max_chunks = (self.pos0 + t).div_ceil(ATTENTION_CHUNK); // the chunks it fills
        let ml = gpu.storage("ml", (t * nh * max_chunks * 8) as u64).unwrap();
        let part = gpu
            .storage("part", (t * nh * max_chunks * hd * 4) as u64)
            .unwrap();
        let out = gpu.storage("out", (t * nh * hd * 4) as u64).unwrap();
        let st = step(gpu, self.pos0, t);
        let p = AttentionParams {
            n_heads: nh as u32,
            groups: self.grouping.groups() as u32,
            head_dim: hd as u32,
            capacity: self.rows as u32,
            max_chunks: max_chunks as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            window: self.window as u32,
            _pad: 0,
        };
        let qb = gpu.activation("q", (q.len() * 4) as u64).unwrap();
        gpu.queue
            .write_buffer(&qb.buffer, 0, bytemuck::cast_slice(q));
        let starts = starts_table(gpu, self.grouping);
        let pass = Pass::of(t);
        let binds = AttentionBinds {
            q: match pass {
                Pass::Decode => qb.uniform_window(),
                Pass::Prefill => qb.binding(),
            },
            kc: kb,
            vc: vb,
            ml: &ml,
            part: &part,
            starts: &starts,
        };
        let max_rep = self.grouping.max_rep();
        let attention = gpu_ops::attention(p, binds, pass, max_rep, self.kv);
        run(gpu, &attention, Some(&st), self.pos0, t);
        let none = f32s(gpu, &[0.0; 4]);
        let rp = ReduceParams {
            n_heads: nh as u32,
            head_dim: hd as u32,
            max_chunks: max_chunks as u32,
            map_o: omap.is_some() as u32,
            layer: 1,
            _pad: [0; 3],
        };
        let reduce = gpu_ops::attention_reduce(rp, &ml, &part, omap.unwrap_or(&none), &out);
        run(gpu, &reduce, Some(&st), self.pos0, t);
        (read(gpu, &out, t * nh * hd), attention.kernel)
    }

    /// attention_probe.wgsl on q and the K buffer: the last token's weights, `[H][seen]` (seen
    /// = pos0 + T positions; the kernel's output rows are `capacity` apart).
    pub fn probe(&self, gpu: &Gpu, q: &[f32], kb: &Buf, capacity: usize) -> Vec<Vec<f32>> {
        let (nh, seen) = (self.grouping.n_heads(), self.pos0 + self.t);
        let out = gpu.storage("probe", (nh * capacity * 4) as u64).unwrap();
        let p = ProbeParams {
            n_heads: nh as u32,
            groups: self.grouping.groups() as u32,
            head_dim: self.hd as u32,
            capacity: capacity as u32,
            scale: 1.0 / (self.hd as f32).sqrt(),
            window: self.window as u32,
            rows: self.rows as u32,
            _pad: 0,
        };
        let (qb, starts) = (f32s(gpu, q), starts_table(gpu, self.grouping));
        let probe = gpu_ops::attention_probe(p, qb.binding(), (kb, self.kv), &starts, &out);
        run(
            gpu,
            &probe,
            Some(&step(gpu, self.pos0, self.t)),
            self.pos0,
            self.t,
        );
        let got = read(gpu, &out, nh * capacity);
        got.chunks_exact(capacity)
            .map(|r| r[..seen].to_vec())
            .collect()
    }

    /// The probe's CPU twin over the cache's rows `kc` (`[G][rows][hd]`, as [`ops::Rows`]):
    /// query head h's softmax over the positions it sees of KV head `kv_head(h)`'s keys, 0
    /// before a sliding window (`ops::attention_weights`).
    pub fn probe_reference<R: ops::Rows + ?Sized>(&self, q: &[f32], kc: &R, h: usize) -> Vec<f32> {
        let (hd, rows, seen) = (self.hd, self.rows, self.pos0 + self.t);
        let base = self.grouping.kv_head(h) * rows;
        let first = ops::window_start(seen - 1, self.window);
        let mut buf = vec![0.0f32; hd];
        let k: Vec<f32> = ops::ring_rows(first, seen - 1, rows)
            .into_iter()
            .flat_map(|r| base + r.start..base + r.end)
            .flat_map(|r| kc.row(r, &mut buf).to_vec())
            .collect();
        let at = ((self.t - 1) * self.grouping.n_heads() + h) * hd;
        let w = ops::attention_weights(&q[at..at + hd], &k, 1.0 / (hd as f32).sqrt());
        [vec![0.0; first], w].concat()
    }
}

/// The `starts` table of the attention kernels for `grouping`: `[G + 1]`, KV head g's query
/// heads being `starts[g] .. starts[g + 1]`.
pub(crate) fn starts_table(gpu: &Gpu, grouping: Grouping) -> Buf {
    let starts: Vec<u32> = (0..grouping.groups())
        .map(|g| grouping.members(g).start as u32)
        .chain([grouping.n_heads() as u32])
        .collect();
    gpu.storage_with("starts", bytemuck::cast_slice(&starts))
        .unwrap()
}

/// attention_probe.wgsl vs ops::attention_weights: the last token's weights of every
/// query head over its KV head's positions (1e-5), for equal and unequal groups, a decode
/// step and a prefill chunk, contexts shorter and longer than a workgroup, with and without a
/// sliding window (0 before it); each row sums to 1.
#[test]
fn attention_probe_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng(16);
    let (nh, cap, hd) = (9usize, 300usize, 64usize);
    for (t, pos0, window) in [
        (1usize, 0usize, 0usize),
        (1, 40, 0),
        (1, 257, 0),
        (4, 90, 0),
        (1, 257, 100),
    ] {
        // The windowed case reads a ring of 200 rows that its window wraps around.
        let rows = if window > 0 { 200 } else { cap };
        for groups in [1usize, 2, 3, 9] {
            let grouping = Grouping::new(nh, 3, groups).unwrap();
            let q = rng.vec(t * nh * hd);
            let kc = rng.vec(groups * rows * hd);
            let kb = f32s(gpu, &kc);
            let case = GpuAttention {
                t,
                pos0,
                hd,
                window,
                rows,
                grouping,
                kv: KvType::F32,
            };
            let got = case.probe(gpu, &q, &kb, cap);
            for (h, row) in got.iter().enumerate() {
                let want = case.probe_reference(&q, &kc, h);
                let what = format!("probe T={t} pos0={pos0} G={groups} head {h}");
                assert_close(&what, row, &want, 1e-5);
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "{what}: weights sum to {sum}");
            }
        }
    }
}
