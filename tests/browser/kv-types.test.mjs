// Browser tests of the KV cache's element type on the page (`kv=f32|f16|q8_0`, the control
// beside the G slider): the page generates with f16 and q8_0 caches on the GPU engine
// (SwiftShader) and the CPU engine, the meter shows the type's bytes, the control changes the
// type mid-generation and in the URL, an invalid kv= is reported, quality is measured per
// type, and the side-by-side compares the types at one G. Same harness as app.test.mjs:
// trunk's dist/ served on 127.0.0.1, Debian's chromium with WebGPU on SwiftShader, driven by
// playwright-core; run with `node --test`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, openPage, startApp, stopApp, byId, text, waitStatus, screenshot } from './harness.mjs';

const CLI = path.join(ROOT, 'target/release/gqa-lab');
// SmolLM2-135M: 30 layers, head_dim 64. A row of 64 values: 256 bytes in f32, 128 in f16,
// two q8_0 blocks of 34 bytes (32 values each) = 68.
const ROW = { f32: 64 * 4, f16: 64 * 2, q8_0: 2 * 34 };
const kvBytes = (kv, g, tokens) => 2 * 30 * g * ROW[kv] * tokens;
const PROMPT = 'The capital of France is';

let srv;
let browser; // one profile for all tests: the model is cached after the first load
const errors = [];

before(async () => ({ srv, browser } = await startApp()));
after(() => stopApp({ srv, browser }));

const appUrl = (params = {}) => `${srv.url}?${new URLSearchParams({ backend: 'gpu', ...params })}`;
const ids = async (page) => (await text(page, 'output-ids')).split(',').filter(Boolean).map(Number);

/** `gqa-lab generate --json` with the cache kept as `kv`: the native engine's ids. */
function cliIds({ backend, kv, maxTokens }) {
  const args = ['generate', '--prompt', PROMPT, '--max-tokens', String(maxTokens), '--ignore-eos',
    '--backend', backend, '--kv-type', kv, '--json'];
  return JSON.parse(execFileSync(CLI, args, { encoding: 'utf8', cwd: ROOT })).ids;
}

/** `gqa-lab perplexity --json` of the first `n` tokens of the page's passage (the built-in
 * evaluation text) with the cache kept as `kv`, at the native G. */
function cliPerplexity(n, backend, kv) {
  const passage = fs.readFileSync(path.join(ROOT, 'static/calibration/evaluation.txt'), 'utf8');
  const all = JSON.parse(execFileSync(CLI, ['tokenize', '--text', passage, '--json'], { encoding: 'utf8', cwd: ROOT })).ids;
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gqa-lab-ids-')), 'ids.txt');
  fs.writeFileSync(file, all.slice(0, n).join(','));
  const args = ['perplexity', '--ids-file', file, '--backend', backend, '--kv-type', kv, '--json'];
  const out = JSON.parse(execFileSync(CLI, args, { encoding: 'utf8', cwd: ROOT }));
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  return out.perplexity;
}

/** The meter, the formula and the table hold the bytes of `kv` at G = `g`. */
async function assertBytes(page, kv, g) {
  const tokens = Number(await text(page, 'kv-tokens'));
  assert.equal(Number(await text(page, 'kv-cache-bytes')), kvBytes(kv, g, tokens), `${kv}: the meter's bytes`);
  const kind = byId(page, 'kv-type-bytes');
  assert.equal(await kind.getAttribute('data-kv'), kv);
  assert.equal(await kind.getAttribute('data-bytes-per-value'), { f32: '4', f16: '2', q8_0: '1.0625' }[kv]);
  const formula = await text(page, 'kv-formula');
  assert.match(formula, kv === 'q8_0' ? / 34\/32 bytes$/ : new RegExp(` ${ROW[kv] / 64} bytes$`));
  if (kv === 'q8_0') assert.match(await text(page, 'kv-type-bytes'), /34 bytes per 32 values/);
  assert.equal(Number(await byId(page, `kv-per-token-g${g}`).getAttribute('data-bytes')), kvBytes(kv, g, 1));
  for (const t of Object.keys(ROW)) {
    assert.equal(Number(await byId(page, `type-bytes-${t}`).getAttribute('data-bytes')), kvBytes(t, g, 1));
  }
  assert.equal(await byId(page, 'kv-type').inputValue(), kv);
  return tokens;
}

for (const [backend, kv, cli] of [['gpu', 'f16', 'cpu'], ['gpu', 'q8_0', 'cpu'], ['cpu', 'q8_0', 'cpu-q8']]) {
  test(`kv=${kv} on the ${backend} engine generates the CLI's ids and the meter shows ${kv}'s bytes`, async (t) => {
    const maxTokens = 8;
    const expected = cliIds({ backend: cli, kv, maxTokens });
    const page = await openPage(browser.context, appUrl({
      backend, kv, prompt: PROMPT, chat: 0, temperature: 0, max_tokens: maxTokens, ignore_eos: 1, autorun: 1,
    }), errors);
    await waitStatus(page, /^done/);
    const got = await ids(page);
    t.diagnostic(`page (${backend}, ${kv}): ${got}; CLI (${cli}, ${kv}): ${expected}`);
    assert.deepEqual(got, expected);
    const tokens = await assertBytes(page, kv, 3);
    assert.equal(tokens, 5 + maxTokens - 1);
    assert.match(page.url(), new RegExp(`kv=${kv}(&|$)`));
    await page.close();
  });
}

test('the type control re-fills the cache mid-generation and the URL follows; the default is f16', async () => {
  const maxTokens = 12;
  const page = await openPage(browser.context, appUrl({
    prompt: PROMPT, chat: 0, temperature: 0, max_tokens: maxTokens, ignore_eos: 1, autorun: 1,
  }), errors);
  await page.waitForFunction(() => (document.querySelector('[data-testid="output-ids"]')?.textContent ?? '').split(',').length >= 3,
    null, { timeout: 300_000 });
  assert.equal(await byId(page, 'kv-type').inputValue(), 'f16', 'f16 by default');
  assert.match(page.url(), /kv=f16(&|$)/);
  const before = await text(page, 'output-text');
  await byId(page, 'kv-type').selectOption('q8_0');
  assert.match(page.url(), /kv=q8_0(&|$)/);
  await waitStatus(page, /^done/);
  const after = await text(page, 'output-text');
  assert.ok(after.startsWith(before), `text was lost: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
  assert.equal((await ids(page)).length, maxTokens);
  const tokens = await assertBytes(page, 'q8_0', 3);
  assert.equal(tokens, 5 + maxTokens - 1, 'the whole text is in the re-filled cache');
  // Idle: another type and another G; the meter follows both knobs.
  await byId(page, 'kv-type').selectOption('f32');
  await waitStatus(page, /^ready$/);
  const slider = byId(page, 'groups-slider');
  await slider.focus();
  await page.keyboard.press('End'); // G = 9
  await waitStatus(page, /^ready$/);
  await assertBytes(page, 'f32', 9);
  assert.match(page.url(), /kv=f32(&|$)/);
  await page.close();
});

test('an invalid kv= is reported and f16 is used', async () => {
  const page = await openPage(browser.context, appUrl({ kv: 'q4', prompt: PROMPT, chat: 0 }), errors);
  assert.match(await text(page, 'url-notice'), /kv="q4" is not a KV cache type \(f32, f16 or q8_0; f16 is used\)/);
  await waitStatus(page, /^ready$/);
  await assertBytes(page, 'f16', 3);
  await page.close();
});

test('quality per cache type: every type measured at every G and method, in the table and the plot; side by side per type', async (t) => {
  const page = await openPage(browser.context, appUrl({
    backend: 'cpu', prompt: PROMPT, chat: 0, calib_tokens: 64, quality_tokens: 24, kv: 'f16',
  }), errors);
  await waitStatus(page, /^ready$/);
  await byId(page, 'measure-quality-types').click();
  await waitStatus(page, /^done \(quality measured\)$/, 900_000);
  const runs = [[3, 'mean'], [2, 'mean'], [2, 'calibrated'], [1, 'mean'], [1, 'calibrated']];
  const ppl = {};
  for (const [g, m] of runs) {
    for (const kv of ['f32', 'f16', 'q8_0']) {
      ppl[`${g}-${m}-${kv}`] = Number(await byId(page, `quality-g${g}-${m}-${kv}`).getAttribute('data-ppl'));
      assert.ok(ppl[`${g}-${m}-${kv}`] > 1, `G = ${g} ${m} ${kv} measured`);
    }
    t.diagnostic(`G = ${g} ${m}: f32 ${ppl[`${g}-${m}-f32`]}, f16 ${ppl[`${g}-${m}-f16`]}, q8_0 ${ppl[`${g}-${m}-q8_0`]}`);
  }
  // The native model's figures are the engine's own: `gqa-lab perplexity --backend cpu-q8` on the
  // same 24 tokens with each cache type. (On 24 tokens cpu-q8's int8 activations move its
  // perplexity by a few percent under any change of input, the cache's rounding included; the
  // f32 oracle moves by 0.1% at most.)
  for (const kv of ['f32', 'f16', 'q8_0']) {
    const cli = cliPerplexity(24, 'cpu-q8', kv);
    t.diagnostic(`G = 3, ${kv}: page ${ppl[`3-mean-${kv}`]}, CLI (cpu-q8) ${cli}`);
    assert.ok(Math.abs(ppl[`3-mean-${kv}`] / cli - 1) < 1e-4, `G = 3, ${kv}: the CLI's perplexity`);
    assert.ok(Math.abs(ppl[`3-mean-${kv}`] / ppl['3-mean-f32'] - 1) < 0.05, `G = 3, ${kv}: near f32's`);
  }
  // The main table shows the type in use (f16).
  assert.equal(Number(await byId(page, 'quality-g1-calibrated').getAttribute('data-ppl')), ppl['1-calibrated-f16']);
  // The plot: one point per (G, method, type), at that type's bytes per token.
  const points = await page.locator('[data-testid="plot-bytes"] [data-testid="plot-point"]').evaluateAll((els) => els.map((e) => ({
    g: Number(e.dataset.groups), kv: e.dataset.kv, bytes: Number(e.dataset.bytes),
  })));
  // G = 1, 2 with both methods and G = 3..9 (the native model) with mean, in each type.
  assert.equal(points.length, 3 * (4 + 7));
  for (const p of points) assert.equal(p.bytes, kvBytes(p.kv, p.g, 1));
  await screenshot(page, 'quality-types.png', 'quality-types');
  // Side by side: the three types at the G in use, f32 the reference.
  await byId(page, 'compare-across').selectOption('types');
  await byId(page, 'compare-tokens').fill('4');
  await byId(page, 'compare-tokens').blur();
  await byId(page, 'compare-run').click();
  await waitStatus(page, /^done \(compared\)$/, 300_000);
  const columns = await page.locator('[data-testid="compare-column"]').evaluateAll((els) => els.map((e) => ({
    g: Number(e.dataset.groups), kv: e.dataset.kv, ids: e.dataset.ids.split(',').filter(Boolean).map(Number),
  })));
  t.diagnostic(`side by side per type: ${JSON.stringify(columns)}`);
  assert.deepEqual(columns.map((c) => [c.g, c.kv]), [[3, 'f32'], [3, 'f16'], [3, 'q8_0']]);
  for (const c of columns) assert.equal(c.ids.length, 4);
  // The engine is back at the settings' type: the meter's bytes are f16's.
  await assertBytes(page, 'f16', 3);
  await page.close();
});

test('no page errors or panics', () => {
  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
});
