//! The [`Engine`] contract for [`CpuEngine`]: both CPU backends, the oracle and `cpu-q8`.

use super::kv::KvCache;
use super::CpuEngine;
use crate::engine::{check_kv_type, check_len, check_probe_layer, AttentionWeights, Backend};
use crate::engine::{Engine, EngineError};
use crate::model::{KvType, ModelConfig};
use crate::ops;
use crate::regroup::Regrouping;
use async_trait::async_trait;
use std::sync::Arc;

impl CpuEngine {
    /// A new, empty cache for `groups` KV heads of type `t` (the old one freed first).
    pub(super) fn rebuild_cache(&mut self, groups: &[usize], t: KvType) {
        let capacity = self.cache.capacity;
        self.cache = KvCache::empty(capacity);
        self.cache = KvCache::new(&self.cfg, groups, capacity, t);
        self.len = 0;
        self.probe_weights = None;
    }
}

#[async_trait(?Send)]
impl Engine for CpuEngine {
    fn backend(&self) -> Backend {
        match self.quantized {
            true => Backend::CpuQ8,
            false => Backend::Cpu,
        }
    }

    fn device(&self) -> String {
        let threads = ops::threads();
        let simd = match () {
            _ if cfg!(target_feature = "simd128") => "WebAssembly SIMD128, ",
            _ if cfg!(target_arch = "wasm32") => "WebAssembly, ",
            _ => "",
        };
        let s = if threads == 1 { "" } else { "s" };
        format!("CPU ({simd}{threads} thread{s}, {})", self.backend().name())
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn regrouping(&self) -> Arc<Regrouping> {
        self.regrouping.clone()
    }

    fn regroup_with(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError> {
        r.check(&self.cfg)?;
        // The cache is rebuilt at its new size even when G is unchanged: the sequence restarts.
        self.rebuild_cache(&r.layer_groups(), self.kv_type);
        self.regrouping = r;
        Ok(())
    }

    fn kv_type(&self) -> KvType {
        self.kv_type
    }

    fn set_kv_type(&mut self, t: KvType) -> Result<(), EngineError> {
        self.kv_type = check_kv_type(&self.cfg, t)?;
        self.rebuild_cache(&self.regrouping.layer_groups(), t);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.cache.capacity
    }

    fn len(&self) -> usize {
        self.len
    }

    fn reset(&mut self) {
        self.len = 0;
        self.probe_weights = None;
    }

    fn skip_to(&mut self, len: usize) -> Result<(), EngineError> {
        check_len(len, self.cache.capacity)?;
        self.len = len;
        self.probe_weights = None;
        Ok(())
    }

    async fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, EngineError> {
        ops::on_worker(|| self.forward_here(ids, all_logits))
    }

    fn set_attention_probe(&mut self, layer: Option<usize>) -> Result<(), EngineError> {
        check_probe_layer(&self.cfg, layer)?;
        (self.probe, self.probe_weights) = (layer, None);
        Ok(())
    }

    fn attention_probe(&self) -> Option<usize> {
        self.probe
    }

    async fn attention_weights(&mut self) -> Result<Option<AttentionWeights>, EngineError> {
        Ok(self.probe_weights.clone())
    }
}
