//! The calibrated merge's maps as a cache entry keeps them, in f16 (`regroup::store`): the
//! perplexity of the fixture passage (Austen, 463 predictions) on the f32 oracle with the
//! maps rounded to f16 against the same maps in f32, at G = 1 and 2, fitted afresh (a cached
//! fit is already rounded). A measurement, not run by default (two fits and four scorings:
//! minutes): `MAPS_F16_TOKENS=8192 cargo test --release --test maps_f16 -- --ignored
//! --nocapture` (2,048 tokens by default); benches/README.md, "Calibration: quality and cost".

mod common;

use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::calibrate::calibrate;
use gqa_lab::engine::{perplexity, Engine};
use gqa_lab::gguf::Gguf;
use gqa_lab::regroup::{maps_bytes, store, texts, Grouping, Regrouping};
use gqa_lab::tokenizer::Tokenizer;
use std::sync::Arc;

/// Perplexity of `ids` at `r` on the f32 oracle.
fn ppl(e: &mut CpuEngine, r: Regrouping, ids: &[u32]) -> f64 {
    e.regroup_with(Arc::new(r)).expect("the maps fit the model");
    pollster::block_on(perplexity(e, ids))
        .expect("scored")
        .perplexity
}

#[test]
#[ignore = "a measurement: minutes of fitting"]
fn f16_maps_keep_the_perplexity() {
    let g = Gguf::parse(common::model_bytes()).unwrap();
    let ids = common::ids(&common::fixture("perplexity.json")["ids"]);
    let tokens: usize = std::env::var("MAPS_F16_TOKENS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(common::CALIBRATION_TOKENS);
    let text = Tokenizer::from_gguf(&g)
        .unwrap()
        .encode(texts::TEXT, false)
        .unwrap();
    let mut e = CpuEngine::load(&g, ids.len()).unwrap();
    for groups in [1, 2] {
        let mut walk = CpuEngine::load(&g, gqa_lab::regroup::SEQUENCE).unwrap();
        let grouping = Grouping::of(walk.config(), groups).unwrap();
        let mut quiet = |_| {};
        let fit = calibrate(&mut walk, &g, grouping, &text[..tokens], &mut quiet);
        let r = pollster::block_on(fit).unwrap();
        let half = store::stored(&r);
        assert_ne!(half, r, "rounded to f16");
        let bytes = maps_bytes(&r);
        let (f32_ppl, f16_ppl) = (ppl(&mut e, r, &ids), ppl(&mut e, half, &ids));
        let change = f16_ppl / f32_ppl - 1.0;
        eprintln!(
            "G = {groups}, fitted on {tokens} tokens: f32 maps {f32_ppl:.4}, f16 maps {f16_ppl:.4} ({:+.4}%); {bytes} bytes in f32, {} in f16",
            change * 100.0,
            bytes / 2
        );
        assert!(
            change.abs() < 1e-3,
            "G = {groups}: f16 maps move the perplexity by {change:e}"
        );
    }
}
