//! The tokenizers of the models people have, against llama.cpp: Gemma 3's SentencePiece-style
//! vocabulary on the real file (`tests/fixtures/llama-cpp/gemma3-tokenize.json`, written by
//! `scripts/fixtures/tokenize.mjs`), and the Llama 3 and Qwen2 BPE pre-tokenizers on small
//! GGUFs written here.

mod common;

use common::gguf_writer::{file, strings};
use gqa_lab::gguf::{Array, Gguf, Value, ValueType};
use gqa_lab::tokenizer::{pre_tokenize, TokenStream, Tokenizer};

fn gemma() -> Tokenizer {
    Tokenizer::from_gguf(&Gguf::parse(common::gemma_bytes()).unwrap())
        .expect("Gemma's tokenizer builds")
}

#[test]
fn gemma3_encodes_and_decodes_as_llama_cpp() {
    let tok = gemma();
    let fx = common::llama_cpp_fixture("gemma3-tokenize.json");
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 44);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let (plain, special) = (common::ids(&case["ids"]), common::ids(&case["ids_special"]));
        assert_eq!(
            tok.encode(text, false).unwrap(),
            plain,
            "special off: {text:?}"
        );
        assert_eq!(
            tok.encode(text, true).unwrap(),
            special,
            "special on: {text:?}"
        );
        assert_eq!(
            tok.decode(&special, true),
            case["detokenized_special"].as_str().unwrap(),
            "decode, specials shown: {text:?}"
        );
        assert_eq!(
            tok.decode(&special, false),
            case["detokenized"].as_str().unwrap(),
            "decode, specials hidden: {text:?}"
        );
        // Every text comes back but one whose "▁" llama.cpp too decodes as a space.
        if !text.contains('\u{2581}') {
            assert_eq!(tok.decode(&plain, true), text, "round trip: {text:?}");
        }
    }
}

/// The vocabulary's table is built once, fast: well under a second for 262,144 tokens; a
/// long text (the built-in calibration text, 38 kB) is tokenized fast and as llama.cpp does.
#[test]
fn gemma3_loads_fast_and_tokenizes_long_text_fast() {
    let g = Gguf::parse(common::gemma_bytes()).unwrap();
    let t = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let load = t.elapsed();
    let text = gqa_lab::regroup::texts::TEXT;
    let t = std::time::Instant::now();
    let ids = tok.encode(text, true).unwrap();
    let encode = t.elapsed();
    eprintln!(
        "Gemma 3 tokenizer: built in {load:?}; {} bytes -> {} tokens in {encode:?}",
        text.len(),
        ids.len()
    );
    assert!(load.as_secs_f64() < 1.0, "built in {load:?}");
    assert_eq!(tok.decode(&ids, true), text);
    // llama.cpp's prompt of gemma3-window.json is [bos] + the text's first 700 ids.
    let window = common::llama_cpp_fixture("gemma3-window.json");
    let prompt = common::ids(&window["prompt_ids"]);
    assert_eq!(prompt[1..], ids[..700]);
}

#[test]
fn gemma3_metadata_and_prompt() {
    let tok = gemma();
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(
        (tok.bos_id, tok.eos_id, tok.add_bos),
        (Some(2), Some(1), true)
    );
    assert_eq!(tok.chat_template, None, "Gemma's template is not ChatML");
    assert!(tok.chat_prompt("hi", None).is_err());
    assert_eq!(tok.token_text(2), Some("<bos>"));
    assert_eq!(tok.token_text(236743), Some("▁"));
    assert_eq!(tok.token_text(262_144), None);
    assert_eq!(tok.encode_prompt("Hello world").unwrap(), [2, 9259, 1902]);
    // Byte tokens give their byte, control tokens their text only on request.
    assert_eq!(tok.token_bytes(238 + 0xE2, false), [0xE2]);
    assert_eq!(tok.token_bytes(1, false), b"");
    assert_eq!(tok.token_bytes(1, true), b"<eos>");
    assert_eq!(tok.token_bytes(9259, false), b"Hello");
    assert_eq!(tok.token_bytes(1902, false), b" world");
}

/// Characters that fall back to bytes come out whole from the streaming decoder.
#[test]
fn gemma3_streams_byte_fallback_characters_whole() {
    let tok = gemma();
    let text = "private use \u{E000}\u{F8FF} and \u{10FFFD}, runes ᚠᛇᚻ";
    let ids = tok.encode(text, false).unwrap();
    assert!(ids.iter().any(|&id| tok.token_bytes(id, false).len() == 1
        && tok.token_text(id).unwrap().starts_with("<0x")));
    let mut stream = TokenStream::new();
    let mut out = String::new();
    for &id in &ids {
        let piece = stream.push(&tok.token_bytes(id, false));
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        out.push_str(&piece);
    }
    out.push_str(&stream.finish());
    assert_eq!(out, text);
}

/// A SentencePiece vocabulary the Llama 2 way: `<unk>`, `<s>`, `</s>`, the 256 byte tokens,
/// then pieces with scores; no `add_space_prefix`, `add_bos_token` or BOS/EOS ids in the
/// metadata, so llama.cpp's defaults hold (a space in front, BOS added, `<s>` = 1, `</s>` = 2).
fn llama2_style(drop_byte: Option<u8>) -> Vec<u8> {
    let bytes: Vec<String> = (0..=255u8)
        .filter(|&b| Some(b) != drop_byte)
        .map(|b| format!("<0x{b:02X}>"))
        .collect();
    let pieces = [
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("▁a", -3.0),
        ("▁b", -3.0),
        ("▁ab", -4.0),
    ];
    let mut tokens = vec!["<unk>", "<s>", "</s>"];
    let mut types = vec![2, 3, 3];
    tokens.extend(bytes.iter().map(String::as_str));
    types.extend(bytes.iter().map(|_| 6));
    tokens.extend(pieces.iter().map(|p| p.0));
    types.extend(pieces.iter().map(|_| 1));
    let scores: Vec<Value> = (0..tokens.len())
        .map(|i| Value::F32(i.checked_sub(3 + bytes.len()).map_or(0.0, |p| pieces[p].1)))
        .collect();
    let types = types.into_iter().map(Value::I32).collect();
    file(
        &[
            ("tokenizer.ggml.model", Value::String("llama")),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            (
                "tokenizer.ggml.scores",
                Value::Array(Array::new(ValueType::F32, scores)),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(Array::new(ValueType::I32, types)),
            ),
        ],
        &[],
    )
}

#[test]
fn sentencepiece_defaults_follow_llama_cpp() {
    let bytes = llama2_style(None);
    let tok = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap();
    let (a, b, ab) = (3 + 256 + 3, 3 + 256 + 4, 3 + 256 + 5);
    assert_eq!(
        (tok.bos_id, tok.eos_id, tok.add_bos),
        (Some(1), Some(2), true)
    );
    // "▁" in front of the text and after each special token.
    assert_eq!(tok.encode("a b", false).unwrap(), [a, b]);
    assert_eq!(tok.encode("ab", false).unwrap(), [ab]);
    assert_eq!(tok.encode("a<s>b", true).unwrap(), [a, 1, b]);
    assert_eq!(tok.encode_prompt("a").unwrap(), [1, a]);
    // "é" (C3 A9) is no piece: its bytes.
    assert_eq!(
        tok.encode("é", false).unwrap(),
        [3 + 256, 3 + 0xC3, 3 + 0xA9]
    );
    // The space put in front is taken off again, as llama.cpp's detokenize does.
    assert_eq!(tok.decode(&[a, b], false), "a b");
    assert_eq!(tok.decode(&[1, a, b], false), " a b");
}

#[test]
fn a_missing_byte_fallback_token_is_an_error_at_load() {
    let bytes = llama2_style(Some(0xC3));
    let e = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap())
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "bad tokenizer metadata: no byte-fallback token <0xC3> for byte 0xC3"
    );
}

/// The pieces llama.cpp's regexes for Llama 3 (`llama-bpe`) and Qwen2 (`qwen2`) cut text into.
/// Derived from the regexes by hand (a letter run takes one leading non-letter non-digit, so
/// "\there" and " café" are one piece; numbers go in threes from the left for Llama 3, one
/// digit at a time for Qwen2; `\s*[\r\n]+` takes the spaces before newlines, `\s+(?!\S)` leaves
/// the last space of a run to the next word), and checked against llama.cpp's own
/// `unicode_regex_split` (its `unicode.cpp`, node-llama-cpp 3.22.1's llama.cpp, compiled apart).
#[test]
fn llama3_and_qwen2_pre_tokenizers_split_as_llama_cpp() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "Hello world, it's 2024!",
            &["Hello", " world", ",", " it", "'s", " ", "202", "4", "!"],
            &[
                "Hello", " world", ",", " it", "'s", " ", "2", "0", "2", "4", "!",
            ],
        ),
        (
            "I'VE done 1234567 things  \n\n  ok",
            &[
                "I", "'VE", " done", " ", "123", "456", "7", " things", "  \n\n", " ", " ok",
            ],
            &[
                "I", "'VE", " done", " ", "1", "2", "3", "4", "5", "6", "7", " things", "  \n\n",
                " ", " ok",
            ],
        ),
        (
            "  leading and trailing   ",
            &[" ", " leading", " and", " trailing", "   "],
            &[" ", " leading", " and", " trailing", "   "],
        ),
        (
            "tab\there\r\nnew line\n",
            &["tab", "\there", "\r\n", "new", " line", "\n"],
            &["tab", "\there", "\r\n", "new", " line", "\n"],
        ),
        (
            "你好世界 café 3.14",
            &["你好世界", " café", " ", "3", ".", "14"],
            &["你好世界", " café", " ", "3", ".", "1", "4"],
        ),
        (
            "x+=1;\n    return y",
            &["x", "+=", "1", ";\n", "   ", " return", " y"],
            &["x", "+=", "1", ";\n", "   ", " return", " y"],
        ),
        (
            "emoji 🙂🙂!? ...\n\n",
            &["emoji", " 🙂🙂!?", " ...\n\n"],
            &["emoji", " 🙂🙂!?", " ...\n\n"],
        ),
    ];
    for (text, llama3, qwen2) in cases {
        assert_eq!(
            pre_tokenize("llama-bpe", text).unwrap(),
            *llama3,
            "llama-bpe: {text:?}"
        );
        assert_eq!(
            pre_tokenize("qwen2", text).unwrap(),
            *qwen2,
            "qwen2: {text:?}"
        );
    }
}

/// GPT-2's byte-level alphabet: byte `b` as the character BPE sees.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

/// A byte-level BPE GGUF with the given pre-tokenizer: the 256 byte tokens, then "12", "123"
/// (with their merges) and "xyz" (no merges: only Llama 3's `ignore_merges` finds it).
fn bpe_gguf(pre: &str) -> Vec<u8> {
    let alphabet: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut tokens: Vec<&str> = alphabet.iter().map(String::as_str).collect();
    tokens.extend(["12", "123", "xyz"]);
    file(
        &[
            ("tokenizer.ggml.model", Value::String("gpt2")),
            ("tokenizer.ggml.pre", Value::String(pre)),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&["1 2", "12 3"])),
        ],
        &[],
    )
}

#[test]
fn llama3_and_qwen2_vocabularies_build_and_use_their_pre_tokenizer() {
    let (t12, t123, xyz) = (256, 257, 258);
    let (one, four) = (u32::from(b'1'), u32::from(b'4'));
    let bytes = bpe_gguf("llama-bpe");
    let llama3 = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap();
    assert!(
        llama3.add_bos,
        "llama.cpp adds BOS for llama-bpe unless told"
    );
    assert_eq!(llama3.encode("1234", false).unwrap(), [t123, four]);
    assert_eq!(llama3.encode("xyz", false).unwrap(), [xyz]);
    assert_eq!(llama3.decode(&[t123, four], false), "1234");
    let bytes = bpe_gguf("qwen2");
    let qwen2 = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap();
    assert!(!qwen2.add_bos);
    assert_eq!(
        qwen2.encode("1234", false).unwrap(),
        [one, one + 1, one + 2, four]
    );
    let x = u32::from(b'x');
    assert_eq!(qwen2.encode("xyz", false).unwrap(), [x, x + 1, x + 2]);
    // The GPT-2 pre-tokenizer keeps the digits together, so the merges apply.
    let bytes = bpe_gguf("gpt2");
    let gpt2 = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap();
    assert_eq!(gpt2.encode("1234", false).unwrap(), [t123, four]);
    assert_eq!(gpt2.encode("12", false).unwrap(), [t12]);
}

#[test]
fn unknown_tokenizers_are_named_with_the_supported_ones() {
    let bytes = bpe_gguf("tekken");
    let e = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap())
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "unsupported pre-tokenizer \"tekken\" (supported: smollm, gpt2, default, llama-bpe, qwen2)"
    );
    let bytes = file(
        &[
            ("tokenizer.ggml.model", Value::String("bert")),
            ("tokenizer.ggml.tokens", strings(&["a"])),
        ],
        &[],
    );
    let e = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap())
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "unsupported tokenizer model \"bert\" (supported: gpt2 byte-level BPE, llama SentencePiece)"
    );
}
