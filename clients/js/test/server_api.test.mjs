// Against the real octate-server: what the client does when the app's backend acts on its
// room through the server API (docs/openapi.yaml): server messages arrive as an event, and a
// kicked client stops for good instead of reconnecting.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { OctateClient } from '../src/octate-client.js';
import { ADMIN_KEY, record, roomName, sleep, startServer, waitFor, webSocketClass } from '../testkit/octate.mjs';

let server;
const clients = [];

before(async () => {
  server = await startServer();
});
after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

function member(userId, room) {
  const calls = { getToken: 0 };
  const client = new OctateClient({
    url: server.ws,
    getToken: () => {
      calls.getToken++;
      return server.token(userId, room);
    },
    WebSocket: webSocketClass(),
    reconnectBaseMs: 50,
    reconnectMaxMs: 200,
  });
  clients.push(client);
  return { client, events: record(client), calls };
}

async function api(path, body) {
  const res = await fetch(`${server.http}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

test('server-message: a broadcast and a message to one peer arrive as events with their data', async () => {
  const room = roomName('srvmsg');
  const a = member('alice', room);
  const b = member('bob', room);
  await a.client.connect();
  await b.client.connect();
  const all = await api(`/api/rooms/${room}/broadcast`, { data: { notice: 'saving' } });
  assert.equal(all.status, 200, JSON.stringify(all.body));
  const one = await api(`/api/rooms/${room}/peers/bob/message`, { data: { only: 'bob' } });
  assert.equal(one.status, 200, JSON.stringify(one.body));
  const got = (m) => m.events.filter((e) => e.type === 'server-message').map((e) => e.detail);
  await waitFor('bob to get both', () => got(b).length === 2);
  assert.deepEqual(got(b), [
    { roomId: room, data: { notice: 'saving' } },
    { roomId: room, data: { only: 'bob' } },
  ]);
  await sleep(200);
  assert.deepEqual(got(a), [{ roomId: room, data: { notice: 'saving' } }]);
});

test('a kicked client stops with code kicked and close 4005, and never reconnects', async () => {
  const room = roomName('kick');
  const a = member('alice', room);
  const m = member('mallory', room);
  await a.client.connect();
  await m.client.connect();
  const kicked = await api(`/api/rooms/${room}/peers/mallory/kick`, { reason: 'spam' });
  assert.equal(kicked.status, 200, JSON.stringify(kicked.body));
  const closed = await waitFor('mallory to stop', () => m.events.find((e) => e.type === 'closed'));
  assert.equal(closed.detail.code, 4005);
  assert.equal(closed.detail.error?.code, 'kicked');
  await sleep(600);
  assert.equal(m.client.state, 'closed');
  assert.equal(m.calls.getToken, 1, 'no fresh token was asked for');
  assert.equal(m.events.filter((e) => e.type === 'reconnecting').length, 0);
  const left = await waitFor('alice to see mallory leave', () => a.events.find((e) => e.type === 'peer-left'));
  assert.equal(left.detail.reason, 'kicked');
  assert.deepEqual(a.client.peers, []);
});
