//! The vocabulary: every token's text and kind, and the lookup from text to id.
//!
//! The texts lie back to back in one string and the lookup is an open-addressing table of
//! ids (FNV-1a hash, linear probing, at most half full): two allocations for any vocabulary,
//! so Gemma 3's 262,144 tokens load in milliseconds, in wasm32 as natively.

use super::TokenizerError;

/// A token's kind, from the GGUF `tokenizer.ggml.token_type` (llama.cpp `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    Undefined,
    Normal,
    Unknown,
    /// Rendered only on request, parsed from text only on request.
    Control,
    /// Always rendered as its text, always parsed from text.
    UserDefined,
    Unused,
    /// `<0xNN>`: one raw byte.
    Byte,
}

impl Kind {
    fn from_gguf(t: i64) -> Kind {
        match t {
            1 => Kind::Normal,
            2 => Kind::Unknown,
            3 => Kind::Control,
            4 => Kind::UserDefined,
            5 => Kind::Unused,
            6 => Kind::Byte,
            _ => Kind::Undefined,
        }
    }

    /// Split out of the text before tokenizing (llama.cpp's special-token cache).
    pub(super) fn is_special(self) -> bool {
        matches!(self, Kind::Control | Kind::UserDefined | Kind::Unknown)
    }
}

pub(super) struct Vocab {
    /// All token texts, back to back.
    text: String,
    /// Token `i` is `text[ends[i - 1]..ends[i]]` (`ends[-1]` = 0).
    ends: Vec<u32>,
    kinds: Vec<Kind>,
    /// Open addressing: `id + 1` or 0 for an empty slot; a power of two long.
    table: Vec<u32>,
}

impl Vocab {
    /// The vocabulary of `tokens` with their GGUF token types (`None`: all normal). Empty
    /// texts are kept but never found; a text given twice is an error (llama.cpp refuses it).
    pub(super) fn new(tokens: &[&str], types: Option<&[i64]>) -> Result<Vocab, TokenizerError> {
        let total: usize = tokens.iter().map(|t| t.len()).sum();
        if total > u32::MAX as usize {
            return Err(TokenizerError::BadVocab(format!(
                "{total} bytes of token text"
            )));
        }
        let mut text = String::with_capacity(total);
        let mut ends = Vec::with_capacity(tokens.len());
        for t in tokens {
            text.push_str(t);
            ends.push(text.len() as u32);
        }
        let kinds = match types {
            Some(types) => types.iter().map(|&t| Kind::from_gguf(t)).collect(),
            None => vec![Kind::Normal; tokens.len()],
        };
        let slots = (tokens.len() * 2).next_power_of_two().max(2);
        let mut vocab = Vocab {
            text,
            ends,
            kinds,
            table: vec![0; slots],
        };
        for id in 0..tokens.len() as u32 {
            vocab.insert(id)?;
        }
        Ok(vocab)
    }

    fn insert(&mut self, id: u32) -> Result<(), TokenizerError> {
        let text = self.text(id).as_bytes();
        if text.is_empty() {
            return Ok(());
        }
        let mut slot = self.home(text);
        while let Some(other) = self.table[slot].checked_sub(1) {
            if self.text(other).as_bytes() == text {
                return Err(TokenizerError::BadVocab(format!(
                    "token {id} {:?} repeats token {other}",
                    self.text(id)
                )));
            }
            slot = (slot + 1) & (self.table.len() - 1);
        }
        self.table[slot] = id + 1;
        Ok(())
    }

    /// The slot where the probe for `text` starts.
    fn home(&self, text: &[u8]) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in text {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        // Fibonacci hashing: the top bits, well mixed, pick the slot.
        let bits = self.table.len().trailing_zeros();
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// The id of the token whose text is exactly `text`.
    pub(super) fn id(&self, text: &[u8]) -> Option<u32> {
        if text.is_empty() {
            return None;
        }
        let mut slot = self.home(text);
        loop {
            let id = self.table[slot].checked_sub(1)?;
            if self.text(id).as_bytes() == text {
                return Some(id);
            }
            slot = (slot + 1) & (self.table.len() - 1);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Token `id`'s text ("" past the vocabulary).
    pub(super) fn text(&self, id: u32) -> &str {
        let i = id as usize;
        let Some(&end) = self.ends.get(i) else {
            return "";
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start as usize..end as usize]
    }

    /// Token `id`'s kind (`Undefined` past the vocabulary).
    pub(super) fn kind(&self, id: u32) -> Kind {
        self.kinds
            .get(id as usize)
            .copied()
            .unwrap_or(Kind::Undefined)
    }

    pub(super) fn set_kind(&mut self, id: u32, kind: Kind) {
        if let Some(k) = self.kinds.get_mut(id as usize) {
            *k = kind;
        }
    }

    /// The ids of the tokens that are split out of text before tokenizing.
    pub(super) fn specials(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len() as u32).filter(|&id| self.kind(id).is_special() && !self.text(id).is_empty())
    }
}

/// The byte a `<0xNN>` token stands for.
pub(super) fn byte_token_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    let hex_digits = hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    hex_digits
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_token_and_nothing_else() {
        let tokens = ["a", "b", "ab", "", "▁the", "<0x0A>"];
        let v = Vocab::new(&tokens, None).unwrap();
        for (i, t) in tokens.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            assert_eq!(v.id(t.as_bytes()), Some(i as u32));
        }
        assert_eq!(v.id(b""), None);
        assert_eq!(v.id(b"abc"), None);
        assert_eq!(v.text(4), "▁the");
        assert_eq!(v.text(99), "");
    }

    #[test]
    fn a_repeated_text_is_refused() {
        let e = Vocab::new(&["x", "y", "x"], None).err().unwrap();
        assert!(
            e.to_string().contains("token 2 \"x\" repeats token 0"),
            "{e}"
        );
    }

    #[test]
    fn byte_tokens() {
        assert_eq!(byte_token_value("<0x0A>"), Some(10));
        assert_eq!(byte_token_value("<0xff>"), Some(255));
        assert_eq!(byte_token_value("<0x0>"), None);
        assert_eq!(byte_token_value("<0x+A>"), None);
    }
}
