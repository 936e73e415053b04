// Browser tests of the gqa-lab app: trunk's dist/ served on 127.0.0.1, Debian's
// chromium with WebGPU on SwiftShader, driven by playwright-core; run with `node --test`.
// Generations are short (SwiftShader decodes about one token a second on 2 cores).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { serve } from './server.mjs';
import { ROOT, launch, openPage, startApp, stopApp, byId, text, waitStatus, screenshot } from './harness.mjs';

const MODEL_PATH = '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
const CLI = path.join(ROOT, 'target/release/gqa-lab');
// SmolLM2-135M: 30 layers, head_dim 64, f32 K/V (what `gqa-lab info` reports).
const kvBytes = (g, tokens) => 2 * 30 * g * 64 * tokens * 4;

let srv;
let browser; // one profile for all WebGPU tests: the model is cached after the first load
const errors = [];

before(async () => ({ srv, browser } = await startApp()));
after(() => stopApp({ srv, browser }));

/** The app's URL for these settings: on the GPU engine unless `backend` says otherwise
 * (`auto` picks the CPU on SwiftShader, a software adapter), with an f32 KV cache as the CLI's
 * runs below keep theirs (the page's default is f16: kv-types.test.mjs tests each type). */
const appUrl = (params = {}) => `${srv.url}?${new URLSearchParams({ backend: 'gpu', kv: 'f32', ...params })}`;
const modelHits = () => srv.hits.get(MODEL_PATH) ?? 0;

/** `gqa-lab generate --backend cpu --kv-type f32 --json`: the native oracle's run (`ids`, `text`, …). */
// `model`: a GGUF file's path, or a built-in model's name (run from the repository root).
function cliRun({ prompt, chat, groups, maxTokens, ignoreEos, sampling = {}, regroup = 'calibrated', backend = 'cpu',
  model = path.join(ROOT, 'static', MODEL_PATH) }) {
  const args = ['--model', model, 'generate', '--backend', backend, '--kv-type', 'f32', '--json',
    '--prompt', prompt, '--groups', String(groups), '--max-tokens', String(maxTokens), '--regroup', regroup];
  for (const [k, v] of Object.entries(sampling)) args.push(`--${k.replace('_', '-')}`, String(v));
  if (chat) args.push('--chat');
  if (ignoreEos) args.push('--ignore-eos');
  return JSON.parse(execFileSync(CLI, args, { encoding: 'utf8', cwd: ROOT }));
}

/** The native oracle's ids. */
const cliIds = (c) => cliRun(c).ids;

const ids = async (page) => (await text(page, 'output-ids')).split(',').filter(Boolean).map(Number);

test('the default model downloads with progress, then loads from Cache Storage', async () => {
  const page = await openPage(browser.context, appUrl(), errors);
  await waitStatus(page, /^ready$/);
  assert.equal(await byId(page, 'load-progress').getAttribute('data-percent'), '100');
  assert.match(await text(page, 'load-progress'), /Downloaded 98\.4 \/ 98\.4 MB · [\d.]+ MB\/s · 100%/);
  assert.equal(modelHits(), 1);
  await screenshot(page, 'loaded.png');
  await page.emulateMedia({ colorScheme: 'dark' });
  await screenshot(page, 'loaded-dark.png');
  await page.close();

  // Second visit: no request for the model reaches the server.
  const again = await openPage(browser.context, appUrl(), errors);
  await waitStatus(again, /^ready$/);
  assert.match(await text(again, 'load-progress'), /browser cache .* 100%/);
  assert.equal(modelHits(), 1, 'the model was fetched again instead of read from Cache Storage');

  // A corrupted cache entry fails sha256 and is fetched (and stored) again.
  await again.evaluate(async (url) => {
    const cache = await caches.open('gqa-lab-models-v1');
    await cache.put(url, new Response(new Uint8Array(98_362_432).fill(7)));
  }, new URL('models/SmolLM2-135M-Instruct.Q4_1.gguf', srv.url).href);
  await again.reload();
  await waitStatus(again, /^ready$/);
  assert.equal(modelHits(), 2);
  await again.reload();
  await waitStatus(again, /^ready$/);
  assert.equal(modelHits(), 2, 'the re-fetched model was not stored');
  await again.close();
});

// G = 3 runs a chat prompt that ends in EOS (the app, like the CLI, stops there unless
// ignore_eos=1); G = 1 and G = 9 run past EOS like `--ignore-eos`. `ahead: 1` decodes one step
// ahead (a hardware GPU's default; SwiftShader's is step by step): the step after a token is
// submitted before the token is read back, and dropped at EOS.
const CASES = [
  { groups: 3, prompt: 'Write a haiku about the ocean.', chat: true, maxTokens: 16, ignoreEos: false, ahead: 1 },
  // The GQA paper's mean-pooling, as the fixtures define G = 1 (the calibrated merge has its
  // own test below).
  { groups: 1, prompt: 'The capital of France is', chat: false, maxTokens: 16, ignoreEos: true, regroup: 'mean' },
  { groups: 9, prompt: 'The capital of France is', chat: false, maxTokens: 16, ignoreEos: true },
  // Sampling: the GPU's logits come back and the shared sampler draws with the same seed.
  { groups: 3, prompt: 'Once upon a time', chat: false, maxTokens: 6, ignoreEos: true, ahead: 1,
    sampling: { temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 } },
];

for (const c of CASES) {
  const how = (c.sampling ? `sampled, seed ${c.sampling.seed}` : c.chat ? 'chat, stops at EOS' : 'raw, --ignore-eos')
    + (c.ahead ? ', one step ahead' : '');
  test(`autorun at G=${c.groups} gives the CLI's ids (${how})`, async () => {
    const expected = cliIds(c);
    const page = await openPage(browser.context, appUrl({
      prompt: c.prompt, chat: c.chat ? 1 : 0, groups: c.groups, temperature: 0, ...c.sampling,
      max_tokens: c.maxTokens, ...(c.ignoreEos ? { ignore_eos: 1 } : {}), autorun: 1,
      ...(c.ahead ? { ahead: 1 } : {}), ...(c.regroup ? { regroup: c.regroup } : {}),
    }), errors);
    await waitStatus(page, /^done/);
    assert.deepEqual(await ids(page), expected);
    assert.match(await text(page, 'model-facts'), c.ahead ? /decodes one step ahead$/ : /decodes step by step$/);
    assert.equal(await byId(page, 'groups-slider').inputValue(), String(c.groups));
    assert.ok(Number(await text(page, 'tokens-per-second')) > 0);
    // The what-each-G-buys table shows the decode speed measured at this G, and only here.
    for (const g of [1, 3, 9]) {
      assert.match(await text(page, `speed-g${g}`), g === c.groups ? /^\d+\.\d tok\/s$/ : /^–$/);
    }
    assert.ok((await text(page, 'output-text')).length > 0);
    const tokens = Number(await text(page, 'kv-tokens'));
    assert.equal(Number(await text(page, 'kv-cache-bytes')), kvBytes(c.groups, tokens));
    if (!c.ignoreEos) assert.equal(expected.at(-1), 2, 'the G=3 case is meant to end at EOS');
    if (c.groups === 3) await screenshot(page, 'generation-done.png');
    if (c.groups === 1) await screenshot(page, 'generation-mqa.png');
    await page.close();
  });
}

test('the G slider regroups: diagram, KV bytes and URL follow (keyboard)', async () => {
  // Mean-pooling: no calibration to wait for at G = 1 and 2 (the calibrated merge has its own test).
  const page = await openPage(browser.context, appUrl({ prompt: 'The capital of France is', chat: 0, regroup: 'mean' }), errors);
  await waitStatus(page, /^ready$/);
  const slider = byId(page, 'groups-slider');
  assert.equal(await slider.inputValue(), '3');
  const tokens = Number(await text(page, 'kv-tokens'));
  assert.equal(tokens, 5, 'the prompt has 5 tokens');
  for (const [key, g] of [['ArrowRight', 4], ['ArrowLeft', 3], ['ArrowLeft', 2], ['Home', 1], ['ArrowRight', 2], ['End', 9]]) {
    await slider.focus();
    await page.keyboard.press(key);
    await page.waitForFunction((g) => document.querySelector('[data-testid="grouping-diagram"]')?.getAttribute('data-groups') === String(g), g);
    assert.equal(await slider.inputValue(), String(g));
    assert.equal(await page.locator('[data-testid="grouping-diagram"] .kv-head').count(), g);
    assert.equal(await page.locator('[data-testid="grouping-diagram"] .edge').count(), 9);
    assert.equal(Number(await text(page, 'kv-cache-bytes')), kvBytes(g, tokens));
    assert.match(page.url(), new RegExp(`groups=${g}(&|$)`));
    await waitStatus(page, /^ready$/);
  }
  // Query head h reads KV head h / (9 / G): at G = 9 each its own.
  const edges = await page.locator('[data-testid="grouping-diagram"] .edge').evaluateAll(
    (ls) => ls.map((l) => [Number(l.dataset.q), Number(l.dataset.kv)]));
  assert.deepEqual(edges, [...Array(9).keys()].map((h) => [h, h]));
  assert.match(await text(page, 'status'), /^ready$/);
  await page.close();
});

// On the CPU engine in its worker the switch also takes back the step the worker decoded
// ahead (worker.rs) — the ids must still be the native engine's.
for (const [backend, maxTokens, cli] of [['gpu', 12, 'cpu'], ['cpu', 160, 'cpu-q8']]) test(`moving the slider during generation re-prefills and continues the text (${backend})`, async () => {
  const expected = cliIds({ prompt: 'The capital of France is', chat: false, groups: 3, maxTokens, ignoreEos: true, backend: cli });
  const page = await openPage(browser.context, appUrl({
    backend, prompt: 'The capital of France is', chat: 0, groups: 3, temperature: 0, max_tokens: maxTokens, ignore_eos: 1, autorun: 1,
  }), errors);
  await page.waitForFunction(() => (document.querySelector('[data-testid="output-ids"]')?.textContent ?? '').split(',').length >= 4,
    null, { timeout: 300_000 });
  const before = await text(page, 'output-text');
  const slider = byId(page, 'groups-slider');
  await slider.focus();
  await page.keyboard.press('ArrowRight'); // 3 → 4 mid-generation
  assert.equal(await slider.inputValue(), '4');
  assert.equal(await page.locator('[data-testid="grouping-diagram"] .kv-head').count(), 4);
  await waitStatus(page, /^done/);
  const after = await text(page, 'output-text');
  assert.ok(after.startsWith(before), `text was lost: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
  // G = 4 splits a native group (its KV heads are copies of native ones), so the sequence is
  // the same as G = 3 throughout.
  assert.deepEqual(await ids(page), expected);
  const tokens = Number(await text(page, 'kv-tokens'));
  assert.equal(tokens, 5 + maxTokens - 1);
  assert.equal(Number(await text(page, 'kv-cache-bytes')), kvBytes(4, tokens));
  // Tokens decoded before the switch count for G = 3, those after it for G = 4.
  assert.match(await text(page, 'speed-g3'), /tok\/s$/);
  assert.match(await text(page, 'speed-g4'), /tok\/s$/);
  assert.equal(await text(page, 'speed-g1'), '–');
  await page.close();
});

test('Stop ends a generation early', async () => {
  const page = await openPage(browser.context, appUrl({ prompt: 'Once upon a time', chat: 0, max_tokens: 64, ignore_eos: 1, autorun: 1 }), errors);
  await page.waitForFunction(() => (document.querySelector('[data-testid="output-ids"]')?.textContent ?? '').split(',').length >= 2,
    null, { timeout: 300_000 });
  await byId(page, 'stop-button').click();
  assert.match(await waitStatus(page, /^done/), /stopped/);
  const n = (await ids(page)).length;
  assert.ok(n >= 2 && n < 64, `${n} tokens`);
  assert.ok(await byId(page, 'generate-button').isEnabled());
  await page.close();
});

test('a file that is not a GGUF model gives an error and the page keeps working', async () => {
  const page = await openPage(browser.context, appUrl({ prompt: 'Hello', chat: 0, max_tokens: 2, ignore_eos: 1 }), errors);
  await waitStatus(page, /^ready$/);
  await byId(page, 'model-file').setInputFiles({ name: 'notes.gguf', mimeType: 'text/plain', buffer: Buffer.from('these are notes, not a model\n') });
  const picked = await waitStatus(page, /^error:/);
  assert.match(picked, /GGUF/);
  // The same through drag and drop.
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array([0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 1, 2])], 'truncated.gguf'));
    document.querySelector('.drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  // (The load starts the engine's worker beside the read: "loading" first, then the error.)
  await page.waitForFunction((prev) => {
    const s = document.querySelector('[data-testid="status"]').textContent;
    return s !== prev && !s.startsWith('loading');
  }, picked);
  assert.match(await text(page, 'status'), /^error:/);
  await screenshot(page, 'bad-file.png');
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  assert.equal((await ids(page)).length, 2);
  await page.close();
});

test('a lost GPU device can be reloaded without reloading the page', async () => {
  const hits = modelHits();
  const page = await openPage(browser.context, appUrl({ prompt: 'Hello', chat: 0, max_tokens: 2, ignore_eos: 1, debug: 1 }), errors);
  await waitStatus(page, /^ready$/);
  await byId(page, 'lose-device').click();
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^error:/);
  await byId(page, 'reload-engine').click();
  await waitStatus(page, /^ready$/);
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  assert.equal((await ids(page)).length, 2);
  assert.equal(modelHits(), hits, 'reloading the engine read the model from Cache Storage');
  await page.close();
});

test('without WebGPU the page generates on the CPU; asked for the GPU it says which browser to use and offers the CPU', async () => {
  const plain = await launch({ webgpu: false });
  const c = { prompt: 'The capital of France is', chat: false, groups: 3, maxTokens: 8, ignoreEos: true, backend: 'cpu-q8' };
  try {
    const page = await openPage(plain.context, appUrl({ backend: 'auto', prompt: c.prompt, chat: 0, max_tokens: 8, ignore_eos: 1, temperature: 0, autorun: 1 }), errors);
    await waitStatus(page, /^done/);
    assert.equal(await byId(page, 'backend').getAttribute('data-backend'), 'cpu');
    assert.match(await text(page, 'backend-why'), /^CPU: no WebGPU here/);
    assert.equal(await byId(page, 'no-webgpu').count(), 0);
    assert.deepEqual(await ids(page), cliIds(c));
    await page.close();
    // backend=gpu: the notice, and a button that runs it on the CPU instead.
    const gpu = await openPage(plain.context, appUrl({ backend: 'gpu' }));
    await byId(gpu, 'no-webgpu').waitFor({ timeout: 60_000 });
    const msg = await text(gpu, 'no-webgpu');
    assert.match(msg, /WebGPU/);
    assert.match(msg, /Chrome/);
    await waitStatus(gpu, /^error: WebGPU is not available/);
    await screenshot(gpu, 'no-webgpu.png');
    await byId(gpu, 'use-cpu').click();
    await waitStatus(gpu, /^ready$/);
    assert.equal(await byId(gpu, 'backend').getAttribute('data-backend'), 'cpu');
    assert.match(gpu.url(), /backend=cpu(&|$)/);
    assert.equal(await byId(gpu, 'no-webgpu').count(), 0);
    await gpu.close();
  } finally {
    await plain.close();
  }
});

// The CPU backend: the native cpu-q8 engine compiled to WebAssembly gives the native
// engine's ids, at every kind of G.
for (const [groups, regroup] of [[1, 'mean'], [3, 'mean'], [9, 'mean']]) {
  test(`backend=cpu at G=${groups} gives the native cpu-q8 ids`, async () => {
    const c = { prompt: 'The capital of France is', chat: false, groups, maxTokens: 12, ignoreEos: true, regroup, backend: 'cpu-q8' };
    const page = await openPage(browser.context, appUrl({
      backend: 'cpu', prompt: c.prompt, chat: 0, groups, regroup, temperature: 0, max_tokens: 12, ignore_eos: 1, autorun: 1,
    }), errors);
    await waitStatus(page, /^done/);
    assert.equal(await byId(page, 'backend').getAttribute('data-backend'), 'cpu');
    assert.deepEqual(await ids(page), cliIds(c));
    assert.ok(Number(await text(page, 'tokens-per-second')) > 0);
    if (groups === 3) await screenshot(page, 'cpu-backend.png');
    await page.close();
  });
}

test('on the CPU backend the slider and Stop are answered within 100 ms during a long prefill', async () => {
  const prompt = 'The quick brown fox jumps over the lazy dog. '.repeat(48);
  const page = await openPage(browser.context, appUrl({ backend: 'cpu', prompt, chat: 0, temperature: 0, max_tokens: 2, ignore_eos: 1 }), errors);
  await waitStatus(page, /^ready$/);
  // The time from each pointer event's creation to its handler: how long the page kept it waiting.
  await page.evaluate(() => {
    window.__waits = [];
    for (const type of ['pointerdown', 'keydown']) {
      document.addEventListener(type, (e) => window.__waits.push([type, performance.now() - e.timeStamp]), true);
    }
  });
  await byId(page, 'generate-button').click();
  const fed = Number(/\d+/.exec(await waitStatus(page, /^prefilling [1-9]\d* \/ \d+ tokens$/, 120_000))[0]);
  // The slider moves to G = 4: after the chunk in hand (up to 0.4 s in the worker) the run
  // regroups and prefills its text again from the start; then Stop.
  await byId(page, 'groups-slider').focus();
  await page.keyboard.press('ArrowRight');
  await page.waitForFunction((before) => {
    const m = /^prefilling (\d+) \//.exec(document.querySelector('[data-testid="status"]')?.textContent ?? '');
    return m !== null && Number(m[1]) < before;
  }, fed, { timeout: 120_000, polling: 50 });
  await byId(page, 'stop-button').click();
  assert.match(await waitStatus(page, /^done/, 120_000), /stopped/);
  assert.equal(await byId(page, 'groups-slider').inputValue(), '4');
  const waits = await page.evaluate(() => window.__waits);
  assert.deepEqual(waits.map((w) => w[0]), ['pointerdown', 'keydown', 'pointerdown']);
  for (const [type, ms] of waits.slice(1)) assert.ok(ms < 100, `a ${type} waited ${ms.toFixed(0)} ms`);
  await page.close();
});

// The engine in a dedicated Web Worker: both backends run there by default, the
// header says so, and `worker=0` keeps the engine on the page's thread, with the same ids.
test('the engine runs in a Web Worker on both backends, with the ids of the page\'s thread', async () => {
  const c = { prompt: 'The capital of France is', chat: false, groups: 3, maxTokens: 6, ignoreEos: true, backend: 'cpu-q8' };
  const run = { prompt: c.prompt, chat: 0, temperature: 0, max_tokens: 6, ignore_eos: 1, autorun: 1 };
  const seen = {};
  for (const [backend, worker] of [['cpu', '1'], ['cpu', '0'], ['gpu', '1']]) {
    const page = await openPage(browser.context, appUrl({ backend, worker, ...run }), errors);
    await waitStatus(page, /^done/);
    const thread = byId(page, 'engine-thread');
    assert.equal(await thread.getAttribute('data-worker'), worker === '1' ? 'true' : 'false');
    assert.match(await thread.textContent(), worker === '1' ? /Web Worker/ : /page's thread: asked for \(worker=0\)/);
    assert.equal(page.workers().length, worker === '1' ? 1 : 0);
    seen[`${backend}/${worker}`] = await ids(page);
    await page.close();
  }
  const native = cliIds(c);
  assert.deepEqual(seen['cpu/1'], native);
  assert.deepEqual(seen['cpu/0'], native);
  assert.deepEqual(seen['gpu/1'], cliIds({ ...c, backend: 'cpu' }));
});

// A browser that gives WebGPU to the page but not to its workers (the worker's script is served
// with `navigator.gpu` hidden): the worker says so, the page runs the GPU engine itself and
// says why; the CPU engine still runs in the worker.
test('where workers have no WebGPU, the GPU engine runs on the page\'s thread and the header says why', async () => {
  const hideWorkerGpu = (page) => page.route('**/worker.js', async (route) => {
    const res = await route.fetch();
    const hide = "Object.defineProperty(WorkerNavigator.prototype, 'gpu', { get: () => undefined });\n";
    await route.fulfill({ response: res, body: hide + (await res.text()) });
  });
  const c = { prompt: 'The capital of France is', chat: false, groups: 3, maxTokens: 4, ignoreEos: true, backend: 'cpu' };
  const run = { prompt: c.prompt, chat: 0, temperature: 0, max_tokens: 4, ignore_eos: 1, autorun: 1 };
  const page = await openPage(browser.context, appUrl({ backend: 'gpu', ...run }), errors, hideWorkerGpu);
  await waitStatus(page, /^done/);
  assert.equal(await byId(page, 'backend').getAttribute('data-backend'), 'gpu');
  const thread = byId(page, 'engine-thread');
  assert.equal(await thread.getAttribute('data-worker'), 'false');
  assert.match(await thread.textContent(), /page's thread: this browser gives WebGPU to the page but not to its workers \(the engine's worker has no WebGPU: .*navigator\.gpu is missing/);
  assert.deepEqual(await ids(page), cliIds(c));
  await byId(page, 'backend-select').selectOption('cpu');
  await waitStatus(page, /^ready$/);
  assert.equal(await byId(page, 'backend').getAttribute('data-backend'), 'cpu');
  assert.equal(await thread.getAttribute('data-worker'), 'true');
  await page.close();
});

test('"What each G buys" keeps the decode speed of each backend across a switch of engine', async () => {
  const page = await openPage(browser.context, appUrl({
    backend: 'cpu', prompt: 'Hello', chat: 0, temperature: 0, max_tokens: 4, ignore_eos: 1, autorun: 1,
  }), errors);
  await waitStatus(page, /^done/);
  const cpuSpeed = await text(page, 'speed-g3');
  assert.match(cpuSpeed, /^\d+\.\d tok\/s$/);
  assert.equal(await text(page, 'speed-other'), '');
  await byId(page, 'backend-select').selectOption('gpu');
  await waitStatus(page, /^ready$/);
  assert.equal(await byId(page, 'backend').getAttribute('data-backend'), 'gpu');
  assert.equal(await text(page, 'speed-g3'), '–');
  assert.equal(await text(page, 'speed-other'), `Measured earlier on the CPU backend: G = 3 ${cpuSpeed}.`);
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  assert.match(await text(page, 'speed-g3'), /^\d+\.\d tok\/s$/);
  assert.equal(await text(page, 'speed-other'), `Measured earlier on the CPU backend: G = 3 ${cpuSpeed}.`);
  await page.close();
});

for (const [tool, because] of [['crash-worker', /panicked/], ['exhaust-worker', /memory/]]) {
  test(`a worker that ${tool === 'crash-worker' ? 'crashes' : 'runs out of memory'} is a clear error, and "Reload the engine" recovers`, async () => {
    // Its own error list: the worker's panic message is meant to reach the console here.
    const page = await openPage(browser.context, appUrl({ backend: 'cpu', prompt: 'Hello', chat: 0, max_tokens: 2, ignore_eos: 1, debug: 1 }));
    await waitStatus(page, /^ready$/);
    await byId(page, tool).click();
    const status = await waitStatus(page, /^error:/, 120_000);
    assert.match(status, /the engine's worker stopped/);
    assert.match(status, because);
    assert.equal(await byId(page, 'device-lost').count(), 1);
    await byId(page, 'generate-button').click();
    assert.match(await waitStatus(page, /^error:/), /worker stopped/);
    await byId(page, 'reload-engine').click();
    await waitStatus(page, /^ready$/);
    assert.equal(await byId(page, 'device-lost').count(), 0);
    await byId(page, 'generate-button').click();
    await waitStatus(page, /^done/);
    assert.equal((await ids(page)).length, 2);
    await page.close();
  });
}

test('URL flags take yes/no, anything else and a bad temperature or top_p are reported', async () => {
  const page = await openPage(browser.context, appUrl({
    prompt: 'Hello', chat: 'no', worker: 'abc', temperature: 'NaN', top_p: 2, max_tokens: 1,
    ignore_eos: 'yes', autorun: 'yes',
  }), errors);
  const notice = await text(page, 'url-notice');
  assert.match(notice, /worker="abc" is not 1\/0, true\/false or yes\/no/);
  assert.match(notice, /temperature=NaN is not a temperature/);
  assert.match(notice, /top_p=2 is not in \(0, 1\]/);
  assert.doesNotMatch(notice, /autorun|chat|ignore_eos/);
  await waitStatus(page, /^done/);
  assert.equal((await ids(page)).length, 1, 'autorun=yes ran, ignore_eos=yes kept');
  await page.close();
});

test('groups=0 in the URL is reported and ignored; a count of one is "1 token"', async () => {
  const page = await openPage(browser.context, appUrl({
    prompt: 'Hello', chat: 0, groups: 0, temperature: 0, max_tokens: 1, ignore_eos: 1, autorun: 1,
  }), errors);
  assert.match(await text(page, 'url-notice'), /^Ignored in the URL: groups="0" is not a valid G/);
  await waitStatus(page, /^done/);
  assert.equal(await byId(page, 'groups-slider').inputValue(), '3', 'the native G');
  assert.equal((await ids(page)).length, 1);
  assert.equal((await text(page, 'token-count')).trim(), '1 token');
  // "Hello" is one token, fed once: the meter counts one position.
  assert.equal(Number(await text(page, 'kv-tokens')), 1);
  assert.match(await page.locator('.kv-meter').textContent(), /· 1 token · .*1 position in the KV cache.*now: 1 token(?!s)/s);
  await page.close();
});

/** A page with a run in progress: autorun with `params`, once `n` ids have streamed in. */
async function midRun(params, n) {
  const page = await openPage(browser.context, appUrl({ temperature: 0, ignore_eos: 1, autorun: 1, ...params }), errors);
  await page.waitForFunction((n) => (document.querySelector('[data-testid="output-ids"]')?.textContent ?? '').split(',').filter(Boolean).length >= n,
    n, { timeout: 300_000 });
  // From now on, every change of the status line and of the ids, in order.
  await page.evaluate(() => {
    window.events = [];
    for (const id of ['status', 'output-ids']) {
      const el = document.querySelector(`[data-testid="${id}"]`);
      new MutationObserver(() => window.events.push([id, el.textContent]))
        .observe(el, { childList: true, characterData: true, subtree: true });
    }
  });
  return page;
}

/** Ids shown after a model load began: none when the run was stopped before the load. */
const idsDuringLoad = (page) => page.evaluate(() => {
  const start = window.events.findIndex(([id, t]) => id === 'status' && t.startsWith('loading'));
  return start < 0 ? ['no load seen'] : window.events.slice(start).filter(([id]) => id === 'output-ids');
});

/** Generate `c.prompt` with the page's other settings; its ids must be the CLI's. */
async function generatesLikeTheCli(page, c) {
  await byId(page, 'prompt-input').fill(c.prompt);
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  assert.deepEqual(await ids(page), cliIds(c));
}

// A run of 8 tokens, stopped after its first; then another prompt with the same settings.
const RUN = { prompt: 'Once upon a time', chat: 0, max_tokens: 8 };
const NEXT = { prompt: 'The capital of France is', chat: false, groups: 3, maxTokens: 8, ignoreEos: true };

// Choosing a model stops a running generation first, then loads it.
test('a model file chosen during a generation stops it, then loads, and the page stays in step', async () => {
  const page = await midRun(RUN, 1);
  await byId(page, 'model-file').setInputFiles(path.join(ROOT, 'static', MODEL_PATH));
  await waitStatus(page, /^ready$/);
  assert.match(await text(page, 'model-facts'), /^SmolLM2-135M-Instruct\.Q4_1\.gguf · /);
  assert.deepEqual(await idsDuringLoad(page), [], 'the run went on while the model loaded');
  assert.ok((await ids(page)).length < RUN.max_tokens);
  assert.ok(await byId(page, 'stop-button').isDisabled());
  await generatesLikeTheCli(page, NEXT);
  await page.close();
});

// "Reload the engine" during a run stops it first.
test('reloading the engine during a generation stops it first', async () => {
  const hits = modelHits();
  const page = await midRun({ ...RUN, debug: 1 }, 1);
  await byId(page, 'fail-gpu').click();
  await byId(page, 'reload-engine').click();
  await waitStatus(page, /^ready$/);
  assert.deepEqual(await idsDuringLoad(page), [], 'the run went on while the engine reloaded');
  assert.ok((await ids(page)).length < RUN.max_tokens);
  assert.equal(await byId(page, 'device-lost').count(), 0);
  await generatesLikeTheCli(page, NEXT);
  assert.equal(modelHits(), hits);
  await page.close();
});

// A long prompt is fed in chunks with its progress in the status line; Stop ends the run
// between two chunks.
test('Stop interrupts a long prefill, and the page is usable afterwards', async () => {
  const prompt = 'The quick brown fox jumps over the lazy dog. '.repeat(48);
  const page = await openPage(browser.context, appUrl({ prompt, chat: 0, temperature: 0, max_tokens: 2, ignore_eos: 1 }), errors);
  await waitStatus(page, /^ready$/);
  const promptTokens = Number(await text(page, 'kv-tokens'));
  assert.ok(promptTokens > 400, `${promptTokens} prompt tokens`);
  await byId(page, 'generate-button').click();
  const progress = await waitStatus(page, /^prefilling [1-9]\d* \/ \d+ tokens$/, 120_000);
  assert.match(progress, new RegExp(` / ${promptTokens} tokens$`));
  await byId(page, 'stop-button').click();
  assert.match(await waitStatus(page, /^done/, 120_000), /stopped/);
  assert.equal((await ids(page)).length, 0, 'no token: the prefill was cut short');
  const fed = Number(await text(page, 'kv-tokens'));
  assert.ok(fed > 0 && fed < promptTokens, `${fed} of ${promptTokens} fed`);
  await generatesLikeTheCli(page, { ...NEXT, maxTokens: 2 });
  await page.close();
});

// However a run ends, the text is flushed: stopped right after a token
// that ends inside a character, the page shows what the CLI prints for the same tokens.
test('Stop after a token that ends inside a character keeps its bytes, as the CLI does', async () => {
  const c = { prompt: 'Write the Japanese word for cat.', chat: true, groups: 3, maxTokens: 3 };
  const cli = cliRun(c);
  assert.ok(cli.text.endsWith('\uFFFD'), `the case needs a cut character: ${JSON.stringify(cli.text)}`);
  const page = await openPage(browser.context, appUrl({ prompt: c.prompt, chat: 1, temperature: 0, max_tokens: 16 }), errors);
  await waitStatus(page, /^ready$/);
  // Stop as soon as the third id is shown: the click lands before the run's next step.
  await page.evaluate((k) => {
    const shown = document.querySelector('[data-testid="output-ids"]');
    new MutationObserver(() => {
      if (shown.textContent.split(',').filter(Boolean).length >= k) {
        document.querySelector('[data-testid="stop-button"]').click();
      }
    }).observe(shown, { childList: true, characterData: true, subtree: true });
  }, c.maxTokens);
  await byId(page, 'generate-button').click();
  assert.match(await waitStatus(page, /^done/), /stopped/);
  assert.deepEqual(await ids(page), cli.ids);
  assert.equal(await text(page, 'output-text'), cli.text);
  await page.close();
});

/** The KV head each query head reads, from the diagram. */
const diagramHeads = (page) => page.locator('[data-testid="grouping-diagram"] .edge').evaluateAll(
  (ls) => ls.map((l) => Number(l.dataset.kv)));

test('the slider stops at every G; groups of unequal size are drawn and explained', async () => {
  const page = await openPage(browser.context, appUrl({ prompt: 'Hello', chat: 0, regroup: 'mean' }), errors);
  await waitStatus(page, /^ready$/);
  assert.equal(await page.locator('.ticks .tick').count(), 9, 'a stop for each G from 1 to 9');
  for (const [g, heads] of [[2, [0, 0, 0, 0, 0, 0, 1, 1, 1]], [4, [0, 0, 1, 2, 2, 2, 3, 3, 3]], [7, [0, 1, 2, 3, 3, 4, 5, 5, 6]]]) {
    await page.locator('.ticks .tick').nth(g - 1).click();
    await page.waitForFunction((g) => document.querySelector('[data-testid="grouping-diagram"]')?.getAttribute('data-groups') === String(g), g);
    await waitStatus(page, /^ready$/);
    assert.deepEqual(await diagramHeads(page), heads, `G=${g}`);
    assert.match(await page.locator('.diagram figcaption').textContent(), /unequal size: Q0/);
  }
  await screenshot(page, 'uneven-groups.png');
  await page.close();
});

test('the calibrated merge is fitted on the GPU at G = 2 and 1, generates, and the table measures both methods', async () => {
  const prompt = 'The capital of France is';
  const page = await openPage(browser.context, appUrl({
    prompt, chat: 0, groups: 2, regroup: 'calibrated', calib_tokens: 64, quality_tokens: 24,
    temperature: 0, max_tokens: 6, ignore_eos: 1, autorun: 1,
  }), errors);
  await waitStatus(page, /^done/, 900_000);
  assert.equal((await ids(page)).length, 6);
  assert.match(await page.locator('.measure').textContent(), /Calibration here took G = 2 \d+ s/);
  assert.equal(await byId(page, 'regroup-method').inputValue(), 'calibrated');
  // G = 1: fitted when chosen (the status line says so), then it generates.
  await page.locator('.ticks .tick').nth(0).click();
  await waitStatus(page, /^calibrating G = 1: \d+ \/ 30 layers$/, 120_000);
  await waitStatus(page, /^ready$/, 900_000);
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/, 300_000);
  const mqa = await ids(page);
  assert.equal(mqa.length, 6);
  assert.ok(mqa.some((id) => id !== 29), `calibrated MQA writes more than "-": ${mqa}`);
  // Both methods scored on the built-in passage: the calibrated merge beats mean-pooling below
  // the native G; at and above it every G is the native model (scored once).
  await byId(page, 'measure-quality').click();
  await waitStatus(page, /^done \(quality measured\)$/, 900_000);
  const ppl = async (g, m) => Number(await byId(page, `quality-g${g}-${m}`).getAttribute('data-ppl'));
  for (const g of [1, 2]) {
    const [mean, cal] = [await ppl(g, 'mean'), await ppl(g, 'calibrated')];
    assert.ok(cal > 1 && cal < mean, `G=${g}: calibrated ${cal} vs mean-pooled ${mean}`);
  }
  assert.ok((await ppl(3, 'mean')) > 1);
  assert.equal(await ppl(9, 'calibrated'), await ppl(3, 'mean'));
  assert.match(await text(page, 'quality-g9-mean'), /\(exact\)$/);
  assert.equal(await page.locator('td.current-method[data-testid="quality-g1-calibrated"]').count(), 1);
  await screenshot(page, 'calibrated.png');
  // The plot: every measured (G, method) at its KV bytes per token, and the decode speed
  // measured here at the G generated at (2 and 1).
  const points = await page.locator('[data-testid="plot-bytes"] [data-testid="plot-point"]').evaluateAll((els) => els.map((e) => ({
    g: Number(e.dataset.groups), method: e.dataset.method, ppl: Number(e.dataset.ppl), bytes: Number(e.dataset.bytes), ms: e.dataset.ms,
  })));
  assert.equal(points.length, 9 + 2, 'G = 1 and 2 with both methods, G = 3 to 9 once');
  for (const p of points) {
    assert.equal(p.bytes, kvBytes(p.g, 1));
    assert.equal(p.ppl, await ppl(p.g >= 3 ? 3 : p.g, p.g >= 3 ? 'mean' : p.method));
    assert.equal(p.ms !== '', p.g <= 2, `G=${p.g}: decode ms measured only where it generated`);
  }
  assert.equal(await page.locator('[data-testid="plot-ms"] [data-testid="plot-point"]').count(), 4);
  await screenshot(page, 'tradeoff-plot.png', 'plot-card');
  // The method switch: mean-pooling at G = 1, in the URL and the table.
  await byId(page, 'regroup-method').selectOption('mean');
  await waitStatus(page, /^(ready|done.*)$/);
  assert.match(page.url(), /regroup=mean(&|$)/);
  assert.equal(await page.locator('td.current-method[data-testid="quality-g1-mean"]').count(), 1);
  const measured = await ppl(1, 'calibrated');
  await page.close();
  // The next visit with the same settings shows the figures again without measuring.
  const again = await openPage(browser.context, appUrl({ prompt, chat: 0, calib_tokens: 64, quality_tokens: 24 }), errors);
  await waitStatus(again, /^ready$/);
  assert.equal(Number(await byId(again, 'quality-g1-calibrated').getAttribute('data-ppl')), measured);
  await again.close();
});

// The views that explain GQA: attention by KV group, G side by side, the plot, the calculator.

/** Every attention-head row: its head, KV head and weights. */
const attentionRows = (page) => page.locator('[data-testid="attention-head"]').evaluateAll((els) => els.map((e) => ({
  head: Number(e.dataset.head), kv: Number(e.dataset.kvHead), weights: e.dataset.weights.split(',').map(Number),
})));

test('the attention view shows each query head by its KV head at G = 1, 3 and 9, and reads nothing while closed', async () => {
  const page = await openPage(browser.context, appUrl({
    prompt: 'The capital of France is', chat: 0, regroup: 'mean', temperature: 0, max_tokens: 3, ignore_eos: 1,
  }), errors);
  await waitStatus(page, /^ready$/);
  const view = byId(page, 'attention-view');
  assert.equal(await view.getAttribute('data-open'), 'false');
  // Closed: a generation reads no weights back.
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  assert.equal(await view.getAttribute('data-reads'), '0');
  assert.equal(await page.locator('[data-testid="attention-head"]').count(), 0);
  await byId(page, 'attention-toggle').click();
  assert.equal(await view.getAttribute('data-open'), 'true');
  for (const [g, layer, nRep] of [[3, 0, 3], [1, 5, 9], [9, 29, 1]]) {
    await page.locator('.ticks .tick').nth(g - 1).click();
    await waitStatus(page, /^(ready|done.*)$/);
    await byId(page, 'attention-layer').selectOption(String(layer));
    const reads = Number(await view.getAttribute('data-reads'));
    await byId(page, 'generate-button').click();
    await waitStatus(page, /^done/);
    assert.equal(await view.getAttribute('data-layer'), String(layer));
    // One read per generated token (the first comes with the prefill).
    assert.equal(Number(await view.getAttribute('data-reads')) - reads, 3, `G=${g}`);
    const rows = await attentionRows(page);
    assert.deepEqual(rows.map((r) => r.head), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(rows.map((r) => r.kv), rows.map((r) => Math.floor(r.head / nRep)), `G=${g}: KV head of each query head`);
    const positions = Number(await text(page, 'kv-tokens')); // positions fed (not the last token)
    for (const r of rows) {
      assert.equal(r.weights.length, positions, `G=${g} head ${r.head}: one weight per position seen`);
      const sum = r.weights.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - 1) < 1e-4, `G=${g} layer ${layer} head ${r.head}: weights sum to ${sum}`);
    }
    if (g === 3) await screenshot(page, 'attention-view.png', 'attention-view');
  }
  // Closed again: generating reads nothing more.
  await byId(page, 'attention-toggle').click();
  const reads = await view.getAttribute('data-reads');
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  assert.equal(await view.getAttribute('data-reads'), reads);
  await page.close();
});

test('side by side: the native column is the CLI\'s, G above it the same, the first departure marked', async () => {
  const prompt = 'The capital of France is';
  const page = await openPage(browser.context, appUrl({ prompt, chat: 0, regroup: 'mean' }), errors);
  await waitStatus(page, /^ready$/);
  await byId(page, 'compare-tokens').fill('6');
  await byId(page, 'compare-tokens').dispatchEvent('change');
  // Keep G = 1 and 9 (the native G = 3 always runs).
  for (const g of [2, 4, 5, 6, 7, 8]) await page.locator(`[data-testid="compare-pick"][data-groups="${g}"]`).click();
  await byId(page, 'compare-run').click();
  await waitStatus(page, /^done \(compared\)$/, 600_000);
  const columns = await page.locator('[data-testid="compare-column"]').evaluateAll((els) => els.map((e) => ({
    g: Number(e.dataset.groups), ids: e.dataset.ids.split(',').filter(Boolean).map(Number), departs: e.dataset.departs,
    tops: e.querySelectorAll('[data-testid="compare-top"]').length,
  })));
  assert.deepEqual(columns.map((c) => c.g), [3, 1, 9]);
  const native = cliIds({ prompt, chat: false, groups: 3, maxTokens: 6, ignoreEos: false, regroup: 'mean' });
  assert.deepEqual(columns[0].ids, native);
  assert.deepEqual(columns[2].ids, native, 'G = 9 splits native groups: the same model');
  assert.equal(columns[2].departs, '');
  const mqa = cliIds({ prompt, chat: false, groups: 1, maxTokens: 6, ignoreEos: false, regroup: 'mean' });
  assert.deepEqual(columns[1].ids, mqa);
  const d = columns[1].ids.findIndex((id, i) => id !== native[i]);
  assert.equal(columns[1].departs, String(d));
  assert.equal(columns[1].tops, 2, 'top-5 of G = 1 and of the native G where G = 1 departs');
  assert.equal(await page.locator('[data-testid="compare-column"][data-groups="1"] .departs').count(), 1);
  // The engine is back at the person's G.
  assert.equal(await byId(page, 'groups-slider').inputValue(), '3');
  await screenshot(page, 'compare-view.png', 'compare-view');
  await page.close();
});

// A new user's sequence of runs on one tab before side by side: sequence.test.mjs (its own
// fresh profile).

test('the cache calculator gives exact bytes for every preset and G', async () => {
  const page = await openPage(browser.context, appUrl(), errors);
  await waitStatus(page, /^ready$/);
  const presets = {
    'Llama-2-70B': [80, 64, 128], 'Llama-3-8B': [32, 32, 128], 'Llama-3.1-405B': [126, 128, 128],
    'Mistral-7B': [32, 32, 128], 'Qwen2.5-0.5B': [24, 14, 64],
  };
  const bars = () => page.locator('[data-testid="calc-bytes"]').evaluateAll((els) => els.map((e) => [Number(e.dataset.groups), e.dataset.bytes]));
  for (const [name, [layers, heads, hd]] of Object.entries(presets)) {
    await byId(page, 'calc-preset').selectOption(name);
    for (const [ctx, batch, dtype, bytes] of [[8192, 1, 'fp16', 2], [32768, 4, 'fp32', 4]]) {
      await byId(page, 'calc-context').fill(String(ctx));
      await byId(page, 'calc-context').dispatchEvent('change');
      await byId(page, 'calc-batch').fill(String(batch));
      await byId(page, 'calc-batch').dispatchEvent('change');
      await byId(page, 'calc-dtype').selectOption(dtype);
      const want = [];
      for (let g = 1; g <= heads; g++) {
        if (heads % g === 0) want.push([g, String(BigInt(2 * layers * g * hd) * BigInt(ctx * batch * bytes))]);
      }
      assert.deepEqual(await bars(), want, `${name} ${ctx} tokens × ${batch}, ${dtype}`);
    }
  }
  // The hand-computed figure, and q4 (Q4_0: 18 bytes per 32 values).
  await byId(page, 'calc-preset').selectOption('Llama-3-8B');
  await byId(page, 'calc-context').fill('8192');
  await byId(page, 'calc-context').dispatchEvent('change');
  await byId(page, 'calc-batch').fill('1');
  await byId(page, 'calc-batch').dispatchEvent('change');
  await byId(page, 'calc-dtype').selectOption('fp16');
  const g8 = page.locator('[data-testid="calc-bytes"][data-groups="8"]');
  assert.equal(await g8.getAttribute('data-bytes'), '1073741824');
  // 16.06 GB of fp16 weights and a 1 GiB cache fit 16 GiB (17.18 GB); MHA's 4 GiB do not.
  const fit = (g, gib) => page.locator(`[data-testid="calc-bytes"][data-groups="${g}"] [data-testid="calc-fit"][data-gib="${gib}"]`).getAttribute('data-fits');
  assert.deepEqual([await fit(8, 8), await fit(8, 16), await fit(8, 24), await fit(8, 80)], ['false', 'true', 'true', 'true']);
  assert.deepEqual([await fit(32, 16), await fit(32, 24)], ['false', 'true']);
  await byId(page, 'calc-dtype').selectOption('q4');
  assert.equal(await g8.getAttribute('data-bytes'), String(2 * 32 * 8 * 8192 * 128 / 32 * 18));
  // The loaded model: every G it runs, 1 to 9.
  await byId(page, 'calc-preset').selectOption('loaded');
  await byId(page, 'calc-dtype').selectOption('fp32');
  assert.deepEqual((await bars()).map(([g]) => g), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(await page.locator('[data-testid="calc-bytes"][data-groups="3"]').getAttribute('data-bytes'), String(kvBytes(3, 8192)));
  await screenshot(page, 'calculator.png', 'calculator');
  await page.close();
});

// The second built-in model, Gemma 3 270M (gemma3: 4 query heads on 1 KV head, 18 layers,
// head_dim 256, a 512-token sliding window on 15 layers, no chat template), on the CPU engine.
const GEMMA_PATH = '/models/gemma-3-270m-q4_k_m.gguf';
const gemmaHits = () => srv.hits.get(GEMMA_PATH) ?? 0;
const gemmaKvBytes = (g, tokens) => 2 * 18 * g * 256 * tokens * 4;

test('model=gemma-3-270m loads Gemma, generates the CLI\'s ids, and every view takes its shape', async () => {
  const c = { model: 'gemma-3-270m', prompt: 'The capital of France is', chat: false, groups: 1, maxTokens: 8, ignoreEos: false, backend: 'cpu-q8' };
  const expected = cliIds(c);
  const page = await openPage(browser.context, appUrl({
    model: 'gemma-3-270m', backend: 'cpu', prompt: c.prompt, chat: 0, temperature: 0, max_tokens: 8, autorun: 1, quality_tokens: 32,
  }), errors);
  await waitStatus(page, /^done/, 600_000);
  assert.deepEqual(await ids(page), expected);
  assert.equal(gemmaHits(), 1);
  assert.match(page.url(), /[?&]model=gemma-3-270m(&|$)/);
  // The menu, and the Gemma terms where it is chosen.
  assert.equal(await byId(page, 'model-select').inputValue(), 'gemma-3-270m');
  assert.match(await text(page, 'model-licence'), /^Gemma 3 270M \(GGUF Q4_K_M\): Gemma Terms of Use — its terms apply/);
  assert.equal(await byId(page, 'model-licence').locator('a').getAttribute('href'), 'https://ai.google.dev/gemma/terms');
  assert.match(await text(page, 'model-facts'),
    /^Gemma 3 270M \(GGUF Q4_K_M\) · gemma3 · 18 layers · 4 query heads · 1 KV head \(native\) · head_dim 256 · sliding window 512 on 15 of 18 layers · vocab 262,144 · /);
  assert.equal(await byId(page, 'chat-toggle').isDisabled(), true, 'no chat template');
  // The slider: a stop for each G from 1 to 4, at the native G = 1.
  const slider = byId(page, 'groups-slider');
  assert.equal(await slider.getAttribute('max'), '4');
  assert.equal(await slider.inputValue(), '1');
  assert.equal(await page.locator('.ticks .tick').count(), 4, 'a stop for each G from 1 to 4');
  // The diagram, the meter (18 layers of head_dim 256, the sliding window said), the table.
  assert.equal(await page.locator('[data-testid="grouping-diagram"] .edge').count(), 4);
  assert.equal(await page.locator('[data-testid="grouping-diagram"] .kv-head').count(), 1);
  assert.match(await page.locator('.diagram figcaption').textContent(), /^4 query heads share 1 KV head \(MQA\)/);
  let tokens = Number(await text(page, 'kv-tokens'));
  assert.equal(Number(await text(page, 'kv-cache-bytes')), gemmaKvBytes(1, tokens));
  assert.match(await text(page, 'kv-window'), /^15 of this model's 18 layers attend only to the last 512 positions .*keeps a ring of 640 positions for each windowed layer/);
  assert.deepEqual(await page.locator('table.tradeoffs tbody tr').evaluateAll((rs) => rs.map((r) => Number(r.dataset.groups))), [1, 2, 3, 4]);
  assert.match(await text(page, 'speed-g1'), /^\d+\.\d tok\/s$/);
  assert.equal(await page.locator('[data-testid$="-calibrated"]').count(), 0, 'one quality column: no merge');
  assert.ok(await text(page, 'tradeoffs-single'));
  // No G below the native one: no choice of method, and the page says why.
  assert.equal(await byId(page, 'regroup-method').count(), 0);
  assert.match(await text(page, 'regroup-none'), /one KV head for its 4 query heads/);
  // Side by side offers G = 1 to 4; the attention view its 18 layers, the local ones marked.
  assert.deepEqual(await page.locator('[data-testid="compare-pick"]').evaluateAll((es) => es.map((e) => Number(e.dataset.groups))), [1, 2, 3, 4]);
  const layers = await page.locator('[data-testid="attention-layer"] option').allTextContents();
  assert.equal(layers.length, 18);
  assert.deepEqual([layers[0], layers[5], layers[17]], ['layer 0 (window 512)', 'layer 5', 'layer 17']);
  // The calculator's loaded-model preset: Gemma's shape, G = 1 to 4.
  await byId(page, 'calc-preset').selectOption('loaded');
  await byId(page, 'calc-dtype').selectOption('fp32');
  assert.equal(await byId(page, 'calc-heads').inputValue(), '4');
  assert.equal(await byId(page, 'calc-kv-heads').inputValue(), '1');
  assert.deepEqual(await page.locator('[data-testid="calc-bytes"]').evaluateAll((els) => els.map((e) => Number(e.dataset.groups))), [1, 2, 3, 4]);
  // 8,192 tokens: the 3 global layers hold them all, the 15 windowed ones a ring of 640.
  const windowed = 2 * 1 * 256 * 4 * (3 * 8192 + 15 * 640);
  assert.equal(await page.locator('[data-testid="calc-bytes"][data-groups="1"]').getAttribute('data-bytes'), String(windowed));
  assert.match(await text(page, 'calc-window'), /^15 of these 18 layers have a sliding window: each keeps at most 640 positions/);
  await screenshot(page, 'gemma.png');
  // G = 4 splits the one KV head into copies: the same ids, four times the cache.
  await slider.focus();
  await page.keyboard.press('End');
  await page.waitForFunction(() => document.querySelector('[data-testid="grouping-diagram"]')?.getAttribute('data-groups') === '4');
  await waitStatus(page, /^(ready|done.*)$/);
  assert.equal(await page.locator('[data-testid="grouping-diagram"] .kv-head').count(), 4);
  assert.match(page.url(), /groups=4(&|$)/);
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/, 600_000);
  assert.deepEqual(await ids(page), expected);
  tokens = Number(await text(page, 'kv-tokens'));
  assert.equal(Number(await text(page, 'kv-cache-bytes')), gemmaKvBytes(4, tokens));
  // Quality: the trained model scored once, every G the same (exact), one point per G.
  await byId(page, 'measure-quality').click();
  await waitStatus(page, /^done \(quality measured\)$/, 600_000);
  const ppl = Number(await byId(page, 'quality-g1-mean').getAttribute('data-ppl'));
  assert.ok(ppl > 1, `perplexity ${ppl}`);
  assert.match(await text(page, 'quality-g4-mean'), /\(exact\)$/);
  const points = await page.locator('[data-testid="plot-bytes"] [data-testid="plot-point"]').evaluateAll((els) => els.map((e) => [Number(e.dataset.groups), Number(e.dataset.ppl)]));
  assert.deepEqual(points, [1, 2, 3, 4].map((g) => [g, ppl]));
  assert.equal(await byId(page, 'groups-slider').inputValue(), '4', 'back at the person\'s G');
  await page.close();
});

test('the model menu switches between the built-in models; an unknown model= is reported', async () => {
  const page = await openPage(browser.context, appUrl({ model: 'llama', backend: 'cpu', prompt: 'Hello', chat: 0, groups: 7 }), errors);
  assert.match(await text(page, 'url-notice'), /model="llama" is not a built-in model \(smollm2-135m, gemma-3-270m\)/);
  await waitStatus(page, /^ready$/);
  assert.equal(await byId(page, 'model-select').inputValue(), 'smollm2-135m');
  assert.match(await text(page, 'model-licence'), /Apache-2\.0/);
  assert.equal(await page.locator('.ticks .tick').count(), 9);
  await byId(page, 'attention-layer').selectOption('29');
  // Gemma, from Cache Storage after the test above: at its own G, on its last layer.
  const hits = gemmaHits();
  await byId(page, 'model-select').selectOption('gemma-3-270m');
  await page.waitForFunction(() => /^Gemma 3 270M/.test(document.querySelector('[data-testid="model-facts"]')?.textContent ?? ''), null, { timeout: 300_000 });
  await waitStatus(page, /^ready$/);
  assert.equal(gemmaHits(), hits, 'Gemma was read from Cache Storage');
  assert.match(page.url(), /[?&]model=gemma-3-270m(&|$)/);
  assert.doesNotMatch(page.url(), /groups=/, 'a G of one model is not carried to another');
  assert.equal(await byId(page, 'groups-slider').inputValue(), '1');
  assert.equal(await page.locator('.ticks .tick').count(), 4);
  assert.equal(await byId(page, 'attention-layer').inputValue(), '17');
  assert.match(await text(page, 'model-licence'), /Gemma Terms of Use/);
  await screenshot(page, 'model-menu.png', 'model-select');
  // And back to the default model.
  await byId(page, 'model-select').selectOption('smollm2-135m');
  await page.waitForFunction(() => /^SmolLM2/.test(document.querySelector('[data-testid="model-facts"]')?.textContent ?? ''), null, { timeout: 300_000 });
  await waitStatus(page, /^ready$/);
  assert.doesNotMatch(page.url(), /model=/);
  assert.equal(await byId(page, 'groups-slider').inputValue(), '3');
  assert.equal(await page.locator('.ticks .tick').count(), 9);
  assert.equal(await byId(page, 'regroup-method').count(), 1);
  await page.close();
});

// The files people have. Variants of the default model (scripts/fixtures/variants.py,
// as tests/variants.rs builds them) picked in the page's file input, on the CPU engine, give
// the native cpu-q8 engine's ids: K-quants (Q2_K to Q6_K), qwen2 (biases, rotate-half RoPE),
// Llama 3 (rope_freqs).
const VARIANTS = path.join(ROOT, 'target/variants');
const VARIANT_FILES = { 'smollm2-q4_k_m.gguf': 'llama', 'smollm2-qwen2.gguf': 'qwen2', 'smollm2-llama3.gguf': 'llama' };

test('variant files picked in the page (K-quants, qwen2, Llama 3) give the CLI\'s ids on the CPU engine', async () => {
  // The native tests build these first; the browser tests must not depend on that order.
  if (!Object.keys(VARIANT_FILES).every((f) => fs.existsSync(path.join(VARIANTS, f)))) {
    execFileSync('python3', ['scripts/fixtures/variants.py'], { cwd: ROOT, stdio: 'inherit' });
  }
  // A prompt on which each variant continues differently from the default model and from the
  // others (on 'The capital of France is' Llama 3's factors change nothing in 6 tokens).
  const c = { prompt: 'In 1492, Columbus sailed across the ocean. He', chat: false, groups: 3, maxTokens: 6, ignoreEos: true, backend: 'cpu-q8' };
  const page = await openPage(browser.context, appUrl({
    backend: 'cpu', prompt: c.prompt, chat: 0, temperature: 0, max_tokens: 6, ignore_eos: 1,
  }), errors);
  await waitStatus(page, /^ready$/);
  const seen = {};
  for (const [name, arch] of Object.entries(VARIANT_FILES)) {
    const file = path.join(VARIANTS, name);
    const expected = cliIds({ ...c, model: file });
    await byId(page, 'model-file').setInputFiles(file);
    // The facts name the file and its architecture once it is loaded.
    await page.waitForFunction((want) => (document.querySelector('[data-testid="model-facts"]')?.textContent ?? '').includes(want),
      `(${name}) · ${arch} · `, { timeout: 120_000 });
    await waitStatus(page, /^ready$/);
    assert.equal(await byId(page, 'backend').getAttribute('data-backend'), 'cpu');
    await byId(page, 'generate-button').click();
    await waitStatus(page, /^done/);
    seen[name] = await ids(page);
    assert.equal(seen[name].length, 6, name);
    assert.deepEqual(seen[name], expected, name);
  }
  // Each variant's ids differ from the default model's and the others': a variation the page
  // dropped would show.
  const all = [cliIds(c), ...Object.values(seen)].map(String);
  assert.equal(new Set(all).size, all.length, all.join(' | '));
  await page.close();
});

// Gemma 3 on the GPU engine in the page (head norms, post norms, GeGLU, sliding windows), read
// from Cache Storage after the tests above; SwiftShader runs its 270 MB of weights slowly.
test('model=gemma-3-270m on the GPU engine gives the CLI\'s ids', async (t) => {
  const c = { model: 'gemma-3-270m', prompt: 'The capital of France is', chat: false, groups: 1, maxTokens: 3, ignoreEos: false, backend: 'cpu-q8' };
  const expected = cliIds(c);
  assert.deepEqual(expected, [506, 5279, 529], 'every engine gives these first tokens');
  const t0 = Date.now();
  const page = await openPage(browser.context, appUrl({
    model: 'gemma-3-270m', backend: 'gpu', prompt: c.prompt, chat: 0, temperature: 0, max_tokens: 3, autorun: 1,
  }), errors);
  await waitStatus(page, /^done/, 900_000);
  t.diagnostic(`Gemma 3 270M on the GPU engine (SwiftShader): load + 3 tokens in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  assert.deepEqual(await ids(page), expected);
  assert.equal(await byId(page, 'backend').getAttribute('data-backend'), 'gpu');
  assert.match(await text(page, 'backend-why'), /^GPU: /);
  assert.match(await text(page, 'model-facts'), /^Gemma 3 270M \(GGUF Q4_K_M\) · gemma3 · /);
  await page.close();
});

test('no page errors or panics', () => {
  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
});
