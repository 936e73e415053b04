//! Recording a forward into one compute pass, submitting it, and reading back what it made:
//! a token id (4 bytes), the last row's logits, every row's logits, or the residual stream
//! after each layer (for comparing with the CPU oracle).

use super::resources::{Activations, ModelWeights};
use super::{GpuEngine, PREFILL_CHUNK};
use crate::engine::{check_input, Engine, EngineError};
use crate::gpu::context::{Buf, Gpu, Uniforms};
use crate::gpu::kernels::{ProductMode, NON_FINITE_TOKEN};
use crate::gpu::ops::{self, Op, OpList, ProductParams, SamplingUniform, Step};
use crate::gpu::GpuError;
use crate::model::ModelConfig;
use crate::sampling::SamplingParams;

/// Where a forward's input tokens come from.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    /// Written from the CPU.
    Ids(&'a [u32]),
    /// The one token the previous submit sampled, copied on the GPU from `token_out`
    /// (decoding ahead, see `ahead.rs`).
    Sampled,
}

impl Input<'_> {
    pub fn len(self) -> usize {
        match self {
            Input::Ids(ids) => ids.len(),
            Input::Sampled => 1,
        }
    }
}

/// What a forward returns.
#[derive(Clone, Copy)]
enum Want {
    /// The greedy next token (argmax on the GPU).
    Token,
    /// The next token sampled on the GPU with these settings, at this generation step.
    Sampled(SamplingParams, u32),
    LastLogits,
    AllLogits,
    /// Nothing: the forward is only waited for (a chunk of a long prefill).
    Nothing,
}

impl GpuEngine {
    /// `ids` may be fed next.
    pub(super) fn validate(&self, ids: &[u32]) -> Result<(), EngineError> {
        check_input(ids, self.cfg.vocab_size, self.pos, self.capacity)
    }

    /// Records one chunk of ≤ PREFILL_CHUNK tokens at position `self.pos`: the embedding and
    /// the layers (only the first `body_ops` ops if given), then `tail`.
    pub(super) fn record(
        &self,
        input: Input<'_>,
        tail: &[Op],
        body_ops: Option<usize>,
    ) -> Result<wgpu::CommandEncoder, EngineError> {
        let n = input.len();
        let step = Step::new(self.pos, n);
        let queue = &self.gpu.queue;
        queue.write_buffer(&self.act.step.buffer, 0, bytemuck::bytes_of(&step));
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("forward"),
            });
        match input {
            Input::Ids(ids) => {
                queue.write_buffer(&self.act.tokens.buffer, 0, bytemuck::cast_slice(ids))
            }
            Input::Sampled => {
                let (from, to) = (&self.act.token_out.buffer, &self.act.tokens.buffer);
                enc.copy_buffer_to_buffer(from, 0, to, 0, 4)
            }
        }
        let program = self.program()?.body(n);
        let all = &program.ops;
        let body = &all[..body_ops.unwrap_or(all.len()).min(all.len())];
        // The attention view's probe, after its layer's cache is written (whole forwards only).
        let probe = match (self.probe, body_ops) {
            (Some(l), None) => program.cache_written.get(l).zip(program.probe.get(l)),
            _ => None,
        };
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("forward"),
                timestamp_writes: None,
            });
            for (i, op) in body.iter().enumerate() {
                op.dispatch(&mut pass, n as u32, step.n_chunks);
                if let Some((_, probe)) = probe.filter(|(&at, _)| at == i) {
                    probe.dispatch(&mut pass, n as u32, step.n_chunks);
                }
            }
            for op in tail {
                op.dispatch(&mut pass, n as u32, step.n_chunks);
            }
        }
        Ok(enc)
    }

    /// Writes the uniform of `sample.wgsl` for the next submit.
    pub(super) fn write_sampling(&self, p: &SamplingParams, step: u32) {
        let u = SamplingUniform {
            vocab: self.cfg.vocab_size as u32,
            top_k: p.top_k.min(u32::MAX as usize) as u32,
            top_p: p.top_p,
            temperature: p.temperature,
            seed: p.seed,
            step,
            _pad: [0; 2],
        };
        let buf = &self.act.sampling.buffer;
        self.gpu.queue.write_buffer(buf, 0, bytemuck::bytes_of(&u));
    }

    /// Feeds `ids` in chunks of PREFILL_CHUNK and reads back what `want` asks of the last
    /// chunk (or of every chunk, for all logits).
    async fn run(&mut self, ids: &[u32], want: Want) -> Result<Vec<u8>, EngineError> {
        self.drop_ahead();
        self.validate(ids)?;
        self.gpu.check()?;
        if matches!(want, Want::AllLogits) && self.all_logits.is_none() {
            let (gpu, cfg, m, a) = (&self.gpu, &self.cfg, &self.model, &self.act);
            self.all_logits = Some(AllLogits::new(gpu, cfg, m, a)?);
        }
        let vocab = self.cfg.vocab_size as u64;
        let mut out = Vec::new();
        let chunks: Vec<&[u32]> = ids.chunks(PREFILL_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let program = self.program()?;
            let all = self.all_logits.as_ref();
            let tail: &[Op] = match (want, all) {
                (Want::AllLogits, Some(all)) => &all.ops,
                (Want::Sampled(..), _) if last => &program.tail_sample,
                (Want::Token | Want::LastLogits, _) if last => &program.tail_token,
                _ => &[],
            };
            if let (Want::Sampled(p, step), true) = (want, last) {
                self.write_sampling(&p, step);
            }
            let mut enc = self.record(Input::Ids(chunk), tail, None)?;
            let (src, staging, size) = match (want, all) {
                (Want::AllLogits, Some(all)) => {
                    (&all.logits, &all.staging, chunk.len() as u64 * vocab * 4)
                }
                (Want::LastLogits, _) if last => (&self.act.logits, &self.act.staging, vocab * 4),
                (_, _) if last => (&self.act.token_out, &self.act.staging, 4),
                _ => (&self.act.token_out, &self.act.staging, 0),
            };
            if size > 0 {
                enc.copy_buffer_to_buffer(&src.buffer, 0, &staging.buffer, 0, size);
                let bytes = self.gpu.submit_and_read(enc, &staging.buffer, size).await?;
                out.extend(bytes);
            } else {
                self.gpu.submit(enc);
            }
            self.pos += chunk.len();
            self.probe_fed();
        }
        self.gpu.check()?;
        Ok(out)
    }

    /// Feeds `ids` and returns logits `[vocab]` of the last token, or `[T][vocab]` of all.
    pub(super) async fn run_forward(
        &mut self,
        ids: &[u32],
        all: bool,
    ) -> Result<Vec<f32>, EngineError> {
        let want = if all {
            Want::AllLogits
        } else {
            Want::LastLogits
        };
        let pos0 = self.pos;
        let logits: Vec<f32> = bytemuck::pod_collect_to_vec(&self.run(ids, want).await?);
        let vocab = self.cfg.vocab_size;
        if let Some(i) = logits.iter().position(|l| !l.is_finite()) {
            let row = if all { i / vocab } else { ids.len() - 1 };
            let at = format!("in the logits at position {}", pos0 + row);
            return Err(EngineError::NonFinite(at));
        }
        Ok(logits)
    }

    /// Feeds `ids` and samples the next token on the GPU (argmax.wgsl when greedy, else
    /// sample.wgsl, the twin of [`crate::sampling::sample`]); 4 bytes are read back.
    pub(super) async fn run_forward_sample(
        &mut self,
        ids: &[u32],
        p: &SamplingParams,
        step: u32,
    ) -> Result<u32, EngineError> {
        p.validate().map_err(EngineError::BadSampling)?;
        let want = if p.is_greedy() {
            Want::Token
        } else {
            Want::Sampled(*p, step)
        };
        let bytes = self.run(ids, want).await?;
        self.checked_token(bytemuck::pod_read_unaligned(&bytes[..4]), step)
    }

    /// Feeds `ids` and waits for the GPU to be done with them; nothing is computed past the
    /// last layer (a chunk of a long prefill, between which a page can stop or regroup).
    pub(super) async fn run_feed(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        self.run(ids, Want::Nothing).await.map(drop)
    }

    /// A token id the sampler wrote at generation `step`: in the vocabulary, or an error.
    pub(super) fn checked_token(&self, id: u32, step: u32) -> Result<u32, EngineError> {
        if id == NON_FINITE_TOKEN {
            let at = format!("in the logits at generation step {step}");
            return Err(EngineError::NonFinite(at));
        }
        if id as usize >= self.cfg.vocab_size {
            let why = format!("the sampler returned token {id}, outside the vocabulary");
            return Err(crate::gpu::GpuError::Internal(why).into());
        }
        Ok(id)
    }

    /// The residual stream after every block for `ids` fed from an empty cache:
    /// `[n_layers][T·dim]` (T ≤ PREFILL_CHUNK). One submit; for comparing with the CPU oracle.
    pub async fn hidden_states(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.reset();
        self.validate(ids)?;
        if ids.len() > PREFILL_CHUNK {
            return Err(EngineError::ContextFull {
                needed: ids.len(),
                capacity: PREFILL_CHUNK,
            });
        }
        let row = (ids.len() * self.cfg.dim * 4) as u64;
        let n_layers = self.cfg.n_layers;
        let staging = self.gpu.buffer(
            "hidden states",
            row * n_layers as u64,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let body = self.program()?.body(ids.len());
        let mut enc = self.record(Input::Ids(ids), &[], Some(body.layers[0].end))?;
        let step = Step::new(0, ids.len());
        for (l, ops) in body.layers.iter().enumerate() {
            if l > 0 {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("layer"),
                    timestamp_writes: None,
                });
                for op in &body.ops[ops.clone()] {
                    op.dispatch(&mut pass, step.n_tokens, step.n_chunks);
                }
            }
            let x = &self.act.x.buffer;
            enc.copy_buffer_to_buffer(x, 0, &staging.buffer, row * l as u64, row);
        }
        let size = row * n_layers as u64;
        let bytes = self.gpu.submit_and_read(enc, &staging.buffer, size).await?;
        self.pos = ids.len();
        Ok(bytes
            .chunks_exact(row as usize)
            .map(bytemuck::pod_collect_to_vec)
            .collect())
    }
}

/// The logits of every row of a prefill chunk (what perplexity reads): a `[T][vocab]` buffer,
/// its staging twin and the ops that fill it — ~50 MB for the default model, so made on first
/// use, not at load.
pub(super) struct AllLogits {
    pub logits: Buf,
    pub staging: Buf,
    /// Final norm (every row), head (every row).
    pub ops: Vec<Op>,
    _uniforms: Uniforms,
}

impl AllLogits {
    pub fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        m: &ModelWeights,
        a: &Activations,
    ) -> Result<Self, GpuError> {
        let bytes = PREFILL_CHUNK as u64 * cfg.vocab_size as u64 * 4;
        let logits = gpu.storage("logits of every row", bytes)?;
        use wgpu::BufferUsages as U;
        let staging = gpu.buffer("staging of every row", bytes, U::MAP_READ | U::COPY_DST)?;
        let (uniforms, ops) = {
            let mut list = OpList::default();
            let p = ops::RmsNormParams {
                dim: cfg.dim as u32,
                eps: cfg.rms_eps,
                last_row_only: 0,
                add: 0,
            };
            list.push(ops::rmsnorm(p, &a.x, &m.output_norm, &a.xb));
            let p =
                ProductParams::new(cfg.dim as u32, cfg.vocab_size as u32, ProductMode::Store, 0);
            for spec in ops::matmul(m.head(), p, &a.xb, &logits, PREFILL_CHUNK) {
                list.push(spec);
            }
            list.finish(gpu, &a.step)?
        };
        Ok(AllLogits {
            logits,
            staging,
            ops,
            _uniforms: uniforms,
        })
    }
}
