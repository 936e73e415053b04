//! Step-wise generation on any engine: one token per [`Generator::step`], so a driver can
//! yield between tokens and change G in the middle ([`Generator::regroup`]).

use super::{Engine, EngineError};
use crate::model::KvType;
use crate::sampling::SamplingParams;
use serde::{Deserialize, Serialize};

/// Settings of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop after this token (usually EOS); `None` never stops early.
    pub stop_token: Option<u32>,
}

/// Step-wise generation: one token per [`Generator::step`], so a UI can yield between tokens
/// and change G in the middle ([`Generator::regroup`]): the text so far is prefilled again
/// under the new grouping and generation goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generator {
    prompt: Vec<u32>,
    generated: Vec<u32>,
    params: GenerateParams,
    /// Tokens known but not yet in the engine's cache.
    pending: Vec<u32>,
    done: bool,
}

impl Generator {
    /// Checks the prompt and parameters against the engine, and empties its cache.
    pub fn new(
        engine: &mut dyn Engine,
        prompt: Vec<u32>,
        params: GenerateParams,
    ) -> Result<Self, EngineError> {
        let gen = Self::with_limits(
            prompt,
            params,
            engine.config().vocab_size,
            engine.capacity(),
        )?;
        engine.reset();
        Ok(gen)
    }

    /// Checks the prompt and parameters against a vocabulary and a cache of `capacity`
    /// positions, for a driver that owns its engine (the browser's async loop). The caller
    /// empties the engine's cache before the first step.
    pub fn with_limits(
        prompt: Vec<u32>,
        params: GenerateParams,
        vocab: usize,
        capacity: usize,
    ) -> Result<Self, EngineError> {
        params
            .sampling
            .validate()
            .map_err(EngineError::BadSampling)?;
        if prompt.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange { id, vocab });
        }
        // The last generated token is sampled but never fed, hence the −1.
        if prompt
            .len()
            .saturating_add(params.max_tokens.saturating_sub(1))
            > capacity
        {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                max_tokens: params.max_tokens,
                capacity,
            });
        }
        Ok(Generator {
            pending: prompt.clone(),
            prompt,
            generated: Vec::new(),
            params,
            done: params.max_tokens == 0,
        })
    }

    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    pub fn sampling(&self) -> &SamplingParams {
        &self.params.sampling
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// True when the next step will run a prefill (the first step, or after a regroup).
    pub fn is_prefill_next(&self) -> bool {
        self.pending.len() > 1 || self.generated.is_empty()
    }

    /// What to feed the engine next and the sampling step, or `None` once done.
    pub fn next_input(&self) -> Option<(&[u32], u32)> {
        (!self.done).then_some((&self.pending, self.generated.len() as u32))
    }

    /// The first `max` tokens still to feed, when more than `max` are: a driver that must
    /// stay responsive (the browser) feeds them alone ([`Engine::feed`]), reports
    /// [`Generator::fed`], and can stop or regroup before the rest.
    pub fn prefill_chunk(&self, max: usize) -> Option<&[u32]> {
        (!self.done && self.pending.len() > max).then(|| &self.pending[..max])
    }

    /// Records that the first `n` tokens of [`Generator::prefill_chunk`] are in the cache.
    pub fn fed(&mut self, n: usize) {
        self.pending
            .drain(..n.min(self.pending.len().saturating_sub(1)));
    }

    /// Tokens known but not yet in the engine's cache.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Records the token sampled after feeding [`Generator::next_input`].
    pub fn accept(&mut self, id: u32) {
        self.pending.clear();
        self.pending.push(id);
        self.generated.push(id);
        self.done =
            self.generated.len() >= self.params.max_tokens || Some(id) == self.params.stop_token;
    }

    /// Whether a token after the one sampled at `step` may be wanted (it is, unless that one
    /// is the stop token): a backend may start on it early ([`Engine::next_token`]).
    pub fn may_want_after(&self, step: u32) -> bool {
        (step as usize) + 1 < self.params.max_tokens
    }

    /// Produces the next token, or `None` once done, as the engine chooses to
    /// ([`Engine::next_token`]: the GPU decodes one step ahead).
    pub async fn step(&mut self, engine: &mut dyn Engine) -> Result<Option<u32>, EngineError> {
        engine.next_token(self).await
    }

    /// Produces the next token, or `None` once done: the input fed and the token waited for.
    pub async fn step_waiting<E: Engine + ?Sized>(
        &mut self,
        engine: &mut E,
    ) -> Result<Option<u32>, EngineError> {
        let sampling = self.params.sampling;
        let Some((ids, step)) = self.next_input() else {
            return Ok(None);
        };
        let id = engine.forward_sample(ids, &sampling, step).await?;
        self.accept(id);
        Ok(Some(id))
    }

    /// Regroups the engine mid-generation: the cache is rebuilt at the new G and the whole
    /// sequence so far is prefilled again at the next step.
    pub fn regroup(&mut self, engine: &mut dyn Engine, groups: usize) -> Result<(), EngineError> {
        engine.regroup(groups)?;
        self.restart();
        Ok(())
    }

    /// Changes how the engine's cache keeps K and V mid-generation: as [`Generator::regroup`],
    /// the cache is rebuilt and the sequence so far prefilled again at the next step.
    pub fn set_kv_type(&mut self, engine: &mut dyn Engine, t: KvType) -> Result<(), EngineError> {
        engine.set_kv_type(t)?;
        self.restart();
        Ok(())
    }

    /// After the engine's cache was rebuilt by its owner: feed the whole sequence again.
    pub fn restart(&mut self) {
        self.pending = self.prompt.iter().chain(&self.generated).copied().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count of tokens past any context is refused with what was asked, never wrapped round
    /// into a small one (in wasm32 `usize` is 32 bits: `max_tokens=4294967295` in the URL).
    #[test]
    fn a_huge_max_tokens_is_refused_up_front() {
        let params = GenerateParams {
            max_tokens: usize::MAX,
            sampling: SamplingParams::greedy(),
            stop_token: None,
        };
        let e = Generator::with_limits(vec![1, 2, 3], params, 16, 8).unwrap_err();
        let want = EngineError::PromptTooLong {
            prompt: 3,
            max_tokens: usize::MAX,
            capacity: 8,
        };
        assert_eq!(e, want);
    }
}
