//! Decoding one step ahead. The step that feeds token N is submitted before token N is read
//! back: its embedding takes the id that the previous step's sampler left in `token_out` (a
//! 4-byte copy on the GPU, [`Input::Sampled`]), so the GPU already has step N + 1 while the
//! CPU waits for token N, shows it and encodes the next step — in the browser, while
//! `mapAsync` resolves and the page yields to its event loop.
//!
//! The tokens are those of waiting for each step: the same kernels on the same inputs with the
//! same sampling step (the tests compare the two). This rests on the queue's order (WebGPU
//! spec, "queue timeline": `writeBuffer` and submits run in the order they were called), so the
//! step's uniforms written for step N + 1 never reach step N. A step submitted ahead whose input
//! is not wanted after all (the stop token came, the last of `max_tokens`, Stop, a change of G)
//! is dropped: its positions are given back, and the next submit overwrites what it wrote.

use super::submit::Input;
use super::{GpuEngine, PREFILL_CHUNK};
use crate::engine::{Engine, EngineError, Generator};
use crate::gpu::{Buf, GpuError};
use crate::sampling::SamplingParams;

type Mapped = futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>;

/// A submitted step whose sampled token is on its way back.
pub(super) struct InFlight {
    /// `[1]` u32, `MAP_READ`; its mapping was requested right after the submit.
    readback: Buf,
    mapped: Mapped,
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    index: wgpu::SubmissionIndex,
    /// The generation step whose token it samples.
    step: u32,
    /// Positions the submit added to the cache.
    pub(super) fed: usize,
}

impl GpuEngine {
    /// The next token of `gen` (its bookkeeping updated), or `None` once it is done
    /// ([`Engine::next_token`]). With decoding ahead on, the step that feeds this token is
    /// submitted before the token is read, whenever `gen` may want another after it; call this
    /// again without touching the engine in between, or that step is dropped (a reset, a
    /// regroup and the other forwards drop it).
    pub(super) async fn next_token_ahead(
        &mut self,
        gen: &mut Generator,
    ) -> Result<Option<u32>, EngineError> {
        let p = *gen.sampling();
        let Some((ids, step)) = gen.next_input() else {
            self.drop_ahead();
            return Ok(None);
        };
        let ahead_fits = ids.len() == 1 && self.in_flight.len() == 1;
        if !(ahead_fits && self.in_flight.front().is_some_and(|f| f.step == step)) {
            self.drop_ahead();
            self.submit_sampled(Input::Ids(ids), &p, step)?;
        }
        // A step ahead only where it fits in the cache: a generator made with the cache's
        // capacity never wants more, and one that does gets `ContextFull` on the next call,
        // after this token, as when waiting for each step.
        // (Not while the attention view reads each step's weights: the step ahead would
        // overwrite them before they are read.)
        let ahead = self.decode_ahead && self.probe.is_none();
        if ahead && gen.may_want_after(step) && self.pos < self.capacity {
            self.submit_sampled(Input::Sampled, &p, step + 1)?;
        }
        let id = self.read_sampled().await?;
        gen.accept(id);
        if gen.is_done() {
            self.drop_ahead();
        }
        Ok(Some(id))
    }

    /// Submitted steps whose sampled token is not read yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Submits a forward of `input` that ends by sampling with `p` at generation `step` and
    /// copying the token id to a readback buffer, whose mapping it requests.
    fn submit_sampled(
        &mut self,
        input: Input<'_>,
        p: &SamplingParams,
        step: u32,
    ) -> Result<(), EngineError> {
        p.validate().map_err(EngineError::BadSampling)?;
        let last = match input {
            Input::Ids(ids) => {
                self.validate(ids)?;
                self.gpu.check()?;
                let split = (ids.len() - 1) / PREFILL_CHUNK * PREFILL_CHUNK;
                self.prefill_chunks(&ids[..split])?;
                Input::Ids(&ids[split..])
            }
            Input::Sampled if self.in_flight.is_empty() => {
                return Err(
                    GpuError::Internal("no submitted step to decode ahead from".into()).into(),
                )
            }
            Input::Sampled if self.pos >= self.capacity => {
                return Err(EngineError::ContextFull {
                    needed: self.pos + 1,
                    capacity: self.capacity,
                })
            }
            Input::Sampled => Input::Sampled,
        };
        let readback = self.take_readback()?;
        let program = self.program()?;
        let tail = if p.is_greedy() {
            &program.tail_token
        } else {
            self.write_sampling(p, step);
            &program.tail_sample
        };
        let mut enc = self.record(last, tail, None)?;
        enc.copy_buffer_to_buffer(&self.act.token_out.buffer, 0, &readback.buffer, 0, 4);
        let index = self.gpu.submit(enc);
        let (tx, mapped) = futures_channel::oneshot::channel();
        readback
            .buffer
            .slice(..4)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        self.pos += last.len();
        self.probe_fed();
        let fed = input.len();
        self.in_flight.push_back(InFlight {
            readback,
            mapped,
            index,
            step,
            fed,
        });
        Ok(())
    }

    /// Submits `ids` (whole chunks of PREFILL_CHUNK) without a tail.
    fn prefill_chunks(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        for chunk in ids.chunks(PREFILL_CHUNK) {
            let enc = self.record(Input::Ids(chunk), &[], None)?;
            self.gpu.submit(enc);
            self.pos += chunk.len();
            self.probe_fed();
        }
        Ok(())
    }

    /// A free 4-byte readback buffer.
    fn take_readback(&mut self) -> Result<Buf, GpuError> {
        match self.readbacks.pop() {
            Some(b) => Ok(b),
            None => self.gpu.buffer(
                "sampled token",
                4,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
        }
    }

    /// Waits for the oldest submitted step and returns its token; on an error its positions
    /// are given back with those of the steps after it.
    async fn read_sampled(&mut self) -> Result<u32, EngineError> {
        let Some(f) = self.in_flight.pop_front() else {
            return Err(GpuError::Internal("no submitted step to read".into()).into());
        };
        let (fed, step) = (f.fed, f.step);
        match self.read_token(f).await {
            Ok(id) => self.checked_token(id, step),
            Err(e) => {
                self.pos = self.pos.saturating_sub(fed);
                self.drop_ahead();
                Err(e.into())
            }
        }
    }

    async fn read_token(&mut self, f: InFlight) -> Result<u32, GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        self.gpu
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(f.index),
                timeout: None,
            })
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        let mapped = f
            .mapped
            .await
            .map_err(|_| GpuError::DeviceLost("the map request was dropped".into()))?;
        self.gpu.check()?;
        mapped.map_err(|e| GpuError::Internal(format!("mapping the sampled token: {e}")))?;
        let id: u32 = {
            let view = f
                .readback
                .buffer
                .slice(..4)
                .get_mapped_range()
                .map_err(|e| GpuError::Internal(format!("reading the sampled token: {e}")))?;
            bytemuck::pod_read_unaligned(&view[..4])
        };
        f.readback.buffer.unmap();
        self.readbacks.push(f.readback);
        Ok(id)
    }
}
