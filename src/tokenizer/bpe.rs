//! GPT-2 byte-level BPE (`tokenizer.ggml.model = "gpt2"`; Radford et al. 2019, Sennrich et
//! al. 2016) through Hugging Face `tokenizers`: its merge loop, and the model's pre-tokenizer
//! (`tokenizer.ggml.pre`) as the regexes llama.cpp uses (`llm_tokenizer_bpe`, llama-vocab.cpp),
//! run by the `tokenizers` Split pre-tokenizer on `fancy-regex` (no C regex engine, so it
//! builds for wasm32).

use super::vocab::{byte_token_value, Kind, Vocab};
use super::{bytes, TokenizerError};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

/// The pre-tokenizers this module knows (`tokenizer.ggml.pre`).
pub(super) const SUPPORTED_PRE: &str = "smollm, gpt2, default, llama-bpe, qwen2";

/// Llama 3 (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`): contractions in either case, a letter
/// run with at most one leading non-letter, numbers of up to three digits, punctuation runs
/// with their newlines, newline runs, trailing spaces apart from the next word.
const LLAMA3: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// Qwen2 and Qwen2.5 (llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`): Llama 3's, but every digit alone.
const QWEN2: &str = concat!(
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
    r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

/// The settings a pre-tokenizer name brings with it in llama.cpp.
pub(super) struct PreSettings {
    pub(super) pre_tokenizer: PreTokenizerWrapper,
    /// A whole pre-token that is a vocabulary token is that token, unmerged (Llama 3).
    pub(super) ignore_merges: bool,
    /// `tokenizer.ggml.add_bos_token` when the GGUF does not say.
    pub(super) add_bos: bool,
}

/// The pre-tokenizer called `pre` in GGUF, or an error naming it and the ones supported.
pub(super) fn pre_settings(pre: &str) -> Result<PreSettings, TokenizerError> {
    // GPT-2's own regex inside ByteLevel; or, after a Split by another regex, none.
    let gpt2 = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true));
    let split_by = |regex: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
        let split = Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
        ])))
    };
    let (pre_tokenizer, ignore_merges, add_bos) = match pre {
        // LLAMA_VOCAB_PRE_TYPE_SMOLLM: each digit alone, then the GPT-2 regex.
        "smollm" => (
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                gpt2(),
            ])),
            false,
            false,
        ),
        "gpt2" | "default" => (gpt2(), false, false),
        "llama-bpe" => (split_by(LLAMA3)?, true, true),
        "qwen2" => (split_by(QWEN2)?, false, false),
        other => return Err(TokenizerError::UnsupportedPre(other.to_string())),
    };
    Ok(PreSettings {
        pre_tokenizer,
        ignore_merges,
        add_bos,
    })
}

/// The byte-level BPE of `vocab` and `merges` ("left right" token pairs, in rank order).
pub(super) fn build(
    vocab: &Vocab,
    merges: &[&str],
    pre: PreSettings,
) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let ids: tokenizers::models::bpe::Vocab = (0..vocab.len() as u32)
        .map(|id| (vocab.text(id).to_string(), id))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| TokenizerError::BadVocab(format!("merge {m:?} is not two tokens")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(ids, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre.pre_tokenizer));
    Ok(tok)
}

/// The bytes whose byte-level character is not a token of `vocab` (every byte-level BPE
/// vocabulary has all 256; without one, the merge loop would drop that byte).
pub(super) fn missing_bytes(vocab: &Vocab) -> Vec<u8> {
    (0..=255u8)
        .filter(|&b| {
            let c = bytes::byte_to_char(b);
            vocab.id(c.encode_utf8(&mut [0; 4]).as_bytes()).is_none()
        })
        .collect()
}

/// The bytes a token stands for: a normal token's byte-level text decoded.
pub(super) fn token_bytes(vocab: &Vocab, id: u32, render_special: bool) -> Vec<u8> {
    let text = vocab.text(id);
    match vocab.kind(id) {
        Kind::Control | Kind::Unknown if !render_special => Vec::new(),
        Kind::Control | Kind::Unknown | Kind::UserDefined => text.as_bytes().to_vec(),
        Kind::Byte => byte_token_value(text).map(|b| vec![b]).unwrap_or_default(),
        Kind::Normal => bytes::decode_byte_level(text),
        Kind::Unused | Kind::Undefined => Vec::new(),
    }
}

/// The pieces the pre-tokenizer `pre` cuts `text` into, as text (before byte-level BPE).
pub fn pre_tokenize(pre: &str, text: &str) -> Result<Vec<String>, TokenizerError> {
    let settings = pre_settings(pre)?;
    let mut s = PreTokenizedString::from(text);
    settings
        .pre_tokenizer
        .pre_tokenize(&mut s)
        .map_err(|e| TokenizerError::Bpe(e.to_string()))?;
    Ok(s.get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(_, (start, end), _)| text[start..end].to_string())
        .collect())
}
