// End-to-end test of the browser demo (examples/browser) in a real Chromium.
//
// Usage: OCTATE_URL=http://127.0.0.1:PORT node e2e.mjs  (run.sh starts the server and sets it)
// With OCTATE_URL_B (a second node of the same cluster) it also runs the two-node scenario;
// with E2E_TURN=1 (OCTATE_URL_B handing out TURN credentials) the relay-only one; with
// OCTATE_URL_SOLO (a single server, where sessions resume) the resume one.
// Every page is the real demo page, in its own browser context; pages talk to each other
// over real RTCPeerConnections negotiated through the Octate server. Exits non-zero on failure.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

// A direct pair: our host candidate and the other side's host candidate, or the same
// address learned from its connectivity check ('prflx') when the check outran the
// candidate's signaling message. The namespace has only loopback and the demo pages use
// no STUN or TURN server, so 'srflx' and 'relay' cannot appear; any other type is a failure.
const DIRECT_REMOTE = new Set(['host', 'prflx']);

const BASE = (process.env.OCTATE_URL ?? '').replace(/\/+$/, '');
// A second node of BASE's cluster (same Redis, same token secret); run.sh starts it.
const BASE_B = (process.env.OCTATE_URL_B ?? '').replace(/\/+$/, '');
// A single server (no cluster: sessions resume) with the same token secret; run.sh starts it.
const BASE_SOLO = (process.env.OCTATE_URL_SOLO ?? '').replace(/\/+$/, '');
// Whether BASE_B hands out credentials of a TURN server, and the TURN server's relay
// addresses as `IP:MIN-MAX` (run.sh starts coturn and sets both).
const TURN = process.env.E2E_TURN === '1';
const TURN_RELAY = process.env.E2E_TURN_RELAY ?? '';
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OVERALL_TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS ?? 120_000);
const WAIT_MS = 15_000;
const ROOM = `e2e-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
const VERBOSE = process.env.E2E_VERBOSE === '1';
// The native Rust WebRTC peer (examples/webrtc_peer.rs); run.sh builds it and sets RUST_PEER.
const RUST_PEER = process.env.RUST_PEER ?? fileURLToPath(new URL('../../target/debug/examples/webrtc_peer', import.meta.url));

if (!BASE) {
  console.error('e2e: set OCTATE_URL to the server, e.g. http://127.0.0.1:3000');
  process.exit(2);
}

const results = [];
let browser = null;

function summary() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(`browser-e2e: ${passed} passed, ${failed} failed`);
  return failed;
}

const watchdog = setTimeout(() => {
  console.error(`e2e: overall timeout of ${OVERALL_TIMEOUT_MS} ms reached`);
  results.push({ name: 'overall timeout', ok: false });
  summary();
  killRustPeers();
  process.exit(1);
}, OVERALL_TIMEOUT_MS);

// ---- helpers ----

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns a truthy value; throws with `what` and the last value on timeout. */
async function waitFor(what, check, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last && last.ok !== false) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last seen: ${JSON.stringify(last?.seen ?? last)}`);
    await sleep(50);
  }
}

/** Runs `fn` in the page with the demo hooks as its argument. */
function demo(peer, fn, arg) {
  return peer.page.evaluate(([src, a]) => {
    // eslint-disable-next-line no-new-func
    const f = new Function('d', 'arg', `return (${src})(d, arg);`);
    return f(window.octateDemo, a);
  }, [fn.toString(), arg]);
}

const pages = new Map();

/** Opens the demo as `user` in its own browser context, served by the node at `base`. */
async function openPeer(user, { forgeToken = false, room = ROOM, base = BASE } = {}) {
  const context = await browser.newContext();
  // Media permission lets Chromium expose real host candidates (127.0.0.1 here) rather
  // than mDNS names, which cannot resolve on a loopback-only machine.
  await context.grantPermissions(['microphone', 'camera'], { origin: base });
  const page = await context.newPage();
  const peer = { user, context, page, base, logs: [] };
  page.on('console', (m) => {
    peer.logs.push(`${m.type()}: ${m.text()}`);
    if (VERBOSE) console.log(`  [${user}] ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (err) => {
    peer.logs.push(`pageerror: ${err.message}`);
    console.log(`  [${user}] page error: ${err.message}`);
  });
  if (forgeToken) {
    // The page asks its origin for a token as usual; the answer is a real token with one
    // character of its signature changed.
    await page.route('**/api/auth/token', async (route) => {
      const response = await route.fetch();
      const body = await response.json();
      body.token = forge(body.token);
      peer.forgedToken = body.token;
      await route.fulfill({ response, json: body });
    });
  }
  await page.goto(`${base}/?room=${encodeURIComponent(room)}&user=${encodeURIComponent(user)}${VERBOSE ? "&debug" : ""}`);
  await page.waitForFunction(() => window.octateDemo !== undefined, null, { timeout: WAIT_MS });
  pages.set(user, peer);
  return peer;
}

async function closePeer(peer) {
  pages.delete(peer.user);
  await peer.context.close();
}

/** Flips one character in the middle of the token's signature (`PAYLOAD.SIGNATURE`). */
function forge(token) {
  const dot = token.indexOf('.');
  assert(dot > 0 && token.length - dot > 20, `unexpected token layout: ${token}`);
  const i = dot + 10;
  const flipped = token[i] === 'A' ? 'B' : 'A';
  return token.slice(0, i) + flipped + token.slice(i + 1);
}

async function ready(peer) {
  const ok = await demo(peer, (d) => d.ready);
  assert(ok, `${peer.user} could not join: ${JSON.stringify(await demo(peer, (d) => d.state))}`);
}

/** Waits until `peer` has an open data channel with exactly `others`. */
async function waitOpen(peer, others) {
  const want = [...others].sort();
  await waitFor(`${peer.user} to have open channels with ${want}`, async () => {
    const open = await demo(peer, (d) => d.openPeers());
    return { ok: JSON.stringify(open) === JSON.stringify(want), seen: open };
  });
}

/** Waits until every peer's document (and textarea) holds the same text; returns it. */
async function waitConverged(peers, what, predicate = () => true) {
  const out = await waitFor(`documents to converge (${what})`, async () => {
    const texts = await Promise.all(peers.map((p) => demo(p, (d) => ({ text: d.text, editor: d.editorText }))));
    const first = texts[0].text;
    const ok = texts.every((t) => t.text === first && t.editor === first) && predicate(first);
    return { ok, text: first, seen: Object.fromEntries(peers.map((p, i) => [p.user, texts[i]])) };
  });
  return out.text;
}

async function serverJson(path, base = BASE) {
  const resp = await fetch(`${base}${path}`);
  return { status: resp.status, body: await resp.json() };
}

/** Every Rust peer started, for the failure report and the final cleanup. */
const rustPeers = [];

/**
 * Starts the native Rust WebRTC peer (examples/webrtc_peer.rs) against the server, with
 * `--print` and the given arguments. `exited` resolves with its exit code once its output
 * is complete.
 */
function startRustPeer(name, args) {
  assert(existsSync(RUST_PEER), `the Rust peer is not built at ${RUST_PEER} (cargo build --example webrtc_peer)`);
  // Its signaling steps (`--verbose`, on stderr) are kept, and shown on failure.
  const argv = ['--http', BASE, '--print', '--verbose', ...args.filter((a) => a !== '--verbose')];
  const child = spawn(RUST_PEER, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const peer = { name, argv, child, stdout: '', stderr: '', reported: false };
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  for (const stream of ['stdout', 'stderr']) {
    let partial = '';
    child[stream].on('data', (d) => {
      peer[stream] += d;
      if (!VERBOSE) return;
      const lines = (partial + d).split('\n');
      partial = lines.pop();
      for (const line of lines) console.log(`  [${name}] ${line}`);
    });
  }
  peer.exited = new Promise((resolve) => {
    child.on('error', (err) => resolve({ code: null, error: String(err) }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  rustPeers.push(peer);
  return peer;
}

/** Waits for the Rust peer to exit; throws if it is still running after `ms`. */
async function rustPeerExit(peer, ms = WAIT_MS) {
  const exit = await Promise.race([peer.exited, sleep(ms).then(() => null)]);
  if (!exit) throw new Error(`${peer.name} still running after ${ms} ms`);
  // Its workaround for a webrtc-rs race (see examples/README.md) is worth a line.
  const rejoins = (peer.stderr.match(/webrtc-rs\/webrtc#821/g) ?? []).length;
  if (rejoins) {
    console.log(`  note: ${peer.name} re-joined ${rejoins}x: its data channel did not open (webrtc-rs/webrtc#821)`);
    if (!VERBOSE) console.log(`    ${peer.stderr.trim().split('\n').slice(-40).join('\n    ')}`);
  }
  return exit;
}

/** The Rust peer's last `PREFIX <JSON string>` line (`doc`, `final`), decoded. */
function rustPeerLine(peer, prefix) {
  const line = peer.stdout.split('\n').filter((l) => l.startsWith(`${prefix} `)).pop();
  return line === undefined ? undefined : JSON.parse(line.slice(prefix.length + 1));
}

function killRustPeers() {
  for (const p of rustPeers) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
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
    for (const p of rustPeers.filter((r) => !r.reported)) {
      p.reported = true;
      const tail = (t) => t.trim().split('\n').slice(-30).join('\n    ');
      console.log(`  Rust peer ${p.name} (${p.argv.join(' ')}), exit ${JSON.stringify(p.child.exitCode)}:\n    ${tail(p.stdout)}\n    ${tail(p.stderr)}`);
    }
    killRustPeers();
    for (const p of pages.values()) {
      if (p.logs.length) console.log(`  console of ${p.user}:\n    ${p.logs.slice(-20).join('\n    ')}`);
      const links = await p.page.evaluate(() => {
        const c = window.octateDemo?.client;
        if (!c) return null;
        return c.peers.map((peer) => {
          const pc = c.peerConnection(peer.userId);
          return { peer: peer.userId, signaling: pc?.signalingState, ice: pc?.iceConnectionState, connection: pc?.connectionState };
        });
      }).catch((e) => String(e));
      console.log(`  links of ${p.user}: ${JSON.stringify(links)}`);
      const glare = await p.page.evaluate(() => window.__glare?.lines).catch(() => null);
      if (glare) console.log(`  signaling steps of the extra client in ${p.user}'s page:\n    ${glare.slice(-30).join('\n    ')}`);
      const relay = await p.page.evaluate(() => window.__relay && {
        iceServers: window.__relay.c.iceServers.map((s) => s.urls),
        links: window.__relay.c.peers.map((peer) => window.__relay.c.peerConnection(peer.userId)).map((pc) => pc && [pc.iceGatheringState, pc.iceConnectionState]),
        lines: window.__relay.lines.slice(-30),
      }).catch(() => null);
      if (relay) console.log(`  the relay-only client in ${p.user}'s page: ${JSON.stringify(relay, null, 1)}`);
    }
  }
}

// ---- scenarios ----

const contents = [];
let alice;
let bob;

async function twoPeers() {
  alice = await openPeer('alice');
  bob = await openPeer('bob');
  await editTogether(alice, bob);
  contents.push('Hello world', 'ALPHA', 'BRAVO');
}

/**
 * Two fresh pages of one room connect over WebRTC, type, make concurrent edits and converge;
 * each sees the other's cursor.
 */
async function editTogether(alice, bob) {
  await Promise.all([ready(alice), ready(bob)]);
  await Promise.all([waitOpen(alice, [bob.user]), waitOpen(bob, [alice.user])]);

  // Real typing in the page's textarea.
  await alice.page.click('#editor');
  await alice.page.keyboard.type('Hello world');
  await waitConverged([alice, bob], `typed by ${alice.user}`, (t) => t === 'Hello world');
  await bob.page.click('#editor');
  await bob.page.keyboard.press('End');
  await bob.page.keyboard.type('!');
  await waitConverged([alice, bob], `typed by ${bob.user}`, (t) => t === 'Hello world!');

  // Concurrent inserts at the same position: each side holds the other's edits until
  // both have edited, so neither has seen the other's insert when making its own.
  await Promise.all([demo(alice, (d) => d.hold(true)), demo(bob, (d) => d.hold(true))]);
  const [a1, b1] = await Promise.all([
    demo(alice, (d) => d.insert(5, ' ALPHA')),
    demo(bob, (d) => d.insert(5, ' BRAVO')),
  ]);
  assert(a1 === 'Hello ALPHA world!' && b1 === 'Hello BRAVO world!', `edits were not concurrent: ${a1} / ${b1}`);
  await Promise.all([demo(alice, (d) => d.hold(false)), demo(bob, (d) => d.hold(false))]);
  const merged = await waitConverged([alice, bob], 'concurrent inserts at one position', (t) => t.includes(' ALPHA') && t.includes(' BRAVO'));
  assert(merged === 'Hello ALPHA BRAVO world!' || merged === 'Hello BRAVO ALPHA world!', `unexpected merge: ${merged}`);

  // Concurrent delete and insert over the same range.
  await Promise.all([demo(alice, (d) => d.hold(true)), demo(bob, (d) => d.hold(true))]);
  await Promise.all([demo(alice, (d) => d.remove(0, 6)), demo(bob, (d) => d.insert(3, 'XYZ'))]);
  await Promise.all([demo(alice, (d) => d.hold(false)), demo(bob, (d) => d.hold(false))]);
  const merged2 = await waitConverged([alice, bob], 'concurrent delete and insert', (t) => t.includes('XYZ'));
  assert(!merged2.includes('Hello') && merged2.startsWith('XYZ'), `unexpected merge: ${merged2}`);

  // Edits really went over the data channels as operations.
  const [sa, sb] = await Promise.all([demo(alice, (d) => d.stats), demo(bob, (d) => d.stats)]);
  assert(sa.opsReceived > 0 && sb.opsReceived > 0, `no operations received: ${JSON.stringify({ sa, sb })}`);

  // Cursor positions are relayed by the server.
  await waitFor('cursor positions to be shown', async () => {
    const [ca, cb] = await Promise.all([demo(alice, (d) => d.cursors()), demo(bob, (d) => d.cursors())]);
    return { ok: Boolean(ca[bob.user] && cb[alice.user]), seen: { ca, cb } };
  });
}

async function threePeersThenOneLeaves() {
  const carol = await openPeer('carol');
  await ready(carol);
  await Promise.all([waitOpen(alice, ['bob', 'carol']), waitOpen(bob, ['alice', 'carol']), waitOpen(carol, ['alice', 'bob'])]);
  // Carol catches up with the document from the others.
  const before = await demo(alice, (d) => d.text);
  await waitConverged([alice, bob, carol], 'carol caught up', (t) => t === before);

  // Everyone edits at the same position at once.
  const all = [alice, bob, carol];
  await Promise.all(all.map((p) => demo(p, (d) => d.hold(true))));
  await Promise.all(all.map((p) => demo(p, (d, who) => d.insert(0, `[${who}]`), p.user)));
  await Promise.all(all.map((p) => demo(p, (d) => d.hold(false))));
  contents.push('[carol]');
  await waitConverged(all, 'three concurrent inserts', (t) => ['[alice]', '[bob]', '[carol]'].every((s) => t.includes(s)));

  await closePeer(carol);
  for (const p of [alice, bob]) {
    await waitFor(`${p.user} to see carol leave`, async () => {
      const s = await demo(p, (d) => ({ events: d.state.events, peers: d.peers(), open: d.openPeers() }));
      const left = s.events.some((e) => e.type === 'peer-left' && e.peerId === 'carol');
      return { ok: left && !s.peers.includes('carol') && !s.open.includes('carol'), seen: s.peers };
    });
  }
  // The two left keep editing and converging.
  await Promise.all([demo(alice, (d) => d.hold(true)), demo(bob, (d) => d.hold(true))]);
  await Promise.all([demo(alice, (d) => d.insert(d.text.length, ' after-a')), demo(bob, (d) => d.insert(d.text.length, ' after-b'))]);
  await Promise.all([demo(alice, (d) => d.hold(false)), demo(bob, (d) => d.hold(false))]);
  await waitConverged([alice, bob], 'edits after carol left', (t) => t.includes(' after-a') && t.includes(' after-b'));
  const open = await Promise.all([demo(alice, (d) => d.openPeers()), demo(bob, (d) => d.openPeers())]);
  assert(JSON.stringify(open) === JSON.stringify([['bob'], ['alice']]), `unexpected open channels: ${JSON.stringify(open)}`);
}

async function forgedTokenRefused() {
  const mallory = await openPeer('mallory', { forgeToken: true });
  const joined = await demo(mallory, (d) => d.ready);
  assert(joined === false, 'a forged token was accepted');
  const s = await waitFor('mallory to be closed', async () => {
    const st = await demo(mallory, (d) => d.state);
    return { ok: st.closed, ...st };
  });
  assert(s.errors.some((e) => e.code === 'token-bad-signature'), `expected token-bad-signature, got ${JSON.stringify(s.errors)}`);
  assert(s.closeCode === 4001, `expected close 4001, got ${s.closeCode}`);
  assert(mallory.forgedToken, 'the forged token was not served');
  await sleep(300);
  for (const p of [alice, bob]) {
    const st = await demo(p, (d) => ({ seen: d.state.seenPeers, peers: d.peers() }));
    assert(!st.seen.includes('mallory') && !st.peers.includes('mallory'), `${p.user} saw mallory: ${JSON.stringify(st)}`);
  }
  const peers = await serverJson(`/api/rooms/${ROOM}/peers`);
  assert(peers.status === 200, `GET peers: HTTP ${peers.status}`);
  const ids = peers.body.map((p) => p.userId).sort();
  assert(JSON.stringify(ids) === '["alice","bob"]', `server lists ${JSON.stringify(ids)}`);
  await closePeer(mallory);
}

async function dataFlowsPeerToPeer() {
  // A little more traffic on the data path.
  await demo(alice, (d) => d.insert(0, 'p2p '));
  await waitConverged([alice, bob], 'last edit', (t) => t.startsWith('p2p '));
  for (const [p, other] of [[alice, 'bob'], [bob, 'alice']]) {
    const report = await p.page.evaluate(async (peerId) => {
      const pc = window.octateDemo.client.peerConnection(peerId);
      if (!pc) return null;
      const stats = [...(await pc.getStats()).values()];
      const byId = new Map(stats.map((s) => [s.id, s]));
      const transport = stats.find((s) => s.type === 'transport');
      const pairs = stats.filter((s) => s.type === 'candidate-pair');
      const selected = byId.get(transport?.selectedCandidatePairId) ?? pairs.find((s) => s.nominated && s.state === 'succeeded');
      const dc = stats.find((s) => s.type === 'data-channel');
      return {
        connectionState: pc.connectionState,
        pairs: pairs.map((s) => ({ state: s.state, nominated: s.nominated, bytesSent: s.bytesSent, bytesReceived: s.bytesReceived })),
        selected: selected && {
          state: selected.state,
          bytesSent: selected.bytesSent,
          bytesReceived: selected.bytesReceived,
          local: byId.get(selected.localCandidateId)?.address,
          remote: byId.get(selected.remoteCandidateId)?.address,
          localType: byId.get(selected.localCandidateId)?.candidateType,
          remoteType: byId.get(selected.remoteCandidateId)?.candidateType,
        },
        dataChannel: dc && { state: dc.state, messagesSent: dc.messagesSent, messagesReceived: dc.messagesReceived },
      };
    }, other);
    assert(report, `${p.user} has no connection to ${other}`);
    if (VERBOSE) console.log(`  ${p.user}→${other}: ${JSON.stringify(report)}`);
    const ok = report.pairs.some((s) => s.state === 'succeeded' && s.bytesSent > 0 && s.bytesReceived > 0);
    assert(ok, `${p.user}: no succeeded candidate pair carried data: ${JSON.stringify(report)}`);
    assert(report.connectionState === 'connected', `${p.user}: connection ${report.connectionState}`);
    assert(report.selected?.state === 'succeeded' && report.selected.bytesSent > 0 && report.selected.bytesReceived > 0,
      `${p.user}: selected pair did not carry data: ${JSON.stringify(report.selected)}`);
    assert(report.selected.localType === 'host' && DIRECT_REMOTE.has(report.selected.remoteType),
      `${p.user}: the selected pair is not direct (host to host): ${JSON.stringify(report.selected)}`);
    assert(report.dataChannel?.messagesSent > 0 && report.dataChannel?.messagesReceived > 0,
      `${p.user}: data channel idle: ${JSON.stringify(report.dataChannel)}`);
  }

  // The server relayed signaling only, and never saw the document.
  const resp = await fetch(`${BASE}/metrics`);
  const text = await resp.text();
  const relayed = {};
  for (const m of text.matchAll(/^octate_messages_relayed(?:_total)?\{type="([^"]+)"\}\s+(\d+)/gm)) relayed[m[1]] = Number(m[2]);
  if (VERBOSE) console.log(`  relayed: ${JSON.stringify(relayed)}`);
  const allowed = ['sdp-offer', 'sdp-answer', 'ice-candidate', 'presence', 'cursor-update'];
  assert(Object.keys(relayed).length > 0, `no relayed-message metrics in /metrics:\n${text}`);
  for (const type of Object.keys(relayed)) assert(allowed.includes(type), `relayed an unexpected type: ${type}`);
  for (const type of ['sdp-offer', 'sdp-answer', 'ice-candidate']) assert(relayed[type] > 0, `no ${type} relayed: ${JSON.stringify(relayed)}`);
  const stats = await serverJson('/stats');
  const blobs = text + JSON.stringify(stats.body) + JSON.stringify((await serverJson(`/api/rooms/${ROOM}`)).body);
  for (const c of contents) assert(!blobs.includes(c), `server output mentions document content "${c}"`);
}

async function reconnectsAfterDrop() {
  // Drop bob's signaling WebSocket as a network failure would; the client must come back
  // with a fresh token, rejoin, renegotiate with alice, and keep converging.
  await demo(bob, (d) => d.client._ws.close());
  await waitFor('bob to reconnect', async () => {
    const s = await demo(bob, (d) => d.state.events.filter((e) => e.type === 'connected' && e.reconnected).length);
    return { ok: s > 0, seen: s };
  });
  await waitFor('alice to see bob leave and come back', async () => {
    const ev = await demo(alice, (d) => d.state.events.filter((e) => e.peerId === 'bob').map((e) => e.type));
    const left = ev.lastIndexOf('peer-left');
    return { ok: left >= 0 && ev.indexOf('peer-joined', left) > left, seen: ev };
  });
  await Promise.all([waitOpen(alice, ['bob']), waitOpen(bob, ['alice'])]);
  await Promise.all([demo(alice, (d) => d.insert(0, 'A1 ')), demo(bob, (d) => d.insert(d.text.length, ' B1'))]);
  await waitConverged([alice, bob], 'edits after reconnect', (t) => t.startsWith('A1 ') && t.endsWith(' B1'));
}

/**
 * A TCP proxy on a free loopback port to `port` that `cut()` breaks as a network failure
 * would (no close frame either way) and that refuses connections while `blocked`.
 */
async function tcpProxy(port) {
  const pairs = new Set();
  const proxy = { blocked: false };
  const server = net.createServer((a) => {
    if (proxy.blocked) return a.destroy();
    const b = net.connect(Number(port), '127.0.0.1');
    const pair = [a, b];
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      a.destroy();
      b.destroy();
    };
    for (const s of pair) s.on('error', end).on('close', end);
    a.pipe(b);
    b.pipe(a);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.port = server.address().port;
  proxy.cut = () => {
    for (const pair of pairs) for (const s of pair) s.resetAndDestroy?.() ?? s.destroy();
    pairs.clear();
  };
  proxy.close = () => {
    proxy.cut();
    return new Promise((resolve) => server.close(resolve));
  };
  return proxy;
}

async function resumeKeepsChannels() {
  // Two clients of @octate/client in two pages, signaling through the single server
  // BASE_SOLO (tokens from the pages' node are good there: same secret); bob's goes through a
  // TCP proxy in this process, which cuts it as a network failure would. Bob resumes his
  // session: alice never sees him leave, and their data channel, which does not go through
  // the server, carries messages during the cut and after it.
  const room = `${ROOM}-resume`;
  const proxy = await tcpProxy(new URL(BASE_SOLO).port);
  try {
    const start = (peer, id, url) => demo(peer, async (d, { id, room, url }) => {
      const { OctateClient, getToken } = await import('/octate-client.js');
      const events = [];
      const c = new OctateClient({ url, getToken: () => getToken('', id, room), reconnectBaseMs: 100, reconnectMaxMs: 300, connectTimeoutMs: 2000 });
      for (const type of ['peer-left', 'peer-joined', 'resumed', 'connected', 'channel-open', 'channel-closed', 'disconnected']) {
        c.addEventListener(type, (e) => events.push({ type, peer: e.detail?.peer?.userId ?? e.detail?.peerId ?? null }));
      }
      const got = [];
      c.addEventListener('message', (e) => got.push(e.detail.data));
      window.__resume = { c, events, got };
      await c.connect();
      return true;
    }, { id, room, url });
    await start(alice, 'r-alice', `ws://${new URL(BASE_SOLO).host}/ws`);
    await start(bob, 'r-bob', `ws://127.0.0.1:${proxy.port}/ws`);
    const opened = (peer, other) => waitFor(`${other}'s channel`, async () => {
      const open = await demo(peer, () => window.__resume.c.openPeers);
      return { ok: open.includes(other), seen: open };
    });
    await Promise.all([opened(alice, 'r-bob'), opened(bob, 'r-alice')]);

    proxy.blocked = true;
    proxy.cut();
    await waitFor('bob to notice the cut', async () => {
      const ev = await demo(bob, () => window.__resume.events.map((e) => e.type));
      return { ok: ev.includes('disconnected'), seen: ev };
    });
    // The signaling is down; the data channel is not.
    const sent = await demo(alice, () => window.__resume.c.send('r-bob', { during: 'cut' }));
    assert(sent, 'alice\'s channel to bob is not open during the cut');
    await waitFor('bob to get a message during the cut', async () => {
      const seen = await demo(bob, () => ({ got: window.__resume.got, events: window.__resume.events, open: window.__resume.c.openPeers, state: window.__resume.c.state }));
      return { ok: seen.got.some((m) => m.during === 'cut'), seen };
    });
    // Five seconds without signaling, shorter than the solo server's grace (8 s).
    await sleep(5000);
    proxy.blocked = false;
    await waitFor('bob to resume', async () => {
      const ev = await demo(bob, () => window.__resume.events.map((e) => e.type));
      return { ok: ev.includes('resumed'), seen: ev };
    });
    await demo(bob, () => window.__resume.c.send('r-alice', { after: 'resume' }));
    await waitFor('alice to get a message after the resume', async () => {
      const got = await demo(alice, () => window.__resume.got);
      return { ok: got.some((m) => m.after === 'resume'), seen: got };
    });
    const [aliceEvents, bobEvents] = await Promise.all([demo(alice, () => window.__resume.events), demo(bob, () => window.__resume.events)]);
    const count = (events, type) => events.filter((e) => e.type === type).length;
    assert(count(aliceEvents, 'peer-left') === 0 && count(aliceEvents, 'peer-joined') === 1, `alice saw bob leave or come back: ${JSON.stringify(aliceEvents)}`);
    assert(count(bobEvents, 'connected') === 1 && count(bobEvents, 'resumed') === 1, `bob did not resume: ${JSON.stringify(bobEvents)}`);
    for (const [name, events] of [['alice', aliceEvents], ['bob', bobEvents]]) {
      assert(count(events, 'channel-closed') === 0 && count(events, 'channel-open') === 1, `${name}'s channel closed or reopened: ${JSON.stringify(events)}`);
    }

    // Now a cut longer than the grace: alice sees bob leave exactly once (timeout), and
    // bob comes back with a fresh auth (his resume fails) and is announced again.
    proxy.blocked = true;
    proxy.cut();
    await waitFor('alice to see bob time out', async () => {
      const ev = await demo(alice, () => window.__resume.events);
      return { ok: count(ev, 'peer-left') === 1, seen: ev };
    }, 20000);
    await sleep(1000);
    proxy.blocked = false;
    await waitFor('bob to be announced again', async () => {
      const ev = await demo(alice, () => window.__resume.events);
      return { ok: count(ev, 'peer-joined') === 2, seen: ev };
    }, 20000);
    const after = await demo(alice, () => window.__resume.events);
    assert(count(after, 'peer-left') === 1, `alice saw bob leave more than once: ${JSON.stringify(after)}`);
  } finally {
    await Promise.all([demo(alice, () => window.__resume?.c.close()), demo(bob, () => window.__resume?.c.close())]).catch(() => {});
    await proxy.close();
  }
}

async function simultaneousOffers() {
  // Two clients of the library itself, loaded in two demo pages, where the peer already in
  // the room does not wait for the newcomer's offer: both offer at once, and perfect
  // negotiation must settle it (the impolite end ignores the offer, the polite end yields).
  // Then both restart ICE at once on the live connection: a second collision, settled by
  // rolling the polite end's offer back.
  const room = `${ROOM}-glare`;
  let collisions = 0;
  for (let round = 1; round <= Number(process.env.E2E_GLARE_ROUNDS ?? 3); round++) {
    const ids = round % 2 ? [`g${round}-a`, `g${round}-b`] : [`g${round}-b`, `g${round}-a`];
    const start = (peer, id) => demo(peer, async (d, { id, room }) => {
      const { OctateClient, getToken } = await import('/octate-client.js');
      const lines = [];
      const c = new OctateClient({
        url: `ws://${location.host}/ws`,
        getToken: () => getToken('', id, room),
        offerFallbackMs: 0,
        debug: (l) => lines.push(l),
      });
      const got = [];
      c.addEventListener('message', (e) => got.push(e.detail.data));
      window.__glare = { c, lines, got };
      await c.connect();
      return true;
    }, { id, room });
    await start(alice, ids[0]);
    await start(bob, ids[1]);
    const opened = (peer, other) => waitFor(`${other} channel in round ${round}`, async () => {
      const open = await demo(peer, () => window.__glare.c.openPeers);
      return { ok: open.includes(other), seen: open };
    });
    await Promise.all([opened(alice, ids[1]), opened(bob, ids[0])]);
    await Promise.all([
      demo(alice, (d, to) => window.__glare.c.send(to, { hi: 'from alice' }), ids[1]),
      demo(bob, (d, to) => window.__glare.c.send(to, { hi: 'from bob' }), ids[0]),
    ]);
    await waitFor(`messages in round ${round}`, async () => {
      const got = await Promise.all([demo(alice, () => window.__glare.got), demo(bob, () => window.__glare.got)]);
      return { ok: got[0].length === 1 && got[1].length === 1, seen: got };
    });
    // ICE restarts from both ends at once, on the connected link.
    await Promise.all([
      demo(alice, (d, to) => window.__glare.c.peerConnection(to).restartIce(), ids[1]),
      demo(bob, (d, to) => window.__glare.c.peerConnection(to).restartIce(), ids[0]),
    ]);
    await waitFor(`ICE restart to settle in round ${round}`, async () => {
      const st = await Promise.all([
        demo(alice, (d, to) => { const pc = window.__glare.c.peerConnection(to); return [pc.signalingState, pc.connectionState]; }, ids[1]),
        demo(bob, (d, to) => { const pc = window.__glare.c.peerConnection(to); return [pc.signalingState, pc.connectionState]; }, ids[0]),
      ]);
      return { ok: st.every(([sig, conn]) => sig === 'stable' && conn === 'connected'), seen: st };
    });
    await Promise.all([
      demo(alice, (d, to) => window.__glare.c.send(to, { again: 'from alice' }), ids[1]),
      demo(bob, (d, to) => window.__glare.c.send(to, { again: 'from bob' }), ids[0]),
    ]);
    await waitFor(`messages after the ICE restart in round ${round}`, async () => {
      const got = await Promise.all([demo(alice, () => window.__glare.got), demo(bob, () => window.__glare.got)]);
      return { ok: got[0].length === 2 && got[1].length === 2, seen: got };
    });
    const lines = [...(await demo(alice, () => window.__glare.lines)), ...(await demo(bob, () => window.__glare.lines))];
    collisions += lines.filter((l) => l.includes('collision=true')).length;
    if (VERBOSE) console.log(`  round ${round}: ${lines.filter((l) => l.includes('collision')).join(' | ')}`);
    await Promise.all([demo(alice, () => window.__glare.c.close()), demo(bob, () => window.__glare.c.close())]);
  }
  assert(collisions > 0, 'no offer collision happened; perfect negotiation was not exercised');
}

async function rustPeerInterop() {
  // A native WebRTC peer in Rust (examples/webrtc_peer.rs: webrtc-rs + yrs) edits the demo's
  // document with a browser page, through the same server, messages and data channel.
  // Round 1: the page is in the room first, so the Rust peer (the newcomer) offers.
  // Round 2: the Rust peer is there first, so the page offers and the Rust peer answers.
  for (const [round, rustFirst] of [[1, false], [2, true]]) {
    const room = `${ROOM}-rust${round}`;
    const user = `rusty${round}`;
    const fromRust = `rust${round}-was-here `;
    const fromPage = ` page${round}-was-here`;
    const start = () =>
      startRustPeer(user, ['--room', room, '--user', user, '--insert', fromRust, '--expect', fromPage.trim(), '--timeout', '30']);
    let rust;
    let page;
    if (rustFirst) {
      rust = start();
      await waitFor(`${user} to join`, async () => ({ ok: rust.stdout.includes('joined '), seen: rust.stdout + rust.stderr }));
      page = await openPeer(`page${round}`, { room });
      await ready(page);
    } else {
      page = await openPeer(`page${round}`, { room });
      await ready(page);
      rust = start();
    }
    await waitOpen(page, [user]);
    // The Rust peer's insert arrives as a RemoteOperation and lands in the page's document.
    await waitFor(`the page to get ${user}'s text`, async () => {
      const t = await demo(page, (d) => d.text);
      return { ok: t.includes(fromRust), seen: t };
    });
    // A direct connection: the page's selected candidate pair is host to host (127.0.0.x).
    const link = await waitFor(`the page's selected candidate pair with ${user}`, async () => {
      const seen = await page.page.evaluate(async (peerId) => {
        const pc = window.octateDemo.client.peerConnection(peerId);
        if (!pc) return null;
        const stats = [...(await pc.getStats()).values()];
        const byId = new Map(stats.map((s) => [s.id, s]));
        const pair = byId.get(stats.find((s) => s.type === 'transport')?.selectedCandidatePairId);
        const end = (id) => byId.get(id) && { type: byId.get(id).candidateType, address: byId.get(id).address };
        return { connection: pc.connectionState, pair: pair && { state: pair.state, local: end(pair.localCandidateId), remote: end(pair.remoteCandidateId) } };
      }, user);
      return { ok: seen?.connection === 'connected' && seen.pair?.state === 'succeeded', seen };
    });
    if (VERBOSE) console.log(`  page${round}→${user}: ${JSON.stringify(link.seen)}`);
    assert(link.seen.pair.local?.type === 'host' && DIRECT_REMOTE.has(link.seen.pair.remote?.type), `not a direct host-to-host pair: ${JSON.stringify(link.seen)}`);
    // Text typed in the page reaches the Rust peer, which exits 0 once its document has it.
    await page.page.click('#editor');
    await page.page.keyboard.press('End');
    await page.page.keyboard.type(fromPage);
    const exit = await rustPeerExit(rust);
    assert(exit.code === 0, `${user} exited with ${JSON.stringify(exit)}`);
    const final = rustPeerLine(rust, 'final');
    assert(typeof final === 'string' && final.includes(fromRust) && final.includes(fromPage), `${user}'s final document: ${JSON.stringify(final)}`);
    // Both documents converged: the page holds exactly what the Rust peer ended with.
    await waitConverged([page], `page${round} equal to ${user}`, (t) => t === final);
    const stats = await demo(page, (d) => d.stats);
    assert(stats.opsReceived > 0 && stats.syncsReceived > 0, `the page got no operation or sync from ${user}: ${JSON.stringify(stats)}`);
    rust.reported = true;
    await closePeer(page);
  }
}

async function rustPeerGlare() {
  // Offers that collide between the Rust peer and octate-client.js: a client of the library,
  // loaded in a demo page, offers the moment the Rust newcomer joins (its fallback set to
  // 0 ms) while the Rust peer offers too. The page's WebSocket holds the Rust peer's offer
  // back until the page has sent its own, so the offers always cross. In round 1 the Rust
  // peer is the polite end (the larger user id) and yields; in round 2 it is the impolite end
  // and ignores the page's offer. Either way the channel opens and both documents converge.
  const host = await openPeer('glare-host', { room: `${ROOM}-rglare` });
  for (const [round, rustId, webId] of [[1, 'zz-rust', 'aa-web'], [2, 'aa-rust', 'zz-web']]) {
    const room = `${ROOM}-rglare${round}`;
    await demo(host, async (d, { id, room }) => {
      const { OctateClient, getToken } = await import('/octate-client.js');
      const Y = await import('/vendor/yjs.mjs');
      const lines = [];
      const doc = new Y.Doc();
      const text = doc.getText('content');
      // Incoming offers wait until this end has sent an offer of its own.
      let offered = false;
      const held = [];
      class HoldOffers extends WebSocket {
        set onmessage(fn) {
          this.deliver = fn;
          super.onmessage = (ev) => {
            if (!offered && JSON.parse(ev.data).type === 'sdp-offer') held.push(ev);
            else fn(ev);
          };
        }
        send(data) {
          super.send(data);
          if (!offered && JSON.parse(data).type === 'sdp-offer') {
            offered = true;
            for (const ev of held.splice(0)) this.deliver(ev);
          }
        }
      }
      const c = new OctateClient({
        url: `ws://${location.host}/ws`,
        getToken: () => getToken('', id, room),
        offerFallbackMs: 0,
        WebSocket: HoldOffers,
        debug: (l) => lines.push(l),
      });
      c.addEventListener('message', (e) => {
        const m = e.detail.data;
        if (m && typeof m.update === 'string') Y.applyUpdate(doc, Uint8Array.from(atob(m.update), (ch) => ch.charCodeAt(0)));
      });
      c.addEventListener('channel-open', (e) => {
        // The demo's messages: the whole state, then an edit (once) as a RemoteOperation.
        c.send(e.detail.peerId, { type: 'sync', peerId: id, timestamp: Date.now(), update: btoa(String.fromCharCode(...Y.encodeStateAsUpdate(doc))) });
        if (text.toString().includes('web-edit')) return;
        const before = Y.encodeStateVector(doc);
        text.insert(0, 'web-edit ');
        const update = Y.encodeStateAsUpdate(doc, before);
        c.send(e.detail.peerId, {
          id: `${id}:1`, peerId: id, timestamp: Date.now(), type: 'insert', position: 0, content: 'web-edit ',
          version: Y.getState(doc.store, doc.clientID), update: btoa(String.fromCharCode(...update)),
        });
      });
      window.__rglare = { c, lines, text: () => text.toString() };
      await c.connect();
    }, { id: webId, room });
    const rust = startRustPeer(rustId, ['--room', room, '--user', rustId, '--insert', 'rust-edit ', '--expect', 'web-edit', '--verbose']);
    const exit = await rustPeerExit(rust);
    assert(exit.code === 0, `${rustId} exited with ${JSON.stringify(exit)}`);
    const final = rustPeerLine(rust, 'final');
    assert(typeof final === 'string' && final.includes('rust-edit') && final.includes('web-edit'), `${rustId}'s final document: ${JSON.stringify(final)}`);
    await waitFor(`round ${round}: the page's client to hold ${JSON.stringify(final)}`, async () => {
      const t = await demo(host, () => window.__rglare.text());
      return { ok: t === final, seen: t };
    });
    const lines = await demo(host, () => window.__rglare.lines);
    const web = lines.filter((l) => l.includes('collision=true')).length;
    const native = (rust.stderr.match(/colliding offer/g) ?? []).length;
    if (VERBOSE) console.log(`  round ${round}: collisions seen by ${webId}: ${web}, by ${rustId}: ${native}`);
    assert(web > 0 && native > 0, `round ${round}: the offers did not collide at both ends (${webId}: ${web}, ${rustId}: ${native})`);
    rust.reported = true;
    await demo(host, () => window.__rglare.c.close());
  }
  await closePeer(host);
}

async function acrossTwoNodes() {
  // One page on node a, one on node b, in one room: their offers, answers and candidates
  // cross between the nodes through Redis, and either node lists both peers.
  const room = `${ROOM}-cluster`;
  const ann = await openPeer('ann', { room, base: BASE });
  const ben = await openPeer('ben', { room, base: BASE_B });
  await editTogether(ann, ben);
  for (const [node, base] of [['b', BASE_B], ['a', BASE]]) {
    const peers = await serverJson(`/api/rooms/${room}/peers`, base);
    assert(peers.status === 200, `GET peers of node ${node}: HTTP ${peers.status}`);
    const ids = peers.body.map((p) => p.userId).sort();
    assert(JSON.stringify(ids) === '["ann","ben"]', `node ${node} lists ${JSON.stringify(ids)}`);
  }
  await closePeer(ann);
  await closePeer(ben);
}

/** What `getStats()` says of the relay-only client's connection to `peerId` in `host`'s page. */
function relayReport(host, peerId) {
  return host.page.evaluate(async (peerId) => {
      const pc = window.__relay.c.peerConnection(peerId);
      if (!pc) return null;
      const stats = [...(await pc.getStats()).values()];
      const byId = new Map(stats.map((s) => [s.id, s]));
      const pair = byId.get(stats.find((s) => s.type === 'transport')?.selectedCandidatePairId);
      const end = (id) => byId.get(id) && { type: byId.get(id).candidateType, address: byId.get(id).address, port: byId.get(id).port };
      const dc = stats.find((s) => s.type === 'data-channel');
      return {
        connection: pc.connectionState,
        localTypes: [...new Set(stats.filter((s) => s.type === 'local-candidate').map((s) => s.candidateType))],
        pair: pair && { state: pair.state, bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived, local: end(pair.localCandidateId), remote: end(pair.remoteCandidateId) },
        dataChannel: dc && { messagesSent: dc.messagesSent, messagesReceived: dc.messagesReceived },
      };
  }, peerId);
}

async function relayOnly() {
  // Two clients of octate-client.js, each in a page served by node b (which hands out TURN
  // credentials in auth-ok), connect with the server's iceServers and iceTransportPolicy
  // 'relay': the only way between them is through the TURN server (coturn, run.sh).
  const room = `${ROOM}-relay`;
  const ids = ['relay-a', 'relay-b'];
  // The demo pages only lend their origin (node b) and media permission; each is alone in
  // a room of its own.
  const hosts = [];
  for (const id of ids) hosts.push(await openPeer(`${id}-page`, { room: `${room}-${id}-page`, base: BASE_B }));
  const start = (peer, id) => demo(peer, async (d, { id, room }) => {
    const { OctateClient, getToken } = await import('/octate-client.js');
    const lines = [];
    const c = new OctateClient({
      url: `ws://${location.host}/ws`,
      getToken: () => getToken('', id, room),
      useServerIceServers: true,
      iceTransportPolicy: 'relay',
      debug: (l) => lines.push(l),
    });
    const got = [];
    c.addEventListener('message', (e) => got.push(e.detail.data));
    window.__relay = { c, lines, got };
    await c.connect();
    return c.iceServers;
  }, { id, room });
  const servers = await Promise.all(hosts.map((h, i) => start(h, ids[i])));
  for (const [i, list] of servers.entries()) {
    const turn = list.find((s) => [s.urls].flat().some((u) => u.startsWith('turn:')));
    assert(turn && turn.username && turn.credential, `${ids[i]}: no TURN server with credentials in auth-ok: ${JSON.stringify(list)}`);
  }
  const peerOf = (i) => ids[1 - i];
  await Promise.all(hosts.map((h, i) => waitFor(`${ids[i]}'s channel to ${peerOf(i)}`, async () => {
    const open = await demo(h, () => window.__relay.c.openPeers);
    return { ok: open.includes(peerOf(i)), seen: open };
  })));
  await Promise.all(hosts.map((h, i) => demo(h, (d, to) => window.__relay.c.send(to, { through: 'turn' }), peerOf(i))));
  await Promise.all(hosts.map((h, i) => waitFor(`${ids[i]} to get a message over the relay`, async () => {
    const got = await demo(h, () => window.__relay.got);
    return { ok: got.length === 1 && got[0].through === 'turn', seen: got };
  })));

  const [relayIp, relayPorts] = TURN_RELAY.split(':');
  const [minPort, maxPort] = (relayPorts ?? '').split('-').map(Number);
  for (const [i, h] of hosts.entries()) {
    // The controlled end may report its selected pair 'in-progress' until its own check of it
    // has come back.
    const { report } = await waitFor(`${ids[i]}'s selected pair to succeed`, async () => {
      const seen = await relayReport(h, peerOf(i));
      return { ok: seen?.connection === 'connected' && seen.pair?.state === 'succeeded', report: seen, seen };
    });
    if (VERBOSE) console.log(`  ${ids[i]}→${peerOf(i)}: ${JSON.stringify(report)}`);
    assert(report?.connection === 'connected', `${ids[i]}: not connected: ${JSON.stringify(report)}`);
    const { pair } = report;
    assert(pair?.state === 'succeeded' && pair.bytesSent > 0 && pair.bytesReceived > 0, `${ids[i]}: the selected pair carried no data: ${JSON.stringify(report)}`);
    // The policy leaves only relayed candidates on this end: the pair goes through TURN.
    assert(pair.local?.type === 'relay', `${ids[i]}: the selected pair's local candidate is not relayed: ${JSON.stringify(report)}`);
    assert(JSON.stringify(report.localTypes) === '["relay"]', `${ids[i]}: gathered non-relayed candidates: ${JSON.stringify(report.localTypes)}`);
    // Both ends are addresses coturn allocated (the other end's may be learned as prflx).
    for (const side of [pair.local, pair.remote]) {
      const ok = side?.address === relayIp && side.port >= minPort && side.port <= maxPort;
      assert(!TURN_RELAY || ok, `${ids[i]}: ${JSON.stringify(side)} is not a relay address of the TURN server (${TURN_RELAY})`);
    }
    assert(report.dataChannel?.messagesSent > 0 && report.dataChannel?.messagesReceived > 0, `${ids[i]}: data channel idle: ${JSON.stringify(report.dataChannel)}`);
  }
  await Promise.all(hosts.map((h) => demo(h, () => window.__relay.c.close())));
  for (const h of hosts) await closePeer(h);
}

/** Runs `fn` as a scenario when `enabled`; says why not otherwise. */
async function scenarioIf(enabled, why, name, fn) {
  if (enabled) return scenario(name, fn);
  console.log(`skip ${name}: ${why}`);
}

// ---- run ----

let failed = 1;
try {
  const info = await serverJson('/info');
  assert(info.status === 200, `server not reachable at ${BASE}`);
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
  console.log(`e2e: ${browser.version()} against ${BASE}, room ${ROOM}`);
  await scenario('two peers connect over WebRTC and converge after concurrent edits', twoPeers);
  await scenario('a third peer joins the mesh, then leaves; the others keep converging', threePeersThenOneLeaves);
  await scenario('a forged token is refused and never appears as a peer', forgedTokenRefused);
  await scenario('data flows peer to peer; the server relays only signaling', dataFlowsPeerToPeer);
  await scenario('a dropped signaling connection reconnects and rejoins', reconnectsAfterDrop);
  await scenario('simultaneous offers and ICE restarts are settled by perfect negotiation', simultaneousOffers);
  await scenario('a native Rust WebRTC peer (webrtc-rs + yrs) edits with a browser page', rustPeerInterop);
  await scenario('offers colliding between the Rust peer and the browser client are settled', rustPeerGlare);
  await scenarioIf(BASE_B, 'no OCTATE_URL_B', 'two pages on two nodes of a cluster connect over WebRTC and converge', acrossTwoNodes);
  await scenarioIf(BASE_B && TURN, 'no OCTATE_URL_B with E2E_TURN=1', 'two clients connect through TURN only (iceTransportPolicy relay) and exchange data', relayOnly);
  await scenarioIf(BASE_SOLO, 'no OCTATE_URL_SOLO', 'a cut signaling connection resumes: no leave seen, the data channel keeps working', resumeKeepsChannels);
} catch (err) {
  console.log(`e2e: setup failed: ${err?.stack ?? err}`);
  results.push({ name: 'setup', ok: false });
} finally {
  failed = summary();
  clearTimeout(watchdog);
  killRustPeers();
  if (browser) await Promise.race([browser.close(), sleep(5000)]);
}
process.exit(failed === 0 ? 0 : 1);
