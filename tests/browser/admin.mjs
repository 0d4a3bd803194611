// End-to-end test of the admin dashboard (/admin) in a real Chromium.
//
// Usage: OCTATE_URL=http://127.0.0.1:PORT OCTATE_ADMIN_KEY=... node --experimental-websocket admin.mjs
// (run.sh starts a single server with an admin key and sets both). With
// ADMIN_SCREENSHOTS=DIR it also saves the page at 1280 and 420 px wide into DIR.
//
// Two signaling clients (this script's own WebSockets) join a fresh room; the page, opened
// with the admin key typed into its form, shows the room and its two peers; while one
// client relays messages to the other, the messages chart shows them; the Kick button,
// with its confirmation accepted, removes a peer, whose client sees its socket closed with
// 4005; Close room, confirmed, closes the room. No Content-Security-Policy violation, page
// error or failed request may happen. Exits non-zero on failure.

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.OCTATE_URL ?? '').replace(/\/+$/, '');
const ADMIN_KEY = process.env.OCTATE_ADMIN_KEY ?? '';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOTS = process.env.ADMIN_SCREENSHOTS ?? '';
const WAIT_MS = 15_000;
const OVERALL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS ?? 90_000);
// Rooms created for the pagination scenario: three pages of 50.
const MANY_ROOMS = 120;
const ROOM = `admin-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;

if (!BASE || !ADMIN_KEY) {
  console.error('admin e2e: set OCTATE_URL and OCTATE_ADMIN_KEY (the server\'s admin key)');
  process.exit(2);
}
if (typeof WebSocket !== 'function') {
  console.error('admin e2e: run with node --experimental-websocket (Node 20) or Node 22+');
  process.exit(2);
}

const results = [];
let browser = null;
const sockets = [];
const pageProblems = [];

const watchdog = setTimeout(() => {
  console.error(`admin e2e: overall timeout of ${OVERALL_TIMEOUT_MS} ms reached`);
  results.push({ name: 'overall timeout', ok: false });
  finish();
}, OVERALL_TIMEOUT_MS);

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a truthy value; throws with `what` and the last value on timeout. */
async function waitFor(what, check, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last)}`);
    await sleep(100);
  }
}

async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name}: ${err?.stack ?? err}`);
    if (pageProblems.length) console.log(`  page:\n    ${pageProblems.join('\n    ')}`);
  }
}

function finish() {
  clearTimeout(watchdog);
  for (const s of sockets) s.ws.close();
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`browser-admin: ${passed} passed, ${failed} failed`);
  const done = browser ? browser.close().catch(() => {}) : Promise.resolve();
  done.then(() => process.exit(failed ? 1 : 0));
}

// ---- signaling clients of the test's own ----

async function token(userId) {
  const resp = await fetch(`${BASE}/api/auth/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ADMIN_KEY}` },
    body: JSON.stringify({ userId, roomId: ROOM }),
  });
  assert(resp.status === 200, `token for ${userId}: HTTP ${resp.status}`);
  return (await resp.json()).token;
}

/** A client joined to ROOM as `user`; resolves once `auth-ok` arrived. */
async function joinRoom(user) {
  const ws = new WebSocket(`${BASE.replace(/^http/, 'ws')}/ws`);
  const client = { user, ws, messages: [], closed: null };
  sockets.push(client);
  ws.addEventListener('message', (event) => {
    const msg = JSON.parse(event.data);
    client.messages.push(msg);
    if (msg.type === 'heartbeat') ws.send(JSON.stringify({ type: 'pong' }));
  });
  client.closedAt = new Promise((resolve) => {
    ws.addEventListener('close', (event) => {
      client.closed = { code: event.code, reason: event.reason };
      resolve(client.closed);
    });
  });
  await new Promise((resolve, reject) => {
    ws.addEventListener('open', resolve, { once: true });
    ws.addEventListener('error', () => reject(new Error(`${user}: WebSocket failed`)), { once: true });
  });
  client.token = await token(user);
  ws.send(JSON.stringify({ type: 'auth', data: { token: client.token, userName: `${user} (test)` } }));
  await waitFor(`${user}'s auth-ok`, () => client.messages.find((m) => m.type === 'auth-ok') || client.closed);
  assert(!client.closed, `${user} was closed: ${JSON.stringify(client.closed)}`);
  return client;
}

// ---- the page ----

async function openDashboard() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    const text = m.text();
    if (m.type() === 'error' || /Content.Security.Policy/i.test(text)) pageProblems.push(`${m.type()}: ${text}`);
  });
  page.on('pageerror', (err) => pageProblems.push(`pageerror: ${err.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400) pageProblems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  const resp = await page.goto(`${BASE}/admin`);
  assert(resp.status() === 200, `GET /admin: ${resp.status()}`);
  const csp = resp.headers()['content-security-policy'] ?? '';
  assert(csp.includes("script-src 'self'") && !csp.includes('unsafe'), `CSP: ${csp}`);
  return { context, page };
}

/** The numbers the page exposes: the messages chart's newest value and point count. */
function chart(page) {
  return page.$eval('#chart-messages', (c) => ({ last: Number(c.dataset.last), points: Number(c.dataset.points) }));
}

function roomRow(page) {
  return page.locator(`tr.room-row[data-room="${ROOM}"]`);
}

function peerItem(page, user) {
  return page.locator(`tr.peers-row[data-room="${ROOM}"] li[data-user="${user}"]`);
}

async function main() {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const alice = await joinRoom('alice');
  const bob = await joinRoom('bob');
  const { page } = await openDashboard();

  await scenario('1. the key is asked once and kept for the tab only', async () => {
    await page.locator('#login').waitFor({ state: 'visible', timeout: WAIT_MS });
    assert(await page.locator('#dashboard').isHidden(), 'the dashboard shows before the key');
    await page.fill('#key', ADMIN_KEY);
    await page.click('#login button[type=submit]');
    await page.locator('#status[data-state="live"]').waitFor({ timeout: WAIT_MS });
    const stored = await page.evaluate(() => ({ session: sessionStorage.getItem('octate-admin-key'), local: localStorage.length }));
    assert(stored.session === ADMIN_KEY && stored.local === 0, `storage: ${JSON.stringify(stored)}`);
    assert(!page.url().includes(ADMIN_KEY), `the key is in the URL: ${page.url()}`);
    // A reload keeps the key (same tab); a new tab asks for it again.
    await page.reload();
    await page.locator('#status[data-state="live"]').waitFor({ timeout: WAIT_MS });
    const other = await browser.newContext();
    const otherPage = await other.newPage();
    await otherPage.goto(`${BASE}/admin`);
    await otherPage.locator('#login').waitFor({ state: 'visible', timeout: WAIT_MS });
    await other.close();
  });

  await scenario('2. the room and its peers are shown, peers only once the room is opened', async () => {
    await roomRow(page).waitFor({ timeout: WAIT_MS });
    const cells = await roomRow(page).locator('td').allTextContents();
    assert(cells[0] === ROOM && cells[3] === '2', `room row: ${JSON.stringify(cells)}`);
    assert((await page.locator('li[data-user]').count()) === 0, 'peers are shown before the room is opened');
    await roomRow(page).locator('button.toggle-peers').click();
    await peerItem(page, 'alice').waitFor({ timeout: WAIT_MS });
    await peerItem(page, 'bob').waitFor({ timeout: WAIT_MS });
    const text = await peerItem(page, 'alice').textContent();
    assert(text.includes('alice (test)') && text.includes('host'), `alice: ${text}`);
    // The filter hides rooms that do not match, and shows them again.
    await page.fill('#find', 'no-such-room');
    assert(await roomRow(page).isHidden(), 'the filter did not hide the room');
    await page.fill('#find', ROOM.slice(0, 10));
    assert(await roomRow(page).isVisible(), 'the filter hid a matching room');
    const figures = await page.evaluate(() => ({
      rooms: document.getElementById('v-rooms').textContent,
      peers: document.getElementById('v-peers').textContent,
      connections: document.getElementById('v-connections').textContent,
      nodes: [...document.querySelectorAll('#nodes li')].map((li) => li.textContent),
    }));
    assert(figures.peers === '2' && figures.connections === '2' && figures.rooms === '1', `figures: ${JSON.stringify(figures)}`);
    assert(figures.nodes.length === 1, `nodes: ${JSON.stringify(figures.nodes)}`);
  });

  await scenario('3. the messages chart moves while messages are relayed', async () => {
    const before = await page.evaluate(() => Number(document.body.dataset.relayed));
    let sent = 0;
    const relay = setInterval(() => {
      alice.ws.send(JSON.stringify({ type: 'ice-candidate', data: { peer: 'bob', candidate: { candidate: `c${sent}`, sdpMid: '0', sdpMLineIndex: 0 } } }));
      sent += 1;
    }, 40);
    try {
      const moved = await waitFor('the messages chart to show a rate above zero', async () => {
        const c = await chart(page);
        return c.last > 0 ? c : null;
      });
      const relayed = await page.evaluate(() => Number(document.body.dataset.relayed));
      assert(relayed > before, `relayed total did not grow: ${before} -> ${relayed}`);
      assert(moved.last <= 30, `rate above what was sent (25/s): ${moved.last}`);
      const received = bob.messages.filter((m) => m.type === 'ice-candidate').length;
      assert(received > 0, 'bob received no candidate');
      if (SCREENSHOTS) {
        await waitFor('half a minute of chart points', async () => (await chart(page)).points >= 30, 45_000);
        await mkdir(SCREENSHOTS, { recursive: true });
        await page.fill('#find', '');
        await page.setViewportSize({ width: 1280, height: 900 });
        await page.screenshot({ path: join(SCREENSHOTS, 'admin-1280.png'), fullPage: true });
        await page.setViewportSize({ width: 420, height: 900 });
        await sleep(1200);
        await page.screenshot({ path: join(SCREENSHOTS, 'admin-420.png'), fullPage: true });
        await page.setViewportSize({ width: 1280, height: 900 });
      }
    } finally {
      clearInterval(relay);
    }
  });

  await scenario('4. kick, once confirmed, closes the peer with 4005 and removes it', async () => {
    const kick = peerItem(page, 'bob').locator('button.kick');
    // Cancelled first: nothing happens.
    await kick.click();
    await page.locator('#confirm[open]').waitFor({ timeout: WAIT_MS });
    await page.click('#confirm-cancel');
    await sleep(500);
    assert(bob.closed === null, `bob was closed without a confirmation: ${JSON.stringify(bob.closed)}`);
    // Confirmed.
    await kick.click();
    await page.locator('#confirm[open]').waitFor({ timeout: WAIT_MS });
    const question = await page.textContent('#confirm-text');
    assert(question.includes('bob') && question.includes(ROOM), `confirmation: ${question}`);
    // Revoking the token is offered, and chosen here.
    await page.check('#confirm-revoke');
    await page.click('#confirm-ok');
    const closed = await Promise.race([bob.closedAt, sleep(WAIT_MS).then(() => null)]);
    assert(closed && closed.code === 4005, `bob's socket: ${JSON.stringify(closed)}`);
    assert(bob.messages.some((m) => m.type === 'error' && m.data?.code === 'kicked'), 'bob got no kicked error');
    const verdict = await (
      await fetch(`${BASE}/api/auth/validate`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: bob.token, userId: 'bob', roomId: ROOM }),
      })
    ).json();
    assert(verdict.valid === false && verdict.error === 'token-revoked', `bob's token after the kick: ${JSON.stringify(verdict)}`);
    await peerItem(page, 'bob').waitFor({ state: 'detached', timeout: WAIT_MS });
    await peerItem(page, 'alice').waitFor({ state: 'visible', timeout: WAIT_MS });
    await waitFor('alice to see bob leave', () => alice.messages.find((m) => m.type === 'peer-left'));
    assert(alice.closed === null, 'alice was closed');
  });


  await scenario('5. close room, once confirmed, sends room-closed and 4003 and drops the row', async () => {
    await roomRow(page).locator('button.close-room').click();
    await page.locator('#confirm[open]').waitFor({ timeout: WAIT_MS });
    const question = await page.textContent('#confirm-text');
    assert(question.includes(ROOM), `confirmation: ${question}`);
    await page.click('#confirm-ok');
    const closed = await Promise.race([alice.closedAt, sleep(WAIT_MS).then(() => null)]);
    assert(closed && closed.code === 4003, `alice's socket: ${JSON.stringify(closed)}`);
    assert(alice.messages.some((m) => m.type === 'room-closed'), 'alice got no room-closed');
    await roomRow(page).waitFor({ state: 'detached', timeout: WAIT_MS });
  });

  await scenario('6. many rooms: one page of 50 rows at a time, peers never listed', async () => {
    // The closed room is gone; 120 empty rooms of this run (each with its own host,
    // under the per-user room limit) make three pages.
    const created = await Promise.all(
      Array.from({ length: MANY_ROOMS }, (_, i) =>
        fetch(`${BASE}/api/rooms`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${ADMIN_KEY}` },
          body: JSON.stringify({
            roomId: `${ROOM}-${String(i).padStart(3, '0')}`,
            roomName: `Room ${i}`,
            hostId: `host-${i}`,
            hostName: `Host ${i}`,
          }),
        }).then((r) => r.status),
      ),
    );
    assert(created.every((status) => status === 201), `room creation: ${JSON.stringify([...new Set(created)])}`);
    await page.fill('#find', '');
    await page.click('#refresh');
    const pageSizes = [];
    for (;;) {
      const rows = await waitFor('a page of rooms', async () => {
        const n = await page.locator('tr.room-row').count();
        return n > 0 ? n : null;
      });
      pageSizes.push(rows);
      assert((await page.locator('li[data-user]').count()) === 0, 'peers listed without opening a room');
      if (await page.locator('#next').isDisabled()) break;
      const first = await page.locator('tr.room-row').first().getAttribute('data-room');
      await page.click('#next');
      await waitFor('the next page', async () => (await page.locator('tr.room-row').first().getAttribute('data-room')) !== first);
      assert(pageSizes.length < 10, `too many pages: ${pageSizes}`);
    }
    assert(JSON.stringify(pageSizes) === '[50,50,20]', `page sizes: ${JSON.stringify(pageSizes)}`);
    await page.click('#prev');
    await waitFor('the previous page', async () => (await page.locator('tr.room-row').count()) === 50);
    assert((await page.textContent('#page')) === 'page 2', `pager: ${await page.textContent('#page')}`);
    // Enter in Find opens a room by its exact id, wherever it is in the list.
    const wanted = `${ROOM}-007`;
    await page.fill('#find', wanted);
    await page.press('#find', 'Enter');
    await page.locator(`tr.peers-row[data-room="${wanted}"]`).getByText('No peers.').waitFor({ timeout: WAIT_MS });
  });

  await scenario('7. no page error and no Content-Security-Policy violation', async () => {
    assert(pageProblems.length === 0, `page problems:\n${pageProblems.join('\n')}`);
  });
}

main().then(finish, (err) => {
  console.log(`FAIL admin e2e: ${err?.stack ?? err}`);
  results.push({ name: 'setup', ok: false });
  finish();
});
