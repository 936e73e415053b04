//! A KV budget from the command line: `--kv-budget B` (B KV heads per layer on average, each
//! layer's G chosen by its measured sensitivity, `regroup::budget`) and `--layer-groups`
//! (each layer's G given). The sensitivities are scored on `--budget-tokens` tokens of the
//! built-in calibration text on `cpu-q8` (61 scorings on SmolLM2-135M) and cached beside the
//! fitted maps, so a second budget on the same model is spent at once.

use super::regroup::{self, Calibration, RegroupMethod};
use super::RunArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::budget::sensitivity;
use gqa_lab::engine::calibrate::calibrate_layers;
use gqa_lab::engine::Engine;
use gqa_lab::gguf::Gguf;
use gqa_lab::model::ModelConfig;
use gqa_lab::regroup::budget::{budget_heads, spend, Sensitivity};
use gqa_lab::regroup::texts::TEXT;
use gqa_lab::regroup::{sequence_len, MapsKey, Regrouping};
use gqa_lab::tokenizer::Tokenizer;
use serde_json::json;
use std::sync::Arc;

/// Calibration tokens each sensitivity is scored on by default.
const BUDGET_TOKENS: usize = 512;

/// Per-layer groupings (instead of `--groups`).
#[derive(Args, Clone)]
pub struct BudgetArgs {
    /// A KV budget: B KV heads per layer on average (1 to H, in steps of 1/layers), spent
    /// where the measured loss rise is largest (greedy).
    #[arg(long, conflicts_with_all = ["groups", "layer_groups"])]
    kv_budget: Option<f64>,
    /// Each layer's G, comma-separated, repeated over the layers (`1,2`: alternate layers).
    #[arg(long, value_delimiter = ',', conflicts_with = "groups")]
    layer_groups: Option<Vec<usize>>,
    /// Calibration tokens each layer's sensitivity is scored on, for `--kv-budget`.
    #[arg(long, default_value_t = BUDGET_TOKENS)]
    budget_tokens: usize,
    /// With `--regroup calibrated`: fit each layer again at its own G on the model merged
    /// below it (one more calibration walk, not cached), instead of taking each layer's maps
    /// from the uniform fit at its G.
    #[arg(long)]
    refit: bool,
}

impl BudgetArgs {
    /// Whether a per-layer grouping was asked for.
    pub fn given(&self) -> bool {
        self.kv_budget.is_some() || self.layer_groups.is_some()
    }
}

/// The per-layer regrouping `run` asks for, if any: its layers mean-pooled or calibrated as
/// `--regroup` says (each layer's maps from the uniform regrouping at its G).
pub fn regrouping(gguf: &Gguf<'_>, run: &RunArgs) -> Result<Option<Arc<Regrouping>>> {
    let b = &run.budget;
    if !b.given() {
        return Ok(None);
    }
    let cfg = ModelConfig::from_gguf(gguf)?;
    let how = Calibration {
        tokens: run.calibration_tokens,
        settings: run.fit.settings(),
    };
    let merged: Vec<Arc<Regrouping>> = (1..cfg.n_kv_heads)
        .map(|g| regroup::regrouping_for(gguf, &cfg, g, run.regroup, how))
        .collect::<Result<_>>()?;
    let merged: Vec<&Regrouping> = merged.iter().map(|r| r.as_ref()).collect();
    if let Some(pattern) = &b.layer_groups {
        if pattern.is_empty() {
            bail!("--layer-groups needs at least one G");
        }
        let counts: Vec<usize> = (0..cfg.n_layers)
            .map(|l| pattern[l % pattern.len()])
            .collect();
        let sources = counts
            .iter()
            .map(|&g| match g < cfg.n_kv_heads {
                true => Ok(merged[g - 1].clone()),
                false => Ok(Regrouping::mean(
                    &cfg,
                    gqa_lab::regroup::Grouping::of(&cfg, g)?,
                )),
            })
            .collect::<Result<Vec<Regrouping>>>()?;
        let sources: Vec<&Regrouping> = sources.iter().collect();
        let r = Regrouping::pick_layers(&cfg, &sources)?;
        return Ok(Some(Arc::new(refit(gguf, run, r)?)));
    }
    let budget = b.kv_budget.unwrap_or(cfg.n_kv_heads as f64);
    let total = budget_heads(&cfg, budget)?;
    let s = sensitivities(gguf, &cfg, run, &merged)?;
    let r = spend(&s, &cfg, &merged, total)?;
    eprintln!("KV budget {budget}: {}", r.label());
    Ok(Some(Arc::new(refit(gguf, run, r)?)))
}

/// `r`, or with `--refit` and a calibrated merge, every layer fitted again at its own G
/// (`engine::calibrate::calibrate_layers`, on the f32 oracle).
fn refit(gguf: &Gguf<'_>, run: &RunArgs, r: Regrouping) -> Result<Regrouping> {
    if !run.budget.refit || run.regroup != RegroupMethod::Calibrated || !r.merges() {
        return Ok(r);
    }
    let cfg = ModelConfig::from_gguf(gguf)?;
    let ids = Tokenizer::from_gguf(gguf)?.encode(TEXT, false)?;
    let ids = &ids[..run.calibration_tokens.min(ids.len())];
    eprintln!("fitting each layer at its own G on {} tokens", ids.len());
    let groupings: Vec<_> = (0..cfg.n_layers).map(|l| r.layer_grouping(l)).collect();
    let mut walk = CpuEngine::load(gguf, sequence_len(&cfg))?;
    let settings = run.fit.settings();
    let mut quiet = |_| {};
    let fit = calibrate_layers(&mut walk, gguf, &groupings, ids, settings, &mut quiet);
    Ok(pollster::block_on(fit)?)
}

/// Each layer's sensitivity, from the cache or scored on `cpu-q8` (and cached).
fn sensitivities(
    gguf: &Gguf<'_>,
    cfg: &ModelConfig,
    run: &RunArgs,
    merged: &[&Regrouping],
) -> Result<Sensitivity> {
    let tok = Tokenizer::from_gguf(gguf)?;
    let ids = tok.encode(TEXT, false)?;
    let ids = &ids[..run
        .budget
        .budget_tokens
        .clamp(2, ids.len().max(2))
        .min(ids.len())];
    let maps = match run.regroup {
        RegroupMethod::Mean => "mean".to_string(),
        RegroupMethod::Calibrated => {
            let key =
                MapsKey::for_model(gguf.bytes(), 1, run.calibration_tokens, run.fit.settings());
            key.file_name().trim_end_matches(".bin").to_string()
        }
    };
    let model = &gqa_lab::regroup::store::hex(&sha2_of(gguf.bytes()))[..16];
    let name = format!("sensitivity-{model}-{maps}-{}.json", ids.len());
    let path = regroup::cache_dir().map(|d| d.join(name));
    if let Some(s) = path.as_ref().ok().and_then(|p| std::fs::read(p).ok()) {
        if let Ok(s) = serde_json::from_slice::<Sensitivity>(&s) {
            if s.rise.len() == cfg.n_layers {
                return Ok(s);
            }
        }
    }
    eprintln!(
        "scoring each layer's sensitivity on {} tokens of the built-in text (cpu-q8, {} scorings)",
        ids.len(),
        cfg.n_layers * (cfg.n_kv_heads - 1) + 1
    );
    let mut e = CpuEngine::load_quantized(gguf, sequence_len(cfg))?;
    let mut on_layer = |l: usize| eprintln!("layer {}/{}", l + 1, cfg.n_layers);
    let s = pollster::block_on(sensitivity(&mut e, merged, ids, &mut on_layer))?;
    if let Ok(p) = path {
        let write = p
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&p, serde_json::to_vec(&s).unwrap_or_default()));
        if let Err(e) = write.with_context(|| format!("writing {}", p.display())) {
            eprintln!("warning: {e:#}");
        }
    }
    Ok(s)
}

fn sha2_of(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

/// What a per-layer run reports: each layer's G, the heads per layer on average, the bytes.
pub fn report(engine: &dyn Engine) -> serde_json::Value {
    let r = engine.regrouping();
    json!({
        "layer_groups": r.layer_groups(),
        "kv_heads": r.total_heads(),
        "kv_heads_per_layer": r.mean_heads(),
        "method": r.method,
        "kv_cache_bytes": engine.kv_cache_bytes(),
    })
}
