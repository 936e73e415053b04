//! Calibration on the GPU (`crate::engine::calibrate`): the engine carries the calibration
//! sequences through one layer at a time. The hidden states live on the host between layers
//! (`[t][dim]` each, read back and written again per chunk of PREFILL_CHUNK tokens); each
//! layer runs its prefill ops — all of them, or only those before its KV append, for the native
//! q, k0 and v0 that the fit's statistics need.

use super::submit::Input;
use super::{GpuEngine, PREFILL_CHUNK};
use crate::engine::{check_len, Engine, EngineError, LayerWalk};
use crate::gpu::context::Buf;
use crate::gpu::ops::{Op, Step};
use crate::gpu::GpuError;
use crate::model::{KvType, ModelError};
use crate::regroup::{LayerMaps, Regrouping, VMap};
use async_trait::async_trait;
use std::sync::Arc;

impl GpuEngine {
    /// Runs `ops` for the forward of `step`, then reads back the first `bytes` of each of
    /// `reads`.
    async fn run_ops(
        &self,
        ops: &[Op],
        step: Step,
        reads: &[(&Buf, u64)],
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        let total: u64 = reads.iter().map(|r| r.1).sum();
        let staging = self.gpu.buffer(
            "calibration readback",
            total,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let queue = &self.gpu.queue;
        queue.write_buffer(&self.act.step.buffer, 0, bytemuck::bytes_of(&step));
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            ops.iter()
                .for_each(|op| op.dispatch(&mut pass, step.n_tokens, step.n_chunks));
        }
        let mut at = 0;
        for (buf, bytes) in reads {
            enc.copy_buffer_to_buffer(&buf.buffer, 0, &staging.buffer, at, *bytes);
            at += bytes;
        }
        let data = self
            .gpu
            .submit_and_read(enc, &staging.buffer, total)
            .await?;
        let mut out = Vec::new();
        let mut rest = &data[..];
        for (_, bytes) in reads {
            let (head, tail) = rest.split_at((*bytes as usize).min(rest.len()));
            out.push(head.to_vec());
            rest = tail;
        }
        Ok(out)
    }

    /// Layer `l`'s prefill ops: all of them, or only those before its KV append.
    fn layer_ops(&self, l: usize, whole: bool) -> Result<&[Op], EngineError> {
        let body = &self.program()?.prefill;
        let range = body.layers.get(l).ok_or_else(|| no_layer(l))?;
        let end = if whole { range.end } else { body.kv_store[l] };
        Ok(&body.ops[range.start..end])
    }

    /// Runs layer `l`'s ops on `x` (`[t][dim]`, one sequence from position 0) chunk by chunk:
    /// all of them (`whole`), x read back into `x`; or those before the KV append, each
    /// chunk's q, k0 and v0 read back (returned in that order, chunk after chunk).
    async fn walk_layer(
        &mut self,
        l: usize,
        x: &mut [f32],
        whole: bool,
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        let (hd, h, g0) = (self.cfg.head_dim, self.cfg.n_heads, self.cfg.n_kv_heads);
        let dim = self.cfg.dim;
        check_len(x.len() / dim, self.capacity)?;
        self.reset();
        let mut out = Vec::new();
        for (c, chunk) in x.chunks_mut(PREFILL_CHUNK * dim).enumerate() {
            let n = chunk.len() / dim;
            let bytes: &[u8] = bytemuck::cast_slice(chunk);
            self.gpu.queue.write_buffer(&self.act.x.buffer, 0, bytes);
            let a = &self.act;
            let f = (4 * hd * n) as u64;
            let wanted = match whole {
                true => vec![(&a.x, (n * dim * 4) as u64)],
                false => vec![
                    (&a.q, f * h as u64),
                    (&a.k0, f * g0 as u64),
                    (&a.v0, f * g0 as u64),
                ],
            };
            let ops = self.layer_ops(l, whole)?;
            let mut got = self
                .run_ops(ops, Step::new(c * PREFILL_CHUNK, n), &wanted)
                .await?;
            if whole {
                let new_x = got.pop().unwrap_or_default();
                let new_x: Vec<f32> = bytemuck::pod_collect_to_vec(&new_x);
                chunk.copy_from_slice(&new_x[..chunk.len().min(new_x.len())]);
            }
            out.push(got);
        }
        self.gpu.check()?;
        Ok(out.into_iter().flatten().collect())
    }

    /// Writes layer `l`'s maps into the cache's map buffers (laid out by
    /// [`LayerMaps::expanded`]: dense V, q and output maps).
    fn write_layer_maps(&self, l: usize, m: &LayerMaps) -> Result<(), EngineError> {
        let c = &self.state()?.0;
        let (Some(qmap), Some(omap), true) = (&c.qmap, &c.omap, c.dense_v) else {
            return Err(GpuError::Internal("calibration needs the full map layout".into()).into());
        };
        let (hd, h) = (self.cfg.head_dim, self.cfg.n_heads);
        let VMap::Dense(v) = &m.v else {
            return Err(GpuError::Internal("calibrated maps have a dense V".into()).into());
        };
        super::resources::check_slots(std::slice::from_ref(m), hd)?;
        let q = m.q_or_identity(h, hd);
        let o = m.o_or_identity(h, hd);
        let k: &[f32] = bytemuck::cast_slice(&m.k);
        let q: &[f32] = bytemuck::cast_slice(&q);
        let queue = &self.gpu.queue;
        // K and V maps start at the heads of the layers before (they may differ per layer).
        let (g0, g) = (c.group0[l], c.grouping(l).groups());
        for (buf, values, at) in [
            (&c.kmap, k, g0 * k.len() / g),
            (&c.vmap, &v[..], g0 * v.len() / g),
            (qmap, q, l * q.len()),
            (omap, &o[..], l * o.len()),
        ] {
            let at = (at * 4) as u64;
            queue.write_buffer(&buf.buffer, at, bytemuck::cast_slice(values));
        }
        if let Some(slots) = &c.slots {
            // Layer l's rows start after the H + G_m rows of every layer m before it.
            let rows = m.slot_rows(c.grouping(l), hd / 2);
            let at = ((l * h + c.group0[l]) * (hd / 2) * 4) as u64;
            queue.write_buffer(&slots.buffer, at, bytemuck::cast_slice(&rows));
        }
        Ok(())
    }
}

fn no_layer(l: usize) -> EngineError {
    EngineError::Model(ModelError::BadConfig(format!("the model has no layer {l}")))
}

#[async_trait(?Send)]
impl LayerWalk for GpuEngine {
    fn start(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError> {
        // Each sequence must fit the cache: `walk_layer` says so if one does not.
        // The walk's own cache is f32 whatever the engine's type: the fit does not depend on
        // it. The engine's next regrouping rebuilds the cache in its type.
        self.rebuild(r, KvType::F32)
    }

    async fn embed_rows(&mut self, ids: &[u32]) -> Result<Vec<f32>, EngineError> {
        self.validate(ids)?;
        let dim = self.cfg.dim;
        let mut x = Vec::with_capacity(ids.len() * dim);
        for chunk in ids.chunks(PREFILL_CHUNK) {
            let enc = self.record(Input::Ids(chunk), &[], Some(1))?;
            let bytes = (chunk.len() * dim * 4) as u64;
            let staging = self.gpu.buffer(
                "embedding readback",
                bytes,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            )?;
            let mut enc = enc;
            enc.copy_buffer_to_buffer(&self.act.x.buffer, 0, &staging.buffer, 0, bytes);
            let rows = self
                .gpu
                .submit_and_read(enc, &staging.buffer, bytes)
                .await?;
            x.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&rows));
        }
        Ok(x)
    }

    async fn native_qkv(&mut self, l: usize, x: &[f32]) -> Result<[Vec<f32>; 3], EngineError> {
        let mut x = x.to_vec();
        let chunks = self.walk_layer(l, &mut x, false).await?;
        let mut out: [Vec<f32>; 3] = Default::default();
        for (i, bytes) in chunks.iter().enumerate() {
            out[i % 3].extend(bytemuck::pod_collect_to_vec::<u8, f32>(bytes));
        }
        Ok(out)
    }

    async fn run_layer(&mut self, l: usize, x: &mut [f32]) -> Result<(), EngineError> {
        self.walk_layer(l, x, true).await?;
        self.reset();
        Ok(())
    }

    fn set_layer_maps(&mut self, l: usize, maps: &LayerMaps) -> Result<(), EngineError> {
        self.write_layer_maps(l, maps)?;
        let r = Arc::make_mut(&mut self.regrouping);
        *r.layers.get_mut(l).ok_or_else(|| no_layer(l))? = maps.clone();
        r.check(&self.cfg)?;
        Ok(())
    }
}
