//! Generation in the browser: the async twin of [`crate::engine::Generator`], one token per
//! step with a turn of the event loop in between, so tokens appear as they are produced and
//! the page can stop the run or change G mid-sequence (the whole text so far is prefilled again
//! under the new grouping, and generation goes on).

use super::js::{now_ms, yield_now};
use super::session::Session;
use super::state::Ui;
use crate::engine::EngineError;
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
pub async fn run(ui: Ui, s: &mut Session, job: Job) -> Result<Outcome, EngineError> {
    job.sampling.validate().map_err(EngineError::BadSampling)?;
    if job.prompt.is_empty() {
        return Err(EngineError::EmptyInput);
    }
    // The last generated token is sampled but never fed, hence the −1.
    if job.prompt.len() + job.max_tokens.saturating_sub(1) > s.engine.capacity() {
        return Err(EngineError::PromptTooLong {
            prompt: job.prompt.len(),
            max_tokens: job.max_tokens,
            capacity: s.engine.capacity(),
        });
    }
    s.engine.reset();
    let mut pending = job.prompt.clone();
    let mut generated: Vec<u32> = Vec::new();
    let mut text = TokenStream::new();
    let (mut decode_ms, mut decoded) = (0.0, 0usize);
    while generated.len() < job.max_tokens {
        if ui.stop.get_untracked() {
            return Ok(Outcome::Stopped);
        }
        if let Some(g) = ui.pending_groups.get_untracked() {
            ui.pending_groups.set(None);
            if g != s.engine.grouping().groups() {
                s.engine.regroup(g)?;
                pending = job.prompt.iter().chain(&generated).copied().collect();
            }
        }
        let prefill = pending.len() > 1 || generated.is_empty();
        let t0 = now_ms();
        let id = s
            .engine
            .sample_next(&pending, &job.sampling, generated.len() as u32)
            .await?;
        let ms = now_ms() - t0;
        if prefill {
            ui.prefill_ms.set(Some(ms));
        } else {
            decode_ms += ms;
            decoded += 1;
            ui.tokens_per_s
                .set(Some(decoded as f64 * 1e3 / decode_ms.max(1e-3)));
        }
        generated.push(id);
        pending = vec![id];
        let piece = text.push(&s.tok.token_bytes(id, false));
        ui.output.update(|o| o.push_str(&piece));
        ui.ids.set(generated.clone());
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
