// The page's own timings, run by hand (never in CI), in headless Chromium with WebGPU on
// SwiftShader, `dist/` of `trunk build --release` served locally:
//   - load to ready with the model in Cache Storage (a second visit), per backend;
//   - decode tokens/s with the attention view closed and open, per backend (the view reads its
//     weights back each token only while open);
//   - the page thread's long tasks (> 50 ms, PerformanceObserver 'longtask') over a load and a
//     64-token generation, per backend, with the engine in its Web Worker and on the page's
//     thread (`worker=0`, as the page ran it before the worker).
// Prints one JSON line per figure. Needs `scripts/setup.sh browser` and a trunk build.
//
//   node benches/page.mjs [--rounds N (3)] [--tokens N (32)] [--only load,decode,longtasks]
//                         [--against DIR]
// `--against DIR` also times the load of another build's `dist/` (e.g. an older commit's),
// served on its own origin (its own Cache Storage), its rounds interleaved with this build's.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from '../tests/browser/server.mjs';
import { ROOT, launch, byId } from '../tests/browser/harness.mjs';

const { values: opt } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    tokens: { type: 'string', default: '32' },
    only: { type: 'string', default: 'load,decode,longtasks' },
    against: { type: 'string' },
  },
});
const only = new Set(opt.only.split(','));
const rounds = Number(opt.rounds);
const tokens = Number(opt.tokens);

const srv = await serve(path.join(ROOT, 'dist'));
const other = opt.against ? await serve(path.resolve(opt.against)) : null;
const { context, close } = await launch();
const url = (q, base = srv.url) => `${base}?${new URLSearchParams(q)}`;
const ready = (page) => page.waitForSelector('[data-testid="status"][data-state="ready"]', { timeout: 600e3 });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Milliseconds from navigation to "ready" (the model already in Cache Storage). */
async function loadMs(backend, worker = 1, base = srv.url) {
  const page = await context.newPage();
  const t0 = Date.now();
  await page.goto(url({ backend, worker }, base));
  await ready(page);
  const ms = Date.now() - t0;
  await page.close();
  return ms;
}

/** Decode tokens/s of one greedy run, the attention view open or closed. */
async function decode(backend, open) {
  const page = await context.newPage();
  await page.goto(url({ backend, prompt: 'The capital of France is', chat: 0, temperature: 0, max_tokens: tokens, ignore_eos: 1 }));
  await ready(page);
  if (open) await byId(page, 'attention-toggle').click();
  await byId(page, 'generate-button').click();
  await page.waitForSelector('[data-testid="status"][data-state="done"]', { timeout: 600e3 });
  const tps = Number(await byId(page, 'run-stats').getAttribute('data-decode-tps'));
  const reads = Number(await byId(page, 'attention-view').getAttribute('data-reads'));
  await page.close();
  return { tps, reads };
}

/** The page thread's long tasks from navigation through a load (model cached) and a greedy
 * 64-token generation: how many, their total and the longest, in ms. */
async function longTasks(backend, worker) {
  const page = await context.newPage();
  await page.addInitScript(() => {
    window.__long = [];
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__long.push(e.duration);
    }).observe({ type: 'longtask', buffered: true });
  });
  await page.goto(url({
    backend, worker, prompt: 'The history of the printing press began', chat: 0, temperature: 0,
    max_tokens: 64, ignore_eos: 1, autorun: 1,
  }));
  await page.waitForSelector('[data-testid="status"][data-state="done"]', { timeout: 600e3 });
  const long = await page.evaluate(() => window.__long);
  const tps = Number(await byId(page, 'run-stats').getAttribute('data-decode-tps'));
  await page.close();
  const round = (x) => Math.round(x);
  return { count: long.length, total_ms: round(long.reduce((a, b) => a + b, 0)), max_ms: round(Math.max(0, ...long)), tps };
}

try {
  await loadMs('gpu'); // the first visit downloads the model into Cache Storage
  if (other) await loadMs('gpu', 1, other.url);
  for (const backend of only.has('load') ? ['gpu', 'cpu'] : []) {
    const builds = [{ build: 'this', worker: 1 }, { build: 'this', worker: 0 }];
    if (other) builds.push({ build: opt.against, worker: 0, base: other.url });
    const ms = builds.map(() => []);
    for (let i = 0; i < rounds; i++) {
      for (const [k, b] of builds.entries()) ms[k].push(await loadMs(backend, b.worker, b.base));
    }
    for (const [k, { build, worker }] of builds.entries()) {
      console.log(JSON.stringify({ build, backend, worker, measures: 'load to ready, model cached', median_ms: median(ms[k]), ms: ms[k] }));
    }
  }
  for (const backend of only.has('longtasks') ? ['gpu', 'cpu'] : []) {
    for (const worker of [0, 1]) {
      const runs = [];
      for (let i = 0; i < rounds; i++) runs.push(await longTasks(backend, worker));
      console.log(JSON.stringify({
        backend, worker, measures: 'page-thread long tasks (> 50 ms) over load + 64 tokens',
        count_median: median(runs.map((r) => r.count)), total_ms_median: median(runs.map((r) => r.total_ms)),
        max_ms_median: median(runs.map((r) => r.max_ms)), runs,
      }));
    }
  }
  for (const backend of only.has('decode') ? ['gpu', 'cpu'] : []) {
    const runs = { closed: [], open: [] };
    for (let i = 0; i < rounds; i++) {
      for (const open of [false, true]) runs[open ? 'open' : 'closed'].push(await decode(backend, open));
    }
    const tps = (rs) => rs.map((r) => r.tps);
    console.log(JSON.stringify({
      backend, measures: `decode tok/s, ${tokens} tokens, attention view closed vs open`,
      closed_median: median(tps(runs.closed)), open_median: median(tps(runs.open)),
      closed: tps(runs.closed), open: tps(runs.open),
      reads_closed: runs.closed.map((r) => r.reads), reads_open: runs.open.map((r) => r.reads),
    }));
  }
} finally {
  await close();
  await srv.close();
  if (other) await other.close();
}
