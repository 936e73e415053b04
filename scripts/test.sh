#!/usr/bin/env bash
# The whole test suite. Run through `make test`, which installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*" >&2; }

step "format"
cargo fmt --check

step "lints (clippy, warnings are errors)"
cargo clippy --release --all-targets -- -D warnings
cargo clippy --release --lib --target wasm32-unknown-unknown -- -D warnings

# lavapipe's Vulkan loader wants a runtime dir; CI's environment may have none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

step "native tests (release build: the suite runs the real 135M model; GPU tests on lavapipe)"
cargo test --release --all-targets

step "the library builds for the browser (wasm32, SIMD128: .cargo/config.toml)"
cargo build --release --lib --target wasm32-unknown-unknown

step "wasm32 unit tests in node (the SIMD128 cpu-q8 kernel against the plain one)"
cargo test --release --lib --target wasm32-unknown-unknown

step "browser app in chromium (WebGPU on SwiftShader; screenshots in artifacts/)"
scripts/browser-test.sh
