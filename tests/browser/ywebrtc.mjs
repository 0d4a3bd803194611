// End-to-end test of the y-webrtc endpoint with the real `y-webrtc` and `yjs` packages
// (examples/ywebrtc, bundled in its vendor/y-webrtc.mjs) in a real Chromium.
//
// Usage: OCTATE_URL=http://127.0.0.1:PORT [OCTATE_URL_B=...] node ywebrtc.mjs
// (run.sh starts the servers, in a network namespace with only loopback, and sets them).
// The demo page is served by a small static server of this script's own; each page is in
// its own browser context, so its tabs cannot meet over a BroadcastChannel: an edit that
// reaches the other page went through a WebRTC data channel, negotiated through Octate's
// /y-webrtc endpoint, the only signaling server the pages have. Exits non-zero on failure.

import { readFile } from 'node:fs/promises';
import http from 'node:http';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const BASE = (process.env.OCTATE_URL ?? '').replace(/\/+$/, '');
// A second node of BASE's cluster: the password-protected room spans both nodes.
const BASE_B = (process.env.OCTATE_URL_B ?? '').replace(/\/+$/, '') || BASE;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT_MS = 20_000;
const OVERALL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS ?? 150_000);
const VERBOSE = process.env.E2E_VERBOSE === '1';
const DEMO_DIR = fileURLToPath(new URL('../../examples/ywebrtc/', import.meta.url));
const TAG = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;

if (!BASE) {
  console.error('ywebrtc e2e: set OCTATE_URL to the server, e.g. http://127.0.0.1:3000');
  process.exit(2);
}

const results = [];
let browser = null;
let staticServer = null;
const contexts = [];

function summary() {
  const passed = results.filter((r) => r.ok).length;
  console.log(`browser-ywebrtc: ${passed} passed, ${results.length - passed} failed`);
  return results.length - passed;
}

const watchdog = setTimeout(() => {
  console.error(`ywebrtc e2e: overall timeout of ${OVERALL_TIMEOUT_MS} ms reached`);
  results.push({ name: 'overall timeout', ok: false });
  summary();
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- the demo page, served from its directory ----

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript' };

async function serveDemo() {
  const server = http.createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^\/+/, '');
    if (path.startsWith('..') || path.includes('node_modules')) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(DEMO_DIR, path || 'index.html'));
      res.writeHead(200, { 'content-type': TYPES[extname(path || 'index.html')] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  staticServer = server;
  return `http://127.0.0.1:${server.address().port}`;
}

// ---- helpers against the server ----

async function token(base, user, room) {
  const resp = await fetch(`${base}/api/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId: user, roomId: room }),
  });
  const body = await resp.json();
  assert(resp.ok && typeof body.token === 'string', `token for ${user}: HTTP ${resp.status} ${JSON.stringify(body)}`);
  return body.token;
}

async function peerIds(base, room) {
  const resp = await fetch(`${base}/api/rooms/${encodeURIComponent(room)}/peers`);
  if (resp.status === 404) return [];
  const body = await resp.json();
  return body.map((p) => p.userId).sort();
}

/** The status and JSON body with which the server answers a WebSocket upgrade to `path`. */
function upgradeStatus(base, path) {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname + url.search,
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, body: null });
    });
    req.on('response', (res) => {
      let data = '';
      res.on('data', (chunk) => { data += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(data) }));
    });
    req.on('error', reject);
    req.end();
  });
}

// ---- pages ----

async function openPage(site, name, { room, server, token: tok, password, notoken }) {
  const context = await browser.newContext();
  contexts.push(context);
  // Media permission lets Chromium expose real host candidates (127.0.0.1 here) rather
  // than mDNS names, which cannot resolve on a loopback-only machine (tests/browser/README.md).
  await context.grantPermissions(['microphone', 'camera'], { origin: site });
  const page = await context.newPage();
  const logs = [];
  page.on('console', (m) => {
    logs.push(`${m.type()}: ${m.text()}`);
    if (VERBOSE) console.log(`  [${name}] ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (err) => {
    logs.push(`pageerror: ${err.message}`);
    console.log(`  [${name}] page error: ${err.message}`);
  });
  const query = new URLSearchParams({ room, server, user: name });
  if (tok) query.set('token', tok);
  if (password) query.set('password', password);
  if (notoken) query.set('notoken', '1');
  await page.goto(`${site}/index.html?${query}`);
  await page.waitForFunction(() => window.ywebrtcDemo !== undefined, null, { timeout: WAIT_MS });
  return { name, page, logs };
}

const state = (p) => p.page.evaluate(() => window.ywebrtcDemo.state());

async function insert(p, text) {
  await p.page.evaluate((t) => {
    const y = window.ywebrtcDemo.text;
    y.insert(y.length, t);
  }, text);
}

async function waitForText(p, fragment) {
  try {
    await p.page.waitForFunction((f) => window.ywebrtcDemo.text.toString().includes(f), fragment, { timeout: WAIT_MS });
  } catch {
    const s = await state(p);
    throw new Error(`${p.name} never saw ${JSON.stringify(fragment)}; state ${JSON.stringify(s)}\n${p.logs.slice(-20).join('\n')}`);
  }
}

/** Two pages edit one Y.Text and each sees the other's edit over WebRTC. */
async function twoPagesSync(site, { room, password, baseA, baseB }) {
  const [ta, tb] = await Promise.all([token(baseA, 'ann', room), token(baseB, 'ben', room)]);
  const ann = await openPage(site, 'ann', { room, server: baseA, token: ta, password });
  const ben = await openPage(site, 'ben', { room, server: baseB, token: tb, password });
  await insert(ann, 'hello from ann\n');
  await waitForText(ben, 'hello from ann');
  await insert(ben, 'hello from ben\n');
  await waitForText(ann, 'hello from ben');
  const [sa, sb] = await Promise.all([state(ann), state(ben)]);
  assert(sa.text === sb.text, `texts differ: ${JSON.stringify(sa.text)} vs ${JSON.stringify(sb.text)}`);
  for (const [who, s] of [['ann', sa], ['ben', sb]]) {
    assert(s.signalingConnected, `${who}: signaling socket not open`);
    assert(s.webrtcConnected >= 1, `${who}: no connected WebRTC peer (${JSON.stringify(s)})`);
    assert(s.broadcastChannelPeers === 0, `${who}: a BroadcastChannel peer (${JSON.stringify(s)})`);
  }
  const ids = await peerIds(baseA, room);
  assert(JSON.stringify(ids) === JSON.stringify(['ann', 'ben']), `peers of ${room}: ${JSON.stringify(ids)}`);
  return { ann, ben };
}

async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`  ok   ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.push({ name, ok: false });
    console.log(`  FAIL ${name}: ${err.stack ?? err}`);
  }
}

// ---- run ----

let failed = 1;
try {
  const site = await serveDemo();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--allow-loopback-in-peer-connection',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
    ],
  });
  console.log(`ywebrtc e2e: ${browser.version()} against ${BASE} and ${BASE_B}, demo at ${site}`);

  const plain = `yw-${TAG}`;
  let pair = null;
  await scenario('two y-webrtc pages sync one Y.Text over WebRTC, signaled by Octate', async () => {
    pair = await twoPagesSync(site, { room: plain, baseA: BASE, baseB: BASE });
  });

  await scenario('a page without a token gets the HTTP refusal and never joins', async () => {
    const refused = await upgradeStatus(BASE, '/y-webrtc');
    assert(refused.status === 401 && refused.body?.error?.code === 'unauthorized', `upgrade without a token: ${JSON.stringify(refused)}`);
    const eve = await openPage(site, 'eve', { room: plain, server: BASE, notoken: true });
    if (pair) await insert(pair.ann, 'not for eve\n');
    await sleep(3000);
    const s = await state(eve);
    assert(!s.signalingConnected, `eve's signaling socket opened: ${JSON.stringify(s)}`);
    assert(s.text === '' && s.webrtcConnected === 0, `eve joined: ${JSON.stringify(s)}`);
    const ids = await peerIds(BASE, plain);
    assert(!ids.includes('eve'), `eve is a peer: ${JSON.stringify(ids)}`);
    // Chromium reports the refused handshake (a 401 with `WWW-Authenticate: Bearer`).
    const handshake = eve.logs.find((l) => l.includes('/y-webrtc') && /401|Authentication failed/.test(l));
    assert(handshake, `eve's console shows no refused handshake:\n${eve.logs.join('\n')}`);
  });

  await scenario("a page with another room's token never joins this room", async () => {
    const other = await token(BASE, 'mal', `other-${TAG}`);
    const mal = await openPage(site, 'mal', { room: plain, server: BASE, token: other });
    if (pair) await insert(pair.ben, 'not for mal\n');
    await sleep(3000);
    const s = await state(mal);
    assert(s.text === '' && s.webrtcConnected === 0, `mal joined ${plain}: ${JSON.stringify(s)}`);
    const ids = await peerIds(BASE, plain);
    assert(!ids.includes('mal'), `mal is a peer of ${plain}: ${JSON.stringify(ids)}`);
  });

  await scenario('a password-protected room syncs too (pages on two nodes when there are two)', async () => {
    await twoPagesSync(site, { room: `yw-secret-${TAG}`, password: 'correct horse battery staple', baseA: BASE, baseB: BASE_B });
  });

  failed = summary();
} catch (err) {
  console.error(`ywebrtc e2e: ${err.stack ?? err}`);
  results.push({ name: 'setup', ok: false });
  failed = summary() || 1;
} finally {
  clearTimeout(watchdog);
  for (const context of contexts) await context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  if (staticServer) staticServer.close();
}
process.exit(failed ? 1 : 0);
