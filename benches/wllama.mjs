// The peer benchmark, run by hand (never in CI): wllama (llama.cpp in WebAssembly) on the same
// GGUF in the same headless Chromium, one thread, CPU only — and, with --page, gqa-lab's own
// page with its CPU backend (`?backend=cpu`) — on one prompt and 128 greedy tokens. Prints one
// JSON line per engine: decode and prefill tokens/s.
//
//   node benches/wllama.mjs                          wllama only
//   node benches/wllama.mjs --page http://127.0.0.1:8080/   also the app (e.g. `trunk serve`)
//   options: --tokens N (128), --threads N (1), --runs N (2), --prompt TEXT
//
// Needs: Debian's chromium and playwright-core in tests/browser (`scripts/setup.sh browser`),
// npm for @wllama/wllama@3.8.1 (installed once into target/wllama), and the model
// (`scripts/setup.sh model`). The pages are served with COOP/COEP headers (cross-origin
// isolation: wllama's threads need SharedArrayBuffer; with --threads 1 it runs its
// single-thread build either way).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { launch, ROOT } from '../tests/browser/harness.mjs';

const WLLAMA_VERSION = '3.8.1';
const MODEL = path.join(ROOT, 'static/models/SmolLM2-135M-Instruct.Q4_1.gguf');

const { values: opt } = parseArgs({
  options: {
    page: { type: 'string' },
    tokens: { type: 'string', default: '128' },
    threads: { type: 'string', default: '1' },
    runs: { type: 'string', default: '2' },
    prompt: { type: 'string', default: 'The history of the printing press began' },
  },
});
const tokens = Number(opt.tokens);
const threads = Number(opt.threads);
const runs = Number(opt.runs);

/** target/wllama/node_modules/@wllama/wllama/esm, installed on first use. */
function wllamaDir() {
  const scratch = path.join(ROOT, 'target/wllama');
  const pkg = path.join(scratch, 'node_modules/@wllama/wllama');
  const have = fs.existsSync(path.join(pkg, 'package.json'))
    && JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')).version === WLLAMA_VERSION;
  if (!have) {
    fs.mkdirSync(scratch, { recursive: true });
    console.error(`[wllama] npm install @wllama/wllama@${WLLAMA_VERSION} into ${scratch}`);
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefix', scratch,
      `@wllama/wllama@${WLLAMA_VERSION}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  return path.join(pkg, 'esm');
}

// The bench page: loads the model into wllama and runs `runs` completions; the result lands in
// window.__bench (or window.__benchError).
const PAGE = `<!doctype html><meta charset="utf-8"><title>wllama bench</title>
<script type="module">
import { Wllama } from '/wllama/index.js';
const p = new URLSearchParams(location.search);
try {
  const wllama = new Wllama({ default: '/wllama/wasm/wllama.wasm' });
  const t0 = performance.now();
  await wllama.loadModelFromUrl(location.origin + '/model.gguf',
    { n_threads: Number(p.get('threads')), n_gpu_layers: 0, n_ctx: 1024, useCache: false });
  const loadMs = performance.now() - t0;
  const out = [];
  for (let i = 0; i < Number(p.get('runs')); i++) {
    const r = await wllama.createCompletion({
      prompt: p.get('prompt'), max_tokens: Number(p.get('tokens')), temperature: 0,
      ignore_eos: true, cache_prompt: false,
    });
    out.push({ timings: r.timings, text: r.choices[0].text });
  }
  window.__bench = { loadMs, crossOriginIsolated, runs: out };
} catch (e) {
  window.__benchError = String(e && e.stack || e);
}
</script>`;

/** Serves the bench page, wllama's esm/ and the model, cross-origin isolated. */
function serve(esm) {
  const types = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html' };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const headers = {
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-embedder-policy': 'require-corp',
      'cache-control': 'no-store',
    };
    let file;
    if (url.pathname === '/') {
      res.writeHead(200, { ...headers, 'content-type': 'text/html' }).end(PAGE);
      return;
    } else if (url.pathname === '/model.gguf') {
      file = MODEL;
    } else if (url.pathname.startsWith('/wllama/')) {
      file = path.join(esm, path.normalize(url.pathname.slice('/wllama/'.length)).replace(/^(\.\.[/\\])+/, ''));
    }
    if (!file || !file.startsWith(esm) && file !== MODEL || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, headers).end('not found');
      return;
    }
    res.writeHead(200, {
      ...headers,
      'content-type': types[path.extname(file)] ?? 'application/octet-stream',
      'content-length': fs.statSync(file).size,
    });
    fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Polls `read()` in the page until it returns something, or fails after `ms`. */
async function waitFor(page, read, ms, what) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await page.evaluate(read);
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function benchWllama(context, prompt, n) {
  const server = await serve(wllamaDir());
  try {
    const page = await context.newPage();
    const q = new URLSearchParams({ prompt, tokens: n, threads, runs });
    await page.goto(`http://127.0.0.1:${server.address().port}/?${q}`);
    const r = await waitFor(page, () => window.__bench ?? (window.__benchError && { error: window.__benchError }),
      20 * 60e3, 'wllama');
    if (r.error) throw new Error(`wllama failed in the page: ${r.error}`);
    // The best run of each figure (the first run warms caches up).
    const best = (f) => Math.max(...r.runs.map((x) => x.timings[f]));
    return {
      engine: `wllama ${WLLAMA_VERSION}`,
      threads,
      cross_origin_isolated: r.crossOriginIsolated,
      prompt,
      prompt_tokens: r.runs[0].timings.prompt_n,
      decode_tokens: r.runs[0].timings.predicted_n,
      decode_tokens_per_second: best('predicted_per_second'),
      prefill_tokens_per_second: best('prompt_per_second'),
      runs: r.runs.map((x) => ({
        decode_tokens_per_second: x.timings.predicted_per_second,
        prefill_tokens_per_second: x.timings.prompt_per_second,
      })),
      load_ms: r.loadMs,
      text: r.runs[0].text,
    };
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

// gqa-lab's page on its CPU backend (`?backend=cpu`): the same prompt and greedy tokens
// (`autorun=1`), `runs` times (the first warms up), figures read from the page's run
// statistics (`data-testid="run-stats"`: prompt tokens, prefill ms, decode tokens/s).
async function benchPage(context, base, prompt, n) {
  const page = await context.newPage();
  const url = new URL(base);
  const q = { backend: 'cpu', prompt, chat: '0', temperature: '0', max_tokens: String(n), ignore_eos: '1', autorun: '1' };
  for (const [k, v] of Object.entries(q)) url.searchParams.set(k, v);
  const out = [];
  const state = () => page.$eval('[data-testid="status"]', (e) => e.dataset.state);
  await page.goto(url.href);
  for (let i = 0; i < runs; i++) {
    if (i > 0) {
      await page.click('[data-testid="generate-button"]');
      while ((await state()) === 'done') await page.waitForTimeout(20);
    }
    await page.waitForSelector('[data-testid="status"][data-state="done"]', { timeout: 20 * 60e3 });
    const st = await page.$eval('[data-testid="run-stats"]', (e) => ({ ...e.dataset }));
    const backend = await page.$eval('[data-testid="backend"]', (e) => e.dataset.backend);
    if (backend !== 'cpu') throw new Error(`the page runs on ${backend}, not the CPU`);
    out.push({
      decode_tokens_per_second: Number(st.decodeTps),
      prefill_tokens_per_second: Number(st.promptTokens) / (Number(st.prefillMs) / 1e3),
      prompt_tokens: Number(st.promptTokens),
    });
  }
  await page.close();
  const best = (f) => Math.max(...out.map((x) => x[f]));
  return {
    engine: 'gqa-lab page, CPU backend (wasm SIMD128, 1 thread)',
    prompt_tokens: out[0].prompt_tokens,
    decode_tokens_per_second: best('decode_tokens_per_second'),
    prefill_tokens_per_second: best('prefill_tokens_per_second'),
    runs: out,
  };
}

if (!fs.existsSync(MODEL)) throw new Error(`${MODEL} is missing: run scripts/setup.sh model`);
const { context, close } = await launch({ webgpu: false });
try {
  // Decode: the short prompt and `tokens` greedy tokens. Prefill: a passage of about 128 tokens
  // (the prefill target), 4 tokens after it.
  const long = fs.readFileSync(path.join(ROOT, 'static/calibration/around-the-world-in-80-days.txt'), 'utf8')
    .slice(0, 560);
  console.log(JSON.stringify({ ...(await benchWllama(context, opt.prompt, tokens)), measures: 'decode' }));
  console.log(JSON.stringify({ ...(await benchWllama(context, long, 4)), measures: 'prefill of a long prompt' }));
  if (opt.page) {
    console.log(JSON.stringify({ ...(await benchPage(context, opt.page, opt.prompt, tokens)), measures: 'decode' }));
    console.log(JSON.stringify({ ...(await benchPage(context, opt.page, long, 4)), measures: 'prefill of a long prompt' }));
  }
} finally {
  await close();
}
