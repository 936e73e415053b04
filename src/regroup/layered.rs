//! Per-layer groupings: each layer of a [`Regrouping`] at its own G (a KV budget spent where
//! it matters most, `budget.rs`). The cache then holds `G_l` heads in layer l, and its bytes
//! are the sum over layers (`model::kv_cache_bytes_layers`). A uniform regrouping is the case
//! where every layer has the same grouping (`per_layer` is `None`).

use super::{Grouping, LayerMaps, Method, Regrouping};
use crate::model::{ModelConfig, ModelError};

impl Regrouping {
    /// Mean-pooled K and V at each layer's own grouping (`[layers]`, exact where a layer's
    /// G ≥ G0); the same as [`Regrouping::mean`] when they are all equal.
    pub fn mean_layers(cfg: &ModelConfig, groupings: &[Grouping]) -> Result<Self, ModelError> {
        if groupings.len() != cfg.n_layers {
            return Err(ModelError::BadConfig(format!(
                "{} layer groupings for {} layers",
                groupings.len(),
                cfg.n_layers
            )));
        }
        let widest = groupings.iter().copied().max_by_key(|g| g.groups());
        let Some(widest) = widest else {
            return Ok(Regrouping::native(cfg));
        };
        let mut r = Regrouping::mean(cfg, widest);
        r.layers = groupings
            .iter()
            .map(|&g| LayerMaps::pooled(g, cfg.head_dim))
            .collect();
        r.per_layer = (groupings.iter().any(|&g| g != widest)).then(|| groupings.to_vec());
        r.check(cfg)?;
        Ok(r)
    }

    /// [`Regrouping::mean_layers`] from each layer's count of KV heads.
    pub fn mean_counts(cfg: &ModelConfig, counts: &[usize]) -> Result<Self, ModelError> {
        let groupings = counts
            .iter()
            .map(|&g| Grouping::of(cfg, g))
            .collect::<Result<Vec<_>, _>>()?;
        Self::mean_layers(cfg, &groupings)
    }

    /// Layer l's grouping and maps taken from `sources[l]` (`[layers]`, e.g. uniform
    /// regroupings at each layer's G): calibrated if any layer that merges comes from a
    /// calibrated source, else mean-pooled.
    pub fn pick_layers(cfg: &ModelConfig, sources: &[&Regrouping]) -> Result<Self, ModelError> {
        let groupings: Vec<Grouping> = (0..sources.len())
            .map(|l| sources[l].layer_grouping(l))
            .collect();
        let mut r = Self::mean_layers(cfg, &groupings)?;
        for (l, src) in sources.iter().enumerate() {
            r.layers[l] = src
                .layers
                .get(l)
                .cloned()
                .unwrap_or_else(|| r.layers[l].clone());
        }
        let fitted = |(l, s): (usize, &&Regrouping)| {
            s.method == Method::Calibrated && s.layer_grouping(l).merges()
        };
        if sources.iter().enumerate().any(fitted) {
            r.method = Method::Calibrated;
        }
        r.check(cfg)?;
        Ok(r)
    }

    /// Layer `l`'s grouping.
    pub fn layer_grouping(&self, l: usize) -> Grouping {
        match &self.per_layer {
            Some(p) => p.get(l).copied().unwrap_or(self.grouping),
            None => self.grouping,
        }
    }

    /// Each layer's G: `[layers]`.
    pub fn layer_groups(&self) -> Vec<usize> {
        (0..self.layers.len())
            .map(|l| self.layer_grouping(l).groups())
            .collect()
    }

    /// Whether every layer has the same grouping.
    pub fn is_uniform(&self) -> bool {
        self.per_layer.is_none()
    }

    /// KV heads summed over layers.
    pub fn total_heads(&self) -> usize {
        self.layer_groups().iter().sum()
    }

    /// KV heads per layer on average (the budget B a per-layer grouping spends).
    pub fn mean_heads(&self) -> f64 {
        self.total_heads() as f64 / self.layers.len().max(1) as f64
    }

    /// The most query heads any KV head of any layer serves.
    pub fn max_rep(&self) -> usize {
        (0..self.layers.len())
            .map(|l| self.layer_grouping(l).max_rep())
            .max()
            .unwrap_or_else(|| self.grouping.max_rep())
    }

    /// Whether some layer merges native groups (its G < G0).
    pub fn merges(&self) -> bool {
        (0..self.layers.len()).any(|l| self.layer_grouping(l).merges())
    }

    /// A short name: the grouping's label when uniform, else the mean heads and each
    /// layer's G (`B=1.50 [1,2,2,…]`).
    pub fn label(&self) -> String {
        if self.is_uniform() {
            return self.grouping.label();
        }
        let gs: Vec<String> = self.layer_groups().iter().map(|g| g.to_string()).collect();
        format!("B={:.2} [{}]", self.mean_heads(), gs.join(","))
    }

    /// Whether the method matters here: a calibrated merge of layers that merge.
    pub fn is_calibrated(&self) -> bool {
        self.method == Method::Calibrated && self.merges()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's heads with `layers` layers.
    fn smollm_like(layers: usize) -> ModelConfig {
        ModelConfig {
            n_layers: layers,
            ..ModelConfig::smollm2_135m()
        }
    }

    #[test]
    fn per_layer_counts() {
        let cfg = smollm_like(4);
        let r = Regrouping::mean_counts(&cfg, &[1, 2, 3, 2]).unwrap();
        assert_eq!(r.layer_groups(), [1, 2, 3, 2]);
        assert_eq!(
            (r.total_heads(), r.grouping.groups(), r.max_rep()),
            (8, 3, 9)
        );
        assert!(!r.is_uniform() && r.merges());
        assert_eq!(r.label(), "B=2.00 [1,2,3,2]");
        let u = Regrouping::mean_counts(&cfg, &[2; 4]).unwrap();
        assert_eq!(u, Regrouping::mean(&cfg, Grouping::of(&cfg, 2).unwrap()));
        let bytes = crate::regroup::store::to_bytes(&r);
        assert_eq!(crate::regroup::store::from_bytes(&bytes, &cfg).unwrap(), r);
        assert!(Regrouping::mean_counts(&cfg, &[1, 2]).is_err());
        assert!(Regrouping::mean_counts(&cfg, &[1, 2, 10, 2]).is_err());
        let mut bad = r.clone();
        bad.grouping = Grouping::of(&cfg, 2).unwrap();
        assert!(
            bad.check(&cfg).is_err(),
            "grouping must be the widest layer's"
        );
    }
}
