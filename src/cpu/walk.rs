//! Calibration's walk through the CPU engine, one layer at a time
//! (`crate::engine::calibrate`): the f32 oracle natively, `cpu-q8` in the browser.

use super::{Act, CpuEngine};
use crate::engine::{check_len, EngineError, LayerWalk};
use crate::model::{KvType, ModelError};
use crate::ops::{self, rmsnorm};
use crate::regroup::{LayerMaps, Regrouping};
use async_trait::async_trait;
use std::sync::Arc;

/// Calibration walks the f32 oracle (or `cpu-q8`) through the layers one at a time.
#[async_trait(?Send)]
impl LayerWalk for CpuEngine {
    fn start(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError> {
        r.check(&self.cfg)?;
        // The walk's own cache is f32 whatever the engine's type: the fit does not depend on
        // it. The engine's next regrouping rebuilds the cache in its type.
        self.rebuild_cache(&r.layer_groups(), KvType::F32);
        self.regrouping = r;
        Ok(())
    }

    async fn embed_rows(&mut self, ids: &[u32]) -> Result<Vec<f32>, EngineError> {
        self.embed(ids)
    }

    async fn native_qkv(&mut self, l: usize, x: &[f32]) -> Result<[Vec<f32>; 3], EngineError> {
        let layer = self.layers.get(l).ok_or_else(|| no_layer(l))?;
        let (eps, dim) = (self.cfg.rms_eps, self.cfg.dim);
        Ok(ops::on_worker(|| {
            let xb = rmsnorm(x, &layer.attn_norm, eps); // [t][dim]
            let xb = Act::new(&xb, dim);
            [
                layer.wq.matmul(&xb),
                layer.wk.matmul(&xb),
                layer.wv.matmul(&xb),
            ]
        }))
    }

    async fn run_layer(&mut self, l: usize, x: &mut [f32]) -> Result<(), EngineError> {
        if l >= self.cfg.n_layers {
            return Err(no_layer(l));
        }
        check_len(x.len() / self.cfg.dim, self.cache.capacity)?;
        self.len = 0;
        ops::on_worker(|| self.block(l, x));
        self.len = 0;
        Ok(())
    }

    fn set_layer_maps(&mut self, l: usize, maps: &LayerMaps) -> Result<(), EngineError> {
        let r = Arc::make_mut(&mut self.regrouping);
        *r.layers.get_mut(l).ok_or_else(|| no_layer(l))? = maps.clone();
        r.check(&self.cfg)?;
        Ok(())
    }
}

fn no_layer(l: usize) -> EngineError {
    EngineError::Model(ModelError::BadConfig(format!("the model has no layer {l}")))
}
