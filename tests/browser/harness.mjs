// Launching Debian's chromium (WebGPU through SwiftShader) with a fresh profile, and helpers
// for reading the app's data-testid hooks.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { serve } from './server.mjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ARTIFACTS = path.join(ROOT, 'artifacts');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

const BASE_ARGS = [
  '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/** A persistent context on a fresh --user-data-dir; `webgpu: false` leaves WebGPU off. */
export async function launch({ webgpu = true } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gqa-lab-chromium-'));
  const args = [...BASE_ARGS, ...(webgpu ? ['--enable-unsafe-webgpu'] : ['--disable-features=WebGPU'])];
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1366, height: 900 },
  });
  const close = async () => {
    await context.close();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { context, close };
}

/** A new page that fails the test on uncaught page errors (wasm panics included); `prepare`
 * (e.g. routes) runs before it navigates. */
export async function openPage(context, url, errors = [], prepare = async () => {}) {
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await prepare(page);
  await page.goto(url);
  return page;
}

export const byId = (page, id) => page.locator(`[data-testid="${id}"]`);
export const text = async (page, id) => (await byId(page, id).textContent()) ?? '';

/** Waits until the status text matches `re` (and fails early on `error:` unless expected). */
export async function waitStatus(page, re, timeout = 300_000) {
  await page.waitForFunction(
    ([src, flags]) => {
      const s = document.querySelector('[data-testid="status"]')?.textContent ?? '';
      if (new RegExp(src, flags).test(s)) return true;
      if (s.startsWith('error:') && !new RegExp(src, flags).test('error:')) throw new Error(s);
      return false;
    },
    [re.source, re.flags],
    { timeout, polling: 200 },
  );
  return text(page, 'status');
}

/** A screenshot of the whole page, or with `testid` of that element alone, into artifacts/. */
export async function screenshot(page, name, testid) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  if (testid) await byId(page, testid).screenshot({ path: file });
  else await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** The built app served from dist/ and one browser profile for a test file's tests (the
 * model is cached after the first load); `stopApp` closes both. */
export async function startApp() {
  assert.ok(fs.existsSync(path.join(ROOT, 'dist/index.html')), 'run `trunk build --release` first');
  const srv = await serve(path.join(ROOT, 'dist'));
  const browser = await launch();
  return { srv, browser };
}

export async function stopApp({ srv, browser }) {
  await browser?.close();
  await srv?.close();
}
