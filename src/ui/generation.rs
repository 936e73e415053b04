//! Generation in the browser: [`crate::engine::Generator`] driven asynchronously, one token
//! per step with a turn of the event loop in between, so tokens appear as they are produced and
//! the page can stop the run or change G mid-sequence (the whole text so far is prefilled again
//! under the new grouping, and generation goes on).

use super::js::{now_ms, yield_now};
use super::session::Session;
use super::state::{Measured, Ui};
use crate::engine::{EngineError, GenerateParams, Generator};
use crate::sampling::SamplingParams;
use crate::tokenizer::TokenStream;
use leptos::prelude::*;

/// One run's input.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Stop after this token (EOS), or never.
    pub stop_token: Option<u32>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    MaxTokens,
    Eos,
    Stopped,
}

/// Runs `job` on the session, streaming text, ids, speed and cache positions into `ui`.
/// The token bookkeeping is [`Generator`]'s, the same as the CLI's.
pub async fn run(ui: Ui, s: &mut Session, job: Job) -> Result<Outcome, EngineError> {
    let params = GenerateParams {
        max_tokens: job.max_tokens,
        sampling: job.sampling,
        stop_token: job.stop_token,
    };
    let vocab = s.engine.config().vocab_size;
    let mut gen = Generator::with_limits(job.prompt, params, vocab, s.engine.capacity())?;
    s.engine.reset();
    let mut text = TokenStream::new();
    let mut run = Measured::default();
    // When the last token came: decode speed is measured between tokens, as the page sees
    // them (the GPU runs ahead while the page shows a token and yields).
    let mut last_token_ms: Option<f64> = None;
    while !gen.is_done() {
        if ui.stop.get_untracked() {
            s.engine.drop_ahead();
            return Ok(Outcome::Stopped);
        }
        if let Some(g) = ui.pending_groups.get_untracked() {
            ui.pending_groups.set(None);
            if g != s.engine.grouping().groups() {
                s.engine.regroup(g)?;
                gen.restart();
            }
        }
        let prefill = gen.is_prefill_next();
        let t0 = now_ms();
        // The GPU gets the step after this token before the token is read back (ahead.rs),
        // so it works while the page shows the token and yields.
        let Some(id) = s.engine.next_token(&mut gen).await? else {
            break;
        };
        let now = now_ms();
        let ms = now - last_token_ms.filter(|_| !prefill).unwrap_or(t0);
        last_token_ms = Some(now);
        if prefill {
            ui.prefill_ms.set(Some(ms));
        } else {
            run.add(ms);
            ui.tokens_per_s.set(Some(run.tokens_per_s()));
            let g = s.engine.grouping().groups();
            ui.decode_by_groups
                .update(|m| m.entry(g).or_default().add(ms));
        }
        let piece = text.push(&s.tok.token_bytes(id, false));
        ui.output.update(|o| o.push_str(&piece));
        ui.ids.set(gen.generated().to_vec());
        ui.positions.set(Some(s.engine.len()));
        if Some(id) == job.stop_token {
            return Ok(Outcome::Eos);
        }
        yield_now().await;
    }
    let rest = text.finish();
    ui.output.update(|o| o.push_str(&rest));
    Ok(Outcome::MaxTokens)
}
