#!/usr/bin/env bash
# Browser tests of the app: the release CLI (the oracle the tests compare with), the release
# trunk build, then tests/browser/app.test.mjs, page-inputs.test.mjs, kv-types.test.mjs,
# sequence.test.mjs and budget.test.mjs on Debian's chromium with WebGPU on SwiftShader. Screenshots go to
# artifacts/. sequence.test.mjs alone takes about 4 minutes on 2 cores (it fits the calibrated
# G = 1 at the page's default); budget.test.mjs, the KV budget mode, runs on the CPU engine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh browser
cargo build --release --bin gqa-lab
trunk build --release
cd tests/browser
node --test --test-concurrency=1 --test-reporter=spec app.test.mjs page-inputs.test.mjs kv-types.test.mjs sequence.test.mjs budget.test.mjs
