//! SentencePiece-style tokenization (Kudo & Richardson 2018) for `tokenizer.ggml.model =
//! "llama"` vocabularies (Llama 2, Gemma 3), as llama.cpp's `llm_tokenizer_spm` does it: spaces
//! become U+2581 "▁", optionally one is put in front; the text starts as one symbol per
//! character, and the adjacent pair whose joined text is the vocabulary token of the highest
//! score is merged, again and again (ties: the leftmost); each final symbol is its token, or,
//! if the vocabulary has no such text, its bytes as `<0xNN>` tokens (byte fallback).

use super::vocab::{byte_token_value, Kind, Vocab};
use super::TokenizerError;
use crate::gguf::Gguf;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// U+2581 LOWER ONE EIGHTH BLOCK: SentencePiece's visible space.
const SPACE: &str = "\u{2581}";

pub(super) struct Spm {
    /// Merge priority by token id (`tokenizer.ggml.scores`; 0 if absent, as in llama.cpp).
    scores: Vec<f32>,
    /// The token of each byte for the fallback (256 of them).
    byte_ids: Vec<u32>,
    /// Put "▁" in front of the text and after each special token
    /// (`tokenizer.ggml.add_space_prefix`, true if absent).
    pub(super) add_space_prefix: bool,
}

impl Spm {
    pub(super) fn from_gguf(g: &Gguf<'_>, vocab: &Vocab) -> Result<Spm, TokenizerError> {
        check_byte_tokens(vocab)?;
        Ok(Spm {
            scores: scores(g, vocab.len())?,
            byte_ids: byte_ids(vocab)?,
            add_space_prefix: g
                .optional("tokenizer.ggml.add_space_prefix", Gguf::bool)?
                .unwrap_or(true),
        })
    }

    /// Appends the tokens of a stretch of plain text (no special tokens in it).
    /// `after_special`: the text starts the input or follows a special token.
    pub(super) fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        after_special: bool,
        out: &mut Vec<u32>,
    ) {
        let prefix = if self.add_space_prefix && after_special {
            SPACE
        } else {
            ""
        };
        let text = format!("{prefix}{}", text.replace(' ', SPACE));
        let symbols = self.merge(vocab, &text);
        let mut i = if symbols.is_empty() { NONE } else { 0 };
        while i != NONE {
            let s = &symbols[i];
            let piece = &text.as_bytes()[s.start..s.start + s.len];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => out.extend(piece.iter().map(|&b| self.byte_ids[usize::from(b)])),
            }
            i = s.next;
        }
    }

    /// The symbols of `text` after every merge, linked in order from symbol 0.
    fn merge(&self, vocab: &Vocab, text: &str) -> Vec<Symbol> {
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1).unwrap_or(NONE),
                next: i + 1,
            })
            .collect();
        if let Some(last) = symbols.last_mut() {
            last.next = NONE;
        }
        let mut queue = BinaryHeap::new();
        for right in 1..symbols.len() {
            self.push_bigram(vocab, text, &symbols, right - 1, right, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (left, right) = (&symbols[b.left], &symbols[b.right]);
            // Stale: one side was merged away or grew since the pair was queued.
            if left.len == 0 || right.len == 0 || left.len + right.len != b.len {
                continue;
            }
            let next = right.next;
            symbols[b.left].len = b.len;
            symbols[b.left].next = next;
            symbols[b.right].len = 0;
            if next != NONE {
                symbols[next].prev = b.left;
            }
            let prev = symbols[b.left].prev;
            self.push_bigram(vocab, text, &symbols, prev, b.left, &mut queue);
            self.push_bigram(vocab, text, &symbols, b.left, next, &mut queue);
        }
        symbols
    }

    /// Queues the merge of two adjacent symbols if their joined text is a token.
    fn push_bigram(
        &self,
        vocab: &Vocab,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        if left == NONE || right == NONE {
            return;
        }
        let (start, len) = (symbols[left].start, symbols[left].len + symbols[right].len);
        if let Some(id) = vocab.id(&text.as_bytes()[start..start + len]) {
            queue.push(Bigram {
                score: self.scores[id as usize],
                left,
                right,
                len,
            });
        }
    }

    /// The bytes a token stands for: "▁" is a space, `<0xNN>` its byte.
    pub(super) fn token_bytes(vocab: &Vocab, id: u32, render_special: bool) -> Vec<u8> {
        let text = vocab.text(id);
        match vocab.kind(id) {
            Kind::Normal => text.replace(SPACE, " ").into_bytes(),
            Kind::Byte => byte_token_value(text).map(|b| vec![b]).unwrap_or_default(),
            Kind::UserDefined => text.as_bytes().to_vec(),
            Kind::Control | Kind::Unknown if render_special => text.as_bytes().to_vec(),
            _ => Vec::new(),
        }
    }
}

const NONE: usize = usize::MAX;

/// A stretch of the text, in a doubly linked list of the symbols still standing.
struct Symbol {
    start: usize,
    /// 0 once merged into the symbol on its left.
    len: usize,
    prev: usize,
    next: usize,
}

/// A candidate merge: the pair's token score, where it is, and its joined length.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

/// The higher score first, then the leftmost pair (llama.cpp `llm_bigram_spm::comparator`).
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// The merge scores: F32 or I32 (llama.cpp takes both), as many as the tokens or more; none
/// is NaN, and -0 is 0 (llama.cpp compares them with `<`).
fn scores(g: &Gguf<'_>, n: usize) -> Result<Vec<f32>, TokenizerError> {
    let Some(a) = g.optional("tokenizer.ggml.scores", Gguf::array)? else {
        return Ok(vec![0.0; n]);
    };
    if a.len() < n {
        return Err(TokenizerError::BadVocab(format!(
            "{} scores for {n} tokens",
            a.len()
        )));
    }
    let score = |i: usize| {
        let v = a.get(i)?;
        v.to_f32()
            .ok()
            .or_else(|| v.to_i64().ok().map(|s| s as f32))
    };
    (0..n)
        .map(|i| match score(i) {
            Some(s) if !s.is_nan() => Ok(s + 0.0),
            _ => Err(TokenizerError::BadVocab(format!(
                "tokenizer.ggml.scores[{i}] is not a number"
            ))),
        })
        .collect()
}

/// Every byte's fallback token: `<0xNN>`, or for ASCII the one-byte token (llama.cpp's
/// `byte_to_token`). A vocabulary without one cannot tokenize every text: refused here.
fn byte_ids(vocab: &Vocab) -> Result<Vec<u32>, TokenizerError> {
    let mut ids = vec![0; 256];
    for (b, id) in ids.iter_mut().enumerate() {
        let hex = format!("<0x{b:02X}>");
        *id = vocab
            .id(hex.as_bytes())
            .or_else(|| (b < 0x80).then(|| vocab.id(&[b as u8])).flatten())
            .ok_or_else(|| {
                TokenizerError::BadVocab(format!("no byte-fallback token {hex} for byte 0x{b:02X}"))
            })?;
    }
    Ok(ids)
}

/// Byte tokens must read `<0xNN>`.
fn check_byte_tokens(vocab: &Vocab) -> Result<(), TokenizerError> {
    for id in 0..vocab.len() as u32 {
        if vocab.kind(id) == Kind::Byte && byte_token_value(vocab.text(id)).is_none() {
            return Err(TokenizerError::BadVocab(format!(
                "byte token {id} is {:?}, not <0xNN>",
                vocab.text(id)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary with scores, every byte token, and no metadata reader: the merge alone.
    fn spm(tokens: &[(&str, f32)]) -> (Spm, Vocab) {
        let bytes: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        let texts: Vec<&str> = tokens
            .iter()
            .map(|t| t.0)
            .chain(bytes.iter().map(String::as_str))
            .collect();
        let types: Vec<i64> = tokens
            .iter()
            .map(|_| 1)
            .chain(bytes.iter().map(|_| 6))
            .collect();
        let vocab = Vocab::new(&texts, Some(&types)).unwrap();
        let scores = tokens
            .iter()
            .map(|t| t.1)
            .chain(bytes.iter().map(|_| 0.0))
            .collect();
        let spm = Spm {
            scores,
            byte_ids: byte_ids(&vocab).unwrap(),
            add_space_prefix: true,
        };
        (spm, vocab)
    }

    fn encode(spm: &Spm, vocab: &Vocab, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        spm.encode(vocab, text, true, &mut out);
        out
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let (s, v) = spm(&[
            ("▁", -1.0),
            ("a", -1.0),
            ("b", -1.0),
            ("▁a", -5.0),
            ("ab", -2.0),
            ("▁ab", -3.0),
        ]);
        // "ab" (-2) beats "▁a" (-5), then "▁" + "ab" = "▁ab".
        assert_eq!(encode(&s, &v, "ab"), [5]);
        // "é" is no token: its two bytes.
        let e = 6 + 0xC3;
        assert_eq!(encode(&s, &v, "é a"), [0, e, e - 0xC3 + 0xA9, 3]);
        assert_eq!(Spm::token_bytes(&v, 5, false), b" ab");
        assert_eq!(Spm::token_bytes(&v, e, false), [0xC3]);
    }

    #[test]
    fn ties_go_to_the_leftmost_pair() {
        let (s, v) = spm(&[("a", -1.0), ("aa", -2.0)]);
        let mut out = Vec::new();
        s.encode(&v, "aaa", false, &mut out);
        assert_eq!(out, [1, 0]);
    }

    #[test]
    fn a_missing_byte_token_is_refused() {
        let v = Vocab::new(&["a", "<0x00>"], None).unwrap();
        let e = byte_ids(&v).err().unwrap();
        assert_eq!(
            e.to_string(),
            "bad tokenizer metadata: no byte-fallback token <0x01> for byte 0x01"
        );
    }
}
