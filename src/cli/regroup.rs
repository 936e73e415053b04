//! Regrouping from the command line: `--groups G --regroup calibrated|mean`, the cache of
//! fitted maps (one file per model, G and calibration setting, in `$GQA_LAB_CACHE`, else
//! `$XDG_CACHE_HOME/gqa-lab`, else `~/.cache/gqa-lab`), and `gqa-lab calibrate`.
//!
//! Natively the maps are always fitted on the f32 CPU oracle (the exact activations), then
//! applied by whichever backend runs: the same maps on the CPU and the GPU.

use super::print_json;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::calibrate::{calibrate_with, Progress};
use gqa_lab::gguf::Gguf;
use gqa_lab::model::ModelConfig;
use gqa_lab::regroup::texts::{TEXT, TEXT_SOURCE};
use gqa_lab::regroup::{
    self, store, FitSettings, Grouping, KSlots, MapsKey, Method, OTarget, Regrouping,
};
use gqa_lab::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::Arc;

/// How a G below the checkpoint's is made.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum, Default)]
pub enum RegroupMethod {
    /// Maps fitted on the built-in calibration text (RoPE-aware; no training).
    #[default]
    Calibrated,
    /// The GQA paper's conversion: the mean of the heads a group replaces.
    Mean,
}

impl RegroupMethod {
    fn method(self) -> Method {
        match self {
            RegroupMethod::Calibrated => Method::Calibrated,
            RegroupMethod::Mean => Method::Mean,
        }
    }
}

/// `gqa-lab calibrate`.
#[derive(Args)]
pub struct CalibrateArgs {
    /// KV groups to fit, comma-separated (each below the model's own; others need no fit).
    #[arg(long, value_delimiter = ',', required = true)]
    groups: Vec<usize>,
    /// Calibration tokens (from the start of the built-in text).
    #[arg(long, default_value_t = regroup::DEFAULT_TOKENS)]
    tokens: usize,
    /// Fit again even when the cache has the maps.
    #[arg(long)]
    force: bool,
    /// Where the calibration runs: the f32 CPU oracle, or the GPU engine (lavapipe where
    /// there is no GPU; what the browser does). The maps go to the same cache either way.
    #[arg(long, value_enum, default_value_t = Walk::Cpu)]
    walk: Walk,
    #[command(flatten)]
    fit: FitArgs,
}

/// How calibrated maps are fitted, besides their tokens (`regroup::FitSettings`).
#[derive(Args, Clone, Copy)]
pub struct FitArgs {
    /// Ridge of the least-squares refit of the O maps, relative to the merged outputs' mean
    /// energy (towards the base maps; smaller trusts the calibration text more; 1e-12..=1e12).
    #[arg(long, default_value_t = regroup::DEFAULT_O_RIDGE, value_parser = parse_ridge)]
    o_ridge: f64,
    /// Keep the base O maps (no least-squares refit).
    #[arg(long)]
    no_o_refit: bool,
    /// How each merged head's K slots are spent: one per rotation pair, or to the strongest
    /// components over all pairs by their query-weighted energy.
    #[arg(long, value_enum, default_value_t = KSlotRule::default())]
    k_slots: KSlotRule,
    /// What the O refit fits each layer's attention to: the native layer at the merged
    /// model's input, or the native model's own stream at the same tokens (walked beside it).
    #[arg(long, value_enum, default_value_t = OTargetArg::default())]
    o_target: OTargetArg,
    /// Scale each query head's q map by a fitted temperature (the merged scores brought back
    /// to the native ones where the native attention looks).
    #[arg(long)]
    q_scale: bool,
}

/// `--o-target` (`regroup::OTarget`).
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum OTargetArg {
    Layer,
    Stream,
    Residual,
}

impl Default for OTargetArg {
    fn default() -> Self {
        match OTarget::default() {
            OTarget::Layer => OTargetArg::Layer,
            OTarget::Stream => OTargetArg::Stream,
            OTarget::Residual => OTargetArg::Residual,
        }
    }
}

/// `--k-slots` (`regroup::KSlots`).
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum KSlotRule {
    PerPair,
    Energy,
}

impl Default for KSlotRule {
    fn default() -> Self {
        match KSlots::default() {
            KSlots::PerPair => KSlotRule::PerPair,
            KSlots::ByEnergy => KSlotRule::Energy,
        }
    }
}

/// `--o-ridge`, refused up front outside [`regroup::O_RIDGE_RANGE`].
fn parse_ridge(s: &str) -> Result<f64, String> {
    let ridge: f64 = s.parse().map_err(|e| format!("{e}"))?;
    regroup::check_o_ridge(ridge).map(|()| ridge)
}

impl FitArgs {
    pub fn settings(&self) -> FitSettings {
        FitSettings {
            o_ridge: (!self.no_o_refit).then_some(self.o_ridge),
            k_slots: match self.k_slots {
                KSlotRule::PerPair => KSlots::PerPair,
                KSlotRule::Energy => KSlots::ByEnergy,
            },
            o_target: match self.o_target {
                OTargetArg::Layer => OTarget::Layer,
                OTargetArg::Stream => OTarget::Stream,
                OTargetArg::Residual => OTarget::Residual,
            },
            q_scale: self.q_scale,
        }
    }
}

/// What a calibrated regrouping is made from: how many tokens of the built-in text, how.
#[derive(Clone, Copy)]
pub struct Calibration {
    pub tokens: usize,
    pub settings: FitSettings,
}

impl Calibration {
    /// The calibration as it will run: no more tokens than the built-in text has (said when
    /// fewer than asked), so that what is reported and the cache key are the count used.
    fn as_run(self, gguf: &Gguf<'_>) -> Result<Self> {
        let text = Tokenizer::from_gguf(gguf)?.encode(TEXT, false)?.len();
        if self.tokens > text {
            eprintln!(
                "note: the built-in calibration text has {text} tokens: calibrating on all {text} ({} asked)",
                self.tokens
            );
        }
        Ok(Calibration {
            tokens: self.tokens.min(text),
            ..self
        })
    }
}

/// The regrouping `--groups`/`--regroup` ask for: mean-pooling, the exact split for G ≥ G0,
/// or calibrated maps from the cache (fitted and cached first if missing).
pub fn regrouping_for(
    gguf: &Gguf<'_>,
    cfg: &ModelConfig,
    groups: usize,
    method: RegroupMethod,
    how: Calibration,
) -> Result<Arc<Regrouping>> {
    let grouping = Grouping::of(cfg, groups)?;
    if method.method() == Method::Mean || !grouping.merges() {
        return Ok(Arc::new(Regrouping::mean(cfg, grouping)));
    }
    let how = how.as_run(gguf)?;
    // Without a cache the maps are fitted all the same, and kept in memory for this run.
    let entry = CacheEntry::of(gguf, groups, how)
        .map_err(|e| eprintln!("warning: {e:#}; the fitted maps will not be kept"))
        .ok();
    if let Some(r) = entry.as_ref().and_then(|c| c.read(cfg)) {
        return Ok(Arc::new(r));
    }
    let kept = match &entry {
        Some(c) => format!("once; cached in {}", c.path.display()),
        None => "not cached".into(),
    };
    eprintln!(
        "calibrating G = {groups} on {} tokens of the built-in text, {} ({kept})",
        how.tokens,
        how.settings.label(),
    );
    let r = fit(gguf, grouping, how, Walk::Cpu, &mut |_| {})?;
    if let Some(Err(e)) = entry.map(|c| c.write(&r)) {
        eprintln!("warning: {e:#}; the fitted maps are used for this run only");
    }
    // As a cache entry gives them back (f16 values), so this run and later ones agree.
    Ok(Arc::new(store::stored(&r)))
}

/// The engine a calibration walks through the layers.
#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum Walk {
    Cpu,
    Gpu,
}

/// Fits the calibrated merge to `grouping` on `how.tokens` tokens of the built-in text,
/// walking the f32 oracle or the GPU engine.
fn fit(
    gguf: &Gguf<'_>,
    grouping: Grouping,
    how: Calibration,
    walk: Walk,
    on_layer: &mut dyn FnMut(Progress),
) -> Result<Regrouping> {
    let tok = Tokenizer::from_gguf(gguf)?;
    let ids = tok.encode(TEXT, false)?;
    let ids = &ids[..how.tokens.min(ids.len())];
    let settings = how.settings;
    // A walk as long as one calibration sequence (shorter for a model of a shorter context).
    let sequence = regroup::sequence_len(&ModelConfig::from_gguf(gguf)?);
    let r = match walk {
        Walk::Cpu => {
            let mut e = CpuEngine::load(gguf, sequence)?;
            let fit = calibrate_with(&mut e, gguf, grouping, ids, settings, on_layer);
            pollster::block_on(fit)?
        }
        Walk::Gpu => {
            let load = gqa_lab::gpu::GpuEngine::load(gguf, sequence);
            let mut e = pollster::block_on(load)?;
            let fit = calibrate_with(&mut e, gguf, grouping, ids, settings, on_layer);
            pollster::block_on(fit)?
        }
    };
    Ok(r)
}

/// Where fitted maps are cached: the file, and the key they must have been written for (the
/// page's Cache Storage uses the same key).
struct CacheEntry {
    path: PathBuf,
    key: MapsKey,
}

impl CacheEntry {
    /// The entry of the maps for this model, G and calibration setting.
    fn of(gguf: &Gguf<'_>, groups: usize, how: Calibration) -> Result<Self> {
        let key = MapsKey::for_model(gguf.bytes(), groups, how.tokens, how.settings);
        let path = cache_dir()?.join(key.file_name());
        Ok(CacheEntry { path, key })
    }

    /// The cached maps, if the file is there and is what the key names; anything else (damaged,
    /// another G, method or fit) is said and ignored, and the caller fits again.
    fn read(&self, cfg: &ModelConfig) -> Option<Regrouping> {
        let bytes = std::fs::read(&self.path).ok()?;
        match store::from_cache_bytes(&bytes, cfg, &self.key) {
            Ok(r) => Some(r),
            Err(e) => {
                let path = self.path.display();
                eprintln!("warning: ignoring {path}: {e}; fitting the maps again");
                None
            }
        }
    }

    /// Writes `r` whole, then renames it into place.
    fn write(&self, r: &Regrouping) -> Result<()> {
        let path = &self.path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, store::to_cache_bytes(r, &self.key))
            .and_then(|_| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))
    }
}

pub(super) fn cache_dir() -> Result<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("GQA_LAB_CACHE") {
        return Ok(dir);
    }
    let base = env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .context("no cache directory: set GQA_LAB_CACHE")?;
    Ok(base.join("gqa-lab"))
}

/// `gqa-lab calibrate --groups …`: fits and caches each G's maps, printing each layer's fit
/// error (relative, 0 = exact) and the time taken.
pub fn calibrate(gguf: &Gguf<'_>, a: &CalibrateArgs, json_out: bool) -> Result<()> {
    let cfg = ModelConfig::from_gguf(gguf)?;
    let mut results = Vec::new();
    let how = Calibration {
        tokens: a.tokens,
        settings: a.fit.settings(),
    }
    .as_run(gguf)?;
    for &groups in &a.groups {
        let grouping = Grouping::of(&cfg, groups)?;
        let entry = CacheEntry::of(gguf, groups, how)?;
        let t0 = std::time::Instant::now();
        let mut layers = Vec::new();
        let mut on_layer = |p: Progress| {
            if !json_out {
                eprintln!("G = {groups}: {}", layer_line(&p));
            }
            layers.push(p.error);
        };
        let cached = (!a.force).then(|| entry.read(&cfg)).flatten();
        let fitted = cached.is_none() && grouping.merges();
        if fitted {
            let r = fit(gguf, grouping, how, a.walk, &mut on_layer)?;
            entry.write(&r)?;
        }
        let seconds = t0.elapsed().as_secs_f64();
        if !json_out {
            let what = match (grouping.merges(), fitted) {
                (false, _) => "nothing to fit (it splits native groups: exact)",
                (true, true) => "fitted",
                (true, false) => "already cached",
            };
            let path = entry.path.display();
            println!("G = {groups}: {what} in {seconds:.1} s: {path}");
        }
        results.push(serde_json::json!({
            "groups": groups,
            "method": Method::Calibrated,
            "merges": grouping.merges(),
            "fitted": fitted,
            "seconds": seconds,
            "tokens": how.tokens,
            "fit": how.settings.label(),
            "text": TEXT_SOURCE,
            "cache": entry.path,
            "layers": layers,
        }));
    }
    if json_out {
        print_json(&serde_json::json!({ "calibrations": results }))?;
    }
    Ok(())
}

/// One layer's fit errors, for the terminal.
fn layer_line(p: &Progress) -> String {
    let (layer, e) = (p.layer + 1, p.error);
    let mut line = format!(
        "layer {layer:>2}/{}: K error {:.4}, V error {:.4}",
        p.layers, e.k, e.v
    );
    if let Some(o) = e.o {
        line += &format!(
            ", attention output error {:.4} → {:.4} by the O refit ({} iterations)",
            o.base, o.refit, o.iterations
        );
    }
    line
}
