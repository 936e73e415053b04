//! Kernel timings for the benchmark (`gqa-lab bench --backend gpu`): ops of the decode step
//! submitted alone and waited for. What the figures mean and how they were measured:
//! benches/README.md.

use super::GpuEngine;
use crate::engine::EngineError;
use crate::gpu::kernels::Kernel;
use crate::gpu::ops::{self, Op, OpList, Step};

impl GpuEngine {
    /// Milliseconds per decode step spent in attention (attention + its reduction, all
    /// layers) at the current sequence length: those kernels alone, the median of `iters`
    /// steps, one submit each, waited for.
    pub async fn time_attention(&mut self, iters: usize) -> Result<f64, EngineError> {
        let decode = &self.program()?.decode;
        let attention: Vec<&Op> = decode.attention.iter().map(|&i| &decode.ops[i]).collect();
        self.time_ops(&attention, iters).await
    }

    /// Milliseconds per decode step spent in each kernel, by kernel name: a decode step's
    /// ops of one kernel submitted alone (each time includes the dispatches' overhead). Like
    /// [`Self::time_attention`] it reruns ops of the last step.
    pub async fn time_kernels(
        &self,
        iters: usize,
    ) -> Result<Vec<(&'static str, f64)>, EngineError> {
        let program = self.program()?;
        let step: Vec<&Op> = program
            .decode
            .ops
            .iter()
            .chain(&program.tail_token)
            .collect();
        let mut kernels: Vec<Kernel> = step.iter().map(|op| op.kernel).collect();
        kernels.sort_by_key(|k| k.name());
        kernels.dedup();
        let mut times = Vec::new();
        for k in kernels {
            let ops: Vec<&Op> = step.iter().copied().filter(|op| op.kernel == k).collect();
            times.push((k.name(), self.time_ops(&ops, iters).await?));
        }
        Ok(times)
    }

    /// Microseconds one dispatch costs beyond its work, as the GPU runs the decode step: the
    /// smallest op there is — a SwiGLU of 4 elements, one workgroup whose other invocations
    /// return at once — dispatched as many times as a decode step has dispatches, in one
    /// submit, against once. The decode step cannot run faster than `1 / (dispatches ×
    /// this)`. It overwrites 4 gate activations, which the next forward recomputes.
    pub async fn time_dispatch_overhead(&mut self, iters: usize) -> Result<f64, EngineError> {
        let a = &self.act;
        let mut list = OpList::default();
        list.push(ops::swiglu(4, false, &a.gate, &a.up));
        // The uniforms stay alive until the probe's submits are done.
        let (_uniforms, probe) = list.finish(&self.gpu, &a.step)?;
        let n = self.dispatches_per_token();
        let many: Vec<&Op> = probe.iter().cycle().take(n).collect();
        let t_many = self.time_ops(&many, iters).await?;
        let t_one = self.time_ops(&many[..1], iters).await?;
        Ok((t_many - t_one).max(0.0) * 1e3 / (n - 1).max(1) as f64)
    }

    /// Milliseconds per submit of `ops` (one compute pass, waited for by a 4-byte readback) at
    /// the current sequence length: the median of `iters` submits, so that one submit slowed
    /// by the rest of the machine does not move the figure.
    async fn time_ops(&self, ops: &[&Op], iters: usize) -> Result<f64, EngineError> {
        let step = Step::new(self.pos, 1);
        let queue = &self.gpu.queue;
        queue.write_buffer(&self.act.step.buffer, 0, bytemuck::bytes_of(&step));
        let mut ms = Vec::with_capacity(iters.max(1));
        for _ in 0..iters.max(1) {
            let t0 = web_time::Instant::now();
            let mut enc = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                ops.iter()
                    .for_each(|op| op.dispatch(&mut pass, 1, step.n_chunks));
            }
            let (from, to) = (&self.act.token_out.buffer, &self.act.staging.buffer);
            enc.copy_buffer_to_buffer(from, 0, to, 0, 4);
            self.gpu.submit_and_read(enc, to, 4).await?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    }
}
