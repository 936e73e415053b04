//! `gqa-lab … --kv-budget B` and `--layer-groups`: the per-layer grouping in the JSON report
//! (each layer's G, the heads, the bytes: the sum over layers), the sensitivities cached, and
//! budgets outside 1..=H refused.

mod common;

use common::{fixture, ids};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn gqa(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gqa-lab"))
        .args(args)
        .current_dir(common::root())
        .env("GQA_LAB_CACHE", cache)
        .output()
        .expect("the binary runs")
}

fn json(args: &[&str], cache: &Path) -> Value {
    let out = gqa(args, cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e})"))
}

#[test]
fn per_layer_groupings_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("gqa-cli-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ids_file = dir.join("ids.json");
    let text_ids: Vec<u32> = ids(&fixture("perplexity.json")["ids"])[..64].to_vec();
    std::fs::write(&ids_file, serde_json::to_string(&text_ids).unwrap()).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["perplexity", "--ids-file", ids_file.to_str().unwrap()];
        args.extend(["--regroup", "mean", "--backend", "cpu-q8", "--json"]);
        args.extend(extra);
        json(&args, &dir)
    };
    // Alternate layers at 1 and 2: 45 heads, f16 rows of 64 values for 63 positions.
    let v = run(&["--layer-groups", "1,2"]);
    let p = &v["per_layer"];
    let alternate: Vec<u64> = (0..30).map(|l| 1 + l % 2).collect();
    assert_eq!(p["layer_groups"], serde_json::json!(alternate));
    assert_eq!(
        (p["kv_heads"].as_u64(), p["kv_heads_per_layer"].as_f64()),
        (Some(45), Some(1.5))
    );
    assert_eq!(p["kv_cache_bytes"].as_u64(), Some(2 * 45 * 63 * 64 * 2));
    // A budget of 1.5: the same heads, spent by sensitivity (scored on 32 tokens here).
    let budget = |b: &str| run(&["--kv-budget", b, "--budget-tokens", "32"]);
    let v = budget("1.5");
    let groups: Vec<u64> = serde_json::from_value(v["per_layer"]["layer_groups"].clone()).unwrap();
    assert_eq!((groups.len(), groups.iter().sum::<u64>()), (30, 45));
    assert_eq!(
        v["per_layer"]["kv_cache_bytes"].as_u64(),
        Some(2 * 45 * 63 * 64 * 2)
    );
    let cached = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .any(|n| n.starts_with("sensitivity-") && n.ends_with("-mean-32.json"));
    assert!(cached, "the sensitivities are cached");
    // From the cache: the same allocation; another budget from the same table.
    assert_eq!(
        budget("1.5")["per_layer"]["layer_groups"],
        v["per_layer"]["layer_groups"]
    );
    assert_eq!(budget("2")["per_layer"]["kv_heads"].as_u64(), Some(60));
    // Budgets outside 1..=H, and a budget beside --groups, are refused.
    for bad in [
        &["--kv-budget", "0.5"][..],
        &["--kv-budget", "9.5"],
        &["--kv-budget", "2", "--groups", "2"],
    ] {
        let mut args = vec!["perplexity", "--ids-file", ids_file.to_str().unwrap()];
        args.extend(bad);
        let out = gqa(&args, &dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && !stderr.contains("panicked"),
            "{bad:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
