// TURN credentials against the real octate-server: the iceServers of auth-ok reach new peer
// connections, and the client refreshes them at half their lifetime through
// POST /api/turn/credentials, applying them to live connections with setConfiguration.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { OctateClient } from '../src/octate-client.js';
import { record, roomName, startServer, waitFor, webSocketClass } from '../testkit/octate.mjs';

const TTL_SECS = 2;
let server;

before(async () => {
  server = await startServer({
    OCTATE_TURN_URIS: 'turn:127.0.0.1:3478?transport=udp',
    OCTATE_TURN_SECRET: 'sdk-test-turn-secret-0123456789',
    OCTATE_TURN_TTL_SECS: String(TTL_SECS),
  });
});
after(() => server?.stop());

/** A stand-in for RTCPeerConnection that records its configurations; it never negotiates. */
class RecordingPeerConnection {
  static all = [];
  constructor(config) {
    this.configs = [config];
    this.connectionState = 'new';
    this.signalingState = 'stable';
    this.restarts = 0;
    RecordingPeerConnection.all.push(this);
  }
  createDataChannel() {
    return { readyState: 'connecting', close() {} };
  }
  getConfiguration() {
    return this.configs.at(-1);
  }
  setConfiguration(config) {
    this.configs.push(config);
  }
  restartIce() {
    this.restarts++;
  }
  close() {}
}

test('TURN credentials: applied to new connections, refreshed at ttl/2 with the token, applied to live ones', async () => {
  const room = roomName('turn');
  const posts = [];
  /** A fetch that counts the credential requests and passes them on. */
  const countingFetch = async (url, init) => {
    if (String(url).endsWith('/api/turn/credentials')) posts.push({ at: Date.now(), auth: init?.headers?.authorization });
    return fetch(url, init);
  };
  const tokens = [];
  const make = (userId) =>
    new OctateClient({
      url: server.ws,
      getToken: async () => {
        const t = await server.token(userId, room);
        tokens.push(t);
        return t;
      },
      WebSocket: webSocketClass(),
      fetch: countingFetch,
      RTCPeerConnection: RecordingPeerConnection,
      rtcConfig: { iceServers: [{ urls: 'stun:127.0.0.1:9' }] },
    });
  const alice = make('alice');
  const bob = make('bob');
  const bobEvents = record(bob);
  try {
    await alice.connect();
    const joinedAt = Date.now();
    const joined = await bob.connect();
    assert.ok(joined);
    const turn = bob.iceServers.find((s) => [s.urls].flat().some((u) => u.startsWith('turn:')));
    assert.ok(turn?.username && turn.credential, `no TURN credential in auth-ok: ${JSON.stringify(bob.iceServers)}`);

    // bob is the newcomer: its connection to alice is made at once, with rtcConfig's STUN
    // server and the server's TURN server.
    const pc = /** @type {RecordingPeerConnection} */ (/** @type {unknown} */ (bob.peerConnection('alice')));
    assert.ok(pc, 'no peer connection to alice');
    assert.deepEqual(pc.configs[0].iceServers, [{ urls: 'stun:127.0.0.1:9' }, ...bob.iceServers]);

    // Two refreshes: the first at half the auth-ok credential's life, the next at half the
    // ttl the first one returned.
    await waitFor('two credential refreshes by bob and alice', () => posts.length >= 4, 8_000);
    const first = posts[0].at - joinedAt;
    assert.ok(first <= TTL_SECS * 1000, `first refresh after ${first} ms`);
    for (const p of posts) assert.ok(tokens.includes(p.auth.replace(/^Bearer /, '')), 'refresh without a room token');
    const refreshed = await waitFor('bob to take refreshed ICE servers', () => bobEvents.find((e) => e.type === 'ice-servers' && e.detail.ttl === TTL_SECS));
    // The live connection got the refreshed servers, with the rest of its configuration kept
    // (read in one go: a later refresh may come at any time).
    const seen = pc.configs.map((c) => JSON.stringify(c.iceServers));
    assert.ok(seen.slice(1).includes(JSON.stringify([{ urls: 'stun:127.0.0.1:9' }, ...refreshed.detail.iceServers])), seen.join('\n'));
    assert.deepEqual(pc.getConfiguration().iceServers, [{ urls: 'stun:127.0.0.1:9' }, ...bob.iceServers]);
    assert.equal(bobEvents.filter((e) => e.type === 'error').length, 0, JSON.stringify(bobEvents.filter((e) => e.type === 'error')));

    // After close() no more refreshes.
    alice.close();
    bob.close();
    const count = posts.length;
    await new Promise((r) => setTimeout(r, TTL_SECS * 1000));
    assert.equal(posts.length, count, 'a refresh after close()');
  } finally {
    alice.close();
    bob.close();
  }
});
