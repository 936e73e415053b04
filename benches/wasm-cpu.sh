#!/usr/bin/env bash
# The cpu-q8 backend in WebAssembly, in node, single-threaded (tests/wasm_cpu.rs), with SIMD128
# (the default build, .cargo/config.toml) and without (scalar wasm, its own target dir), against
# the native CLI (`--backend cpu-q8`) on the same prompts: tokens/s, and whether the greedy ids
# are the native ones. Run by hand; prints JSON lines, asserts nothing about speed.
#
#   benches/wasm-cpu.sh            both wasm builds
#   benches/wasm-cpu.sh simd       the SIMD128 build only
#   COMPARE_ONLY=1 benches/wasm-cpu.sh   compare the last runs' ids again, building nothing
#
# Builds take the shared build lock (/tmp/gqa-build.lock); the wasm measurements hold it too, so
# no build of another checkout runs beside them on this 2-core machine (the native runs only
# give ids, which load does not change).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=/tmp/gqa-build.lock
OUT=target/wasm-cpu-bench
mkdir -p "$OUT"
builds=${1:-simd scalar}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner

[ -n "${COMPARE_ONLY:-}" ] || flock "$LOCK" cargo build --release --bin gqa-lab

for b in $builds; do
  [ -n "${COMPARE_ONLY:-}" ] && break # reuse the last runs' output in $OUT
  case $b in
    simd) flags=(); dir=target ;;
    scalar) flags=(RUSTFLAGS="-C target-feature=-simd128"); dir=target/wasm-scalar ;;
    *) echo "unknown build $b (simd|scalar)" >&2; exit 2 ;;
  esac
  flock "$LOCK" env "${flags[@]}" cargo test --release --target wasm32-unknown-unknown \
    --target-dir "$dir" --test wasm_cpu --no-run
  flock "$LOCK" env "${flags[@]}" cargo test --release --target wasm32-unknown-unknown \
    --target-dir "$dir" --test wasm_cpu -- --include-ignored --nocapture \
    | sed -n 's/^.*BENCH //p' > "$OUT/$b.jsonl"
done

# Native cpu-q8 ids of the same prompts (the same cache type): the speed prompt (129 tokens:
# the prefill's and 128 decoded) and every fixture prompt (f32).
python3 - "$OUT" $builds <<'PY'
import json, subprocess, sys
out, builds = sys.argv[1], sys.argv[2:]
def native(ids, n, kv="f32"):
    r = subprocess.run(["target/release/gqa-lab", "--json", "generate",
                        "--backend", "cpu-q8", "--kv-type", kv, "--ignore-eos", "--prompt-ids", ",".join(map(str, ids)),
                        "--max-tokens", str(n)], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["ids"]
fixture = json.load(open("../shared/fixtures/generate.json"))
for b in builds:
    lines = [json.loads(l) for l in open(f"{out}/{b}.jsonl")]
    fixed = next(l for l in lines if l["test"] == "fixture_ids")
    same = {}
    for p in fixture["prompts"]:
        same[p["name"]] = fixed["ids"][p["name"]] == native(p["prompt_ids"], p["n_generate"])
    # One speed line per KV cache type (f32, f16, q8_0), its ids against native ones of that type.
    for speed in (l for l in lines if l["test"] == "speed"):
        kv = speed.get("kv_type", "f32")
        same_kv = dict(same, speed_prompt=speed["ids"] == native(speed["prompt_ids"], len(speed["ids"]), kv))
        print(json.dumps({
            "build": f"wasm32 {'SIMD128' if speed['simd128'] else 'scalar'}, node, 1 thread",
            "kv_type": kv,
            "prefill_tokens_per_second": round(speed["prefill_tokens_per_second"], 2),
            "decode_tokens_per_second": round(speed["decode_tokens_per_second"], 2),
            "load_seconds": round(speed["load_seconds"], 2),
            "ids_equal_native_cpu_q8": same_kv,
        }))
PY
