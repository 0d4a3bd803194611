// Session resume against the real octate-server (RESUME-SPEC: OCTATE_RESUME_GRACE_MS): the
// TCP connection of one client is cut from outside by a proxy; the other client must not
// notice a short cut, must see exactly one `peer-left` (`timeout`) for a long one, and the
// cut client must fall back to a fresh auth when its session cannot be resumed.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { OctateClient } from '../src/octate-client.js';
import { offersResume, record, roomName, sleep, startProxy, startServer, waitFor, webSocketClass } from '../testkit/octate.mjs';

const GRACE_MS = 3000;
const server = await startServer({ OCTATE_RESUME_GRACE_MS: String(GRACE_MS) });
const proxy = await startProxy(server.port);

after(async () => {
  await proxy?.stop();
  await server?.stop();
});

test('the server hands out a resume ticket in auth-ok', async () => {
  assert.equal(await offersResume(server), true);
});

/** A stand-in for RTCPeerConnection that never connects and counts ICE restarts. */
class IdlePeerConnection {
  constructor() {
    this.connectionState = 'new';
    this.signalingState = 'stable';
    this.restarts = 0;
  }
  createDataChannel() {
    return { readyState: 'connecting', close() {} };
  }
  getConfiguration() {
    return {};
  }
  setConfiguration() {}
  restartIce() {
    this.restarts++;
  }
  close() {}
}

/** A client of `room`, through the proxy when `viaProxy`, counting getToken calls. */
function member(userId, room, { viaProxy = false, ...extra } = {}) {
  const calls = { getToken: 0 };
  const client = new OctateClient({
    url: viaProxy ? proxy.ws : server.ws,
    getToken: () => {
      calls.getToken++;
      return server.token(userId, room);
    },
    WebSocket: webSocketClass(),
    connectTimeoutMs: 500,
    reconnectBaseMs: 100,
    reconnectMaxMs: 300,
    ...extra,
  });
  return { client, events: record(client), calls };
}

const of = (events, type, userId) => events.filter((e) => e.type === type && (!userId || e.detail.peer?.userId === userId));

/** Cuts every connection through the proxy and refuses new ones for `ms`. */
async function outage(ms) {
  proxy.block();
  proxy.cut();
  await sleep(ms);
  proxy.unblock();
}

test('a cut shorter than the grace resumes silently: no peer-left, no new token, ICE restarted', async () => {
  const room = roomName('resume');
  const alice = member('alice', room, { RTCPeerConnection: IdlePeerConnection });
  const bob = member('bob', room, { viaProxy: true, RTCPeerConnection: IdlePeerConnection });
  try {
    await alice.client.connect();
    await bob.client.connect();
    await waitFor('alice to see bob', () => of(alice.events, 'peer-joined', 'bob').length === 1);
    const pc = /** @type {IdlePeerConnection} */ (/** @type {unknown} */ (bob.client.peerConnection('alice')));
    assert.ok(pc);

    const cutAt = bob.events.length;
    await outage(1500);
    await waitFor('bob to resume', () => of(bob.events, 'resumed').length === 1, 10_000);
    assert.equal(bob.client.state, 'open');
    assert.equal(bob.calls.getToken, 1, 'a resume needs no new token');
    assert.equal(of(bob.events, 'connected').length, 1, 'no fresh auth');
    // The link to alice is the same, and its ICE was restarted (it was not connected).
    assert.equal(bob.client.peerConnection('alice'), pc);
    assert.ok(pc.restarts >= 1, 'no ICE restart after resumed');
    // Signaling works on the resumed session, and alice never saw bob leave or come back.
    assert.equal(bob.client.sendPresence('away'), true);
    await waitFor('alice to get bob\'s presence', () => alice.events.some((e) => e.type === 'presence' && e.detail.from === 'bob'));
    await sleep(GRACE_MS - 1000);
    assert.deepEqual([of(alice.events, 'peer-left').length, of(alice.events, 'peer-joined').length], [0, 1]);
    const sinceCut = bob.events.slice(cutAt);
    assert.deepEqual([of(sinceCut, 'peer-left').length, of(sinceCut, 'peer-joined').length], [0, 0]);
  } finally {
    alice.client.close();
    bob.client.close();
  }
});

test('a cut longer than the grace: the other sees one peer-left timeout; the cut client authenticates afresh', async () => {
  const room = roomName('expire');
  const alice = member('alice', room);
  const bob = member('bob', room, { viaProxy: true });
  try {
    await alice.client.connect();
    await bob.client.connect();
    await waitFor('alice to see bob', () => of(alice.events, 'peer-joined', 'bob').length === 1);

    await outage(GRACE_MS + 1500);
    const left = of(alice.events, 'peer-left', 'bob');
    assert.equal(left.length, 1);
    assert.equal(left[0].detail.reason, 'timeout');

    await waitFor('bob to join afresh', () => of(bob.events, 'connected').length === 2, 10_000);
    assert.ok(bob.events.some((e) => e.type === 'error' && e.detail.code === 'resume-failed'), 'no resume-failed');
    assert.equal(of(bob.events, 'resumed').length, 0);
    assert.equal(bob.calls.getToken, 2);
    assert.equal(bob.events.filter((e) => e.type === 'connected').at(-1).detail.reconnected, true);
    await waitFor('alice to see bob again', () => of(alice.events, 'peer-joined', 'bob').length === 2);
    await sleep(500);
    assert.equal(of(alice.events, 'peer-left', 'bob').length, 1, 'exactly one peer-left');
  } finally {
    alice.client.close();
    bob.client.close();
  }
});

test('resume-failed (the server restarted and lost the session) leads to a fresh auth at once', async () => {
  const room = roomName('restart');
  const own = await startServer({ OCTATE_RESUME_GRACE_MS: String(GRACE_MS) });
  const own2proxy = await startProxy(own.port);
  let second;
  let current = own;
  const calls = { getToken: 0 };
  const bob = new OctateClient({
    url: own2proxy.ws,
    getToken: () => {
      calls.getToken++;
      return current.token('bob', room);
    },
    WebSocket: webSocketClass(),
    connectTimeoutMs: 500,
    reconnectBaseMs: 100,
    reconnectMaxMs: 300,
  });
  const events = record(bob);
  try {
    await bob.connect();
    // A crash: the session is gone with the process. Tokens stay valid (same secret).
    own2proxy.block();
    own2proxy.cut();
    await own.stop();
    second = await startServer({ OCTATE_RESUME_GRACE_MS: String(GRACE_MS) });
    current = second;
    own2proxy.retarget(second.port);
    own2proxy.unblock();
    await waitFor('bob to join the new server', () => of(events, 'connected').length === 2, 10_000);
    const failed = events.findIndex((e) => e.type === 'error' && e.detail.code === 'resume-failed');
    assert.ok(failed > 0, 'no resume-failed');
    const next = events.slice(failed + 1).map((e) => e.type);
    // Straight from resume-failed to a fresh auth: no back-off wait in between.
    assert.ok(!next.slice(0, next.indexOf('connecting')).includes('reconnecting'), next.join(' '));
    assert.equal(calls.getToken, 2);
    assert.equal(bob.state, 'open');
  } finally {
    bob.close();
    await own2proxy.stop();
    await second?.stop();
  }
});

test('when the client notices the loss first, resume takes over the old connection (4004) and nobody notices', async () => {
  const room = roomName('takeover');
  const alice = member('alice', room);
  const bob = member('bob', room, { viaProxy: true });
  try {
    await alice.client.connect();
    await bob.client.connect();
    await waitFor('alice to see bob', () => of(alice.events, 'peer-joined', 'bob').length === 1);
    const cutAt = bob.events.length;
    // The server still holds bob's old connection, open and silent.
    proxy.cutClientSide();
    await waitFor('bob to resume', () => of(bob.events, 'resumed').length === 1, 10_000);
    assert.equal(bob.calls.getToken, 1);
    assert.equal(bob.client.state, 'open');
    assert.equal(bob.client.sendPresence('idle'), true);
    await waitFor('alice to get bob\'s presence', () => alice.events.some((e) => e.type === 'presence' && e.detail.from === 'bob'));
    await sleep(500);
    assert.deepEqual([of(alice.events, 'peer-left').length, of(alice.events, 'peer-joined').length], [0, 1]);
    const sinceCut = bob.events.slice(cutAt);
    assert.deepEqual(sinceCut.filter((e) => e.type === 'closed' || e.type === 'connected').length, 0);
  } finally {
    alice.client.close();
    bob.client.close();
  }
});

test('a signal to a peer that is away is re-sent once it is back', async () => {
  const room = roomName('unavailable');
  const alice = member('alice', room);
  const bob = member('bob', room, { viaProxy: true });
  try {
    await alice.client.connect();
    await bob.client.connect();
    await waitFor('alice to see bob', () => of(alice.events, 'peer-joined', 'bob').length === 1);
    proxy.block();
    proxy.cut();
    await sleep(300);
    // The server tells alice that bob is unavailable; the client keeps the signal and retries.
    const candidate = { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0' };
    assert.equal(alice.client.sendSignal('bob', 'ice-candidate', { candidate }), true);
    await sleep(900);
    proxy.unblock();
    await waitFor('bob to resume', () => of(bob.events, 'resumed').length === 1, 10_000);
    const got = await waitFor('bob to get alice\'s signal', () => bob.events.find((e) => e.type === 'signal'), 10_000);
    assert.equal(got.detail.from, 'alice');
    assert.deepEqual(got.detail.data.candidate, candidate);
    assert.equal(alice.events.filter((e) => e.type === 'error').length, 0, JSON.stringify(alice.events.filter((e) => e.type === 'error')));
  } finally {
    alice.client.close();
    bob.client.close();
  }
});
