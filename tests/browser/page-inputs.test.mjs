// Browser tests of what the page does with its inputs: the quality measurement says the count
// it scores and stops on Stop, the number fields show the value in use after an invalid entry,
// the attention view opened after a run shows its last token, and the page fits a 1280 px
// window. Same harness as app.test.mjs: trunk's dist/ served on 127.0.0.1, Debian's
// chromium with WebGPU on SwiftShader, driven by playwright-core; run with `node --test`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openPage, startApp, stopApp, byId, text, waitStatus, screenshot } from './harness.mjs';

let srv;
let browser; // one profile for all tests: the model is cached after the first load
const errors = [];

before(async () => ({ srv, browser } = await startApp()));
after(() => stopApp({ srv, browser }));

/** The app's URL for these settings, on the GPU engine unless `backend` says otherwise. */
const appUrl = (params = {}) => `${srv.url}?${new URLSearchParams({ backend: 'gpu', ...params })}`;
const ids = async (page) => (await text(page, 'output-ids')).split(',').filter(Boolean).map(Number);

test('"What each G buys" says how many tokens of the passage it scores, not the count asked for', async () => {
  const page = await openPage(browser.context, appUrl({ quality_tokens: 100000 }), errors);
  await waitStatus(page, /^ready$/);
  // SmolLM2's tokenizer makes 553 tokens of the passage: all of them are scored.
  assert.equal(await text(page, 'quality-tokens'), 'all 553 tokens');
  await page.close();
  const short = await openPage(browser.context, appUrl({ quality_tokens: 24 }), errors);
  await waitStatus(short, /^ready$/);
  assert.equal(await text(short, 'quality-tokens'), 'the first 24 tokens');
  await short.close();
});

test('Stop ends a quality measurement between two runs, keeping the rows measured so far', async () => {
  const page = await openPage(browser.context, appUrl({ quality_tokens: 24 }), errors);
  await waitStatus(page, /^ready$/);
  const stop = byId(page, 'stop-button');
  assert.ok(!(await stop.isEnabled()), 'nothing to stop yet');
  await byId(page, 'measure-quality').click();
  // Once the native G is scored (runs: G = 3, then G = 2 and 1 with each method), Stop: the
  // click is made in the page as soon as the status says so.
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid="status"]')?.textContent ?? '';
    if (!/^measuring quality: [1-9]/.test(s)) return false;
    document.querySelector('[data-testid="stop-button"]').click();
    return true;
  }, null, { timeout: 300_000, polling: 50 });
  const status = await waitStatus(page, /^done/, 300_000);
  assert.match(status, /^done \(quality measurement stopped: [12] of 5 runs measured\)$/);
  assert.ok(Number(await byId(page, 'quality-g3-mean').getAttribute('data-ppl')) > 1, 'the native G stays');
  for (const g of [1, 2]) {
    assert.equal(await text(page, `quality-g${g}-calibrated`), '–', `G = ${g} calibrated was never fitted`);
  }
  assert.ok(!(await stop.isEnabled()));
  assert.ok(await byId(page, 'generate-button').isEnabled());
  assert.equal(await byId(page, 'groups-slider').inputValue(), '3', 'back at the settings\' G');
  await page.close();
});

/** Types `value` into the number field `name` and leaves it (a change event, as a person's). */
async function enter(page, name, value) {
  const field = byId(page, name);
  await field.fill(value);
  await field.blur();
}

test('a number field given an invalid value shows the value the run uses, and says so', async () => {
  const page = await openPage(browser.context, appUrl({
    prompt: 'Once upon a time', chat: 0, temperature: 0, max_tokens: 0, ignore_eos: 1,
  }), errors);
  // max_tokens=0 in the URL: reported, the default used.
  assert.match(await text(page, 'url-notice'), /max_tokens=0 asks for no token \(at least 1; 64 is used\)/);
  assert.equal(await byId(page, 'max_tokens').inputValue(), '64');
  await waitStatus(page, /^ready$/);
  const cases = [
    // [field, typed, shown after, hint]
    ['top_k', '-3', '40', /^-3 is not valid here: 40 is used$/],
    ['top_k', '', '40', /^not a number: 40 is used$/],
    ['seed', '99999999999', '0', /^99999999999 is not valid here: 0 is used$/],
    ['seed', '2.5', '0', /^2\.5 is not valid here: 0 is used$/],
    ['max_tokens', '3', '3', /^new tokens$/],
    ['max_tokens', '-1', '3', /^-1 is not valid here: 3 is used$/],
    ['max_tokens', '0', '1', /^0 is not valid here: 1 is used$/],
    ['max_tokens', '2', '2', /^new tokens$/],
    ['max_tokens', '1.5', '2', /^1\.5 is not valid here: 2 is used$/],
  ];
  for (const [name, typed, shown, hint] of cases) {
    await enter(page, name, typed);
    assert.equal(await byId(page, name).inputValue(), shown, `${name} after ${JSON.stringify(typed)}`);
    assert.match(await text(page, `${name}-hint`), hint, `${name} after ${JSON.stringify(typed)}`);
    assert.equal(await byId(page, name).getAttribute('aria-invalid'), shown === typed ? null : 'true');
  }
  // A valid entry clears the message; the URL has the values in use.
  await enter(page, 'top_k', '7');
  assert.equal(await text(page, 'top_k-hint'), '0 = all tokens');
  assert.match(page.url(), /top_k=7&/);
  assert.match(page.url(), /seed=0&/);
  assert.match(page.url(), /max_tokens=2(&|$)/);
  // The run uses what the fields show.
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  assert.equal((await ids(page)).length, 2);
  await page.close();
});

/** Every attention-head row: its head, KV head and weights. */
const attentionRows = (page) => page.locator('[data-testid="attention-head"]').evaluateAll((els) => els.map((e) => ({
  head: Number(e.dataset.head), kv: Number(e.dataset.kvHead), weights: e.dataset.weights.split(',').map(Number),
})));

test('the attention view opened after a run shows the last token\'s weights, the run\'s own', async () => {
  const page = await openPage(browser.context, appUrl({
    prompt: 'The capital of France is', chat: 0, temperature: 0, max_tokens: 3, ignore_eos: 1,
  }), errors);
  await waitStatus(page, /^ready$/);
  const view = byId(page, 'attention-view');
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  const run = await ids(page);
  const positions = Number(await text(page, 'kv-tokens'));
  assert.equal(await view.getAttribute('data-reads'), '0');
  // Opened: one probe of the cached state, nothing generated.
  await byId(page, 'attention-toggle').click();
  await page.locator('[data-testid="attention-head"]').first().waitFor({ timeout: 120_000 });
  await waitStatus(page, /^done/);
  assert.equal(await view.getAttribute('data-reads'), '1');
  const after = await attentionRows(page);
  assert.deepEqual(after.map((r) => r.head), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  for (const r of after) {
    assert.equal(r.weights.length, positions, `head ${r.head}: one weight per position`);
    assert.ok(Math.abs(r.weights.reduce((a, b) => a + b, 0) - 1) < 1e-4);
  }
  assert.deepEqual(await ids(page), run, 'the run is unchanged');
  assert.equal(Number(await text(page, 'kv-tokens')), positions, 'the cache holds the same positions');
  // Another layer: its weights, again from the cache.
  await byId(page, 'attention-layer').selectOption('7');
  await page.waitForFunction(() => document.querySelector('[data-testid="attention-view"]').dataset.reads === '2',
    null, { timeout: 120_000 });
  await waitStatus(page, /^done/);
  const layer7 = await attentionRows(page);
  assert.equal(layer7[0].weights.length, positions);
  assert.notDeepEqual(layer7[0].weights, after[0].weights);
  // The same run with the view open reads the same weights at its last token.
  await byId(page, 'attention-layer').selectOption('0');
  await waitStatus(page, /^done/);
  await byId(page, 'generate-button').click();
  await waitStatus(page, /^done/);
  assert.deepEqual(await ids(page), run);
  const live = await attentionRows(page);
  for (const [h, r] of live.entries()) {
    assert.equal(r.weights.length, positions);
    r.weights.forEach((w, p) => assert.ok(Math.abs(w - after[h].weights[p]) < 1e-3,
      `head ${h} position ${p}: ${w} live, ${after[h].weights[p]} after the run`));
  }
  // Closed, then opened once more: the weights are shown again without a run.
  await byId(page, 'attention-toggle').click();
  const reads = Number(await view.getAttribute('data-reads'));
  await byId(page, 'attention-toggle').click();
  await page.locator('[data-testid="attention-head"]').first().waitFor({ timeout: 120_000 });
  assert.equal(Number(await view.getAttribute('data-reads')), reads + 1);
  await page.close();
});

test('at 1280 × 900 the slider\'s last stop and the header\'s engine line are inside the window', async () => {
  const page = await openPage(browser.context, appUrl(), errors);
  await page.setViewportSize({ width: 1280, height: 900 });
  await waitStatus(page, /^ready$/);
  const inside = async (locator, what) => {
    const box = await locator.boundingBox();
    assert.ok(box, `${what} is drawn`);
    assert.ok(box.x >= 0 && box.x + box.width <= 1280, `${what}: ${box.x} + ${box.width} > 1280`);
  };
  await inside(page.locator('.ticks .tick').last(), 'the slider\'s last stop');
  await inside(byId(page, 'backend-why'), 'the engine line');
  await inside(byId(page, 'backend'), 'the engine box');
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 1280, `the page scrolls sideways: ${width} px`);
  await screenshot(page, 'page-1280.png');
  await page.close();
});

test('no page errors or panics', () => {
  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
});
