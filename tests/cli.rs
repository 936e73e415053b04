//! The `gqa-lab` binary: answers as specified, JSON on stdout, clear errors on stderr with a
//! non-zero exit, never a panic.

mod common;

use common::gguf_writer::{file, TensorSpec};
use common::synthetic::{
    metadata_with_tokenizer, model, model_with_nan_embedding, model_with_nan_output_norm, KV_HEADS,
    VOCAB,
};
use common::{fixture, ids};
use serde_json::Value;
use std::process::{Command, Output};

fn gqa(args: &[&str]) -> Output {
    gqa_cached_in(args, &common::root().join("target/test-cache"))
}

/// Runs the binary with its maps cache at `cache`.
fn gqa_cached_in(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gqa-lab"))
        .args(args)
        .current_dir(common::root())
        .env("GQA_LAB_CACHE", cache)
        .output()
        .expect("the binary runs")
}

/// Runs a command that must succeed and print one JSON value.
fn json(args: &[&str]) -> Value {
    let out = gqa(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e})"))
}

/// Runs a command that must fail cleanly; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = gqa(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    stderr
}

#[test]
fn info_reports_the_model() {
    let v = json(&["info", "--json"]);
    assert_eq!(v["config"]["n_heads"], 9);
    assert_eq!(v["config"]["n_kv_heads"], 3);
    assert_eq!(v["config"]["n_layers"], 30);
    assert_eq!(
        v["valid_groups"],
        serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8, 9])
    );
    assert_eq!(
        v["tensor_types"],
        serde_json::json!({"F32": 61, "Q4_1": 210, "Q8_0": 1})
    );
    assert_eq!(v["tied_output"], true);
    // 2 · 30 layers · G · 64 values per token: 4 bytes each in f32, 2 in f16, 34 per 32 in q8_0.
    let per_token = &v["kv_cache_bytes_per_token"];
    assert_eq!(per_token["f32"]["1"], 2 * 30 * 64 * 4);
    assert_eq!(per_token["f16"]["3"], 2 * 30 * 3 * 64 * 2);
    assert_eq!(per_token["q8_0"]["9"], 2 * 30 * 9 * 2 * 34);
    // The maps a regrouping holds (4 bytes a value): a calibrated merge's K, dense V, q and O
    // maps and its slot table, else the K scalars and pool weights; and the tokens from which
    // a merge holds less than G = 3.
    let maps = &v["maps_bytes"];
    assert_eq!(
        maps["calibrated"]["1"],
        30 * (3 * 64 + 64 * 192 + 9 * 64 + 9 * 64 * 64 + (9 + 1) * 32) * 4
    );
    assert_eq!(maps["calibrated"]["2"], 7_530_240);
    assert_eq!(maps["mean"]["3"], 30 * (3 * 3 * 64 + 9) * 4);
    assert_eq!(maps["calibrated"]["9"], maps["mean"]["9"]);
    let even = &v["break_even_tokens"];
    // (6,028,800 − 70,200) / 30,720 bytes saved a token = 193.96.
    assert_eq!(even["f32"]["calibrated"]["1"], 194);
    assert_eq!(even["f32"]["calibrated"]["2"], 486);
    assert_eq!(even["f16"]["calibrated"]["1"], 388);
    assert_eq!(
        even["f32"]["mean"]["1"], 0,
        "mean-pooling's maps are smaller than G = 3's"
    );
    assert!(
        even["f32"]["calibrated"].get("3").is_none(),
        "no merge at G = 3"
    );
}

#[test]
fn tokenize_matches_the_fixture() {
    for case in fixture("tokenize.json").as_array().unwrap().iter().take(12) {
        let text = case["text"].as_str().unwrap();
        if text.is_empty() {
            continue; // clap takes "" as a value too, but keep the table to non-empty strings
        }
        let v = json(&["tokenize", "--text", text, "--json"]);
        assert_eq!(ids(&v["ids"]), ids(&case["ids"]), "{text:?}");
    }
    let v = json(&[
        "tokenize",
        "--text",
        "<|im_start|>user",
        "--special",
        "--json",
    ]);
    assert_eq!(ids(&v["ids"]), [1, 4093]);
}

#[test]
fn generate_json_matches_the_reference() {
    let fx = fixture("regroup.json");
    let p = &fx["prompts"][0];
    let prompt: Vec<String> = ids(&p["prompt_ids"]).iter().map(u32::to_string).collect();
    for g in ["1", "9"] {
        let v = json(&[
            "generate",
            "--prompt-ids",
            &prompt.join(","),
            "--groups",
            g,
            "--regroup",
            "mean",
            "--max-tokens",
            "8",
            "--ignore-eos",
            "--json",
        ]);
        // The fixtures regroup the GQA paper's way: mean-pooling.
        assert_eq!(ids(&v["ids"]), ids(&p["G"][g]["ids"])[..8], "G={g}");
        assert_eq!(v["regroup"], "mean");
        assert_eq!(ids(&v["prompt_ids"]), ids(&p["prompt_ids"]));
        assert_eq!(v["groups"], g.parse::<u64>().unwrap());
        let tokens = 5 + 7; // prompt + generated tokens fed (the last is sampled, not fed)
        let g: u64 = g.parse().unwrap();
        assert_eq!(v["kv_cache_bytes"], 2 * 30 * g * 64 * tokens * 4);
        // Mean-pooling's maps: K scalars [G][3][32] complex and pool weights [G][3] a layer.
        let maps = 30 * (g * 3 * 64 + g * 3) * 4;
        assert_eq!(v["maps_bytes"], maps);
        assert_eq!(
            v["kv_cache_and_maps_bytes"],
            2 * 30 * g * 64 * tokens * 4 + maps
        );
        assert_eq!(v["break_even_tokens"].as_u64(), (g == 1).then_some(0));
        assert_eq!(v["kv_type"], "f32"); // the oracle's default
        assert_eq!(v["kv_bytes_per_element"].as_f64(), Some(4.0));
        assert!(v["text"].is_string() && v["prefill_ms"].as_f64().unwrap() > 0.0);
        assert!(v["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn generate_chat_prompt_and_streaming_text() {
    let fx = fixture("generate.json");
    let p = fx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "chat_haiku")
        .unwrap();
    let v = json(&[
        "generate",
        "--prompt",
        "Write a haiku about the ocean.",
        "--chat",
        "--max-tokens",
        "6",
        "--json",
    ]);
    assert_eq!(ids(&v["prompt_ids"]), ids(&p["prompt_ids"]));
    assert_eq!(ids(&v["ids"]), ids(&p["reference_f32"]["ids"])[..6]);
    // Without --json the text streams to stdout and the figures go to stderr.
    let out = gqa(&[
        "generate",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "4",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(" Paris."));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens/s"));
}

#[test]
fn logits_and_perplexity() {
    let fx = fixture("regroup.json");
    let p = &fx["prompts"][0];
    let prompt: Vec<String> = ids(&p["prompt_ids"]).iter().map(u32::to_string).collect();
    let v = json(&[
        "logits",
        "--prompt-ids",
        &prompt.join(","),
        "--groups",
        "3",
        "--top",
        "5",
        "--json",
    ]);
    let reference = p["G"]["3"]["top20_logits_last_prompt_position"]
        .as_array()
        .unwrap();
    for (ours, want) in v.as_array().unwrap().iter().zip(reference) {
        assert_eq!(ours["id"], want[0]);
        assert!((ours["logit"].as_f64().unwrap() - want[1].as_f64().unwrap()).abs() < 1e-3);
    }
    let dir = std::env::temp_dir().join(format!("gqa-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ids_file = dir.join("ids.json");
    let text_ids: Vec<u32> = ids(&fixture("perplexity.json")["ids"])[..64].to_vec();
    std::fs::write(&ids_file, serde_json::to_string(&text_ids).unwrap()).unwrap();
    let v = json(&[
        "perplexity",
        "--ids-file",
        ids_file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(v["tokens"], 63);
    assert_eq!(v["groups"], 3);
    // The cache the scoring filled (64 positions, f32) and G = 3's maps beside it.
    assert_eq!(v["kv_cache_bytes"], 2 * 30 * 3 * 64 * 64 * 4);
    assert_eq!(v["maps_bytes"], 70_200);
    assert_eq!(
        v["kv_cache_and_maps_bytes"],
        2 * 30 * 3 * 64 * 64 * 4 + 70_200
    );
    assert!(v.get("break_even_tokens").is_none(), "{v}");
    assert!(v["perplexity"].as_f64().unwrap() > 1.0 && v["nll"].as_f64().unwrap() > 0.0);
    let text_file = dir.join("text.txt");
    std::fs::write(&text_file, "It is a truth universally acknowledged.").unwrap();
    let v = json(&[
        "perplexity",
        "--text-file",
        text_file.to_str().unwrap(),
        "--groups",
        "9",
        "--json",
    ]);
    assert_eq!(v["groups"], 9);
    std::fs::remove_dir_all(&dir).ok();
}

/// The GPU backend gives the oracle's tokens; so does `cpu-q8` on this prompt (it may leave
/// the oracle's tokens only at near-ties: see tests/cpu_quantized.rs).
#[test]
fn generate_on_the_gpu_and_cpu_q8_backends_matches_the_cpu() {
    let args = [
        "generate",
        "--prompt-ids",
        "504,3575,282,4649,314",
        "--max-tokens",
        "4",
        "--ignore-eos",
        "--json",
    ];
    let cpu = json(&args);
    let gpu = json(&[&args[..], &["--backend", "gpu"]].concat());
    assert_eq!(gpu["backend"], "gpu");
    assert_eq!(gpu["ids"], cpu["ids"]);
    // The GPU's default cache is f16 (the oracle's f32): half the bytes.
    assert_eq!(
        (&gpu["kv_type"], &cpu["kv_type"]),
        (&"f16".into(), &"f32".into())
    );
    let half = cpu["kv_cache_bytes"].as_u64().unwrap() / 2;
    assert_eq!(gpu["kv_cache_bytes"].as_u64(), Some(half));
    let q8 = json(&[&args[..], &["--backend", "cpu-q8"]].concat());
    assert_eq!(q8["backend"], "cpu-q8");
    assert_eq!(q8["ids"], cpu["ids"]);
    // q8_0 asked for: 34 bytes per 32 values.
    let q8_0 = json(&[&args[..], &["--backend", "gpu", "--kv-type", "q8_0"]].concat());
    assert_eq!(q8_0["ids"], cpu["ids"]);
    assert_eq!(q8_0["kv_bytes_per_element"].as_f64(), Some(34.0 / 32.0));
    let quarter = cpu["kv_cache_bytes"].as_u64().unwrap() * 34 / 128;
    assert_eq!(q8_0["kv_cache_bytes"].as_u64(), Some(quarter));
}

#[test]
fn bench_prints_figures() {
    let v = json(&[
        "bench",
        "--groups",
        "1,9",
        "--contexts",
        "8,16",
        "--decode-tokens",
        "2",
        "--json",
    ]);
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        let (g, c) = (
            r["groups"].as_u64().unwrap(),
            r["context"].as_u64().unwrap(),
        );
        assert_eq!(
            r["kv_cache_bytes"].as_u64().unwrap(),
            2 * 30 * g * 64 * c * 4
        );
        let (kv, maps) = (r["kv_cache_bytes"].as_u64(), r["maps_bytes"].as_u64());
        assert_eq!(
            r["kv_cache_and_maps_bytes"].as_u64(),
            Some(kv.unwrap() + maps.unwrap())
        );
        assert_eq!(r.get("break_even_tokens").is_some(), g == 1, "{r}");
        assert!(r["prefill_tokens_per_second"].as_f64().unwrap() > 0.0);
        assert!(r["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
    }
}

/// The GPU figures the benchmark reports per G and context, and how they hang together. No
/// speed is asserted, only that each figure is there and is what its name says.
#[test]
fn gpu_bench_reports_its_figures() {
    let v = json(&[
        "bench",
        "--backend",
        "gpu",
        "--groups",
        "1,9",
        "--contexts",
        "8,16",
        "--decode-tokens",
        "2",
        "--prefill-tokens",
        "4",
        "--json",
    ]);
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    let weights = f(&rows[0], "bytes_read_per_token") - f(&rows[0], "kv_cache_bytes");
    let dispatches = rows[0]["dispatches_per_token"].as_u64().unwrap();
    // Each of the 30 layers: Q|K|V, kv_store, attention, its reduction, output, gate|up, down.
    assert!(
        dispatches >= 30 * 7,
        "{dispatches} dispatches per decode step"
    );
    for r in rows {
        // Bytes read per decode step: all weights once, plus the K and V rows so far.
        let kv = f(r, "kv_cache_bytes");
        assert_eq!(f(r, "bytes_read_per_token") - kv, weights, "{r}");
        let gbps = f(r, "bytes_read_per_token") * f(r, "decode_tokens_per_second") / 1e9;
        assert!((f(r, "effective_gb_per_second") - gbps).abs() <= 1e-9 * gbps.max(1.0));
        assert_eq!(r["dispatches_per_token"].as_u64(), Some(dispatches));
        assert_eq!(r["submits_per_token"], 1);
        assert_eq!(r["readback_bytes_per_token"], 4);
        assert!(f(r, "attention_ms_per_token") > 0.0);
        // Decode one step ahead is measured whatever the adapter's default.
        assert!(f(r, "decode_ahead_tokens_per_second") > 0.0);
        assert!(r["decode_ahead_by_default"].is_boolean(), "{r}");
        let by_kernel = r["decode_ms_per_token_by_kernel"].as_object().unwrap();
        for k in [
            "attention_decode",
            "attention_reduce",
            "kv_store",
            "matvec",
            "argmax",
        ] {
            assert!(by_kernel[k].as_f64().unwrap() > 0.0, "{k} in {r}");
        }
    }
    // G = 9 keeps 9 KV heads per layer where G = 1 keeps one.
    assert_eq!(
        f(&rows[2], "kv_cache_bytes"),
        9.0 * f(&rows[0], "kv_cache_bytes")
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let e = fails(&["generate", "--prompt", ""]);
    assert!(e.contains("the prompt is empty"), "{e}");
    let e = fails(&["generate", "--prompt-ids", "1,2,3", "--max-tokens", "9000"]);
    assert!(e.contains("past the model's context of 8192"), "{e}");
    let long = vec!["504"; 8193].join(",");
    let e = fails(&["generate", "--prompt-ids", &long, "--max-tokens", "1"]);
    assert!(e.contains("past the model's context"), "{e}");
    let e = fails(&["generate", "--prompt", "hi", "--groups", "10"]);
    assert!(e.contains("G is 1..=9"), "{e}");
    let e = fails(&[
        "generate",
        "--prompt",
        "hi",
        "--groups",
        "1",
        "--regroup",
        "median",
    ]);
    assert!(e.contains("median"), "{e}");
    let e = fails(&["generate", "--prompt", "hi", "--no-such-flag"]);
    assert!(e.contains("--no-such-flag"), "{e}");
    let e = fails(&["generate", "--prompt-ids", "1,x"]);
    assert!(e.contains("\"x\" is not a token id"), "{e}");
    let e = fails(&["generate", "--prompt-ids", "99999"]);
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = fails(&["generate", "--prompt", "hi", "--temperature=-1"]);
    assert!(e.contains("temperature"), "{e}");
    let e = fails(&["info", "--model", "/nonexistent/model.gguf"]);
    assert!(
        e.contains("model file not found") && e.contains("scripts/setup.sh model"),
        "{e}"
    );
    let e = fails(&["info", "--model", "Cargo.toml"]);
    assert!(e.contains("not a GGUF file"), "{e}");
    let e = fails(&["generate", "--prompt", "hi", "--backend", "tpu"]);
    assert!(e.contains("possible values: cpu, cpu-q8, gpu"), "{e}");
    let e = fails(&[
        "generate",
        "--prompt",
        "hi",
        "--backend",
        "gpu",
        "--groups",
        "0",
    ]);
    assert!(e.contains("G is 1..=9"), "{e}");
}

/// `gqa-lab calibrate` fits a G below the model's own, prints each layer's fit error and
/// caches the maps; a run with `--groups` at that setting then uses the cached maps (no fit)
/// and says it runs the calibrated merge. (128 calibration tokens: a smoke test of the path;
/// the quality of a full calibration is tests/regrouping.rs's.)
#[test]
fn calibrate_fits_and_caches_the_maps() {
    let v = json(&[
        "calibrate",
        "--groups",
        "1,4",
        "--tokens",
        "128",
        "--force",
        "--json",
    ]);
    let runs = v["calibrations"].as_array().unwrap();
    assert_eq!(runs[0]["groups"], 1);
    assert_eq!(runs[0]["fitted"], true);
    let layers = runs[0]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    for e in layers {
        let (k, v) = (e["k"].as_f64().unwrap(), e["v"].as_f64().unwrap());
        assert!((0.0..1.0).contains(&k) && (0.0..1.0).contains(&v), "{e}");
    }
    assert_eq!(
        runs[1]["merges"], false,
        "G = 4 splits native groups: nothing to fit"
    );
    let args = [
        "generate",
        "--prompt",
        "The capital of France is",
        "--groups",
        "1",
    ];
    let out = gqa(&[
        &args[..],
        &["--calibration-tokens", "128", "--max-tokens", "4", "--json"],
    ]
    .concat());
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("calibrating"),
        "used the cache"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["regroup"], "calibrated");
    assert_eq!(v["groups"], 1);
}

/// A sparse file of `len` bytes that starts with `head` (it takes no room on the disk).
fn sparse_file(name: &str, head: &[u8], len: u64) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let f = std::fs::File::create(&path).expect("a file in the target's temp dir");
    std::io::Write::write_all(&mut &f, head).expect("written");
    f.set_len(len).expect("a sparse file");
    path
}

/// `--model` names something endless or huge that is no model: refused from its first bytes
/// and its file type and size, never read whole (`/dev/zero` would never end; the sparse
/// files would not fit in memory).
#[test]
fn endless_or_huge_files_are_refused_before_reading_them() {
    let e = fails(&["info", "--model", "/dev/zero"]);
    assert!(e.contains("/dev/zero is not a regular file"), "{e}");
    let junk = sparse_file("junk.gguf", b"not a model", 48 << 30);
    let e = fails(&["info", "--model", junk.to_str().expect("a UTF-8 path")]);
    assert!(e.contains("not a GGUF file"), "{e}");
    let header = [&b"GGUF"[..], &3u32.to_le_bytes(), &[0; 16]].concat();
    let huge = sparse_file("huge.gguf", &header, (64 << 30) + 1);
    let e = fails(&["info", "--model", huge.to_str().expect("a UTF-8 path")]);
    let limit = format!("past the {} a model file may have", 64u64 << 30);
    assert!(e.contains(&limit), "{e}");
    let claims = [
        &b"GGUF"[..],
        &3u32.to_le_bytes(),
        &[0; 8],
        &(1u64 << 40).to_le_bytes(),
    ]
    .concat();
    let short = sparse_file("claims.gguf", &claims, 1 << 20);
    let e = fails(&["info", "--model", short.to_str().expect("a UTF-8 path")]);
    assert!(
        e.contains("1099511627776 metadata pairs and 0 tensor infos"),
        "{e}"
    );
    for f in [junk, huge, short] {
        let _ = std::fs::remove_file(f);
    }
}

/// A synthetic model written where the binary can read it.
fn model_file(name: &str, tensors: &[TensorSpec]) -> String {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, file(&metadata_with_tokenizer(KV_HEADS), tensors)).expect("written");
    path.to_str().expect("a UTF-8 path").to_string()
}

/// Weights with a NaN: generate, logits and perplexity exit non-zero and say where the
/// non-finite values appeared (token 63's embedding is NaN: the prompt's position 2), instead
/// of printing tokens or a NaN perplexity.
#[test]
fn nan_weights_fail_with_where_they_surface() {
    let m = model_file("nan-embedding.gguf", &model_with_nan_embedding(63));
    let ids_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nan-ids.txt");
    std::fs::write(&ids_file, "3,17,63,5").expect("written");
    let ids_path = ids_file.to_str().expect("a UTF-8 path");
    for backend in ["cpu", "cpu-q8"] {
        let runs: [&[&str]; 3] = [
            &["generate", "--prompt-ids", "3,17,63,5", "--max-tokens", "4"],
            &["logits", "--prompt-ids", "3,17,63,5"],
            &["perplexity", "--ids-file", ids_path],
        ];
        for args in runs {
            let e = fails(&[&["--model", &m], args, &["--backend", backend]].concat());
            assert!(
                e.contains("non-finite values (NaN or infinity) at layer 0, position 2"),
                "{args:?} on {backend}: {e}"
            );
        }
    }
    let m = model_file("nan-output-norm.gguf", &model_with_nan_output_norm());
    let e = fails(&[
        "--model",
        &m,
        "generate",
        "--prompt-ids",
        "3,17",
        "--max-tokens",
        "2",
    ]);
    assert!(e.contains("in the logits at position 1"), "{e}");
    let e = fails(&[
        "--model",
        &m,
        "perplexity",
        "--ids-file",
        ids_path,
        "--json",
    ]);
    assert!(e.contains("in the logits at position 0"), "{e}");
}

/// `bench` feeds ids the model has (the synthetic one's vocabulary is 64) and takes no more
/// of them than its longest context, however many `--prefill-tokens` asks for (a count past
/// u32 once panicked; a billion aborted allocating its token list).
#[test]
fn bench_feeds_what_the_model_and_its_contexts_take() {
    let m = model_file("bench-small-vocab.gguf", &model());
    assert_eq!(VOCAB, 64);
    for prefill in ["16", "4294967296", "1000000000"] {
        let args = [
            "--model",
            &m,
            "bench",
            "--backend",
            "cpu",
            "--groups",
            "2",
            "--contexts",
            "8",
            "--prefill-tokens",
            prefill,
            "--decode-tokens",
            "1",
            "--json",
        ];
        let v = json(&args);
        assert_eq!(v["results"][0]["prefill_tokens"], 8, "{prefill}: {v}");
    }
}

/// A count of tokens past any context is refused up front with what was asked and what the
/// context holds (it once wrapped around and failed mid-run speaking of 2 positions).
#[test]
fn max_tokens_past_the_context_is_refused_up_front() {
    let max = "18446744073709551615";
    let prompt = "The capital of France is";
    let e = fails(&["generate", "--prompt", prompt, "--max-tokens", max]);
    let want = format!("--max-tokens is {max}: that is past the model's context of 8192");
    assert!(e.contains(&want), "{e}");
}

/// Files that never end or never open are refused before they are read: a text or ids file
/// that is a device (`/dev/zero` was read without limit), a model that is a FIFO (opening it
/// waited for a writer forever).
#[test]
fn endless_and_blocking_files_are_refused() {
    for flag in ["--text-file", "--ids-file"] {
        let e = fails(&["perplexity", flag, "/dev/zero"]);
        assert!(e.contains("/dev/zero is not a regular file"), "{flag}: {e}");
    }
    let fifo = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("model.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gqa-lab"))
        .args(["--model", fifo.to_str().expect("a UTF-8 path"), "info"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waited") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("--model on a FIFO still blocks after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("read");
    assert!(!status.success());
    assert!(stderr.contains("is not a regular file"), "{stderr}");
}

/// `generate` at G = `groups` with a calibrated merge fitted on 64 tokens, its maps cache at
/// `cache`: it must succeed; its stderr and its JSON.
fn fitted_run(groups: &str, cache: &std::path::Path) -> (String, Value) {
    let args = [
        "generate",
        "--prompt",
        "Hi",
        "--max-tokens",
        "1",
        "--groups",
        groups,
    ];
    let tail = ["--calibration-tokens", "64", "--json"];
    let out = gqa_cached_in(&[&args[..], &tail[..]].concat(), cache);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    (stderr, v)
}

/// A maps cache that cannot be written (`GQA_LAB_CACHE` a plain file) does not throw the fit
/// away: the run warns and goes on with the maps in memory.
#[test]
fn an_unwritable_maps_cache_warns_and_keeps_the_fit() {
    let blocker = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-directory");
    std::fs::write(&blocker, "a plain file where the cache directory should be").expect("written");
    let (stderr, v) = fitted_run("2", &blocker);
    let warned = stderr.contains("warning:") && stderr.contains("for this run only");
    assert!(warned, "{stderr}");
    assert_eq!(v["groups"], 2, "{v}");
    assert_eq!(v["regroup"], "calibrated", "{v}");
    // Its maps as the engine holds them, and where they pay for themselves (f32 cache).
    assert_eq!(v["maps_bytes"], 7_530_240, "{v}");
    assert_eq!(v["break_even_tokens"], 486, "{v}");
}

/// A maps file is taken only for what it was fitted for: G = 1's maps copied under G = 2's
/// name are refused with a warning, G = 2 is fitted, and the run is at G = 2 (it once ran at
/// G = 1 without a word).
#[test]
fn maps_under_another_name_are_fitted_again() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("maps-renamed");
    let _ = std::fs::remove_dir_all(&dir);
    fitted_run("1", &dir);
    let g1 = std::fs::read_dir(&dir)
        .expect("the cache")
        .map(|e| e.expect("an entry").path())
        .find(|p| p.to_string_lossy().ends_with("-G1.bin"))
        .expect("G = 1's maps");
    let g2 = g1.to_string_lossy().replace("-G1.bin", "-G2.bin");
    std::fs::copy(&g1, &g2).expect("copied");
    let (stderr, v) = fitted_run("2", &dir);
    let warned = stderr.contains("warning: ignoring") && stderr.contains("written for");
    assert!(warned, "{stderr}");
    assert_eq!(v["groups"], 2, "{v}");
}

/// `--model NAME` names a built-in model's file, relative to the working directory (the
/// repository root) as the default always was; anything else is a path; no `--model` is
/// SmolLM2.
#[test]
fn model_names_resolve_to_the_built_in_files() {
    let default = json(&["info", "--json"]);
    let by_name = json(&["info", "--model", "smollm2-135m", "--json"]);
    let by_path = json(&["info", "--model", gqa_lab::DEFAULT_MODEL_PATH, "--json"]);
    for v in [&default, &by_name, &by_path] {
        assert_eq!(v["file"], gqa_lab::DEFAULT_MODEL_PATH, "{v}");
        assert_eq!(v["config"], default["config"]);
        assert_eq!(v["architecture"], "llama");
    }
    assert_eq!(default["builtin"], "smollm2-135m");
    assert_eq!(by_name["builtin"], "smollm2-135m");
    assert_eq!(by_path["builtin"], Value::Null, "a path is a path");
    let gemma = json(&["info", "--model", "gemma-3-270m", "--json"]);
    assert_eq!(gemma["file"], gqa_lab::GEMMA_MODEL_PATH);
    assert_eq!(gemma["builtin"], "gemma-3-270m");
    assert_eq!(gemma["architecture"], "gemma3");
    assert_eq!(gemma["config"]["n_heads"], 4);
    assert_eq!(gemma["config"]["n_kv_heads"], 1);
    assert_eq!(gemma["config"]["n_layers"], 18);
    let help = gqa(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for m in gqa_lab::models::BUILTIN {
        assert!(help.contains(m.name) && help.contains(m.path), "{help}");
    }
}

/// A name that is neither a built-in model nor a file is an error that lists the names; a
/// missing built-in file says how to fetch it.
#[test]
fn unknown_model_names_and_missing_built_in_files_are_clear_errors() {
    let e = fails(&["info", "--model", "llama-7b"]);
    assert!(e.contains("no built-in model named \"llama-7b\""), "{e}");
    assert!(e.contains("smollm2-135m, gemma-3-270m"), "{e}");
    let e = fails(&["info", "--model", "models/llama-7b.gguf"]);
    assert!(
        e.contains("model file not found: models/llama-7b.gguf"),
        "{e}"
    );
    assert!(e.contains("smollm2-135m, gemma-3-270m"), "{e}");
    // Elsewhere than the repository root the built-in paths name nothing.
    let empty = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-models-here");
    std::fs::create_dir_all(&empty).expect("a directory");
    for m in gqa_lab::models::BUILTIN {
        let out = Command::new(env!("CARGO_BIN_EXE_gqa-lab"))
            .args(["info", "--model", m.name])
            .current_dir(&empty)
            .output()
            .expect("the binary runs");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{e}");
        assert!(
            e.contains(&format!("model file not found: {}", m.path)),
            "{e}"
        );
        assert!(
            e.contains(m.name) && e.contains("scripts/setup.sh model"),
            "{e}"
        );
    }
}

/// The library's table of built-in models describes the files the set-up fetched: size,
/// sha256 and architecture (so the table, scripts/setup.sh and the page agree).
#[test]
fn the_built_in_models_are_the_files_the_set_up_fetches() {
    use sha2::{Digest, Sha256};
    for m in gqa_lab::models::BUILTIN {
        let path = common::root().join(m.path);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh model)", path.display()));
        assert_eq!(bytes.len() as u64, m.bytes, "{}", m.name);
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sha, m.sha256, "{}", m.name);
        let g = gqa_lab::gguf::Gguf::parse(&bytes).expect("a GGUF file");
        let arch = g.get("general.architecture").and_then(|v| v.to_str().ok());
        assert_eq!(arch, Some(m.architecture), "{}", m.name);
    }
}

/// `--o-ridge` out of range is refused up front, naming the range;
/// a calibration count past the built-in text is reported, and keyed, as the count used.
#[test]
fn calibration_counts_and_ridges_are_what_runs() {
    for ridge in ["1e308", "0", "NaN", "-1"] {
        let e = fails(&["calibrate", "--groups", "1", &format!("--o-ridge={ridge}")]);
        assert!(
            e.contains("the O refit's ridge must be between 1e-12 and 1e12"),
            "{ridge}: {e}"
        );
    }
    // G = 3 is SmolLM2's own: nothing is fitted, the count and the cache entry are reported.
    let mut paths = Vec::new();
    for asked in ["18446744073709551615", "1000000"] {
        let out = gqa(&["calibrate", "--groups", "3", "--tokens", asked, "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let used = v["calibrations"][0]["tokens"].as_u64().expect("a count");
        assert!((30_000..40_000).contains(&used), "{v}");
        let note = format!("has {used} tokens: calibrating on all {used} ({asked} asked)");
        assert!(stderr.contains(&note), "{stderr}");
        paths.push(v["calibrations"][0]["cache"].clone());
    }
    assert_eq!(paths[0], paths[1], "one cache entry for the count used");
}

/// `--chat` and `--system` beside `--prompt-ids` (the exact input) are
/// refused, not ignored; a text with a byte the vocabulary has no token for is refused naming
/// the byte (the synthetic vocabulary is 64 printable characters, no lower case: `AxB` was
/// `[32, 33]`), not tokenized without it.
#[test]
fn silent_nonsense_is_refused() {
    for extra in [
        &["--chat"][..],
        &["--system", "Be brief."],
        &["--chat", "--system", "x"],
    ] {
        let args = [
            &["generate", "--prompt-ids", "1,2", "--max-tokens", "1"][..],
            extra,
        ]
        .concat();
        let e = fails(&args);
        assert!(e.contains("cannot be used with"), "{extra:?}: {e}");
    }
    let m = model_file("missing-bytes.gguf", &model());
    let e = fails(&["--model", &m, "tokenize", "--text", "AxB"]);
    assert!(
        e.contains("the vocabulary has no token for byte 0x78 ('x')"),
        "{e}"
    );
    let v = json(&["--model", &m, "tokenize", "--text", "A?B", "--json"]);
    assert!(v.to_string().contains("[32,30,33]"), "{v}");
}
