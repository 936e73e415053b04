//! Tokenizer built from the GGUF's own `tokenizer.ggml.*` metadata: GPT-2 byte-level BPE
//! (Radford et al. 2019; Sennrich et al. 2016) with the model's pre-tokenizer, special
//! tokens parsed only on request, and a streaming UTF-8-safe decoder.
//!
//! The BPE merge loop and the pre-tokenizer regexes come from Hugging Face `tokenizers`
//! (built without its C regex engine, so it compiles for wasm32). What this module adds:
//! reading vocab/merges from GGUF, splitting out special tokens the way llama.cpp does
//! (`tokenizer_st_partition`), byte-level decoding to raw bytes, and the ChatML layout.

mod bytes;
mod chat;
mod stream;

pub use chat::ChatTemplate;
pub use stream::TokenStream;

use crate::gguf::{Gguf, GgufError};
use thiserror::Error;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported tokenizer model {0:?} (supported: gpt2 byte-level BPE)")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer {0:?} (supported: smollm, gpt2, default)")]
    UnsupportedPre(String),
    #[error("bad tokenizer metadata: {0}")]
    BadVocab(String),
    #[error("tokenizer failed: {0}")]
    Bpe(String),
    #[error("the model has no ChatML chat template (tokenizer.chat_template); use a raw prompt")]
    NoChatTemplate,
}

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// A byte-level BPE tokenizer with the model's special tokens.
pub struct Tokenizer {
    bpe: tokenizers::Tokenizer,
    /// Token text by id (byte-level alphabet for normal tokens).
    tokens: Vec<String>,
    /// Ids of control tokens (rendered only on request) and user-defined ones (always).
    control: Vec<bool>,
    /// Special tokens by descending text length, for longest-match splitting.
    specials: Vec<(String, u32)>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, TokenizerError> {
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let pre = match g.get("tokenizer.ggml.pre") {
            Some(_) => g.str("tokenizer.ggml.pre")?,
            None => "default",
        };
        let tokens = g
            .require("tokenizer.ggml.tokens")?
            .to_str_array()
            .map_err(|e| bad(e, "tokens"))?;
        let types = token_types(g, tokens.len())?;
        let merges = g
            .require("tokenizer.ggml.merges")?
            .to_str_array()
            .map_err(|e| bad(e, "merges"))?;
        let bpe = build_bpe(&tokens, &merges, pre)?;
        let id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match g.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = v.to_u64().map_err(|e| bad(e, key))?;
                    (id < tokens.len() as u64)
                        .then_some(Some(id as u32))
                        .ok_or_else(|| {
                            TokenizerError::BadVocab(format!("{key} = {id} is past the vocabulary"))
                        })
                }
            }
        };
        let is_special = |t: i64| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED;
        let mut specials: Vec<(String, u32)> = (0..tokens.len())
            .filter(|&i| is_special(types[i]) && !tokens[i].is_empty())
            .map(|i| (tokens[i].to_string(), i as u32))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Ok(Tokenizer {
            bpe,
            control: types.iter().map(|&t| t == TOKEN_TYPE_CONTROL).collect(),
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            specials,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            add_bos: match g.get("tokenizer.ggml.add_bos_token") {
                Some(v) => v.to_bool().map_err(|e| bad(e, "add_bos_token"))?,
                None => false,
            },
            chat_template: match g.get("tokenizer.chat_template") {
                Some(v) => ChatTemplate::detect(v.to_str().map_err(|e| bad(e, "chat_template"))?),
                None => None,
            },
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Token ids of `text`. With `parse_special`, the texts of special tokens become their
    /// ids; otherwise they are ordinary text. No BOS is added here (see [`Self::encode_prompt`]).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        for piece in self.split_specials(text, parse_special) {
            match piece {
                Piece::Special(id) => ids.push(id),
                Piece::Text(t) => ids.extend(self.encode_plain(t)?),
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

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .bpe
            .encode(text, false)
            .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    fn split_specials<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Piece<'t>> {
        let mut out = Vec::new();
        if !parse_special || self.specials.is_empty() {
            out.push(Piece::Text(text));
            return out;
        }
        let (mut start, mut i) = (0, 0);
        while i < text.len() {
            let hit = self
                .specials
                .iter()
                .find(|(s, _)| text[i..].starts_with(s.as_str()));
            match hit {
                Some((s, id)) => {
                    out.push(Piece::Text(&text[start..i]));
                    out.push(Piece::Special(*id));
                    i += s.len();
                    start = i;
                }
                None => i += text[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        out.push(Piece::Text(&text[start..]));
        out
    }

    /// The bytes a token stands for. Control tokens give their text only if `render_special`.
    pub fn token_bytes(&self, id: u32, render_special: bool) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else {
            return Vec::new();
        };
        if self.control[id as usize] {
            return if render_special {
                text.as_bytes().to_vec()
            } else {
                Vec::new()
            };
        }
        if self.specials.iter().any(|(_, s)| *s == id) {
            return text.as_bytes().to_vec();
        }
        bytes::decode_byte_level(text)
    }

    /// The text of a whole sequence (invalid UTF-8 shown as U+FFFD).
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id, render_special))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The token's text as stored in the vocabulary (for display).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}

enum Piece<'t> {
    Text(&'t str),
    Special(u32),
}

fn bad(e: GgufError, what: &str) -> TokenizerError {
    TokenizerError::BadVocab(format!("{what}: {e}"))
}

fn token_types(g: &Gguf<'_>, n: usize) -> Result<Vec<i64>, TokenizerError> {
    let Some(v) = g.get("tokenizer.ggml.token_type") else {
        return Ok(vec![1; n]);
    };
    let types = v
        .to_array()
        .map_err(|e| bad(e, "token_type"))?
        .iter()
        .map(|t| t.to_i64().map_err(|e| bad(e, "token_type")))
        .collect::<Result<Vec<_>, _>>()?;
    if types.len() != n {
        return Err(TokenizerError::BadVocab(format!(
            "{} token types for {n} tokens",
            types.len()
        )));
    }
    Ok(types)
}

fn build_bpe(
    tokens: &[&str],
    merges: &[&str],
    pre: &str,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(TokenizerError::BadVocab("duplicate token texts".into()));
    }
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::BadVocab(format!("merge {m:?} is not two tokens")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true));
    let pre_tokenizer = match pre {
        // llama.cpp LLAMA_VOCAB_PRE_TYPE_SMOLLM: each digit alone, then the GPT-2 regex.
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            byte_level,
        ])),
        "gpt2" | "default" => byte_level,
        other => return Err(TokenizerError::UnsupportedPre(other.to_string())),
    };
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    Ok(tok)
}
