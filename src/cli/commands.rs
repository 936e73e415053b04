//! The `info`, `tokenize`, `generate`, `logits` and `perplexity` subcommands.

use super::{count, load_engine, parse_ids, print_json, Ids, RunArgs};
use anyhow::{bail, Result};
use clap::Args;
use gqa_lab::engine::{perplexity as score, GenerateParams, Generator};
use gqa_lab::gguf::Gguf;
use gqa_lab::model::{kv_cache_bytes, KvType, ModelConfig, ModelTensors};
use gqa_lab::models::BuiltinModel;
use gqa_lab::sampling::SamplingParams;
use gqa_lab::tokenizer::{TokenStream, Tokenizer};
use pollster::FutureExt as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub fn info(
    g: &Gguf<'_>,
    path: &Path,
    builtin: Option<&BuiltinModel>,
    file_bytes: usize,
    json_out: bool,
) -> Result<()> {
    let cfg = ModelConfig::from_gguf(g)?;
    let tensors = ModelTensors::locate(g, &cfg)?;
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &g.tensors {
        *types.entry(t.ggml_type.name()).or_default() += 1;
    }
    let per_token = |t: KvType| -> BTreeMap<String, u64> {
        cfg.valid_groups()
            .into_iter()
            .map(|gr| (gr.to_string(), kv_cache_bytes(&cfg, gr, 1, t.element())))
            .collect()
    };
    let name = g
        .get("general.name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let architecture = g
        .get("general.architecture")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("llama");
    let mut v = json!({
        "file": path.display().to_string(),
        "builtin": builtin.map(|m| m.name),
        "file_bytes": file_bytes,
        "gguf_version": g.version,
        "name": name,
        "architecture": architecture,
        "config": cfg,
        "native_groups": cfg.n_kv_heads,
        "valid_groups": cfg.valid_groups(),
        "tied_output": tensors.tied_output,
        "tensor_count": g.tensors.len(),
        "tensor_types": types,
        "kv_cache_bytes_per_token": KvType::ALL
            .map(|t| (t.name(), per_token(t)))
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
    });
    if let Value::Object(o) = &mut v {
        o.extend(super::memory::planned(&cfg));
    }
    if json_out {
        return print_json(&v);
    }
    println!(
        "{name} ({}, GGUF v{}, {file_bytes} bytes)",
        path.display(),
        g.version
    );
    println!(
        "  {}, dim {}, ffn {}, {}, {}, head_dim {}, vocab {}, context {}",
        count(cfg.n_layers, "layer"),
        cfg.dim,
        cfg.ffn_dim,
        count(cfg.n_heads, "query head"),
        count(cfg.n_kv_heads, "KV head"),
        cfg.head_dim,
        cfg.vocab_size,
        cfg.context_length
    );
    println!(
        "  rope base {}, rms eps {}, tied output head: {}",
        cfg.rope_base, cfg.rms_eps, tensors.tied_output
    );
    println!("  tensor types: {types:?}");
    println!(
        "  valid G: {:?} (native {})",
        cfg.valid_groups(),
        cfg.n_kv_heads
    );
    let by_type = KvType::ALL.map(|t| (t.name(), per_token(t)));
    for gr in cfg.valid_groups() {
        let bytes: Vec<String> = by_type
            .iter()
            .map(|(name, b)| format!("{} {name}", b[&gr.to_string()]))
            .collect();
        println!("  G={gr}: KV cache bytes per token: {}", bytes.join(", "));
    }
    for (method, by_g) in v["maps_bytes"].as_object().into_iter().flatten() {
        let f32 = &v["break_even_tokens"]["f32"][method];
        let each: Vec<String> = by_g
            .as_object()
            .into_iter()
            .flatten()
            .map(|(g, b)| match &f32[g] {
                Value::Null if f32.get(g).is_some() => format!("G={g} {b} (never pays off)"),
                Value::Number(n) if n.as_u64() == Some(0) => format!("G={g} {b} (always less)"),
                Value::Number(n) => format!("G={g} {b} (less than native from {n} tokens, f32)"),
                _ => format!("G={g} {b}"),
            })
            .collect();
        println!("  {method} maps, bytes: {}", each.join(", "));
    }
    Ok(())
}

pub fn tokenize(g: &Gguf<'_>, text: &str, special: bool, json_out: bool) -> Result<()> {
    let tok = Tokenizer::from_gguf(g)?;
    let ids = tok.encode(text, special)?;
    if json_out {
        return print_json(&json!({ "ids": ids }));
    }
    for id in ids {
        println!(
            "{id}\t{:?}",
            String::from_utf8_lossy(&tok.token_bytes(id, true))
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Prompt text (special tokens such as <|im_start|> are parsed).
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    prompt: Option<String>,
    /// Wrap the prompt as one user turn of the model's chat template (ChatML; not with
    /// --prompt-ids, which are the exact input).
    #[arg(long, requires = "prompt", conflicts_with = "prompt_ids")]
    chat: bool,
    /// A system turn before the user turn (with --chat).
    #[arg(long, requires = "chat", conflicts_with = "prompt_ids")]
    system: Option<String>,
    /// The exact model input as comma-separated token ids.
    #[arg(long, value_parser = parse_ids)]
    prompt_ids: Option<Ids>,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u32,
    /// Keep generating after the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    #[command(flatten)]
    run: RunArgs,
}

pub fn generate(g: &Gguf<'_>, a: &GenerateArgs, json_out: bool) -> Result<()> {
    let cfg = ModelConfig::from_gguf(g)?;
    let tok = Tokenizer::from_gguf(g)?;
    let prompt_ids = match (&a.prompt, &a.prompt_ids) {
        (_, Some(ids)) => ids.0.clone(),
        (Some(p), None) => {
            let text = if a.chat {
                tok.chat_prompt(p, a.system.as_deref())?
            } else {
                p.clone()
            };
            tok.encode_prompt(&text)?
        }
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    if prompt_ids.is_empty() {
        bail!("the prompt is empty: it has no tokens to start from");
    }
    let needed = prompt_ids
        .len()
        .saturating_add(a.max_tokens.saturating_sub(1));
    if needed > cfg.context_length {
        bail!(
            "the prompt has {} and --max-tokens is {}: that is past the model's context of {} tokens",
            count(prompt_ids.len(), "token"),
            a.max_tokens,
            cfg.context_length
        );
    }
    let mut engine = load_engine(g, &a.run, needed.max(1))?;
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        stop_token: if a.ignore_eos { None } else { tok.eos_id },
    };
    let mut gen = Generator::new(engine.as_mut(), prompt_ids.clone(), params)?;
    let mut stream = TokenStream::new();
    let mut out = std::io::stdout();
    let start = Instant::now();
    let mut prefill_ms = 0.0;
    while let Some(id) = gen.step(engine.as_mut()).block_on()? {
        if gen.generated().len() == 1 {
            prefill_ms = start.elapsed().as_secs_f64() * 1e3;
        }
        if !json_out {
            write!(out, "{}", stream.push(&tok.token_bytes(id, true)))?;
            out.flush()?;
        }
    }
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    let decoded = gen.generated().len().saturating_sub(1);
    let decode_tps = if decoded > 0 {
        decoded as f64 / ((total_ms - prefill_ms) / 1e3)
    } else {
        0.0
    };
    if !json_out {
        writeln!(out, "{}", stream.finish())?;
        eprintln!(
            "[{}, G={}, prefill {prefill_ms:.0} ms, decode {decode_tps:.1} tokens/s, KV cache {} bytes of {}, maps {} bytes]",
            count(gen.generated().len(), "token"),
            engine.grouping().groups(),
            engine.kv_cache_bytes(),
            engine.kv_type().name(),
            gqa_lab::regroup::maps_bytes(&engine.regrouping())
        );
        return Ok(());
    }
    let memory = super::memory::held(
        engine.config(),
        &engine.regrouping(),
        engine.kv_cache_bytes(),
        engine.kv_type(),
    );
    let mut v = json!({
        "prompt_ids": prompt_ids,
        "ids": gen.generated(),
        "text": tok.decode(gen.generated(), true),
        "groups": engine.grouping().groups(),
        "regroup": engine.regrouping().method,
        "backend": engine.backend().name(),
        "kv_type": engine.kv_type().name(),
        "kv_bytes_per_element": engine.kv_type().element().bytes_per_value(),
        "prefill_ms": prefill_ms,
        "decode_tokens_per_second": decode_tps,
        "per_layer": a.run.budget.given().then(|| super::budget::report(engine.as_ref())),
    });
    if let Value::Object(o) = &mut v {
        o.extend(memory);
    }
    print_json(&v)
}

pub fn logits(g: &Gguf<'_>, ids: &[u32], run: &RunArgs, top: usize, json_out: bool) -> Result<()> {
    let mut engine = load_engine(g, run, context_for(g, ids.len())?)?;
    let logits = engine.forward(ids, false).block_on()?;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let best: Vec<_> = order
        .iter()
        .take(top)
        .map(|&i| json!({ "id": i, "logit": logits[i] }))
        .collect();
    if json_out {
        return print_json(&json!(best));
    }
    for &i in order.iter().take(top) {
        println!("{i}\t{:.5}", logits[i]);
    }
    Ok(())
}

pub fn perplexity(
    g: &Gguf<'_>,
    text_file: Option<PathBuf>,
    ids_file: Option<PathBuf>,
    run: &RunArgs,
    json_out: bool,
) -> Result<()> {
    let ids = match (text_file, ids_file) {
        (Some(f), _) => {
            let text = super::read_text(&f)?;
            Tokenizer::from_gguf(g)?.encode(&text, false)?
        }
        (None, Some(f)) => {
            let s = super::read_text(&f)?;
            parse_ids(&s).map_err(anyhow::Error::msg)?.0
        }
        (None, None) => bail!("give --text-file or --ids-file"),
    };
    if ids.len() < 2 {
        bail!(
            "perplexity needs at least 2 tokens, the input has {}",
            ids.len()
        );
    }
    let mut engine = load_engine(g, run, context_for(g, ids.len())?)?;
    let p = score(engine.as_mut(), &ids).block_on()?;
    let per_layer = run
        .budget
        .given()
        .then(|| super::budget::report(engine.as_ref()));
    if json_out {
        // The cache as the scoring filled it: every id's K and V.
        let (cfg, kv) = (engine.config(), engine.kv_type());
        let memory = super::memory::held_at(cfg, &engine.regrouping(), ids.len(), kv);
        let mut v = serde_json::to_value(p)?;
        if let Some(o) = v.as_object_mut() {
            o.extend(memory);
            if let Some(r) = per_layer {
                o.insert("per_layer".into(), r);
            }
        }
        return print_json(&v);
    }
    if run.budget.given() {
        let r = engine.regrouping();
        println!(
            "{} ({} bytes of KV cache)",
            r.label(),
            engine.kv_cache_bytes()
        );
    }
    println!(
        "{} tokens, G={} ({}): NLL {:.5} ± {:.5}, perplexity {:.3} (± {:.3})",
        p.tokens,
        p.groups,
        p.method.name(),
        p.nll,
        p.nll_std_error,
        p.perplexity,
        p.perplexity * p.nll_std_error,
    );
    Ok(())
}

/// A cache size for `n` tokens, or an error if the model's context is shorter.
fn context_for(g: &Gguf<'_>, n: usize) -> Result<usize> {
    let ctx = ModelConfig::from_gguf(g)?.context_length;
    if n > ctx {
        bail!("the input has {n} tokens, past the model's context of {ctx}");
    }
    Ok(n.max(1))
}
