//! Generation in the browser: [`crate::engine::Generator`] driven asynchronously, one step at a
//! time with a turn of the event loop in between, so tokens appear as they are produced and
//! the page can stop the run or change G or the KV cache type mid-sequence (the whole text so
//! far is prefilled again into the rebuilt cache, and generation goes on). A long prefill is fed in chunks sized to
//! take about [`CHUNK_MS`] each, so that Stop and a new G are honoured within it too.
//!
//! Between two steps a run reads the stop flag, the settings' G, method and cache type (the
//! slider moved mid-run regroups the engine here, not behind the run's back) and the
//! attention watch.

use super::regroup;
use super::session::Session;
use crate::engine::{EngineError, GenerateParams, Generator};
use crate::sampling::SamplingParams;
use crate::tokenizer::TokenStream;
use crate::ui::js::{now_ms, yield_now};
use crate::ui::state::attention::AttentionShown;
use crate::ui::state::measurements::{Kv, Measured};
use crate::ui::state::run::Status;
use crate::ui::state::Page;
use crate::ui::url_state::Settings;
use leptos::prelude::*;

/// Milliseconds a chunk of a long prefill should take at most: the page answers Stop within
/// about that. On SwiftShader one token takes 0.2–0.4 s and two 0.8–1.4 s (its prefill kernels
/// cost more per token than its decode ones), so chunks stay at one token there; on a hardware
/// GPU they grow to [`MAX_CHUNK`].
const CHUNK_MS: f64 = 400.0;
/// The same on the CPU backend where it runs on the page's own thread (not in a worker):
/// short enough that a click or a key is answered within about a tenth of a second.
const CPU_CHUNK_MS: f64 = 60.0;
/// Tokens in the first chunk of a prefill; each next one is sized from the time of the last.
const FIRST_CHUNK: usize = 1;
/// The most tokens in one chunk (the GPU engine's own prefill chunk).
const MAX_CHUNK: usize = 128;

/// One run's input.
pub struct Job {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Stop after this token (EOS), or never.
    pub stop_token: Option<u32>,
}

impl Job {
    /// A run of the prompt and sampling of `st` on the session's model.
    pub fn new(st: &Settings, s: &Session) -> Result<Job, String> {
        Ok(Job {
            prompt: st.prompt_ids(&s.tok)?,
            sampling: st.sampling(),
            max_tokens: st.max_tokens,
            stop_token: if st.ignore_eos { None } else { s.tok.eos_id },
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    MaxTokens,
    Eos,
    Stopped,
}

impl Outcome {
    /// How the status line says it ended (nothing for a run that ran its course).
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::MaxTokens => "",
            Outcome::Eos => "end of sequence",
            Outcome::Stopped => "stopped",
        }
    }
}

/// Runs `job` on the session, streaming text, ids, speed and cache positions into the run
/// state. The token bookkeeping is [`Generator`]'s, the same as the CLI's. However the run
/// ends (its last token, EOS, Stop, an error), the text is flushed: a character the last
/// token began shows as U+FFFD, as in the CLI.
pub async fn run(page: Page, s: &mut Session, job: Job) -> Result<Outcome, EngineError> {
    let run = page.run;
    run.clear_stop();
    run.output.set(String::new());
    run.ids.set(Vec::new());
    run.tokens_per_s.set(None);
    run.prefill_ms.set(None);
    run.positions.set(Some(0));
    run.status.set(Status::Generating);
    let params = GenerateParams {
        max_tokens: job.max_tokens,
        sampling: job.sampling,
        stop_token: job.stop_token,
    };
    let vocab = s.engine.config().vocab_size;
    let mut gen = Generator::with_limits(job.prompt, params, vocab, s.engine.capacity())?;
    s.engine.reset().await?;
    let mut text = TokenStream::new();
    s.fed.clear();
    let outcome = drive(page, s, &mut gen, &mut text, job.stop_token).await;
    if outcome.is_ok() {
        let seq = gen.prompt().iter().chain(gen.generated());
        s.fed = seq.take(s.engine.len()).copied().collect();
    }
    let rest = text.finish();
    run.output.update(|o| o.push_str(&rest));
    outcome
}

/// The run's clocks: decode speed is measured between tokens as the page sees them (the GPU
/// may run ahead while the page shows a token and yields); a prefill from its first chunk to
/// the token after it.
struct Clock {
    run: Measured,
    last_token_ms: Option<f64>,
    prefill_since: Option<f64>,
    chunk: usize,
}

/// The steps of a run until it ends (its last token, EOS, Stop, an error); the text streams
/// through `text`.
async fn drive(
    page: Page,
    s: &mut Session,
    gen: &mut Generator,
    text: &mut TokenStream,
    stop_token: Option<u32>,
) -> Result<Outcome, EngineError> {
    let mut clock = Clock {
        run: Measured::default(),
        last_token_ms: None,
        prefill_since: None,
        chunk: FIRST_CHUNK,
    };
    let run = page.run;
    while !gen.is_done() {
        if run.stop_asked() {
            s.engine.drop_ahead().await?;
            return Ok(Outcome::Stopped);
        }
        if regroup::follow_settings(page, s).await? {
            run.status.set(Status::Generating);
            gen.restart();
        }
        let probe = page.attention.wanted();
        if s.engine.attention_probe() != probe {
            s.engine.set_attention_probe(probe).await?;
        }
        if feed_chunk(page, s, gen, &mut clock).await? {
            yield_now().await;
            continue;
        }
        let Some(id) = step(page, s, gen, &mut clock).await? else {
            break;
        };
        let piece = text.push(&s.tok.token_bytes(id, false));
        run.output.update(|o| o.push_str(&piece));
        run.ids.set(gen.generated().to_vec());
        run.positions.set(Some(s.engine.len()));
        show_attention(page, s, gen).await?;
        if Some(id) == stop_token {
            return Ok(Outcome::Eos);
        }
        yield_now().await;
    }
    Ok(Outcome::MaxTokens)
}

/// While the attention view is open: the watched layer's weights for the token just fed,
/// with the token of every position it saw (read back only then: `gpu/engine/probe.rs`).
async fn show_attention(page: Page, s: &mut Session, gen: &Generator) -> Result<(), EngineError> {
    let seq: Vec<u32> = gen
        .prompt()
        .iter()
        .chain(gen.generated())
        .copied()
        .collect();
    read_attention(page, s, &seq).await
}

/// Reads the watched layer's weights (if a layer is watched and a forward wrote them) into
/// the attention view; `seq`: the tokens at the cache's positions.
async fn read_attention(page: Page, s: &mut Session, seq: &[u32]) -> Result<(), EngineError> {
    if s.engine.attention_probe().is_none() {
        return Ok(());
    }
    let Some(weights) = s.engine.attention_weights().await? else {
        return Ok(());
    };
    page.attention.reads.update(|n| *n += 1);
    let ids = seq.iter().take(weights.positions).copied().collect();
    let grouping = s.engine.grouping();
    page.attention.shown.set(Some(AttentionShown {
        weights,
        grouping,
        ids,
    }));
    Ok(())
}

/// The attention view opened (or its layer changed) after a run: the watched layer's weights
/// for the last token the run fed, from one probe of the cached state. That token is taken
/// back and fed again at its position: the cache's rows for it are written again with the
/// same values, so the sequence and the cache stay as they were. Nothing when the view is
/// closed, the cache holds no finished run, or the view shows those weights already.
pub async fn attention_after_run(page: Page, s: &mut Session) -> Result<(), EngineError> {
    let Some(layer) = page.attention.wanted() else {
        return Ok(());
    };
    let n = s.engine.len();
    if n == 0 || s.fed.len() != n {
        return Ok(());
    }
    let shown = page.attention.shown.with_untracked(|sh| {
        sh.as_ref()
            .is_some_and(|sh| sh.weights.layer == layer && sh.weights.positions == n)
    });
    if shown {
        return Ok(());
    }
    let before = page.run.status.get_untracked();
    page.run.status.set(Status::ReadingAttention);
    s.engine.set_attention_probe(Some(layer)).await?;
    s.engine.skip_to(n - 1).await?;
    let last = s.fed[n - 1];
    s.engine.feed(&[last]).await?;
    let seq = s.fed.clone();
    read_attention(page, s, &seq).await?;
    page.run.status.set(before);
    Ok(())
}

/// Feeds the next chunk of a long prefill, if more than one chunk is left; returns whether
/// it did. The status line shows how far the prefill has come.
async fn feed_chunk(
    page: Page,
    s: &mut Session,
    gen: &mut Generator,
    clock: &mut Clock,
) -> Result<bool, EngineError> {
    let Some(ids) = gen.prefill_chunk(clock.chunk) else {
        return Ok(false);
    };
    let (n, t0) = (ids.len(), now_ms());
    clock.prefill_since.get_or_insert(t0);
    let total = s.engine.len() + gen.pending();
    page.run.status.set(Status::Prefilling {
        fed: s.engine.len(),
        total,
    });
    s.engine.feed(ids).await?;
    gen.fed(n);
    let target = match s.engine.is_cpu() && !s.engine.thread.worker {
        true => CPU_CHUNK_MS,
        false => CHUNK_MS,
    };
    clock.chunk = next_chunk(n, now_ms() - t0, target);
    page.run.status.set(Status::Prefilling {
        fed: s.engine.len(),
        total,
    });
    page.run.positions.set(Some(s.engine.len()));
    Ok(true)
}

/// The size of the next chunk, from the last one's: about `target` ms, at most twice as many
/// tokens, within 1..=[`MAX_CHUNK`].
fn next_chunk(n: usize, ms: f64, target: f64) -> usize {
    let fit = (n as f64 * target / ms.max(1.0)).floor() as usize;
    fit.clamp(1, (2 * n).clamp(1, MAX_CHUNK))
}

/// Produces the next token (the rest of a prefill fed with it) and records its time.
async fn step(
    page: Page,
    s: &mut Session,
    gen: &mut Generator,
    clock: &mut Clock,
) -> Result<Option<u32>, EngineError> {
    let prefill = clock.prefill_since.is_some() || gen.is_prefill_next();
    let t0 = clock.prefill_since.take().unwrap_or_else(now_ms);
    // The GPU gets the step after this token before the token is read back (ahead.rs),
    // so it works while the page shows the token and yields.
    let Some(id) = s.engine.next_token(gen).await? else {
        return Ok(None);
    };
    let now = now_ms();
    if prefill {
        page.run.prefill_ms.set(Some(now - t0));
        page.run.status.set(Status::Generating);
    } else {
        let ms = now - clock.last_token_ms.unwrap_or(t0);
        clock.run.add(ms);
        page.run.tokens_per_s.set(Some(clock.run.tokens_per_s()));
        // (Not while the attention view reads weights back each step: that is its cost, not G's.)
        let (backend, kv) = (s.engine.facts().backend, Kv(s.engine.kv_type()));
        let key = (backend, s.engine.grouping().groups(), kv);
        if s.engine.attention_probe().is_none() {
            page.measured
                .decode
                .update(|m| m.entry(key).or_default().add(ms));
        }
    }
    clock.last_token_ms = Some(now);
    Ok(Some(id))
}
