// A new user's sequence on one tab, in a fresh browser profile: for G = 3, 1 and 9 the link
// with autorun (the calibrated merge left at its default, so G = 1 is fitted here on the
// software adapter's 512 calibration tokens and kept in Cache Storage), the attention view
// opened and Generate pressed; then, in the same tab, the side-by-side with mean-pooling, its
// token count set to 8, every G ticked. Each link is opened with page.goto in that one page, so
// Cache Storage, local storage and the HTTP cache carry over as they would for a person.
// Every column from the native G up is the native model, so each must hold the ids of
// `gqa-lab generate --prompt $'def fibonacci(n):\n' --max-tokens 8 --regroup mean` (f32),
// all eight of them. The first token is a near-tie in this model (f32 logits 31.707 for "\n"
// against 31.638 for "def"): the GPU engine computes in f32 and keeps the CLI's choice, the
// page's CPU engine (cpu-q8) takes the other one, so the test also checks which engine ran.
// Same harness as app.test.mjs: trunk's dist/ served on 127.0.0.1, Debian's chromium with
// WebGPU on SwiftShader, driven by playwright-core; run with `node --test`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { ROOT, startApp, stopApp, byId, text, waitStatus } from './harness.mjs';

const CLI = path.join(ROOT, 'target/release/gqa-lab');
const PROMPT = 'def fibonacci(n):\n';
// The links as a person types them (the prompt percent-encoded, as in the report).
const Q = 'prompt=def%20fibonacci(n)%3A%0A&chat=0';

let srv;
let browser; // a fresh profile: the model is downloaded by the first link, as for a new user
const errors = [];

before(async () => ({ srv, browser } = await startApp()));
after(() => stopApp({ srv, browser }));

/** `gqa-lab generate … --json` run from the repository root (the default model, f32). */
function cliIds(args) {
  const out = execFileSync(CLI, ['generate', '--prompt', PROMPT, '--json', ...args], { encoding: 'utf8', cwd: ROOT });
  return JSON.parse(out).ids;
}

const ids = async (page) => (await text(page, 'output-ids')).split(',').filter(Boolean).map(Number);
const reads = async (page) => Number(await byId(page, 'attention-view').getAttribute('data-reads'));

test('after runs at G = 3, 1 and 9 with the attention view on one tab, side by side gives the CLI\'s ids at every G from the native one up', async (t) => {
  const native = cliIds(['--max-tokens', '8', '--regroup', 'mean']);
  t.diagnostic(`CLI (f32, mean): ${native}`);
  assert.equal(native.length, 8);
  const page = await browser.context.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

  // 1. One tab: for G in 3, 1, 9 the autorun link, then the attention view and Generate.
  for (const g of [3, 1, 9]) {
    await page.goto(`${srv.url}?${Q}&groups=${g}&temperature=0&max_tokens=6&autorun=1&backend=gpu`);
    await waitStatus(page, /^done/, 1_200_000);
    const autorun = await ids(page);
    await byId(page, 'attention-toggle').click();
    assert.equal(await byId(page, 'attention-view').getAttribute('data-open'), 'true');
    const before = await reads(page);
    // Playwright's click waits until the button is enabled: the view's read of the last
    // token (a command of its own) has ended, so the press is not dropped.
    await byId(page, 'generate-button').click();
    // One read of the weights per token of the run (the status says "done" until it starts).
    await page.waitForFunction(
      (n) => Number(document.querySelector('[data-testid="attention-view"]').dataset.reads) >= n,
      before + 6, { timeout: 600_000, polling: 200 },
    );
    await waitStatus(page, /^done/, 600_000);
    const again = await ids(page);
    t.diagnostic(`G = ${g}: autorun ${autorun}; Generate with the attention view open ${again}`);
    assert.deepEqual(again, autorun, `G = ${g}: Generate after the attention view gives the autorun's ids`);
    if (g >= 3) assert.deepEqual(again, native.slice(0, 6), `G = ${g}: the CLI's first 6 ids`);
  }

  // 2. The same tab: the side-by-side with mean-pooling, 8 tokens, every G ticked.
  await page.goto(`${srv.url}?${Q}&temperature=0&max_tokens=8&backend=gpu&regroup=mean`);
  await waitStatus(page, /^ready$/, 600_000);
  // Nothing of the runs before is restored into what the comparison uses.
  assert.equal(await byId(page, 'backend').getAttribute('data-backend'), 'gpu');
  assert.equal(await byId(page, 'regroup-method').inputValue(), 'mean');
  assert.equal(await byId(page, 'groups-slider').inputValue(), '3');
  assert.equal(await byId(page, 'attention-view').getAttribute('data-open'), 'false');
  assert.equal(await byId(page, 'compare-tokens').inputValue(), '16', 'the default token count, not one from before');
  const picks = byId(page, 'compare-pick');
  assert.equal(await picks.count(), 9);
  for (const p of await picks.all()) assert.ok(await p.isChecked(), `G = ${await p.getAttribute('data-groups')} ticked`);
  const tokens = byId(page, 'compare-tokens');
  await tokens.fill('8');
  await tokens.blur(); // a change event, as a person leaving the field
  assert.equal(await tokens.inputValue(), '8');
  await byId(page, 'compare-run').click();
  await waitStatus(page, /^done \(compared\)$/, 900_000);
  const columns = await page.locator('[data-testid="compare-column"]').evaluateAll((els) => els.map((e) => ({
    g: Number(e.dataset.groups), ids: e.dataset.ids.split(',').filter(Boolean).map(Number),
    text: e.querySelector('.compare-text')?.textContent ?? '',
  })));
  const engine = await byId(page, 'compare-engine').getAttribute('data-backend');
  t.diagnostic(`side by side on the ${engine} engine:`);
  for (const c of columns) t.diagnostic(`  G = ${c.g}: ${c.ids.length} tokens ${c.ids} ${JSON.stringify(c.text)}`);
  assert.equal(engine, 'gpu', 'the columns were computed on the GPU engine the link asks for');
  assert.deepEqual(columns.map((c) => c.g), [3, 1, 2, 4, 5, 6, 7, 8, 9]);
  for (const c of columns.filter((c) => c.g >= 3)) {
    assert.equal(c.ids.length, 8, `G = ${c.g}: 8 tokens`);
    assert.deepEqual(c.ids, native, `G = ${c.g}: the CLI's ids`);
  }
  assert.equal(await byId(page, 'groups-slider').inputValue(), '3', 'the engine is back at the settings\' G');
  await page.close();
});

test('no page errors or panics', () => {
  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
});
