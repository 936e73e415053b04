//! Special tokens split out of the text before it is tokenized, as llama.cpp's
//! `tokenizer_st_partition` does: token texts longest first, each one's every occurrence in
//! what is still plain text, left to right. User-defined tokens are always split out (Gemma's
//! newlines, runs of spaces and tabs, HTML tags); control and unknown ones only when special
//! tokens are parsed.
//!
//! Each length is one pass over the text: a byte that no special token of that length starts
//! with is skipped at once, else the vocabulary's table says whether a special token is there.

use super::vocab::{Kind, Vocab};
use crate::gguf::Gguf;

/// A stretch of plain text, or a special token's id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Piece<'t> {
    Text(&'t str),
    Special(u32),
}

/// The special tokens of one text length: which bytes they start with.
struct Length {
    len: usize,
    first: [u64; 4],
}

impl Length {
    fn starts_with(&self, b: u8) -> bool {
        self.first[usize::from(b >> 6)] >> (b & 63) & 1 == 1
    }
}

pub(super) struct Specials {
    /// Every special token's length, longest first.
    all: Vec<Length>,
    /// The user-defined tokens' lengths, longest first.
    user_defined: Vec<Length>,
}

impl Specials {
    pub(super) fn new(vocab: &Vocab) -> Specials {
        Specials {
            all: lengths(vocab, |_| true),
            user_defined: lengths(vocab, |k| k == Kind::UserDefined),
        }
    }

    /// `text` cut into plain text and special tokens. No piece of text is empty.
    pub(super) fn split<'t>(
        &self,
        vocab: &Vocab,
        text: &'t str,
        parse_special: bool,
    ) -> Vec<Piece<'t>> {
        let mut pieces: Vec<Piece<'t>> = Vec::new();
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let lengths = if parse_special {
            &self.all
        } else {
            &self.user_defined
        };
        let wanted = |k: Kind| k.is_special() && (parse_special || k == Kind::UserDefined);
        for length in lengths {
            let mut next = Vec::with_capacity(pieces.len());
            for piece in pieces {
                match piece {
                    Piece::Text(t) => cut(vocab, t, length, &wanted, &mut next),
                    special => next.push(special),
                }
            }
            pieces = next;
        }
        pieces
    }
}

/// The lengths of the special tokens whose kind passes `keep`, longest first.
fn lengths(vocab: &Vocab, keep: impl Fn(Kind) -> bool) -> Vec<Length> {
    let mut out: Vec<Length> = Vec::new();
    for id in vocab.specials().filter(|&id| keep(vocab.kind(id))) {
        let text = vocab.text(id).as_bytes();
        let at = match out.iter().position(|l| l.len == text.len()) {
            Some(at) => at,
            None => {
                out.push(Length {
                    len: text.len(),
                    first: [0; 4],
                });
                out.len() - 1
            }
        };
        out[at].first[usize::from(text[0] >> 6)] |= 1 << (text[0] & 63);
    }
    out.sort_by_key(|l| std::cmp::Reverse(l.len));
    out
}

/// Splits the special tokens of one length out of `t`, left to right.
fn cut<'t>(
    vocab: &Vocab,
    t: &'t str,
    length: &Length,
    wanted: &impl Fn(Kind) -> bool,
    out: &mut Vec<Piece<'t>>,
) {
    let bytes = t.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i + length.len <= bytes.len() {
        let hit = length
            .starts_with(bytes[i])
            .then(|| vocab.id(&bytes[i..i + length.len]))
            .flatten()
            .filter(|&id| wanted(vocab.kind(id)));
        match hit {
            // A special token's text is whole UTF-8 characters, so `i` and `i + len` are
            // character boundaries of `t`.
            Some(id) => {
                if i > start {
                    out.push(Piece::Text(&t[start..i]));
                }
                out.push(Piece::Special(id));
                i += length.len;
                start = i;
            }
            None => i += 1,
        }
    }
    if start < bytes.len() {
        out.push(Piece::Text(&t[start..]));
    }
}

/// End-of-generation texts that llama.cpp (`llama_vocab::impl::load`) treats as control tokens
/// whatever their GGUF type ("control-looking token … its type will be overridden"). On
/// Gemma 3 it turns the user-defined HTML tag `</s>` into a control token.
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle texts llama.cpp treats as control tokens when the GGUF does not name
/// that token's id (llama.cpp takes the first it meets of each group; no model has two).
const FILL_IN_THE_MIDDLE: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pre_token_id",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

/// Marks the tokens llama.cpp recognises by their text as control tokens.
pub(super) fn mark_control_looking(vocab: &mut Vocab, g: &Gguf<'_>) {
    let fim = FILL_IN_THE_MIDDLE
        .iter()
        .filter(|(key, _)| g.get(key).is_none())
        .flat_map(|(_, texts)| texts.iter());
    for text in END_OF_GENERATION.iter().chain(fim) {
        if let Some(id) = vocab.id(text.as_bytes()) {
            vocab.set_kind(id, Kind::Control);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        // <a>: control, [u]: user-defined, "  ": user-defined run of spaces.
        let tokens = ["x", "<a>", "[u]", "  ", "<a>[u]"];
        Vocab::new(&tokens, Some(&[1, 3, 4, 4, 1])).unwrap()
    }

    #[test]
    fn control_tokens_only_when_parsed_user_defined_always() {
        let v = vocab();
        let s = Specials::new(&v);
        use Piece::*;
        assert_eq!(
            s.split(&v, "a<a>b[u]  c", true),
            [
                Text("a"),
                Special(1),
                Text("b"),
                Special(2),
                Special(3),
                Text("c")
            ]
        );
        assert_eq!(
            s.split(&v, "a<a>b[u]  c", false),
            [Text("a<a>b"), Special(2), Special(3), Text("c")]
        );
        assert_eq!(s.split(&v, "", true), []);
        assert_eq!(
            s.split(&v, "     ", false),
            [Special(3), Special(3), Text(" ")]
        );
    }
}
