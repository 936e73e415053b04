//! A KV budget on the real model (mean-pooled merges, `cpu-q8`): each layer's sensitivity
//! scored on 128 tokens of the built-in calibration text (61 scorings), the heads spent
//! greedily, and the allocation scored on the fixture passage (never the calibration text)
//! against the uniform grouping of the same bytes.
//!
//! Measured (the CLI, 512 calibration tokens; benches/README.md): B = 2 gives perplexity 53
//! where uniform G = 2 gives 236; B = 1.5 gives 124 where layers alternating 1, 2 give 1,935.

mod common;

use common::{fixture, ids};
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::budget::budget_regrouping;
use gqa_lab::engine::{perplexity, Engine};
use gqa_lab::gguf::Gguf;
use gqa_lab::model::kv_cache_bytes;
use gqa_lab::regroup::budget::budget_heads;
use gqa_lab::regroup::texts::TEXT;
use gqa_lab::regroup::{Grouping, Regrouping};
use gqa_lab::tokenizer::Tokenizer;
use pollster::FutureExt as _;
use std::sync::Arc;

#[test]
fn the_budget_of_g2_is_not_worse_than_uniform_g2() {
    let g = Gguf::parse(common::model_bytes()).unwrap();
    let mut e = CpuEngine::load_quantized(&g, 512).unwrap();
    let cfg = e.config().clone();
    let calibration = Tokenizer::from_gguf(&g)
        .unwrap()
        .encode(TEXT, false)
        .unwrap();
    let passage = ids(&fixture("perplexity.json")["ids"]);
    let merged: Vec<Regrouping> = (1..cfg.n_kv_heads)
        .map(|g| Regrouping::mean(&cfg, Grouping::of(&cfg, g).unwrap()))
        .collect();
    let merged: Vec<&Regrouping> = merged.iter().collect();
    let total = budget_heads(&cfg, 2.0).unwrap();
    let (r, s) = budget_regrouping(&mut e, &merged, &calibration[..128], total)
        .block_on()
        .unwrap();
    assert_eq!((r.total_heads(), s.rise.len()), (60, 30));
    // The first two layers are the most sensitive (≥ 1 nat each at G = 1, measured) and keep
    // their native heads.
    assert!(
        s.rise[0][0] > 0.5 && s.rise[1][0] > 0.5,
        "{:?}",
        &s.rise[..2]
    );
    assert_eq!(&r.layer_groups()[..2], [3, 3]);

    let r_label = r.label();
    let mut score = |r: Regrouping| {
        e.regroup_with(Arc::new(r)).unwrap();
        let p = perplexity(&mut e, &passage).block_on().unwrap();
        (p.perplexity, e.kv_cache_bytes())
    };
    let (budget, budget_bytes) = score(r);
    let (uniform, uniform_bytes) = score(Regrouping::mean(&cfg, Grouping::of(&cfg, 2).unwrap()));
    assert_eq!(budget_bytes, uniform_bytes, "the same bytes");
    let t = gqa_lab::model::KvType::F32.element();
    assert_eq!(budget_bytes, kv_cache_bytes(&cfg, 2, passage.len() - 1, t));
    eprintln!(
        "B = 2 ({}): perplexity {budget:.1}; uniform G = 2: {uniform:.1}",
        r_label
    );
    assert!(budget <= uniform, "budget {budget} vs uniform {uniform}");
}
