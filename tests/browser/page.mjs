// Drives the breachcheck page in headless Chromium (Debian's, through
// playwright-core) and writes what happened as JSON, for the Rust tests
// (tests/tests/browser) and the benchmark to assert on.
//
//   node page.mjs SPEC_JSON
//
// SPEC: { url, outDir, checks: [{ input, region, screenshot? }], bench?: rounds }
// Writes outDir/page.json: { ready, results, requests, consoleErrors, benchMs, info }.
// Every request the page makes is recorded with its body (hex), so the test
// can show the number never crosses the wire.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Root in a container has no user namespace for Chromium's sandbox.
  args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
});
const out = { ready: false, results: [], requests: [], consoleErrors: [], benchMs: null, info: null };
try {
  const page = await browser.newPage();
  page.on('request', (r) => {
    const body = r.postDataBuffer();
    out.requests.push({ url: r.url(), method: r.method(), body: body ? body.toString('hex') : '' });
  });
  page.on('console', (m) => {
    if (m.type() === 'error') out.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => out.consoleErrors.push(String(e)));
  await page.goto(spec.url);
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 60_000 });
  out.ready = true;
  for (const [i, c] of spec.checks.entries()) {
    await page.selectOption('#region', c.region);
    await page.fill('#number', c.input);
    const t0 = performance.now();
    // The keyboard path: Enter in the field submits the form.
    await page.press('#number', 'Enter');
    await page.waitForFunction((n) => Number(document.body.dataset.checks ?? 0) >= n, i + 1, {
      timeout: 60_000,
      polling: 5,
    });
    const ms = performance.now() - t0;
    const errorShown = await page.isVisible('#error');
    out.results.push({
      input: c.input,
      shown: await page.isVisible('#result'),
      verdict: (await page.textContent('#verdict')) ?? '',
      breaches: (await page.textContent('#breaches')) ?? '',
      privacy: (await page.textContent('#privacy')) ?? '',
      error: errorShown ? (await page.textContent('#error')) ?? '' : null,
      ms,
    });
    if (c.screenshot) {
      await page.screenshot({ path: path.join(spec.outDir, c.screenshot), fullPage: true });
    }
  }
  out.info = {
    indexId: await page.textContent('#index-id'),
    keyFingerprint: await page.textContent('#key-fp'),
  };
  if (spec.bench) {
    out.benchMs = await page.evaluate((r) => window.breachcheck.clientWorkMs(r), spec.bench);
  }
} catch (e) {
  out.consoleErrors.push(`driver: ${e}`);
} finally {
  await browser.close();
  fs.writeFileSync(path.join(spec.outDir, 'page.json'), JSON.stringify(out, null, 1));
}
