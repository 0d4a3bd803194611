// Back-off bounds and the close codes that stop the client, with a scripted fake WebSocket
// and an injected random source (no server needed).
import assert from 'node:assert/strict';
import test from 'node:test';
import { OctateClient, backoffDelay, TERMINAL_CLOSE_CODES } from '../src/octate-client.js';

test('backoffDelay is full jitter under an exponential ceiling that stops at maxMs', () => {
  const ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
  ceilings.forEach((ceiling, i) => {
    const attempt = i + 1;
    assert.equal(backoffDelay(attempt, 100, 1000, () => 0), 0, `attempt ${attempt} at random 0`);
    assert.equal(backoffDelay(attempt, 100, 1000, () => 0.5), ceiling / 2, `attempt ${attempt} at random 0.5`);
    const top = backoffDelay(attempt, 100, 1000, () => 0.999999);
    assert.ok(top < ceiling && top >= ceiling - 1, `attempt ${attempt}: ${top} just under ${ceiling}`);
  });
  // A random source that misbehaves (1, above 1, negative) stays within the bounds.
  assert.ok(backoffDelay(3, 100, 1000, () => 1) < 400);
  assert.ok(backoffDelay(3, 100, 1000, () => 7) < 400);
  assert.equal(backoffDelay(3, 100, 1000, () => -1), 0);
  // Attempt numbers far past the cap neither overflow nor exceed maxMs.
  assert.ok(backoffDelay(10_000, 100, 1000, () => 0.999999) < 1000);
});

/**
 * A fake WebSocket driven by `script(ws, n)`, called when socket number n (0-based) opens,
 * and `onSend(ws, msg)` for each message the client sends.
 */
function fakeWebSocket({ script, onSend }) {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.n = sockets.length;
      sockets.push(this);
      setTimeout(() => script(this, this.n), 1);
    }
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    deliver(msg) {
      this.onmessage?.({ data: JSON.stringify(msg) });
    }
    drop(code, reason = '') {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    send(text) {
      const msg = JSON.parse(text);
      this.sent.push(msg);
      onSend?.(this, msg);
    }
    close(code = 1005) {
      this.drop(code);
    }
  }
  return { FakeWebSocket, sockets };
}

const authOk = (resume) => ({
  type: 'auth-ok',
  userId: 'alice',
  roomId: 'r1',
  data: { room: { roomId: 'r1', hostId: 'alice', peers: [] }, peers: [], ...(resume ? { resume } : {}) },
});

function client(FakeWebSocket, extra = {}) {
  let tokens = 0;
  const c = new OctateClient({
    url: 'ws://fake/ws',
    getToken: async () => `token-${++tokens}`,
    WebSocket: FakeWebSocket,
    fetch: async () => {
      throw new Error('no fetch in this test');
    },
    ...extra,
  });
  const events = [];
  for (const t of ['reconnecting', 'closed', 'connected', 'resumed', 'connecting', 'resuming', 'disconnected']) {
    c.addEventListener(t, (e) => events.push({ type: t, ...e.detail }));
  }
  return { c, events, tokens: () => tokens };
}

const until = async (what, check, ms = 5000) => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

test('reconnect delays follow the back-off with the injected random source, and attempts are bounded', async () => {
  // Socket 0 joins then drops (1006); every later socket fails before it opens.
  const { FakeWebSocket } = fakeWebSocket({
    script: (ws, n) => (n === 0 ? ws.open() : ws.drop(1006)),
    onSend: (ws, msg) => msg.type === 'auth' && (ws.deliver(authOk()), setTimeout(() => ws.drop(1006), 1)),
  });
  const randoms = [0.5, 0.25, 0.999999, 0, 0.5];
  let i = 0;
  const { c, events } = client(FakeWebSocket, { reconnectBaseMs: 8, reconnectMaxMs: 20, maxReconnectAttempts: 5, random: () => randoms[i++ % randoms.length] });
  await c.connect();
  await until('the client to give up', () => events.some((e) => e.type === 'closed'));
  const delays = events.filter((e) => e.type === 'reconnecting').map((e) => [e.attempt, e.delayMs]);
  assert.deepEqual(delays, [[1, 4], [2, 4], [3, 19], [4, 0], [5, 10]]);
  const closed = events.find((e) => e.type === 'closed');
  assert.equal(closed.error.code, 'reconnect-exhausted');
  assert.equal(c.state, 'closed');
});

for (const code of [1000, 1008, 4003, 4004]) {
  test(`close ${code} (${TERMINAL_CLOSE_CODES[code]}) stops the client without a reconnect`, async () => {
    const { FakeWebSocket, sockets } = fakeWebSocket({
      script: (ws) => ws.open(),
      onSend: (ws, msg) => msg.type === 'auth' && (ws.deliver(authOk()), setTimeout(() => ws.drop(code), 1)),
    });
    const { c, events } = client(FakeWebSocket, { reconnectBaseMs: 1, reconnectMaxMs: 2 });
    await c.connect();
    await until('closed', () => events.some((e) => e.type === 'closed'));
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(events.filter((e) => e.type === 'reconnecting').length, 0);
    assert.equal(sockets.length, 1);
    assert.equal(events.find((e) => e.type === 'closed').code, code);
  });
}

test('4001 after a fresh auth with a refused token is terminal: no loop', async () => {
  // Socket 0 joins then drops; socket 1's auth is refused as a forged token would be.
  const { FakeWebSocket, sockets } = fakeWebSocket({
    script: (ws) => ws.open(),
    onSend: (ws, msg) => {
      if (msg.type !== 'auth') return;
      if (ws.n === 0) return ws.deliver(authOk()), setTimeout(() => ws.drop(1006), 1);
      ws.deliver({ type: 'error', data: { code: 'token-bad-signature', message: 'bad signature' } });
      setTimeout(() => ws.drop(4001), 1);
    },
  });
  const { c, events } = client(FakeWebSocket, { reconnectBaseMs: 1, reconnectMaxMs: 2 });
  await c.connect();
  await until('closed', () => events.some((e) => e.type === 'closed'));
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(sockets.length, 2);
  const closed = events.find((e) => e.type === 'closed');
  assert.equal(closed.code, 4001);
  assert.equal(closed.error.code, 'token-bad-signature');
});

test('an expired token is retried once with a fresh token from getToken, then stops', async () => {
  const { FakeWebSocket, sockets } = fakeWebSocket({
    script: (ws) => ws.open(),
    onSend: (ws, msg) => {
      if (msg.type !== 'auth') return;
      if (ws.n === 0) return ws.deliver(authOk()), setTimeout(() => ws.drop(1006), 1);
      ws.deliver({ type: 'error', data: { code: 'token-expired', message: 'expired' } });
      setTimeout(() => ws.drop(4001), 1);
    },
  });
  const { c, events, tokens } = client(FakeWebSocket, { reconnectBaseMs: 1, reconnectMaxMs: 2 });
  await c.connect();
  await until('closed', () => events.some((e) => e.type === 'closed'));
  assert.equal(sockets.length, 3, 'the join, the reconnect, one retry with a fresh token');
  assert.equal(tokens(), 3);
});

test('with a resume block, a drop sends resume first; 4001 after resume means a fresh auth at once', async () => {
  const resume = { sessionId: 's1', resumeToken: 't1' };
  const { FakeWebSocket, sockets } = fakeWebSocket({
    script: (ws) => ws.open(),
    onSend: (ws, msg) => {
      if (msg.type === 'auth' && ws.n === 0) return ws.deliver(authOk(resume)), setTimeout(() => ws.drop(1006), 1);
      if (msg.type === 'resume') {
        ws.deliver({ type: 'error', data: { code: 'resume-failed', message: 'expired' } });
        return setTimeout(() => ws.drop(4001), 1);
      }
      if (msg.type === 'auth') ws.deliver(authOk({ sessionId: 's2', resumeToken: 't2' }));
    },
  });
  const { c, events, tokens } = client(FakeWebSocket, { reconnectBaseMs: 1, reconnectMaxMs: 2 });
  await c.connect();
  await until('the fresh join', () => events.filter((e) => e.type === 'connected').length === 2);
  assert.deepEqual(sockets[1].sent[0], { type: 'resume', data: resume });
  assert.equal(sockets[2].sent[0].type, 'auth');
  assert.equal(tokens(), 2);
  // resume-failed leads straight to the fresh auth: no back-off in between.
  const after = events.slice(events.findIndex((e) => e.type === 'resuming'));
  assert.deepEqual(after.map((e) => e.type).filter((t) => t !== 'disconnected'), ['resuming', 'connecting', 'connected']);
  assert.equal(c.state, 'open');
  c.close();
});

test('a silent open connection counts as lost after livenessTimeoutMs, and is resumed without a close frame', async () => {
  const resume = { sessionId: 's1', resumeToken: 't1' };
  // Socket 0 joins, gets one heartbeat, then goes silent without closing; socket 1 resumes.
  const { FakeWebSocket, sockets } = fakeWebSocket({
    script: (ws) => ws.open(),
    onSend: (ws, msg) => {
      if (msg.type === 'auth') {
        ws.deliver(authOk(resume));
        setTimeout(() => ws.deliver({ type: 'heartbeat' }), 20);
      }
      if (msg.type === 'resume') ws.deliver({ ...authOk({ sessionId: 's1', resumeToken: 't2' }), type: 'resumed' });
    },
  });
  const { c, events } = client(FakeWebSocket, { livenessTimeoutMs: 80, reconnectBaseMs: 1, reconnectMaxMs: 2 });
  await c.connect();
  const t0 = Date.now();
  await until('the resume', () => events.some((e) => e.type === 'resumed'));
  // Not before the heartbeat's 20 ms plus the 80 ms of silence.
  assert.ok(Date.now() - t0 >= 95, `lost after ${Date.now() - t0} ms`);
  assert.deepEqual(sockets[1].sent[0], { type: 'resume', data: resume });
  // The silent socket was not closed: a close frame would have ended the session.
  assert.notEqual(sockets[0].readyState, 3);
  assert.deepEqual(sockets[0].sent.map((m) => m.type), ['auth', 'pong']);
  c.close();
});

test('back online (the browser\'s online event), a reconnect waiting out its back-off starts at once', async () => {
  // Node has no global EventTarget; stand in for the browser's window for this test.
  const windowLike = new EventTarget();
  globalThis.addEventListener = windowLike.addEventListener.bind(windowLike);
  globalThis.removeEventListener = windowLike.removeEventListener.bind(windowLike);
  try {
    const { FakeWebSocket, sockets } = fakeWebSocket({
      script: (ws) => ws.open(),
      onSend: (ws, msg) => msg.type === 'auth' && ws.n === 0 && (ws.deliver(authOk()), setTimeout(() => ws.drop(1006), 1)),
    });
    // The first retry would wait 30 s.
    const { c, events } = client(FakeWebSocket, { reconnectBaseMs: 60_000, reconnectMaxMs: 60_000, random: () => 0.5 });
    await c.connect();
    await until('the wait', () => events.some((e) => e.type === 'reconnecting'));
    assert.equal(sockets.length, 1);
    windowLike.dispatchEvent(new Event('online'));
    await until('a new socket', () => sockets.length === 2, 1000);
    c.close();
    // After close() the client no longer listens.
    windowLike.dispatchEvent(new Event('online'));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(sockets.length, 2);
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});
