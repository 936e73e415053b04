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
/// The token bookkeeping is [`Generator`]'s, the same as the CLI's. However the run ends
/// (its last token, EOS, Stop, an error), the text is flushed: a character the last token
/// began shows as U+FFFD, as in the CLI.
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
    let outcome = drive(ui, s, &mut gen, &mut text, job.stop_token).await;
    let rest = text.finish();
    ui.output.update(|o| o.push_str(&rest));
    outcome
}

/// The run's clocks: decode speed is measured between tokens as the page sees them (the GPU
/// may run ahead while the page shows a token and yields).
struct Clock {
    run: Measured,
    last_token_ms: Option<f64>,
}

/// The steps of a run until it ends (its last token, EOS, Stop, an error); the text streams
/// through `text`.
async fn drive(
    ui: Ui,
    s: &mut Session,
    gen: &mut Generator,
    text: &mut TokenStream,
    stop_token: Option<u32>,
) -> Result<Outcome, EngineError> {
    let mut clock = Clock {
        run: Measured::default(),
        last_token_ms: None,
    };
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
        let Some(id) = step(ui, s, gen, &mut clock).await? else {
            break;
        };
        let piece = text.push(&s.tok.token_bytes(id, false));
        ui.output.update(|o| o.push_str(&piece));
        ui.ids.set(gen.generated().to_vec());
        ui.positions.set(Some(s.engine.len()));
        if Some(id) == stop_token {
            return Ok(Outcome::Eos);
        }
        yield_now().await;
    }
    Ok(Outcome::MaxTokens)
}

/// Produces the next token (a prefill fed with it) and records its time.
async fn step(
    ui: Ui,
    s: &mut Session,
    gen: &mut Generator,
    clock: &mut Clock,
) -> Result<Option<u32>, EngineError> {
    let prefill = gen.is_prefill_next();
    let t0 = now_ms();
    // The GPU gets the step after this token before the token is read back (ahead.rs),
    // so it works while the page shows the token and yields.
    let Some(id) = s.engine.next_token(gen).await? else {
        return Ok(None);
    };
    let now = now_ms();
    if prefill {
        ui.prefill_ms.set(Some(now - t0));
    } else {
        let ms = now - clock.last_token_ms.unwrap_or(t0);
        clock.run.add(ms);
        ui.tokens_per_s.set(Some(clock.run.tokens_per_s()));
        let g = s.engine.grouping().groups();
        ui.decode_by_groups
            .update(|m| m.entry(g).or_default().add(ms));
    }
    clock.last_token_ms = Some(now);
    Ok(Some(id))
}
