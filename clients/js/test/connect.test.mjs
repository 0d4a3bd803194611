// Against the real octate-server: connect with a token callback, the events of a room, a
// refused token, and reconnect with back-off after the TCP connection is cut from outside.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { OctateClient, OctateError } from '../src/octate-client.js';
import { record, roomName, sleep, startProxy, startServer, waitFor, webSocketClass } from '../testkit/octate.mjs';

let server;
const clients = [];

before(async () => {
  server = await startServer();
});
after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

/** A client of `server` (or of `url`) for `userId` in `room`, counting getToken calls. */
function member(userId, room, extra = {}) {
  const calls = { getToken: 0 };
  const client = new OctateClient({
    url: server.ws,
    getToken: () => {
      calls.getToken++;
      return server.token(userId, room);
    },
    userName: userId.toUpperCase(),
    WebSocket: webSocketClass(),
    ...extra,
  });
  clients.push(client);
  return { client, events: record(client), calls };
}

const types = (events) => events.map((e) => e.type);

test('connect: getToken, auth-ok, state events, room events and presence between two clients', async () => {
  const room = roomName('connect');
  const a = member('alice', room);
  const joined = await a.client.connect();
  assert.equal(joined.userId, 'alice');
  assert.equal(joined.roomId, room);
  assert.equal(joined.reconnected, false);
  assert.deepEqual(joined.peers, []);
  assert.equal(a.calls.getToken, 1);
  assert.equal(a.client.state, 'open');
  assert.equal(a.client.connected, true);
  assert.equal(a.client.hostId, 'alice');
  assert.deepEqual(
    a.events.filter((e) => e.type === 'state').map((e) => e.detail.state),
    ['connecting', 'open'],
  );
  assert.deepEqual(types(a.events).filter((t) => ['connecting', 'connected', 'open'].includes(t)), ['connecting', 'connected', 'open']);

  const b = member('bob', room);
  const bJoined = await b.client.connect();
  assert.deepEqual(bJoined.peers.map((p) => p.userId), ['alice']);
  const peerJoined = await waitFor('alice to see bob', () => a.events.find((e) => e.type === 'peer-joined'));
  assert.equal(peerJoined.detail.peer.userId, 'bob');
  assert.equal(peerJoined.detail.peer.userName, 'BOB');
  assert.deepEqual(a.client.peers.map((p) => p.userId), ['bob']);

  assert.equal(b.client.sendPresence('away'), true);
  const presence = await waitFor('alice to get bob\'s presence', () => a.events.find((e) => e.type === 'presence'));
  assert.deepEqual(presence.detail, { from: 'bob', status: 'away' });

  // A raw signal (signaling-only use: no RTCPeerConnection in Node) reaches the other end.
  assert.equal(b.client.sendSignal('alice', 'ice-candidate', { candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0' } }), true);
  const signal = await waitFor('alice to get bob\'s signal', () => a.events.find((e) => e.type === 'signal'));
  assert.equal(signal.detail.from, 'bob');
  assert.equal(signal.detail.type, 'ice-candidate');

  // close() ends the session at once (1000): the other end sees bob leave, and bob stops.
  b.client.close();
  const left = await waitFor('alice to see bob leave', () => a.events.find((e) => e.type === 'peer-left'));
  assert.equal(left.detail.peer.userId, 'bob');
  assert.equal(b.client.state, 'closed');
  assert.equal(b.events.filter((e) => e.type === 'reconnecting').length, 0);
  a.client.close();
});

test('a refused token rejects connect() with the server code and close 4001, and never retries', async () => {
  const room = roomName('badtoken');
  const good = await server.token('mallory', room);
  const forged = good.slice(0, -4) + (good.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  const m = member('mallory', room, { getToken: () => forged });
  await assert.rejects(m.client.connect(), (err) => {
    assert.ok(err instanceof OctateError);
    assert.match(err.code, /^token-/);
    assert.equal(err.closeCode, 4001);
    return true;
  });
  await sleep(300);
  assert.equal(m.client.state, 'closed');
  assert.equal(m.events.filter((e) => e.type === 'reconnecting' || e.type === 'connecting').length, 1, 'one attempt only');
});

test('a cut TCP connection is reconnected with back-off, and the client comes back to the room', async () => {
  const room = roomName('cut');
  const proxy = await startProxy(server.port);
  try {
    const a = member('alice', room);
    await a.client.connect();
    const b = member('bob', room, { url: proxy.ws, connectTimeoutMs: 500, reconnectBaseMs: 100, reconnectMaxMs: 400, random: () => 0.99 });
    await b.client.connect();

    // While the proxy refuses connections, attempts fail one after the other and their
    // delays grow, never past reconnectMaxMs.
    proxy.block();
    proxy.cut();
    await waitFor('four failed attempts', () => b.events.filter((e) => e.type === 'reconnecting').length >= 4, 15_000);
    const delays = b.events.filter((e) => e.type === 'reconnecting').map((e) => e.detail.delayMs);
    assert.deepEqual(delays.slice(0, 4), [99, 198, 396, 396]);
    const disconnected = b.events.find((e) => e.type === 'disconnected');
    assert.equal(disconnected.detail.wasConnected, true);
    assert.equal(b.client.connected, false);

    proxy.unblock();
    await waitFor('bob back in the room', () => b.client.state === 'open', 10_000);
    assert.ok(b.events.some((e) => e.type === 'resumed' || (e.type === 'connected' && e.detail.reconnected)));
    // Back in the room for real: presence flows again.
    assert.equal(b.client.sendPresence('idle'), true);
    await waitFor('alice to get bob\'s presence', () => a.events.find((e) => e.type === 'presence' && e.detail.status === 'idle'));
    a.client.close();
    b.client.close();
  } finally {
    await proxy.stop();
  }
});
