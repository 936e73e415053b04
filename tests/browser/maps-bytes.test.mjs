// Browser tests of the regrouping maps' bytes on the page: the meter, the "What each G buys"
// table and the plot count the maps each G holds beside its KV cache, and the page says from
// which token a merge holds less than the native model (or that it never does within the
// page's KV capacity, 512 positions on SwiftShader). The figures are computed here from the
// maps' shapes and checked against `gqa-lab info --json`. Same harness as app.test.mjs:
// trunk's dist/ on 127.0.0.1, Debian's chromium with WebGPU on SwiftShader, playwright-core;
// run with `node --test maps-bytes.test.mjs`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { ROOT, openPage, startApp, stopApp, byId, text, waitStatus, screenshot } from './harness.mjs';

const CLI = path.join(ROOT, 'target/release/gqa-lab');
// SmolLM2-135M: 30 layers, 9 query heads, 3 KV heads, head_dim 64 (32 rotation pairs); maps
// in f32. Mean-pooling (and every G ≥ 3): K scalars [G][3][32] complex and pool weights [G][3].
// The calibrated merge: K [G][3][32] complex, a dense V [G][64][192], q [9][32] complex and O
// [9][64][64].
const meanMaps = (g) => 30 * (g * 3 * 32 * 2 + g * 3) * 4;
const calibratedMaps = (g) => 30 * (g * 3 * 32 * 2 + g * 64 * 192 + 9 * 32 * 2 + 9 * 64 * 64) * 4;
const kvPerToken = { f32: 2 * 30 * 64 * 4, f16: 2 * 30 * 64 * 2 };
/** The fewest tokens from which G holds less than G = 3 with its maps (the page's arithmetic,
 * redone here), or 'never' within `limit`. */
function breakEven(g, maps, kv, limit) {
  for (let n = 0; n <= limit; n++) {
    if (maps + g * kvPerToken[kv] * n < meanMaps(3) + 3 * kvPerToken[kv] * n) return String(n);
  }
  return 'never';
}

let srv;
let browser;
const errors = [];

before(async () => ({ srv, browser } = await startApp()));
after(() => stopApp({ srv, browser }));

const appUrl = (params = {}) => `${srv.url}?${new URLSearchParams({ backend: 'gpu', kv: 'f32', ...params })}`;
const num = async (page, id) => Number(await text(page, id));
const attr = (page, id, name) => byId(page, id).getAttribute(name);

/** The meter's maps and total against the cache it shows. */
async function assertMeter(page, maps) {
  assert.equal(await num(page, 'maps-bytes'), maps, "the meter's maps");
  assert.equal(await num(page, 'kv-total-bytes'), await num(page, 'kv-cache-bytes') + maps, 'cache + maps');
}

test('the meter, the table and the plot count the maps; the page says where a merge pays off', async () => {
  const info = JSON.parse(execFileSync(CLI, ['info', '--json'], { encoding: 'utf8', cwd: ROOT }));
  for (const g of [1, 2]) assert.equal(info.maps_bytes.calibrated[g], calibratedMaps(g), `the CLI's G = ${g}`);
  assert.equal(info.maps_bytes.mean['3'], meanMaps(3));

  // Mean-pooled G = 1: its maps are smaller than the native model's, less from the start.
  const page = await openPage(browser.context, appUrl({
    groups: 1, regroup: 'mean', calib_tokens: 64, quality_tokens: 16, prompt: 'The capital of France is', chat: 0,
  }), errors);
  await waitStatus(page, /^ready$/);
  await assertMeter(page, meanMaps(1));
  assert.equal(await attr(page, 'break-even', 'data-tokens'), '0');
  assert.match(await text(page, 'break-even'), /from the first token on/);
  for (let g = 1; g <= 9; g++) {
    assert.equal(Number(await attr(page, `maps-g${g}`, 'data-bytes')), meanMaps(g), `table, G = ${g}`);
    assert.equal(await attr(page, `maps-g${g}`, 'data-break-even'), g < 3 ? '0' : '', `table, G = ${g}`);
  }

  // The calibrated merge: fitted (64 tokens), then megabytes of maps that the f32 cache repays
  // from a few hundred tokens on, as the CLI says.
  await byId(page, 'regroup-method').selectOption('calibrated');
  await waitStatus(page, /^calibrating G = 1: \d+ \/ 30 layers$/, 120_000);
  await waitStatus(page, /^ready$/, 600_000);
  await assertMeter(page, calibratedMaps(1));
  const even = info.break_even_tokens.f32.calibrated;
  assert.equal(await attr(page, 'break-even', 'data-tokens'), String(even['1']));
  assert.equal(String(even['1']), breakEven(1, calibratedMaps(1), 'f32', 8192));
  assert.match(await text(page, 'break-even'), new RegExp(`from ${even['1']} tokens on`));
  for (const g of [1, 2]) {
    assert.equal(Number(await attr(page, `maps-g${g}`, 'data-bytes')), calibratedMaps(g));
    assert.equal(await attr(page, `maps-g${g}`, 'data-break-even'), breakEven(g, calibratedMaps(g), 'f32', 512));
  }
  assert.equal(Number(await attr(page, 'maps-g3', 'data-bytes')), meanMaps(3), 'G = 3 holds its pooling maps');
  await screenshot(page, 'maps-meter.png');

  // An f16 cache saves half as much a token: G = 1 pays off later, G = 2 not within the page's
  // 512 positions (the sentence gives the model's full context's figure instead).
  await byId(page, 'kv-type').selectOption('f16');
  await waitStatus(page, /^ready$/, 120_000);
  await assertMeter(page, calibratedMaps(1));
  assert.equal(await attr(page, 'break-even', 'data-tokens'), String(info.break_even_tokens.f16.calibrated['1']));
  assert.equal(await attr(page, 'maps-g2', 'data-break-even'), 'never');
  await page.locator('.ticks .tick').nth(1).click(); // G = 2
  await waitStatus(page, /^calibrating G = 2: \d+ \/ 30 layers$/, 120_000);
  await waitStatus(page, /^ready$/, 600_000);
  await assertMeter(page, calibratedMaps(2));
  assert.equal(await attr(page, 'break-even', 'data-tokens'), 'never');
  assert.equal(await attr(page, 'break-even', 'data-full-context'), String(info.break_even_tokens.f16.calibrated['2']));
  assert.match(await text(page, 'break-even'), /never holds less/);

  // The plot: each point's maps, and a bar for them beside its cache.
  await byId(page, 'measure-quality').click();
  await waitStatus(page, /^done \(quality measured\)$/, 900_000);
  const points = await page.locator('[data-testid="plot-bytes"] [data-testid="plot-point"]').evaluateAll((els) => els.map((e) => ({
    g: Number(e.dataset.groups), method: e.dataset.method, maps: Number(e.dataset.mapsBytes),
  })));
  assert.equal(points.length, 9 + 2);
  for (const p of points) {
    assert.equal(p.maps, p.method === 'calibrated' && p.g < 3 ? calibratedMaps(p.g) : meanMaps(p.g), `plot, G = ${p.g} ${p.method}`);
  }
  assert.equal(await page.locator('[data-testid="plot-bytes"] [data-testid="plot-maps"]').count(), points.length);
  await screenshot(page, 'maps-plot.png', 'plot-card');
  await page.close();
});

test('no page errors or panics', () => {
  assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
});
