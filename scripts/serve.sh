#!/usr/bin/env bash
# Builds the browser app (release) and serves it with the default model on
# http://127.0.0.1:8080 (address and port in Trunk.toml). Offline: trunk uses the
# wasm-bindgen on PATH and `cargo --offline`; `scripts/setup.sh serve` provides both and the model.
set -euo pipefail
cd "$(dirname "$0")/.."
trunk build --release
echo "gqa-lab: open http://127.0.0.1:8080/ in a browser with WebGPU (Chrome/Edge 113+)" >&2
exec trunk serve --release --no-autoreload
