// Mock of the retail-kpi live endpoints, for developing src/ops/live/page.html and the browser
// driver (live_page.mjs) without building or running the Rust job. No dependency but Node.
//
//   node tests/browser/mock_server.mjs [--port 0] [--initial-closed 3] [--step-ms 2000] [--max-closed 60]
//
// It prints one line, "listening http://127.0.0.1:PORT/", then serves:
//   GET /             src/ops/live/page.html, read from disk on every request (edit and reload)
//   GET /api/v1/live  the live JSON (contract: issue 13 / the page's header comment): a closed
//                     minute is added every --step-ms (starting from --initial-closed closed
//                     minutes at 2020-09-18T10:00:00Z), the open minute is provisional, its
//                     figures growing until it closes; in the second half of each step a second
//                     provisional minute shows too. Figures are deterministic per minute.
//   GET /api/v1/advise/grace   the grace advice (like src/ops/advise.rs): 13 candidate graces
//                     (0 s .. 1 d, the lateness histogram's bounds), each with the invoices it
//                     would have accepted (made-up shares, most invoices in order, a long tail),
//                     their share (floats printed like serde: 60.0, 1.0) and the file delay.
//   POST /mock/down?seconds=N   answer 503 on /api/v1/live and /api/v1/advise/grace for N seconds
//                     (the job is down: the "disconnected" banner)
//   POST /mock/grace-down?seconds=N   answer 503 on /api/v1/advise/grace only, for N seconds
// Options: --big-items makes the first closed minute's world total_items a u128 beyond 2^53 (to
// check that the page shows integer text exactly); --grace S is the job's current grace in
// seconds (default 60; one that is not a candidate, like 45, highlights no row); --grace-empty
// answers the advice as before the first invoice (counted 0, accepted_share null). It stops on
// SIGINT / SIGTERM, or by itself after --lifetime-s seconds (default 600).
//
// Example:  node tests/browser/mock_server.mjs --port 8099 &
//           node tests/browser/live_page.mjs http://127.0.0.1:8099/ /tmp/shots 5 60
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const PAGE = path.resolve(here, '../../src/ops/live/page.html');

function opt(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith('--')) return true;
  return v;
}
const PORT = Number(opt('port', 0));
const INITIAL = Number(opt('initial-closed', 3));
const STEP_MS = Number(opt('step-ms', 2000));
const MAX_CLOSED = Number(opt('max-closed', 60));
const LIFETIME_S = Number(opt('lifetime-s', 600));
const BIG_ITEMS = opt('big-items', false) !== false;
const BIG = '340282366920938463463374607431768211455'; // u128::MAX
const GRACE = Number(opt('grace', 60));
const GRACE_EMPTY = opt('grace-empty', false) !== false;

const T0 = Date.parse('2020-09-18T10:00:00Z');
const started = Date.now();
let downUntil = 0;
let graceDownUntil = 0;

const COUNTRIES = ['United Kingdom', 'Germany', 'France', 'EIRE', 'Spain', 'Netherlands', 'Belgium',
  'Switzerland', 'Portugal', 'Australia', 'Norway', 'Italy', "Côte d'Ivoire", 'Channel Islands'];
const REASONS = ['too_large', 'invalid_utf8', 'invalid_json', 'invalid_invoice', 'future_timestamp', 'late', 'window_closed'];

// Small deterministic PRNG (mulberry32), seeded per minute and country.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const iso = (ms) => new Date(ms).toISOString().replace('.000Z', 'Z');
// Money as exact decimal text from integer ten-thousandths (like the job's fixed point).
function money(units) {
  const neg = units < 0n;
  const a = neg ? -units : units;
  const s = `${a / 10000n}.${String(a % 10000n).padStart(4, '0')}`;
  return neg ? `-${s}` : s;
}
const ratio = (num, den) => (den === 0n ? '0.0000' : money((num * 10000n * 10000n + den * 5000n) / den / 10000n));
const div = (vol, n) => (n === 0n ? '0.0000' : money(vol / n));

// The figures of minute `idx`; `frac` in (0, 1] scales an open minute's counts (figures so far).
function minute(idx, frac = 1) {
  const start = T0 + idx * 60000;
  const countries = COUNTRIES.map((country, ci) => {
    const r = rng(idx * 131 + ci * 7919 + 17);
    const weight = ci === 0 ? 6 : 1 / (ci + 1) * 3;
    const orders = BigInt(Math.floor((2 + r() * 10) * weight * frac));
    const returns = BigInt(Math.floor(r() * 1.6 * frac * (ci < 4 ? 2 : 1)));
    const items = BigInt(Math.floor(Number(orders) * (8 + r() * 20) + Number(returns) * 3));
    const vol = BigInt(Math.floor(Number(orders) * (150000 + r() * 400000))) - returns * BigInt(Math.floor(50000 + r() * 150000));
    return { country, orders, returns, items, vol };
  }).filter((c) => c.orders + c.returns > 0n);
  const sum = (k) => countries.reduce((a, c) => a + c[k], 0n);
  const orders = sum('orders'), returns = sum('returns'), items = sum('items'), vol = sum('vol');
  const opm = orders + returns;
  const world = {
    OPM: Number(opm), total_sale_volume: money(vol), average_transaction_size: div(vol, opm),
    rate_of_return: ratio(returns, opm), orders: Number(orders), returns: Number(returns),
    total_items: BIG_ITEMS && idx === 0 ? '__BIG__' : Number(items),
  };
  const top = countries
    .sort((a, b) => (a.vol === b.vol ? (a.country < b.country ? -1 : 1) : a.vol > b.vol ? -1 : 1))
    .slice(0, 10)
    .map((c) => ({
      country: c.country, OPM: Number(c.orders + c.returns), total_sale_volume: money(c.vol),
      rate_of_return: ratio(c.returns, c.orders + c.returns), orders: Number(c.orders),
      returns: Number(c.returns), total_items: Number(c.items),
    }));
  return { window_start: iso(start), window_end: iso(start + 60000), world, countries: top };
}

function live() {
  const now = Date.now();
  const elapsed = now - started;
  const steps = Math.floor(elapsed / STEP_MS);
  const phase = (elapsed % STEP_MS) / STEP_MS;
  const nClosed = INITIAL + steps;                 // minutes 0 .. nClosed-1 are closed
  const first = Math.max(0, nClosed - MAX_CLOSED);
  const closed = [];
  for (let i = first; i < nClosed; i++) closed.push(minute(i));
  const provisional = [minute(nClosed, 0.2 + 0.8 * phase)];
  if (phase >= 0.5) provisional.push(minute(nClosed + 1, (phase - 0.5) * 0.6));
  const watermark = T0 + nClosed * 60000 + 1000 * Math.floor(phase * 55);
  const read = 1000 + nClosed * 400 + Math.floor(phase * 400);
  const rejected = Object.fromEntries(REASONS.map((r, i) => [r, i === 2 ? Math.floor(read / 150) : i === 5 ? Math.floor(read / 90) : 0]));
  const nRejected = Object.values(rejected).reduce((a, b) => a + b, 0);
  const lastCkpt = now - (now % 1000);
  return {
    now: iso(now - (now % 1000)),
    closed,
    provisional,
    health: {
      watermark: iso(watermark),
      watermark_lag_seconds: 2.5,
      consumer_lag_records: 120 + Math.floor(phase * 80),
      partitions: 4,
      ready: true,
      not_ready_reason: null,
      records_read: read,
      records_accepted: read - nRejected,
      rejected,
      checkpoints: Math.floor(elapsed / 1000),
      last_checkpoint: elapsed >= 1000 ? iso(lastCkpt) : null,
      files_written: Math.floor(nClosed / 10),
      last_file: nClosed >= 10 ? iso(started + Math.max(0, (Math.floor(nClosed / 10) * 10 - INITIAL)) * STEP_MS) : null,
      checkpoint_interval_seconds: 1.0,
    },
  };
}

// The grace advice. Candidates are the job's LATENESS_BOUNDS_SECS; the share of invoices at
// most that late is made up (cumulative, ending at 1), with a little drift so that the table
// changes between answers. Counted invoices grow with the live figures' records read.
const GRACE_BOUNDS = [0, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400];
const GRACE_CDF = [0.9518, 0.9603, 0.9741, 0.9852, 0.9911, 0.9957, 0.9979, 0.9991, 0.9996, 0.99985, 0.99995, 1, 1];
// Floats as serde_json prints an f64 (60.0, 1.0, 0.9517...), through a marker replaced after stringify.
const f64 = (x) => `__F64__${Number.isInteger(x) ? x.toFixed(1) : String(x)}`;
function grace() {
  const elapsed = Date.now() - started;
  const nClosed = INITIAL + Math.floor(elapsed / STEP_MS);
  const counted = GRACE_EMPTY ? 0 : 1000 + nClosed * 380 + Math.floor(((elapsed % STEP_MS) / STEP_MS) * 380);
  const drift = 0.002 * Math.sin(elapsed / 20000);
  const options = GRACE_BOUNDS.map((g, i) => {
    const p = GRACE_CDF[i] >= 1 ? 1 : Math.min(1, GRACE_CDF[i] + drift * (1 - GRACE_CDF[i]) * 10);
    const accepted = Math.min(counted, Math.floor(counted * p));
    return {
      grace_seconds: g,
      accepted,
      accepted_share: counted > 0 ? f64(accepted / counted) : null,
      file_delay_seconds: g,
    };
  });
  return {
    counted,
    current_grace_seconds: f64(GRACE),
    options,
    method: 'lateness histogram since the process started; candidates are its bucket bounds; window_closed refusals count as accepted by a grace above their lateness; future timestamps left out',
  };
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (req.method === 'GET' && url.pathname === '/') {
    fs.readFile(PAGE, (err, buf) => {
      if (err) { res.writeHead(500, { 'content-type': 'text/plain' }); res.end(String(err)); return; }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(buf);
    });
    return;
  }
  if (req.method === 'GET' && url.pathname === '/api/v1/live') {
    if (Date.now() < downUntil) { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('mock: down\n'); return; }
    const body = JSON.stringify(live()).replace('"__BIG__"', BIG);
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(body);
    return;
  }
  if (req.method === 'GET' && url.pathname === '/api/v1/advise/grace') {
    const now = Date.now();
    if (now < downUntil || now < graceDownUntil) { res.writeHead(503, { 'content-type': 'text/plain' }); res.end('mock: down\n'); return; }
    const body = JSON.stringify(grace()).replace(/"__F64__([^"]*)"/g, '$1');
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(body);
    return;
  }
  if (req.method === 'POST' && url.pathname === '/mock/grace-down') {
    graceDownUntil = Date.now() + 1000 * Number(url.searchParams.get('seconds') || 5);
    res.writeHead(204); res.end();
    return;
  }
  if (req.method === 'POST' && url.pathname === '/mock/down') {
    downUntil = Date.now() + 1000 * Number(url.searchParams.get('seconds') || 5);
    res.writeHead(204); res.end();
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' });
  res.end('not found\n');
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(`listening http://127.0.0.1:${server.address().port}/`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
setTimeout(() => { console.error('mock_server: lifetime over, stopping'); process.exit(0); }, LIFETIME_S * 1000).unref();
