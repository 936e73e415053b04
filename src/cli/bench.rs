//! `gqa-lab bench`: prefill and decode speed and KV-cache bytes for each (G, context).
//! A benchmark prints figures; nothing here asserts a speed.

use super::{load_engine, print_json, Backend, RunArgs};
use anyhow::{bail, Result};
use clap::Args;
use gqa_lab::gguf::Gguf;
use gqa_lab::model::ModelConfig;
use gqa_lab::sampling::SamplingParams;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// G values to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,3,9")]
    groups: Vec<usize>,
    /// Context lengths to measure: the prefill length, then decode continues from there.
    #[arg(long, value_delimiter = ',', default_value = "128,1024,4096")]
    contexts: Vec<usize>,
    /// Tokens decoded after each prefill.
    #[arg(long, default_value_t = 16)]
    decode_tokens: usize,
}

pub fn bench(g: &Gguf<'_>, a: &BenchArgs, json_out: bool) -> Result<()> {
    let cfg = ModelConfig::from_gguf(g)?;
    let max_ctx = a.contexts.iter().copied().max().unwrap_or(0);
    if a.contexts.iter().any(|&c| c == 0) || max_ctx + a.decode_tokens > cfg.context_length {
        bail!(
            "contexts must be in 1..={} (minus --decode-tokens)",
            cfg.context_length
        );
    }
    let run = RunArgs {
        groups: None,
        backend: a.backend,
    };
    let mut engine = load_engine(g, &run, max_ctx + a.decode_tokens)?;
    let bar = ProgressBar::new((a.groups.len() * a.contexts.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or(ProgressStyle::default_bar()),
    );
    // A fixed, deterministic token pattern: speed does not depend on which tokens they are.
    let tokens: Vec<u32> = (0..max_ctx as u32)
        .map(|i| 100 + (i * 7919) % 20_000)
        .collect();
    let mut rows = Vec::new();
    for &groups in &a.groups {
        engine.set_groups(groups)?;
        for &ctx in &a.contexts {
            bar.set_message(format!("G={groups} context={ctx}"));
            engine.reset();
            let t0 = Instant::now();
            let mut next = engine.forward_sample(&tokens[..ctx], &SamplingParams::greedy(), 0)?;
            let prefill_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            for step in 0..a.decode_tokens {
                next =
                    engine.forward_sample(&[next], &SamplingParams::greedy(), step as u32 + 1)?;
            }
            let decode_s = t1.elapsed().as_secs_f64();
            rows.push(json!({
                "groups": groups,
                "context": ctx,
                "prefill_tokens_per_second": ctx as f64 / prefill_s,
                "decode_tokens_per_second": a.decode_tokens as f64 / decode_s,
                "kv_cache_bytes": gqa_lab::model::kv_cache_bytes(&cfg, groups, ctx, engine.kv_bytes_per_element()),
                "kv_bytes_per_element": engine.kv_bytes_per_element(),
            }));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = json!({ "backend": engine.name(), "threads": threads, "decode_tokens": a.decode_tokens, "results": rows });
    if json_out {
        return print_json(&report);
    }
    println!("backend {} ({threads} threads)", engine.name());
    println!(
        "{:>3} {:>8} {:>14} {:>14} {:>14}",
        "G", "context", "prefill tok/s", "decode tok/s", "KV bytes"
    );
    for r in &rows {
        println!(
            "{:>3} {:>8} {:>14.1} {:>14.1} {:>14}",
            r["groups"],
            r["context"],
            r["prefill_tokens_per_second"].as_f64().unwrap_or(0.0),
            r["decode_tokens_per_second"].as_f64().unwrap_or(0.0),
            r["kv_cache_bytes"]
        );
    }
    Ok(())
}
