// Browser driver for the live page test (issue 13).
//
//   node tests/browser/live_page.mjs URL OUT_DIR MIN_CLOSED TIMEOUT_SECS
//
// Opens URL in Debian's headless Chromium (/usr/bin/chromium, through playwright-core), polls the
// DOM until #minutes shows at least MIN_CLOSED closed rows AND at least one closed minute that
// was not there when the first closed row appeared (so minutes appeared while the page was
// open), and the "Choosing the grace" table #grace has its 13 rows (one per candidate grace,
// from api/v1/advise/grace), all within TIMEOUT_SECS from the start. Then it takes a full-page screenshot to
// OUT_DIR/live-page.png and prints ONE JSON line on stdout:
//   {"first_seen": [window_start...], "final_seen": [...], "updates": n, "closed": n,
//    "minutes": [{"start", "provisional", "fields": {field: text}}...],   // table order, newest first
//    "countries": [{"start", "country", "fields": {field: text}}...],
//    "grace": [{"grace", "current", "fields": {field: text}}...],       // table order, ascending grace
//    "country_chart": [country...],     // "Top countries per minute" legend, in its order
//    "health": {field: text}, "status": {"hidden": bool, "text": s}, "screenshot": path,
//    "elapsed_ms": n}
// Exit 0 on success; 1 on timeout, a console error, a page error, a failed request or a page
// that does not load (message on stderr, and a screenshot for diagnosis when one can be taken);
// 2 on bad arguments or when Chromium cannot start.
//
// Setup: `npm ci` in tests/browser (playwright-core only; it downloads no browser) and
// `apt-get install -y chromium`. Develop against the mock: tests/browser/mock_server.mjs.
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// Debian's chromium; these flags keep it from reaching out (the closed network refuses it).
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const POLL_MS = 150;
const GRACE_ROWS = 13;             // candidate graces: the lateness histogram's bounds, 0 s .. 1 d

function die(code, msg) {
  process.stderr.write(`live_page: ${msg}\n`);
  process.exit(code);
}

const [url, outDir, minClosedArg, timeoutArg] = process.argv.slice(2);
if (!url || !outDir || minClosedArg === undefined || timeoutArg === undefined) {
  die(2, 'usage: node live_page.mjs URL OUT_DIR MIN_CLOSED TIMEOUT_SECS');
}
const minClosed = Number(minClosedArg);
const timeoutSecs = Number(timeoutArg);
if (!Number.isInteger(minClosed) || minClosed < 1) die(2, `MIN_CLOSED must be a positive integer, not ${minClosedArg}`);
if (!(timeoutSecs > 0)) die(2, `TIMEOUT_SECS must be a positive number, not ${timeoutArg}`);
if (!fs.existsSync(CHROMIUM)) die(2, `${CHROMIUM} is missing (apt-get install -y chromium)`);

const t0 = Date.now();
const deadline = t0 + timeoutSecs * 1000;
fs.mkdirSync(outDir, { recursive: true });
const shotPath = path.resolve(outDir, 'live-page.png');

// Whatever happens, never outlive the deadline by much (a hung browser, a hung close).
const watchdog = setTimeout(() => die(1, `hard timeout: still running ${timeoutSecs + 30} s after start`),
  (timeoutSecs + 30) * 1000);
watchdog.unref();

const problems = [];               // console errors, page errors, failed requests
let browser;

// One DOM snapshot, read in the page.
function snapshot() {
  const text = (e) => (e ? e.textContent : null);
  const rows = [...document.querySelectorAll('#minutes tbody tr[data-start]')].map((tr) => {
    const fields = {};
    tr.querySelectorAll('td[data-field]').forEach((td) => { fields[td.dataset.field] = td.textContent; });
    return { start: tr.dataset.start, provisional: tr.dataset.provisional === 'true', fields };
  });
  const countries = [...document.querySelectorAll('#countries tbody tr[data-start]')].map((tr) => {
    const fields = {};
    tr.querySelectorAll('td[data-field]').forEach((td) => { fields[td.dataset.field] = td.textContent; });
    return { start: tr.dataset.start, country: tr.dataset.country, fields };
  });
  const grace = [...document.querySelectorAll('#grace tbody tr[data-grace]')].map((tr) => {
    const fields = {};
    tr.querySelectorAll('td[data-field]').forEach((td) => { fields[td.dataset.field] = td.textContent; });
    return { grace: tr.dataset.grace, current: tr.dataset.current === 'true', fields };
  });
  const countryChart = [...document.querySelectorAll('#country-legend [data-country]')].map((e) => e.textContent);
  const countryLines = [...document.querySelectorAll('#country-chart path[data-country]')].map((e) => e.dataset.country);
  const health = {};
  document.querySelectorAll('#health [data-field]').forEach((e) => { health[e.dataset.field] = e.textContent; });
  const status = document.querySelector('#status');
  return {
    updates: Number(document.body.dataset.updates || 0),
    closed: Number(document.body.dataset.closed || 0),
    minutes: rows,
    countries,
    grace,
    countryChart,
    countryLines,
    health,
    status: status ? { hidden: status.hidden || getComputedStyle(status).display === 'none', text: text(status) } : null,
    hasMinutesTable: !!document.querySelector('#minutes'),
  };
}

async function failWith(page, msg) {
  if (page) {
    try { await page.screenshot({ path: shotPath, fullPage: true, timeout: 5000 }); msg += ` (screenshot: ${shotPath})`; } catch { /* best effort */ }
  }
  if (problems.length) msg += `\npage problems:\n  ${problems.join('\n  ')}`;
  process.stderr.write(`live_page: ${msg}\n`);
  process.exitCode = 1;
}

async function main() {
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: Math.max(5000, deadline - Date.now()) });
  } catch (e) {
    die(2, `cannot start ${CHROMIUM}: ${e.message}`);
  }
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()} ${JSON.stringify(m.location())}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('crash', () => problems.push('page crashed'));

  try {
    const resp = await page.goto(url, { waitUntil: 'load', timeout: Math.max(1000, deadline - Date.now()) });
    if (!resp) return failWith(page, `no response for ${url}`);
    if (!resp.ok()) return failWith(page, `GET ${url}: HTTP ${resp.status()}`);
  } catch (e) {
    return failWith(page, `cannot open ${url}: ${e.message}`);
  }

  let first = null;                // closed starts at first sight of a closed row
  let snap = null;
  for (;;) {
    if (problems.length) return failWith(page, 'the page reported errors');
    try {
      snap = await page.evaluate(snapshot);
    } catch (e) {
      return failWith(page, `cannot read the page: ${e.message}`);
    }
    if (!snap.hasMinutesTable) return failWith(page, 'the page has no #minutes table');
    const closedNow = snap.minutes.filter((m) => !m.provisional).map((m) => m.start);
    if (first === null && closedNow.length > 0) first = closedNow;
    if (first !== null) {
      const seen = new Set(first);
      const grew = closedNow.some((s) => !seen.has(s));
      if (closedNow.length >= minClosed && grew && snap.grace.length === GRACE_ROWS) break;
    }
    if (Date.now() >= deadline) {
      const have = first === null
        ? 'no closed row ever appeared'
        : `${closedNow.length} closed rows (need at least ${minClosed}), of which new since the first sight ` +
          `(${first.length} closed rows): ${closedNow.filter((s) => !first.includes(s)).length} (need at least 1)`;
      const grace = `grace table: ${snap.grace.length} rows (need ${GRACE_ROWS})`;
      return failWith(page, `timeout after ${timeoutSecs} s: ${have}; ${grace}; updates ${snap.updates}; status ${JSON.stringify(snap.status)}`);
    }
    await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(0, deadline - Date.now()))));
  }

  try {
    await page.screenshot({ path: shotPath, fullPage: true, timeout: Math.max(5000, deadline - Date.now()) });
  } catch (e) {
    return failWith(null, `screenshot failed: ${e.message}`);
  }
  // The country chart has one line per legend entry, in the same order.
  if (JSON.stringify(snap.countryChart) !== JSON.stringify(snap.countryLines)) {
    return failWith(null, `#country-chart lines ${JSON.stringify(snap.countryLines)} differ from its legend ${JSON.stringify(snap.countryChart)}`);
  }
  // A last look: errors that came while the screenshot was taken count too.
  if (problems.length) return failWith(null, 'the page reported errors');

  const out = {
    first_seen: first,
    final_seen: snap.minutes.filter((m) => !m.provisional).map((m) => m.start),
    updates: snap.updates,
    closed: snap.closed,
    minutes: snap.minutes,
    countries: snap.countries,
    grace: snap.grace,
    country_chart: snap.countryChart,
    health: snap.health,
    status: snap.status,
    screenshot: shotPath,
    elapsed_ms: Date.now() - t0,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

try {
  await main();
} catch (e) {
  await failWith(null, `unexpected: ${e.stack || e}`);
} finally {
  if (browser) {
    const closing = browser.close().catch(() => {});
    await Promise.race([closing, new Promise((r) => setTimeout(r, 10000))]);
  }
  clearTimeout(watchdog);
}
process.exit(process.exitCode ?? 0);
