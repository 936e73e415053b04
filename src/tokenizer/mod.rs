//! Tokenizers built from the GGUF's own `tokenizer.ggml.*` metadata, token for token as
//! llama.cpp (`src/llama-vocab.cpp`) tokenizes, for the two kinds of vocabulary in use:
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE (Radford et al. 2019; Sennrich et al.
//!   2016) with the model's pre-tokenizer (`bpe.rs`: smollm, gpt2, llama-bpe for Llama 3,
//!   qwen2 for Qwen2/2.5), the merge loop and the pre-tokenizer regexes from Hugging Face
//!   `tokenizers` (built without its C regex engine, so it compiles for wasm32);
//! - `tokenizer.ggml.model = "llama"`: SentencePiece-style (Kudo & Richardson 2018) merges by
//!   score with byte fallback (`spm.rs`: Llama 2, Gemma 3), as llama.cpp's
//!   `llm_tokenizer_spm`.
//!
//! Around them: the vocabulary and its text → id table (`vocab.rs`), special tokens split out
//! of the text first (`specials.rs`, as llama.cpp's `tokenizer_st_partition`), decoding to raw
//! bytes so that [`TokenStream`] can join characters split across tokens, and the ChatML
//! layout (`chat.rs`).

mod bpe;
mod bytes;
mod chat;
mod specials;
mod spm;
mod stream;
mod vocab;

pub use bpe::pre_tokenize;
pub use chat::ChatTemplate;
pub use stream::TokenStream;

use crate::gguf::{Gguf, GgufError};
use specials::{Piece, Specials};
use spm::Spm;
use thiserror::Error;
use vocab::Vocab;

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(
        "unsupported tokenizer model {0:?} (supported: gpt2 byte-level BPE, llama SentencePiece)"
    )]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer {0:?} (supported: {supported})", supported = bpe::SUPPORTED_PRE)]
    UnsupportedPre(String),
    #[error("bad tokenizer metadata: {0}")]
    BadVocab(String),
    #[error("tokenizer failed: {0}")]
    Bpe(String),
    #[error("the vocabulary has no token for byte 0x{0:02X} ({c:?}), which the text holds", c = char::from(*.0))]
    MissingByte(u8),
    #[error("the model has no ChatML chat template (tokenizer.chat_template); use a raw prompt")]
    NoChatTemplate,
}

/// How plain text becomes tokens.
enum Model {
    Bpe(Box<tokenizers::Tokenizer>),
    Spm(Spm),
}

/// The model's tokenizer: its vocabulary, its special tokens, and how text becomes tokens.
pub struct Tokenizer {
    vocab: Vocab,
    model: Model,
    specials: Specials,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<ChatTemplate>,
    /// The bytes a byte-level BPE vocabulary has no token for (a text with one is refused
    /// rather than losing it); empty for SentencePiece, which refuses them at load.
    missing_bytes: Vec<u8>,
}

impl Tokenizer {
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, TokenizerError> {
        let kind = g.str("tokenizer.ggml.model")?;
        if kind != "gpt2" && kind != "llama" {
            return Err(TokenizerError::UnsupportedModel(kind.to_string()));
        }
        let vocab = read_vocab(g)?;
        let (model, add_bos_default) = match kind {
            "gpt2" => build_bpe(g, &vocab)?,
            _ => (Model::Spm(Spm::from_gguf(g, &vocab)?), true),
        };
        // llama.cpp's defaults for a SentencePiece vocabulary: <s> = 1, </s> = 2.
        let spm = matches!(model, Model::Spm(_));
        Ok(Tokenizer {
            bos_id: special_id(g, "tokenizer.ggml.bos_token_id", &vocab, spm.then_some(1))?,
            eos_id: special_id(g, "tokenizer.ggml.eos_token_id", &vocab, spm.then_some(2))?,
            add_bos: g
                .optional("tokenizer.ggml.add_bos_token", Gguf::bool)?
                .unwrap_or(add_bos_default),
            chat_template: g
                .optional("tokenizer.chat_template", Gguf::str)?
                .and_then(ChatTemplate::detect),
            specials: Specials::new(&vocab),
            missing_bytes: match model {
                Model::Bpe(_) => bpe::missing_bytes(&vocab),
                Model::Spm(_) => Vec::new(),
            },
            vocab,
            model,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Token ids of `text`. With `parse_special`, the texts of control tokens become their
    /// ids; otherwise they are ordinary text (user-defined tokens are always recognised, as in
    /// llama.cpp). No BOS is added here (see [`Self::encode_prompt`]).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        let mut after_special = true;
        for piece in self.specials.split(&self.vocab, text, parse_special) {
            match piece {
                Piece::Special(id) => {
                    ids.push(id);
                    after_special = true;
                }
                Piece::Text(t) => {
                    self.encode_plain(t, after_special, &mut ids)?;
                    after_special = false;
                }
            }
        }
        Ok(ids)
    }

    /// The model input for a prompt: special tokens parsed, BOS prepended when the model's
    /// metadata asks for it (`tokenizer.ggml.add_bos_token`).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if let (true, Some(bos)) = (self.add_bos, self.bos_id) {
            ids.push(bos);
        }
        ids.extend(self.encode(text, true)?);
        Ok(ids)
    }

    /// The prompt for a single user message in the model's chat layout.
    pub fn chat_prompt(
        &self,
        message: &str,
        system: Option<&str>,
    ) -> Result<String, TokenizerError> {
        let t = self
            .chat_template
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?;
        Ok(t.render(message, system))
    }

    /// Appends the tokens of text without special tokens.
    fn encode_plain(
        &self,
        text: &str,
        after_special: bool,
        ids: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        match &self.model {
            Model::Spm(spm) => spm.encode(&self.vocab, text, after_special, ids),
            Model::Bpe(bpe) => {
                if let Some(&b) = text
                    .as_bytes()
                    .iter()
                    .find(|b| self.missing_bytes.contains(b))
                {
                    return Err(TokenizerError::MissingByte(b));
                }
                let enc = bpe
                    .encode(text, false)
                    .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
                ids.extend_from_slice(enc.get_ids());
            }
        }
        Ok(())
    }

    /// The bytes a token stands for (raw bytes: a character may be split across tokens).
    /// Control tokens give their text only if `render_special`.
    pub fn token_bytes(&self, id: u32, render_special: bool) -> Vec<u8> {
        match self.model {
            Model::Bpe(_) => bpe::token_bytes(&self.vocab, id, render_special),
            Model::Spm(_) => Spm::token_bytes(&self.vocab, id, render_special),
        }
    }

    /// The text of a whole sequence (invalid UTF-8 shown as U+FFFD). Where the tokenizer puts
    /// a space in front of the text, the first token's leading space is dropped, as llama.cpp's
    /// `detokenize` does.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_bytes(id, render_special);
            let skip = i == 0 && self.adds_space_prefix() && piece.first() == Some(&b' ');
            bytes.extend_from_slice(&piece[usize::from(skip)..]);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The token's text as stored in the vocabulary (for display).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.vocab.len()).then(|| self.vocab.text(id))
    }

    fn adds_space_prefix(&self) -> bool {
        matches!(&self.model, Model::Spm(spm) if spm.add_space_prefix)
    }
}

/// The tokens and their types, with the ones llama.cpp recognises by their text made control.
fn read_vocab(g: &Gguf<'_>) -> Result<Vocab, TokenizerError> {
    let tokens = g.str_array("tokenizer.ggml.tokens")?;
    let types = token_types(g, tokens.len())?;
    let mut vocab = Vocab::new(&tokens, types.as_deref())?;
    specials::mark_control_looking(&mut vocab, g);
    Ok(vocab)
}

/// `tokenizer.ggml.token_type`, one per token, if the GGUF has it.
fn token_types(g: &Gguf<'_>, n: usize) -> Result<Option<Vec<i64>>, TokenizerError> {
    const KEY: &str = "tokenizer.ggml.token_type";
    let Some(a) = g.optional(KEY, Gguf::array)? else {
        return Ok(None);
    };
    let types = a
        .iter()
        .enumerate()
        .map(|(i, t)| t.to_i64().map_err(|e| e.at(&format!("{KEY}[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    if types.len() != n {
        return Err(TokenizerError::BadVocab(format!(
            "{} token types for {n} tokens",
            types.len()
        )));
    }
    Ok(Some(types))
}

/// The byte-level BPE of a `gpt2` vocabulary, and whether its pre-tokenizer's models add BOS.
fn build_bpe(g: &Gguf<'_>, vocab: &Vocab) -> Result<(Model, bool), TokenizerError> {
    let pre = g
        .optional("tokenizer.ggml.pre", Gguf::str)?
        .unwrap_or("default");
    let settings = bpe::pre_settings(pre)?;
    let add_bos = settings.add_bos;
    let merges = g.str_array("tokenizer.ggml.merges")?;
    let tok = bpe::build(vocab, &merges, settings)?;
    Ok((Model::Bpe(Box::new(tok)), add_bos))
}

/// A token id from the metadata, else `default` if the vocabulary has it; past the
/// vocabulary is an error.
fn special_id(
    g: &Gguf<'_>,
    key: &str,
    vocab: &Vocab,
    default: Option<u32>,
) -> Result<Option<u32>, TokenizerError> {
    let n = vocab.len() as u64;
    let Some(id) = g.optional(key, Gguf::u64)? else {
        return Ok(default.filter(|&id| u64::from(id) < n));
    };
    if id >= n {
        return Err(TokenizerError::BadVocab(format!(
            "{key} = {id} is past the vocabulary"
        )));
    }
    Ok(Some(id as u32))
}
