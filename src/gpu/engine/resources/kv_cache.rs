//! The KV cache on the GPU: per layer K and V in the cache's element type, and the buffers of
//! the regrouping maps that kv_store.wgsl and attention_reduce.wgsl apply.

use super::super::PREFILL_CHUNK;
use crate::gpu::context::{Buf, Gpu};
use crate::gpu::kernels::Kernel;
use crate::gpu::GpuError;
use crate::model::{layer_cache_rows, KvType, ModelConfig};
use crate::regroup::{Grouping, LayerMaps, Regrouping, VMap};
use std::sync::Arc;

/// K and V per layer, `[G_l][capacity][hd]` each in the cache's element type (kv_f32.wgsl,
/// kv_f16.wgsl, kv_q8_0.wgsl say how a row lies; G_l the layer's KV heads, the same for every
/// layer unless the grouping is per layer), at one regrouping, and the maps that
/// kv_store.wgsl and attention_reduce.wgsl apply (`model/regroup.rs`), every layer's in one
/// buffer each.
pub(in crate::gpu::engine) struct KvCache {
    pub regrouping: Arc<Regrouping>,
    pub kv_type: KvType,
    pub k: Vec<Buf>,
    pub v: Vec<Buf>,
    /// For a q8_0 cache, K and V of a forward's tokens in f32, `[T][G][hd]` each (G the
    /// widest layer's), as kv_store.wgsl writes them and kv_quant.wgsl reads them.
    pub staged: Option<[Buf; 2]>,
    /// Per G of some layer, `[G + 1]` u32: KV head g serves query heads `starts[g] ..
    /// starts[g + 1]` (one table for one grouping); layer l's is `starts[starts_of[l]]`.
    starts: Vec<Buf>,
    starts_of: Vec<usize>,
    /// Per layer, the KV heads of the layers before it (`Σ_{m<l} G_m`): where its K and V
    /// maps start, in heads.
    pub group0: Vec<usize>,
    /// `[Σ G_l][G0][hd/2]` complex (layer by layer).
    pub kmap: Buf,
    /// `[Σ G_l][G0]` pooling weights, or with `dense_v` `[Σ G_l][hd][G0·hd]`.
    pub vmap: Buf,
    pub dense_v: bool,
    /// `[L][H][hd/2]` complex, `[L][H][hd][hd]`: the query and output maps of a calibrated
    /// merge, if any layer has them.
    pub qmap: Option<Buf>,
    pub omap: Option<Buf>,
    /// `[L][H + G][hd/2]` u32 ([`LayerMaps::slot_rows`]): the native pair each slot of each
    /// query head, then each KV head, carries; with the q maps.
    pub slots: Option<Buf>,
    /// Bound where a map is not used.
    pub none: Buf,
}

impl KvCache {
    pub fn new(
        gpu: &Gpu,
        cfg: &ModelConfig,
        regrouping: Arc<Regrouping>,
        capacity: usize,
        kv_type: KvType,
    ) -> Result<Self, GpuError> {
        let r = &regrouping;
        let (grouping, hd, h) = (r.grouping, cfg.head_dim, cfg.n_heads);
        let groups = r.layer_groups(); // [L]
                                       // `[G_l][rows][hd]` per layer: rows = the capacity, or a sliding-window layer's ring.
        let row = cache_row_bytes(kv_type, hd);
        let bytes = |l: usize| (groups[l] * layer_cache_rows(cfg, l, capacity)) as u64 * row;
        let per_layer = |kind: &str| {
            (0..cfg.n_layers)
                .map(|l| gpu.storage(&format!("{kind} cache {l}"), bytes(l)))
                .collect::<Result<Vec<_>, _>>()
        };
        let starts = |gr: Grouping| -> Vec<u32> {
            (0..gr.groups())
                .map(|g| gr.members(g).start as u32)
                .chain([h as u32])
                .collect()
        };
        let mut distinct: Vec<usize> = groups.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let starts_of = groups
            .iter()
            .map(|g| distinct.binary_search(g).unwrap_or(0))
            .collect();
        let starts = (distinct.iter())
            .map(|&g| {
                let gr = (0..cfg.n_layers)
                    .map(|l| r.layer_grouping(l))
                    .find(|x| x.groups() == g);
                let s = starts(gr.unwrap_or(grouping));
                gpu.storage_with(&format!("group starts G={g}"), bytemuck::cast_slice(&s))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let group0 = groups
            .iter()
            .scan(0, |acc, &g| {
                *acc += g;
                Some(*acc - g)
            })
            .collect();
        let f32s = |label: &str, v: Vec<f32>| gpu.storage_with(label, bytemuck::cast_slice(&v));
        let kmap: Vec<f32> = r
            .layers
            .iter()
            .flat_map(|m| m.k.iter().flatten())
            .copied()
            .collect();
        let dense_v = r.layers.iter().any(|m| matches!(m.v, VMap::Dense(_)));
        let vmap: Vec<f32> = match dense_v {
            true => (r.layers.iter().enumerate())
                .flat_map(|(l, m)| m.v_dense(r.layer_grouping(l), hd))
                .collect(),
            false => r
                .layers
                .iter()
                .flat_map(|m| match &m.v {
                    VMap::Pool(w) => w.clone(),
                    VMap::Dense(_) => Vec::new(),
                })
                .collect(),
        };
        let mapped = |m: &LayerMaps| m.q.is_some() || m.slots.is_some();
        let slots = r.layers.iter().any(mapped).then(|| {
            let rows = (0..r.layers.len())
                .flat_map(|l| r.layers[l].slot_rows(r.layer_grouping(l), hd / 2));
            rows.collect::<Vec<u32>>()
        });
        check_slots(&r.layers, hd)?;
        let qmap = r.layers.iter().any(mapped).then(|| {
            let q = r.layers.iter().flat_map(|m| m.q_or_identity(h, hd));
            q.flatten().collect::<Vec<f32>>()
        });
        let omap = r.layers.iter().any(|m| m.o.is_some()).then(|| {
            r.layers
                .iter()
                .flat_map(|m| m.o_or_identity(h, hd))
                .collect::<Vec<f32>>()
        });
        let staged_bytes = (PREFILL_CHUNK * grouping.groups() * hd * 4) as u64;
        let staged = match kv_type {
            KvType::Q8_0 => Some([
                gpu.storage("K staged", staged_bytes)?,
                gpu.storage("V staged", staged_bytes)?,
            ]),
            _ => None,
        };
        Ok(KvCache {
            kv_type,
            k: per_layer("K")?,
            v: per_layer("V")?,
            staged,
            starts,
            starts_of,
            group0,
            kmap: f32s("K maps", kmap)?,
            vmap: f32s("V maps", vmap)?,
            dense_v,
            qmap: qmap.map(|q| f32s("q maps", q)).transpose()?,
            omap: omap.map(|o| f32s("output maps", o)).transpose()?,
            slots: slots
                .map(|s| gpu.storage_with("K slots", bytemuck::cast_slice(&s)))
                .transpose()?,
            none: gpu.storage("no map", 16)?,
            regrouping,
        })
    }

    /// Layer `l`'s grouping.
    pub fn grouping(&self, l: usize) -> Grouping {
        self.regrouping.layer_grouping(l)
    }

    /// Layer `l`'s group-starts table.
    pub fn starts(&self, l: usize) -> &Buf {
        &self.starts[self.starts_of[l]]
    }
}

/// Whether kv_store.wgsl can gather these layers' slots in place: a workgroup must hold whole heads.
pub(in crate::gpu::engine) fn check_slots(layers: &[LayerMaps], hd: usize) -> Result<(), GpuError> {
    let wg = Kernel::KvStore.workgroup_size() as usize;
    if layers.iter().any(|m| m.slots.is_some()) && !wg.is_multiple_of(hd / 2) {
        return Err(GpuError::Unsupported(format!(
            "K slots that move pairs need head_dim/2 to divide {wg}, and this model's head_dim is {hd}"
        )));
    }
    Ok(())
}

/// Bytes of one cache row of `hd` values on the GPU: `model::KvType`'s, but for a q8_0 row of
/// an odd number of blocks, whose last scale word is half used (kv_q8_0.wgsl).
pub fn cache_row_bytes(kv: KvType, hd: usize) -> u64 {
    match kv {
        KvType::Q8_0 => 4 * (hd / 4 + (hd / 32).div_ceil(2)) as u64,
        _ => kv.element().row_bytes(hd as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache row's bytes on the GPU are the element type's (q8_0: 34 a block) for an even
    /// number of blocks.
    #[test]
    fn cache_rows_are_the_element_types() {
        for kv in KvType::ALL {
            for hd in [64, 128, 256] {
                assert_eq!(cache_row_bytes(kv, hd), kv.element().row_bytes(hd as u64));
            }
        }
        assert_eq!(cache_row_bytes(KvType::Q8_0, 32), 36);
    }
}
