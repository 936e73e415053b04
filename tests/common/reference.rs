//! Comparing an engine's greedy ids with llama.cpp's recorded ones (tests/fixtures/llama-cpp/):
//! equal until a near-tie, where the two texts may part.

use gqa_lab::engine::Engine;
use gqa_lab::sampling::argmax;
use pollster::FutureExt as _;
use serde_json::Value;

/// A departure from llama.cpp's greedy id is allowed only where its own top two are within
/// this many nats (log p1 − log p2).
pub const NEAR_TIE: f64 = 0.25;

/// `n` greedy ids after `prompt` from an empty sequence, and the logits of the first
/// prediction.
pub fn greedy(e: &mut dyn Engine, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    e.reset();
    let first = e.forward(prompt, false).block_on().unwrap();
    let mut out = vec![argmax(&first)];
    while out.len() < n {
        let logits = e.forward(&out[out.len() - 1..], false).block_on().unwrap();
        out.push(argmax(&logits));
    }
    (out, first)
}

/// How many of `got` equal llama.cpp's `want` (`steps_top[i]`: its top 5 [id, probability] at
/// step i); panics at a departure that is not a near-tie.
pub fn agreeing(what: &str, got: &[u32], want: &[u32], steps_top: &Value) -> usize {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g == w {
            continue;
        }
        let p = |k: usize| steps_top[i][k][1].as_f64().unwrap();
        let margin = p(0).ln() - p(1).ln();
        assert!(
            margin < NEAR_TIE,
            "{what}: step {i}: {g} where llama.cpp gives {w} (its top two {margin:.3} nats apart)\n ours {got:?}\n theirs {want:?}"
        );
        return i;
    }
    got.len()
}
