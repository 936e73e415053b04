#!/usr/bin/env bash
# The KV cache's element types side by side, in one run on this machine: `gqa-lab bench` on the
# GPU engine (lavapipe where there is no GPU) and on `cpu-q8`, decode at a 4,096-position
# context for f32, f16 and q8_0 caches: the attention's time per token (every layer's, over
# the cache) and the cache bytes it reads, and decode tokens/s. Prints a table and keeps the
# JSON in target/kv-types/. Run by hand; asserts nothing.
#
#   benches/kv-types.sh              G = 3 on the GPU engine, G = 1, 3, 9 on cpu-q8
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/kv-types
mkdir -p "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build --release --bin gqa-lab
bench() { target/release/gqa-lab bench --kv-types f32,f16,q8_0 --contexts 4096 --json "$@"; }
bench --backend gpu --groups 3 --decode-tokens 4 > "$OUT/gpu.json"
bench --backend cpu-q8 --groups 1,3,9 --decode-tokens 8 > "$OUT/cpu-q8.json"
python3 - "$OUT" <<'PY'
import json, sys
print("| engine | G | cache | attention ms/token | cache bytes read/token | decode tokens/s |")
print("|---|---|---|---|---|---|")
for name in ("gpu", "cpu-q8"):
    d = json.load(open(f"{sys.argv[1]}/{name}.json"))
    for r in d["results"]:
        print(f"| {name} ({d['device']}) | {r['groups']} | {r['kv_type']} | "
              f"{r['attention_ms_per_token']:.1f} | {r['attention_bytes_read_per_token']:,} | "
              f"{r['decode_tokens_per_second']:.1f} |")
PY
