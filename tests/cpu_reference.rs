//! The CPU engine against the independent float32 reference (`../shared/fixtures`):
//! intermediates, teacher-forced logits, greedy tokens and perplexity, at G = 1, 3 and 9.
//!
//! Tolerances (the fixtures README: an f32 engine should match `reference_f32` to ~1e-3):
//! - logits: |Δ| ≤ 1e-3 (LOGIT_TOL), teacher-forced on the reference's own tokens;
//! - greedy tokens: equal, except that a divergence is allowed at a step whose reference
//!   top-1/top-2 margin is below LOGIT_TOL (then comparison stops there);
//! - perplexity: within 0.5% (the bound) and mean NLL within 1e-4;
//! - residual stream: |Δ| ≤ 1e-4 · (1 + |x|) elementwise, L2 norm within 1e-4 relative;
//! - dequantized weights: exact (|Δ| ≤ 1e-7).

mod common;

use common::{fixture, floats, ids};
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::{perplexity, Engine, EngineError, GenerateParams, Generator};
use gqa_lab::gguf::Gguf;
use gqa_lab::ops;
use gqa_lab::sampling::SamplingParams;
use pollster::FutureExt as _;
use serde_json::Value;
use std::sync::{Mutex, MutexGuard, OnceLock};

const LOGIT_TOL: f32 = 1e-3;

fn gguf() -> Gguf<'static> {
    Gguf::parse(common::model_bytes()).expect("model parses")
}

/// One engine per test binary (its load dequantizes 135M weights), used one test at a time.
fn engine() -> MutexGuard<'static, CpuEngine> {
    static ENGINE: OnceLock<Mutex<CpuEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Mutex::new(CpuEngine::load(&gguf(), 512).expect("engine loads")))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Greedy generation of `n` tokens, never stopping at EOS.
fn greedy(e: &mut CpuEngine, prompt: &[u32], n: usize) -> Vec<u32> {
    let params = GenerateParams {
        max_tokens: n,
        sampling: SamplingParams::greedy(),
        stop_token: None,
    };
    let mut gen = Generator::new(e, prompt.to_vec(), params).unwrap();
    while gen.step(e).block_on().unwrap().is_some() {}
    gen.generated().to_vec()
}

/// Asserts the token rule; returns how many tokens were compared.
fn assert_tokens(name: &str, ours: &[u32], reference: &[u32], margins: &[f32]) -> usize {
    for i in 0..reference.len() {
        if ours[i] != reference[i] {
            assert!(
                margins[i] < LOGIT_TOL,
                "{name}: token {i} is {} but the reference has {} with margin {} ≥ {LOGIT_TOL}",
                ours[i],
                reference[i],
                margins[i]
            );
            return i;
        }
    }
    reference.len()
}

/// Logits at every position of `prompt + generated[..n-1]`: the position before each
/// generated token. `[n][vocab]`.
fn teacher_forced(e: &mut CpuEngine, prompt: &[u32], generated: &[u32]) -> Vec<Vec<f32>> {
    let seq: Vec<u32> = prompt
        .iter()
        .chain(&generated[..generated.len() - 1])
        .copied()
        .collect();
    e.reset();
    let all = e.forward(&seq, true).block_on().unwrap();
    let vocab = e.config().vocab_size;
    all.chunks_exact(vocab)
        .skip(prompt.len() - 1)
        .map(|r| r.to_vec())
        .collect()
}

fn max_diff(logits: &[f32], pairs: &Value) -> f32 {
    pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (logits[p[0].as_u64().unwrap() as usize] - p[1].as_f64().unwrap() as f32).abs())
        .fold(0.0, f32::max)
}

#[test]
fn generate_fixture_prompts_match_the_f32_reference() {
    let fx = fixture("generate.json");
    let mut e = engine();
    e.regroup(3).unwrap();
    for p in fx["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["prompt_ids"]);
        let r = &p["reference_f32"];
        let reference = ids(&r["ids"]);
        let steps = r["steps"].as_array().unwrap();
        // Teacher-forced: our logits at the reference's top-5 ids, every step.
        let forced = teacher_forced(&mut e, &prompt, &reference);
        let worst = steps
            .iter()
            .zip(&forced)
            .map(|(s, l)| max_diff(l, &s["top"]))
            .fold(0.0, f32::max);
        assert!(
            worst <= LOGIT_TOL,
            "{name}: teacher-forced logits differ by {worst}"
        );
        // Free-running greedy.
        let margins: Vec<f32> = steps
            .iter()
            .map(|s| s["margin"].as_f64().unwrap() as f32)
            .collect();
        let ours = greedy(&mut e, &prompt, reference.len());
        let compared = assert_tokens(name, &ours, &reference, &margins);
        eprintln!(
            "{name}: {compared}/{} tokens equal, max |Δlogit| {worst:.2e}",
            reference.len()
        );
    }
}

#[test]
fn regrouped_models_match_the_f32_reference() {
    let fx = fixture("regroup.json");
    let mut e = engine();
    for p in fx["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["prompt_ids"]);
        for g in ["1", "3", "9"] {
            let r = &p["G"][g];
            e.regroup(g.parse().unwrap()).unwrap();
            let reference = ids(&r["ids"]);
            let forced = teacher_forced(&mut e, &prompt, &reference);
            let worst = r["top2"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&forced)
                .map(|(t, l)| max_diff(l, t))
                .fold(0.0, f32::max);
            assert!(
                worst <= LOGIT_TOL,
                "{name} G={g}: teacher-forced logits differ by {worst}"
            );
            let ours = greedy(&mut e, &prompt, reference.len());
            let compared = assert_tokens(
                &format!("{name} G={g}"),
                &ours,
                &reference,
                &floats(&r["margins"]),
            );
            eprintln!(
                "{name} G={g}: {compared}/{} tokens equal, max |Δlogit| {worst:.2e}",
                reference.len()
            );
            if let Some(top20) = r.get("top20_logits_last_prompt_position") {
                e.reset();
                let last = e.forward(&prompt, false).block_on().unwrap();
                assert!(
                    max_diff(&last, top20) <= LOGIT_TOL,
                    "{name} G={g}: top-20 at the prompt's end"
                );
                let seq: Vec<u32> = prompt.iter().chain(&reference).copied().collect();
                e.reset();
                let fin = e.forward(&seq, false).block_on().unwrap();
                assert!(
                    max_diff(&fin, &r["top20_logits_final_position"]) <= LOGIT_TOL,
                    "{name} G={g}: final top-20"
                );
            }
        }
    }
}

#[test]
fn g9_logits_equal_g3_logits() {
    let fx = fixture("regroup.json");
    let p = &fx["prompts"][0];
    let seq: Vec<u32> = ids(&p["prompt_ids"])
        .into_iter()
        .chain(ids(&p["G"]["3"]["ids"]))
        .collect();
    let mut e = engine();
    e.regroup(3).unwrap();
    let g3 = e.forward(&seq, true).block_on().unwrap();
    e.regroup(9).unwrap();
    assert_eq!(e.kv_cache_bytes(), 0, "the regrouped cache starts empty");
    let g9 = e.forward(&seq, true).block_on().unwrap();
    assert_eq!(e.kv_cache_bytes(), 2 * 30 * 9 * 64 * seq.len() as u64 * 4);
    let worst = g3
        .iter()
        .zip(&g9)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 1e-4, "G=9 vs G=3: max |Δlogit| {worst}");
}

#[test]
fn perplexity_per_group_matches_the_reference() {
    let fx = fixture("perplexity.json");
    let text_ids = ids(&fx["ids"]);
    let mut e = engine();
    for g in ["1", "3", "9"] {
        e.regroup(g.parse().unwrap()).unwrap();
        let p = perplexity(&mut *e, &text_ids).block_on().unwrap();
        let r = &fx["reference_f32"][g];
        let (ref_nll, ref_ppl) = (r["mean_nll"].as_f64().unwrap(), r["ppl"].as_f64().unwrap());
        eprintln!(
            "G={g}: perplexity {:.4} (reference {ref_ppl:.4}), NLL {:.6} ({ref_nll:.6})",
            p.perplexity, p.nll
        );
        assert_eq!(p.tokens, 463);
        assert!(
            (p.perplexity - ref_ppl).abs() / ref_ppl < 0.005,
            "G={g}: perplexity {}",
            p.perplexity
        );
        assert!((p.nll - ref_nll).abs() < 1e-4, "G={g}: NLL {}", p.nll);
    }
}

fn assert_close(name: &str, ours: &[f32], reference: &[f32], rel: f32) {
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert!(
            (a - b).abs() <= rel * (1.0 + b.abs()),
            "{name}[{i}]: {a} vs {b}"
        );
    }
}

#[test]
fn intermediates_match_the_reference() {
    let fx = fixture("intermediates.json");
    let prompt = ids(&fx["prompt_ids"]);
    let g = gguf();
    let mut e = engine();
    e.regroup(3).unwrap();
    let states = e.hidden_states(&prompt).unwrap(); // [layers][t][dim]
    let dim = e.config().dim;
    for (key, layer) in [("resid_after_layer0", 0), ("resid_after_last_layer", 29)] {
        for (pos, r) in fx[key].as_array().unwrap().iter().enumerate() {
            let row = &states[layer][pos * dim..(pos + 1) * dim];
            assert_close(
                &format!("{key} pos {pos}"),
                &row[..8],
                &floats(&r["first8"]),
                1e-4,
            );
            let l2 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            let ref_l2 = r["l2"].as_f64().unwrap() as f32;
            assert!(
                (l2 - ref_l2).abs() <= 1e-4 * ref_l2,
                "{key} pos {pos}: L2 {l2} vs {ref_l2}"
            );
        }
    }
    // Dequantized weights are exact.
    let embd = g
        .dequantize(g.tensor("token_embd.weight").unwrap())
        .unwrap(); // [vocab][dim]
    for (row, want) in fx["token_embd_rows_first8"].as_object().unwrap() {
        let r: usize = row.parse().unwrap();
        assert_close(
            &format!("token_embd row {r}"),
            &embd[r * dim..r * dim + 8],
            &floats(want),
            1e-7,
        );
    }
    let wq = g
        .dequantize(g.tensor("blk.0.attn_q.weight").unwrap())
        .unwrap(); // [n_heads·hd][dim]
    assert_close(
        "attn_q row 0",
        &wq[..8],
        &floats(&fx["blk0_attn_q_weight_row0_first8"]),
        1e-7,
    );
    // Layer 0, position 1: q (head 0) and k (KV head 0) after RoPE, from the CPU ops.
    let cfg = e.config().clone();
    let x = &embd[prompt[1] as usize * dim..(prompt[1] as usize + 1) * dim];
    let norm = g
        .dequantize(g.tensor("blk.0.attn_norm.weight").unwrap())
        .unwrap();
    let xb = ops::rmsnorm(x, &norm, cfg.rms_eps);
    let mut q = ops::matmul(&xb, &wq, dim);
    ops::rope(&mut q, cfg.head_dim, 1, cfg.rope_base);
    assert_close(
        "q after RoPE",
        &q[..8],
        &floats(&fx["layer0_q_after_rope_head0_pos1_first8"]),
        1e-5,
    );
    let wk = g
        .dequantize(g.tensor("blk.0.attn_k.weight").unwrap())
        .unwrap();
    let mut k = ops::matmul(&xb, &wk, dim);
    ops::rope(&mut k, cfg.head_dim, 1, cfg.rope_base);
    assert_close(
        "k after RoPE",
        &k[..8],
        &floats(&fx["layer0_k_after_rope_head0_pos1_first8"]),
        1e-5,
    );
}

#[test]
fn changing_g_mid_generation_continues_the_text() {
    // G=9 is exactly G=3, so a switch 3 → 9 halfway must not change a single token.
    let fx = fixture("regroup.json");
    let prompt = ids(&fx["prompts"][1]["prompt_ids"]);
    let mut e = engine();
    e.regroup(3).unwrap();
    let straight = greedy(&mut e, &prompt, 16);
    e.regroup(3).unwrap();
    let params = GenerateParams {
        max_tokens: 16,
        sampling: SamplingParams::greedy(),
        stop_token: None,
    };
    let mut gen = Generator::new(&mut *e, prompt.clone(), params).unwrap();
    for _ in 0..8 {
        gen.step(&mut *e).block_on().unwrap();
    }
    gen.regroup(&mut *e, 9).unwrap();
    assert!(gen.is_prefill_next());
    while gen.step(&mut *e).block_on().unwrap().is_some() {}
    assert_eq!(gen.generated(), straight.as_slice());
    assert_eq!(e.grouping().groups(), 9);
    assert_eq!(
        e.len(),
        prompt.len() + 15,
        "the cache holds the whole sequence under the new G"
    );
}

#[test]
fn seeded_sampling_is_deterministic() {
    let prompt = ids(&fixture("generate.json")["prompts"][1]["prompt_ids"]);
    let mut e = engine();
    e.regroup(3).unwrap();
    let mut run = |seed| {
        let sampling = SamplingParams {
            temperature: 1.0,
            top_k: 40,
            top_p: 0.95,
            seed,
        };
        let params = GenerateParams {
            max_tokens: 12,
            sampling,
            stop_token: None,
        };
        let mut gen = Generator::new(&mut *e, prompt.clone(), params).unwrap();
        while gen.step(&mut *e).block_on().unwrap().is_some() {}
        gen.generated().to_vec()
    };
    let (a, b, c) = (run(5), run(5), run(6));
    assert_eq!(a, b);
    assert_ne!(a, c, "another seed should give another text");
}

#[test]
fn engine_errors_leave_the_engine_usable() {
    let mut e = engine();
    e.regroup(3).unwrap();
    let err = e.regroup(10).unwrap_err();
    assert_eq!(
        err.to_string(),
        "G = 10 is not a number of KV heads for 9 query heads: G is 1..=9"
    );
    assert_eq!(e.grouping().groups(), 3);
    e.reset();
    assert_eq!(
        e.forward(&[], false).block_on(),
        Err(EngineError::EmptyInput)
    );
    assert!(matches!(
        e.forward(&[49_152], false).block_on(),
        Err(EngineError::TokenOutOfRange { .. })
    ));
    let long = vec![100u32; 513];
    assert!(matches!(
        e.forward(&long, false).block_on(),
        Err(EngineError::ContextFull {
            needed: 513,
            capacity: 512
        })
    ));
    let params = GenerateParams {
        max_tokens: 100,
        sampling: SamplingParams::greedy(),
        stop_token: None,
    };
    let err = Generator::new(&mut *e, vec![100; 500], params).unwrap_err();
    assert!(matches!(err, EngineError::PromptTooLong { .. }), "{err}");
    assert_eq!(
        e.forward(&[504], false).block_on().unwrap().len(),
        49_152,
        "still works"
    );
}
