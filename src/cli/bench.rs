//! `gqa-lab bench`: speed and KV-cache bytes for each (G, context). A benchmark prints
//! figures; nothing here asserts a speed.
//!
//! Per row: prefill tokens/s (a real prefill of `min(context, --prefill-tokens)` tokens), then
//! decode tokens/s at the given context (the positions before it are taken as filled, see
//! [`Engine::skip_to`], so a slow backend need not prefill 4096 tokens first; each step fed
//! and waited for and, on the GPU, again one step ahead), the KV-cache
//! bytes at that context, the attention's time per token (every layer's, over the cache) and
//! the cache bytes it reads and, on the GPU, dispatches and submits per token, the cost of one
//! dispatch beyond its work (and the ceiling it puts on decode), bytes read per token and the
//! effective bandwidth. Each (G, context) is measured for every cache type asked for.

use super::{print_json, Backend};
use anyhow::{bail, Result};
use clap::Args;
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::{Engine, GenerateParams, Generator};
use gqa_lab::gguf::Gguf;
use gqa_lab::gpu::GpuEngine;
use gqa_lab::model::{kv_cache_bytes, KvType, ModelConfig};
use gqa_lab::sampling::SamplingParams;
use indicatif::{ProgressBar, ProgressStyle};
use pollster::FutureExt as _;
use serde_json::{json, Value};
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// G values to measure (comma-separated); default: 1, the model's own and the query-head
    /// count (1,3,9 for SmolLM2, 1,4 for Gemma 3).
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<usize>>,
    /// Context lengths at which decode is measured.
    #[arg(long, value_delimiter = ',', default_value = "128,1024,4096")]
    contexts: Vec<usize>,
    /// Most tokens prefilled for the prefill figure.
    #[arg(long, default_value_t = 128)]
    prefill_tokens: usize,
    /// KV cache types to measure (comma-separated: f32, f16, q8_0); default: the backend's
    /// (`--kv-type`'s default).
    #[arg(long, value_delimiter = ',', value_enum)]
    kv_types: Option<Vec<super::KvTypeArg>>,
    /// Tokens decoded per row.
    #[arg(long, default_value_t = 8)]
    decode_tokens: usize,
    /// How a G below the model's own is made (the calibrated merge adds small maps).
    #[arg(long, value_enum, default_value_t = super::regroup::RegroupMethod::Calibrated)]
    regroup: super::regroup::RegroupMethod,
}

/// The engine under test, with the GPU's extra counters when it is the GPU.
enum Bench {
    Cpu(Box<CpuEngine>),
    Gpu(Box<GpuEngine>),
}

impl Bench {
    fn engine(&mut self) -> &mut dyn Engine {
        match self {
            Bench::Cpu(e) => e.as_mut(),
            Bench::Gpu(e) => e.as_mut(),
        }
    }

    /// Milliseconds per token of every layer's attention over the cache at its length.
    fn attention_ms(&mut self) -> Result<f64> {
        Ok(match self {
            Bench::Cpu(e) => e.time_attention(5)?,
            Bench::Gpu(e) => pollster::block_on(e.time_attention(5))?,
        })
    }

    /// On the GPU, seconds per token of `n` greedy tokens decoded from position `ctx` one step
    /// ahead (each step submitted before the token that feeds it is read back; see
    /// `gpu/engine/ahead.rs`), starting from `first`, whatever the adapter's default.
    fn decode_ahead(&mut self, ctx: usize, first: u32, n: usize) -> Result<Option<f64>> {
        let Bench::Gpu(e) = self else {
            return Ok(None);
        };
        e.skip_to(ctx)?;
        let params = GenerateParams {
            max_tokens: n,
            sampling: SamplingParams::greedy(),
            stop_token: None,
        };
        let room = e.capacity() - ctx;
        let mut gen = Generator::with_limits(vec![first], params, e.config().vocab_size, room)?;
        let default = e.decode_ahead();
        e.set_decode_ahead(true);
        let t = Instant::now();
        let result = (|| {
            while pollster::block_on(e.next_token(&mut gen))?.is_some() {}
            Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64() / n as f64)
        })();
        e.set_decode_ahead(default);
        result.map(Some)
    }

    /// GPU figures for a decode step at the current length that took `decode_s`.
    fn gpu_figures(&mut self, decode_s: f64) -> Result<Value> {
        let Bench::Gpu(e) = self else {
            return Ok(json!({}));
        };
        let kv_read = e.kv_cache_bytes();
        let bytes = e.weight_bytes() + kv_read;
        let overhead_us = pollster::block_on(e.time_dispatch_overhead(5))?;
        let by_kernel: serde_json::Map<String, Value> = pollster::block_on(e.time_kernels(5))?
            .into_iter()
            .map(|(k, ms)| (k.to_string(), json!(ms)))
            .collect();
        let dispatches = e.dispatches_per_token();
        Ok(json!({
            "decode_ahead_by_default": e.decode_ahead(),
            "decode_ms_per_token_by_kernel": by_kernel,
            "dispatches_per_token": dispatches,
            "dispatch_overhead_us": overhead_us,
            "dispatch_ceiling_tokens_per_second": 1e6 / (dispatches as f64 * overhead_us),
            "submits_per_token": 1,
            "readback_bytes_per_token": 4,
            "bytes_read_per_token": bytes,
            "effective_gb_per_second": bytes as f64 / decode_s / 1e9,
        }))
    }
}

pub fn bench(g: &Gguf<'_>, a: &BenchArgs, json_out: bool) -> Result<()> {
    let cfg = ModelConfig::from_gguf(g)?;
    let max_ctx = a.contexts.iter().copied().max().unwrap_or(0);
    let capacity = max_ctx.saturating_add(a.decode_tokens);
    if a.contexts.contains(&0) || capacity > cfg.context_length || a.decode_tokens == 0 {
        bail!(
            "contexts must be in 1..={} minus --decode-tokens (≥ 1)",
            cfg.context_length
        );
    }
    let mut bench = match a.backend {
        Backend::Cpu => Bench::Cpu(Box::new(CpuEngine::load(g, capacity)?)),
        Backend::CpuQ8 => Bench::Cpu(Box::new(CpuEngine::load_quantized(g, capacity)?)),
        Backend::Gpu => Bench::Gpu(Box::new(pollster::block_on(GpuEngine::load(g, capacity))?)),
    };
    let mut every_g = vec![1, cfg.n_kv_heads, cfg.n_heads];
    every_g.dedup();
    let groups_asked = a.groups.clone().unwrap_or(every_g);
    let bar = ProgressBar::new((groups_asked.len() * a.contexts.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or(ProgressStyle::default_bar()),
    );
    // A fixed token pattern, ids the model has: speed does not depend on which tokens they are.
    // No context takes more than `max_ctx` of them, however many --prefill-tokens asks for.
    let vocab = cfg.vocab_size.max(1);
    let tokens: Vec<u32> = (0..a.prefill_tokens.min(max_ctx))
        .map(|i| ((100 + (i * 7919) % 20_000) % vocab) as u32)
        .collect();
    let greedy = SamplingParams::greedy();
    let kv_types: Vec<KvType> = match &a.kv_types {
        Some(t) => t.iter().map(|&t| t.into()).collect(),
        None => vec![a.backend.default_kv_type()],
    };
    let mut rows = Vec::new();
    for (&groups, &kv) in groups_asked
        .iter()
        .flat_map(|g| kv_types.iter().map(move |t| (g, t)))
    {
        let how = super::regroup::Calibration {
            tokens: gqa_lab::regroup::DEFAULT_TOKENS,
            settings: Default::default(),
        };
        let r = super::regroup::regrouping_for(g, &cfg, groups, a.regroup, how)?;
        let method = r.method;
        let regrouping = r.clone();
        bench.engine().set_kv_type(kv)?;
        bench.engine().regroup_with(r)?;
        for &ctx in &a.contexts {
            bar.set_message(format!("G={groups} {} context={ctx}", kv.name()));
            let e = bench.engine();
            e.reset();
            let n_prefill = ctx.min(a.prefill_tokens);
            let t0 = Instant::now();
            let mut next = e
                .forward_sample(&tokens[..n_prefill], &greedy, 0)
                .block_on()?;
            let prefill_s = t0.elapsed().as_secs_f64();
            e.skip_to(ctx)?;
            let t1 = Instant::now();
            for step in 0..a.decode_tokens {
                next = e
                    .forward_sample(&[next], &greedy, step as u32 + 1)
                    .block_on()?;
            }
            let decode_s = t1.elapsed().as_secs_f64() / a.decode_tokens as f64;
            let ahead_s = bench.decode_ahead(ctx, next, a.decode_tokens)?;
            bench.engine().skip_to(ctx)?;
            let attention_ms = bench.attention_ms()?;
            let t = kv.element();
            let mut row = json!({
                "groups": groups,
                "regroup": method,
                "kv_type": kv.name(),
                "context": ctx,
                "prefill_tokens": n_prefill,
                "prefill_tokens_per_second": n_prefill as f64 / prefill_s,
                "decode_tokens_per_second": 1.0 / decode_s,
                "kv_bytes_per_element": t.bytes_per_value(),
                "kv_block": [t.block_len, t.block_bytes],
                "attention_ms_per_token": attention_ms,
                "attention_bytes_read_per_token": kv_cache_bytes(&cfg, groups, ctx + 1, t),
            });
            if let Value::Object(r) = &mut row {
                r.extend(super::memory::held_at(&cfg, &regrouping, ctx, kv));
            }
            if let (Value::Object(r), Some(s)) = (&mut row, ahead_s) {
                r.insert("decode_ahead_tokens_per_second".into(), json!(1.0 / s));
            }
            if let (Value::Object(r), Value::Object(extra)) =
                (&mut row, bench.gpu_figures(decode_s)?)
            {
                r.extend(extra);
            }
            rows.push(row);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let device = match &bench {
        Bench::Cpu(_) => format!("CPU, {threads} threads"),
        Bench::Gpu(e) => e.device(),
    };
    let report = json!({ "backend": bench.engine().backend().name(), "device": device, "decode_tokens": a.decode_tokens, "results": rows });
    if json_out {
        return print_json(&report);
    }
    println!("backend {} — {device}", bench.engine().backend().name());
    println!(
        "{:>3} {:>5} {:>8} {:>14} {:>14} {:>14} {:>14} {:>14}",
        "G",
        "KV",
        "context",
        "prefill tok/s",
        "decode tok/s",
        "ahead tok/s",
        "KV bytes",
        "attn ms/tok"
    );
    for r in &rows {
        let f = |k: &str| r[k].as_f64().map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{:>3} {:>5} {:>8} {:>14} {:>14} {:>14} {:>14} {:>14}",
            r["groups"].as_u64().unwrap_or(0),
            r["kv_type"].as_str().unwrap_or(""),
            r["context"].as_u64().unwrap_or(0),
            f("prefill_tokens_per_second"),
            f("decode_tokens_per_second"),
            f("decode_ahead_tokens_per_second"),
            r["kv_cache_bytes"].as_u64().unwrap_or(0),
            f("attention_ms_per_token")
        );
        if let Some(by_kernel) = r["decode_ms_per_token_by_kernel"].as_object() {
            let mut times: Vec<(&String, f64)> = by_kernel
                .iter()
                .filter_map(|(k, v)| Some((k, v.as_f64()?)))
                .collect();
            times.sort_by(|a, b| b.1.total_cmp(&a.1));
            let parts: Vec<String> = times.iter().map(|(k, ms)| format!("{k} {ms:.1}")).collect();
            println!("{:>12} decode ms/token by kernel: {}", "", parts.join(", "));
        }
    }
    Ok(())
}
