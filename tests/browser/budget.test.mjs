// Browser tests of the KV budget mode (`budget=B`, the mode beside the uniform G slider): the
// page scores each layer's sensitivity through its engine, spends round(B · layers) KV heads,
// shows each layer's G in the diagram and the per-layer bytes in the meter, and generates;
// an invalid budget is reported. Mean-pooled, on the CPU engine, to stay quick. Same harness as
// app.test.mjs: trunk's dist/ served on 127.0.0.1, Debian's chromium with WebGPU on
// SwiftShader, driven by playwright-core; run with `node --test`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openPage, startApp, stopApp, byId, text, waitStatus, screenshot } from './harness.mjs';

// SmolLM2-135M: 30 layers, 9 query heads, 3 KV heads, head_dim 64; the page's f16 cache keeps
// a row of 64 values in 128 bytes.
const LAYERS = 30;
const ROW_F16 = 64 * 2;

let srv;
let browser; // one profile for all tests: the model is cached after the first load
const errors = [];

before(async () => ({ srv, browser } = await startApp()));
after(() => stopApp({ srv, browser }));

const appUrl = (params = {}) => `${srv.url}?${new URLSearchParams({ backend: 'gpu', ...params })}`;
const layerGroups = (page) => page.locator('[data-testid="layer-g"]')
  .evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-g'))));

test('budget mode: the diagram shows each layer\'s G, round(B · layers) heads in all, and the page generates', async () => {
  // On the CPU engine (cpu-q8 in the worker): the 61 scorings of 64 tokens each take about a
  // minute there, and far longer on SwiftShader, where each regrouping rebuilds the GPU program.
  const page = await openPage(browser.context, appUrl({
    backend: 'cpu', regroup: 'mean', budget: 2, prompt: 'The capital of France is', chat: 0, max_tokens: 8,
    ignore_eos: 1, temperature: 0, autorun: 1,
  }), errors);
  // The sensitivities are scored first (61 scorings), the status counting the layers.
  await page.waitForFunction(() => /scoring each layer's sensitivity on \d+ tokens/
    .test(document.querySelector('[data-testid="status"]')?.textContent ?? ''), null, { timeout: 300_000, polling: 100 });
  await waitStatus(page, /^done/, 900_000);
  assert.equal(await byId(page, 'kv-mode').inputValue(), 'budget');
  const gs = await layerGroups(page);
  assert.equal(gs.length, LAYERS, 'one G per layer');
  assert.equal(gs.reduce((a, b) => a + b, 0), Math.round(2 * LAYERS), 'round(B · layers) KV heads');
  assert.ok(new Set(gs).size > 1, `the layers' G differ: ${gs}`);
  assert.ok(gs.every((g) => g >= 1 && g <= 9));
  assert.equal(await byId(page, 'layer-groups').getAttribute('data-total'), '60');
  assert.match(await text(page, 'budget-label'), /B = 2\.00 KV heads per layer on average · 60 KV heads over 30 layers/);
  // It generated with that cache: 8 new tokens, and the meter counts each layer's own G.
  const ids = (await text(page, 'output-ids')).split(',').filter(Boolean);
  assert.ok(ids.length >= 8, `generated ${ids.length} ids`);
  assert.ok((await text(page, 'output-text')).trim().length > 0);
  const tokens = Number(await text(page, 'kv-tokens'));
  assert.equal(Number(await text(page, 'kv-cache-bytes')), 2 * ROW_F16 * tokens * 60, 'the per-layer cache bytes');
  assert.match(await text(page, 'kv-formula'), /Σ over layers of G_l = 60/);
  assert.match(page.url(), /budget=2/);
  await screenshot(page, 'budget-layers.png');
  // Back to the uniform G: every layer at the model's own G again.
  await byId(page, 'kv-mode').selectOption('uniform');
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll('[data-testid="groups-slider"]')];
    return cells.length === 1;
  }, null, { timeout: 60_000 });
  await waitStatus(page, /^(ready|done)/, 300_000);
  assert.doesNotMatch(page.url(), /budget=/);
  assert.deepEqual(errors, []);
  await page.close();
});

test('an invalid budget is reported, and the uniform G is used', async () => {
  const page = await openPage(browser.context, appUrl({ regroup: 'mean', budget: 'lots' }), errors);
  assert.match(await text(page, 'url-notice'), /budget="lots" is not a KV budget/);
  await waitStatus(page, /^ready$/);
  await page.close();
  const high = await openPage(browser.context, appUrl({ regroup: 'mean', budget: 20 }), errors);
  const status = await waitStatus(high, /^error:/);
  assert.match(status, /budget=20: a KV budget of 20 heads per layer is outside 1 to 9 for this model: the uniform G is used/);
  assert.match(await text(high, 'budget-label'), /outside 1 to 9/);
  await high.close();
  assert.deepEqual(errors, []);
});

test('"Measure quality" in budget mode sets the budget\'s perplexity beside the uniform G of the same bytes', async () => {
  // The sensitivities are in Cache Storage from the first test (same profile); the calibrated
  // G = 1 and 2 the measurement also scores are fitted on 64 tokens to stay short.
  const page = await openPage(browser.context, appUrl({
    backend: 'cpu', regroup: 'mean', budget: 2, quality_tokens: 24, calib_tokens: 64,
  }), errors);
  await waitStatus(page, /^ready$/, 300_000);
  await byId(page, 'measure-quality').click();
  await waitStatus(page, /^done \(quality measured\)$/, 600_000);
  const line = await text(page, 'budget-quality');
  assert.match(line, /^KV budget B = 2\.00 \(mean, f16 cache\): perplexity [\d.≈,]+ · uniform G = 2, the same cache bytes: [\d.≈,]+$/);
  const ppl = Number(await byId(page, 'budget-quality').getAttribute('data-ppl'));
  assert.ok(ppl > 1 && Number.isFinite(ppl), `the budget's perplexity: ${ppl}`);
  // The engine is back at the budget: each layer's G as before.
  const gs = await layerGroups(page);
  assert.equal(gs.reduce((a, b) => a + b, 0), 60);
  assert.deepEqual(errors, []);
  await page.close();
});
