// Test kit of @octate/client: starts the real octate-server binary on a free loopback port,
// mints tokens over its HTTP API, cuts TCP connections with a proxy, and records events.
// Imported by test/*.test.mjs; it holds no tests itself.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getToken } from '../src/octate-client.js';
import { MiniWebSocket } from './websocket.mjs';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TARGET = process.env.CARGO_TARGET_DIR ? path.resolve(ROOT, process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target');
/** The server binary: OCTATE_SERVER_BIN, or the debug build (`cargo build -p octate-server`). */
export const SERVER_BIN = process.env.OCTATE_SERVER_BIN ?? path.join(TARGET, 'debug', 'octate-server');
export const ADMIN_KEY = 'sdk-test-admin-key-0123456789abcdef';
const TOKEN_SECRET = 'sdk-test-token-secret-0123456789abcdef0123456789';

/**
 * The WebSocket constructor for the tests: the global one (Node 22; Node 20 and 21 with
 * `--experimental-websocket`), else the test kit's own small client; OCTATE_TEST_WEBSOCKET=mini
 * forces the latter.
 */
export function webSocketClass() {
  if (process.env.OCTATE_TEST_WEBSOCKET !== 'mini' && typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  return MiniWebSocket;
}

/**
 * Starts octate-server with `env` added (in an empty directory, so no .env applies) and
 * waits for its listening line.
 * @param {Record<string, string>} [env]
 */
export async function startServer(env = {}) {
  if (!existsSync(SERVER_BIN)) throw new Error(`${SERVER_BIN} is missing: cargo build -p octate-server`);
  const dir = mkdtempSync(path.join(tmpdir(), 'octate-sdk-'));
  const clean = { ...process.env };
  for (const k of Object.keys(clean)) if (k.startsWith('OCTATE_') || ['PORT', 'SIGNALING_PORT', 'HOST', 'CORS_ORIGINS'].includes(k)) delete clean[k];
  const child = spawn(SERVER_BIN, [], {
    cwd: dir,
    env: {
      ...clean,
      HOST: '127.0.0.1',
      PORT: '0',
      OCTATE_NO_SIGNALING_PORT: 'true',
      OCTATE_ENV: 'development',
      OCTATE_ADMIN_KEY: ADMIN_KEY,
      OCTATE_TOKEN_SECRET: TOKEN_SECRET,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d) => {
    err = (err + d).slice(-20_000);
  });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`octate-server printed no listening line in 15 s:\n${out}\n${err}`)), 15_000);
    child.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /octate-server listening http=(\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`octate-server exited ${JSON.stringify(e)}:\n${err}`));
    });
  });
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), Number(addr.slice(addr.lastIndexOf(':') + 1))];
  return {
    http: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    host,
    port,
    /** The server's stderr so far, for failure messages. */
    logs: () => err,
    /** A room token for `userId` in `roomId`. */
    token: (userId, roomId) => getToken(`http://${addr}`, userId, roomId, ADMIN_KEY),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A TCP proxy on a free loopback port to `port`: `cut()` destroys every connection through
 * it at once (no close frame, as a network failure), `cutClientSide()` only the client's
 * end, `block()` refuses new ones until `unblock()`, `retarget()` points it at another port.
 * @param {number} port
 */
export async function startProxy(port) {
  let target = port;
  /** @type {Set<{a: net.Socket, b: net.Socket, keepServerSide: boolean}>} */
  const pairs = new Set();
  /** Server-side sockets left open by `cutClientSide`. @type {Set<net.Socket>} */
  const kept = new Set();
  let blocked = false;
  let accepted = 0;
  const server = net.createServer((a) => {
    if (blocked) {
      a.destroy();
      return;
    }
    accepted++;
    const b = net.connect(target, '127.0.0.1');
    const pair = { a, b, keepServerSide: false };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      a.destroy();
      if (pair.keepServerSide) kept.add(b);
      else b.destroy();
    };
    a.on('error', end).on('close', end);
    b.on('error', end).on('close', end);
    a.pipe(b);
    b.pipe(a);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxyPort = /** @type {net.AddressInfo} */ (server.address()).port;
  return {
    ws: `ws://127.0.0.1:${proxyPort}/ws`,
    http: `http://127.0.0.1:${proxyPort}`,
    /** How many connections it has let through. */
    accepted: () => accepted,
    /** Destroys every live connection (both ends) as a network failure would. */
    cut() {
      for (const { a, b } of pairs) {
        a.resetAndDestroy?.() ?? a.destroy();
        b.resetAndDestroy?.() ?? b.destroy();
      }
      pairs.clear();
    },
    /** Sends later connections to `newPort` (a restarted server). */
    retarget(newPort) {
      target = newPort;
    },
    /**
     * Destroys the client side of every connection but leaves the server side open and
     * silent: the client notices the loss, the server does not.
     */
    cutClientSide() {
      for (const pair of pairs) {
        pair.keepServerSide = true;
        pair.a.unpipe(pair.b);
        pair.b.unpipe(pair.a);
        pair.a.destroy();
      }
    },
    block() {
      blocked = true;
    },
    unblock() {
      blocked = false;
    },
    async stop() {
      this.cut();
      for (const b of kept) b.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Event types a recorder keeps. */
const EVENTS = [
  'state', 'connecting', 'resuming', 'connected', 'resumed', 'open', 'disconnected', 'reconnecting', 'closed',
  'peer-joined', 'peer-left', 'host-changed', 'room-closed', 'signal', 'presence', 'cursor-update', 'ice-servers', 'error',
  'server-message',
];

/**
 * Records every event of `client` as `{type, detail, at}`.
 * @param {EventTarget} client
 */
export function record(client) {
  /** @type {{type: string, detail: any, at: number}[]} */
  const events = [];
  for (const type of EVENTS) client.addEventListener(type, (e) => events.push({ type, detail: /** @type {CustomEvent} */ (e).detail, at: Date.now() }));
  return events;
}

/**
 * Polls `check` every 20 ms until it returns a truthy value, at most `timeoutMs`.
 * @template T
 * @param {string} what
 * @param {() => T} check
 * @param {number} [timeoutMs]
 * @returns {Promise<T>}
 */
export async function waitFor(what, check, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** A fresh room id. */
export function roomName(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
}

/**
 * Whether `server` hands out resume tickets: a raw WebSocket joins and reads its `auth-ok`.
 * @param {{ws: string, token: (u: string, r: string) => Promise<string>}} server
 */
export async function offersResume(server) {
  const token = await server.token('probe', roomName('probe'));
  const WS = webSocketClass();
  return new Promise((resolve, reject) => {
    const ws = new WS(server.ws);
    const timer = setTimeout(() => reject(new Error('no auth-ok in 5 s')), 5_000);
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', data: { token } }));
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (msg.type !== 'auth-ok') return;
      clearTimeout(timer);
      ws.close(1000);
      resolve(Boolean(msg.data?.resume));
    };
  });
}
