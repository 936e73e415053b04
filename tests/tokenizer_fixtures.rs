//! The tokenizer against llama.cpp's ids (`../shared/fixtures/tokenize.json`), special-token
//! parsing on and off, byte-exact round trips, streaming decode, and the chat layout.

mod common;

use common::{fixture, ids};
use gqa_lab::gguf::Gguf;
use gqa_lab::tokenizer::{TokenStream, Tokenizer};

fn tokenizer() -> Tokenizer {
    Tokenizer::from_gguf(&Gguf::parse(common::model_bytes()).unwrap()).expect("tokenizer builds")
}

#[test]
fn every_fixture_string_matches_llama_cpp() {
    let tok = tokenizer();
    let fx = fixture("tokenize.json");
    let cases = fx.as_array().unwrap();
    assert_eq!(cases.len(), 42);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let plain = ids(&case["ids"]);
        assert_eq!(
            tok.encode(text, false).unwrap(),
            plain,
            "special off: {text:?}"
        );
        assert_eq!(tok.decode(&plain, true), text, "round trip: {text:?}");
        let special = if case["ids_special"].is_null() {
            plain
        } else {
            ids(&case["ids_special"])
        };
        assert_eq!(
            tok.encode(text, true).unwrap(),
            special,
            "special on: {text:?}"
        );
        assert_eq!(
            tok.decode(&special, true),
            text,
            "round trip with specials: {text:?}"
        );
    }
}

#[test]
fn metadata_and_special_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 49_152);
    assert_eq!(
        (tok.bos_id, tok.eos_id, tok.add_bos),
        (Some(1), Some(2), false)
    );
    assert_eq!(tok.encode("<|im_start|>", true).unwrap(), [1]);
    assert_eq!(
        tok.encode("<|im_start|>", false).unwrap(),
        [44, 108, 306, 79, 3738, 108, 46]
    );
    // Control tokens are rendered only on request.
    assert_eq!(tok.decode(&[1, 19556], false), "Hello");
    assert_eq!(tok.decode(&[1, 19556], true), "<|im_start|>Hello");
}

#[test]
fn fixture_prompts_tokenize_to_their_ids_and_chat_layout_is_chatml() {
    let tok = tokenizer();
    let fx = fixture("generate.json");
    for p in fx["prompts"].as_array().unwrap() {
        let text = p["prompt_text"].as_str().unwrap();
        assert_eq!(
            tok.encode_prompt(text).unwrap(),
            ids(&p["prompt_ids"]),
            "{}",
            p["name"]
        );
        if p["kind"] == "chat" {
            let message = text
                .strip_prefix("<|im_start|>user\n")
                .and_then(|s| s.strip_suffix("<|im_end|>\n<|im_start|>assistant\n"))
                .expect("a one-turn ChatML prompt");
            assert_eq!(tok.chat_prompt(message, None).unwrap(), text);
        }
    }
}

#[test]
fn streaming_decode_never_splits_a_character() {
    let tok = tokenizer();
    for text in [
        "naïve café — 東京 🚀 emoji",
        "€€€ 日本語のテキスト",
        "plain ascii",
    ] {
        let ids = tok.encode(text, false).unwrap();
        let mut stream = TokenStream::new();
        let mut pieces = Vec::new();
        for &id in &ids {
            let piece = stream.push(&tok.token_bytes(id, true));
            assert!(
                !piece.contains('\u{FFFD}'),
                "{text:?}: a piece holds half a character"
            );
            pieces.push(piece);
        }
        pieces.push(stream.finish());
        assert_eq!(pieces.concat(), text);
    }
}
