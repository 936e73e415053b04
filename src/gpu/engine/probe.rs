//! The attention view's readback: while a layer is watched, each forward also runs
//! attention_probe.wgsl after that layer's kv_store (one more dispatch in the same pass) and
//! [`Engine::attention_weights`] copies its `[H][capacity]` weights back through a staging
//! buffer made once (one more submit).
//! Unwatched, a forward records, submits and reads exactly what it did before; while watched,
//! decode does not run a step ahead (`ahead.rs`: that step would overwrite the weights first).

use super::GpuEngine;
use crate::engine::{check_probe_layer, AttentionWeights, Engine, EngineError};

impl GpuEngine {
    /// Watches layer `layer`'s attention, or nothing ([`Engine::set_attention_probe`]).
    pub(super) fn watch_layer(&mut self, layer: Option<usize>) -> Result<(), EngineError> {
        check_probe_layer(&self.cfg, layer)?;
        self.drop_ahead();
        self.probe = layer;
        self.probe_seen = None;
        Ok(())
    }

    /// Records that the forward just submitted wrote the watched layer's weights for the
    /// positions up to `pos`.
    pub(super) fn probe_fed(&mut self) {
        if self.probe.is_some() {
            self.probe_seen = Some(self.pos);
        }
    }

    /// The watched layer's weights for the last token fed: `[H][positions]`.
    pub(super) async fn read_attention_weights(
        &mut self,
    ) -> Result<Option<AttentionWeights>, EngineError> {
        let (Some(layer), Some(positions)) = (self.probe, self.probe_seen) else {
            return Ok(None);
        };
        // Rows of `capacity` floats: read up to the last row's `positions`.
        let (cap, nh) = (self.capacity, self.cfg.n_heads);
        let size = (((nh - 1) * cap + positions) * 4) as u64;
        let (probe, staging) = (&self.act.probe.buffer, &self.act.probe_staging.buffer);
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(probe, 0, staging, 0, size);
        let bytes = self.gpu.submit_and_read(enc, staging, size).await?;
        let all: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes); // [H][cap], the last row cut
        let weights = (0..nh)
            .flat_map(|h| &all[h * cap..h * cap + positions])
            .copied()
            .collect();
        Ok(Some(AttentionWeights {
            layer,
            positions,
            weights,
        }))
    }
}
