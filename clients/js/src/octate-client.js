// @octate/client: the Octate signaling client, with a full mesh of WebRTC data channels.
//
// A dependency-free ES module, usable straight from a page (no build step) and from
// Node.js >= 18 for the signaling part. It authenticates to an Octate signaling server,
// keeps the session across network drops (reconnect with back-off, session resume), keeps
// one RTCPeerConnection per remote peer of the room when RTCPeerConnection exists, negotiates
// it with the "perfect negotiation" pattern through the server, and exposes one data channel
// per peer. The server only relays the signaling (SDP and ICE); what is sent with
// `send`/`broadcast` goes peer to peer and never reaches it.
//
//   import { OctateClient } from '@octate/client';
//   const client = new OctateClient({
//     url: 'wss://signal.example.com/ws',
//     getToken: async () => (await fetch('/my-backend/octate-token')).text(),
//   });
//   client.on('message', ({ from, data }) => console.log(from, data));
//   await client.connect();
//   client.broadcast({ hello: 'world' });
//
// Wire protocol: docs/protocol.md. Types: octate-client.d.ts. Guide: README.md.

/**
 * A peer of a room, as the server describes it.
 * @typedef {object} PeerInfo
 * @property {string} userId
 * @property {string} userName
 * @property {boolean} isHost
 * @property {number} connectedAt  Unix milliseconds.
 * @property {number} lastHeartbeat  Unix milliseconds.
 */

/**
 * A room's metadata, as the server describes it (never any document content).
 * @typedef {object} RoomMetadata
 * @property {string} roomId
 * @property {string} roomName
 * @property {string} hostId
 * @property {string} hostName
 * @property {number} createdAt
 * @property {number} lastActivity
 * @property {string} state
 * @property {PeerInfo[]} peers  All peers, this one included.
 * @property {number} peerCount
 */

/** @typedef {{sessionId: string, resumeToken: string}} ResumeBlock */

// Node 18 has EventTarget but no global CustomEvent: a minimal one with `detail`.
const EventWithDetail =
  typeof CustomEvent === 'function'
    ? CustomEvent
    : class extends Event {
        /** @param {string} type @param {{detail?: any}} [init] */
        constructor(type, init) {
          super(type);
          /** @type {any} */
          this.detail = init?.detail ?? null;
        }
      };

/** An error with the server's machine-readable `code` (docs/protocol.md, section 8). */
export class OctateError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} [closeCode]  The WebSocket close code, when the connection was closed.
   */
  constructor(code, message, closeCode) {
    super(message);
    this.name = 'OctateError';
    /** @type {string} */
    this.code = code;
    /** @type {number|undefined} */
    this.closeCode = closeCode;
  }
}

/**
 * Asks an Octate server for a token: `POST {baseUrl}/api/auth/token`.
 * In production the server requires its admin key, which belongs on the app's backend,
 * not in a browser: there, have the backend call this endpoint and hand the token over.
 * @param {string} baseUrl  HTTP base URL of the server, e.g. `http://127.0.0.1:3000` (`''` = same origin).
 * @param {string} userId
 * @param {string} roomId
 * @param {string} [adminKey]  Sent as `Authorization: Bearer <adminKey>` when given.
 * @param {{fetch?: typeof fetch, ttlSeconds?: number}} [options]
 * @returns {Promise<string>} The token.
 */
export async function getToken(baseUrl, userId, roomId, adminKey, options = {}) {
  const doFetch = options.fetch ?? fetch;
  /** @type {Record<string, string>} */
  const headers = { 'content-type': 'application/json' };
  if (adminKey) headers.authorization = `Bearer ${adminKey}`;
  const resp = await doFetch(`${baseUrl.replace(/\/+$/, '')}/api/auth/token`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ userId, roomId, ...(options.ttlSeconds ? { ttlSeconds: options.ttlSeconds } : {}) }),
  });
  const body = await jsonBody(resp);
  if (!resp.ok || !body || typeof body.token !== 'string') throw httpError(resp, body, 'token request');
  return body.token;
}

/**
 * The delay before reconnect attempt `attempt` (1, 2, ...): exponential back-off with full
 * jitter, a uniformly random delay in `[0, min(maxMs, baseMs * 2^(attempt-1)))`.
 * @param {number} attempt  1 for the first retry.
 * @param {number} baseMs
 * @param {number} maxMs
 * @param {() => number} [random]  Uniform in [0, 1); default `Math.random`.
 * @returns {number} Whole milliseconds.
 */
export function backoffDelay(attempt, baseMs, maxMs, random = Math.random) {
  const exp = Math.min(30, Math.max(0, attempt - 1));
  const ceiling = Math.max(0, Math.min(maxMs, baseMs * 2 ** exp));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.min(Math.floor(r * ceiling), Math.max(0, ceiling - 1));
}

/**
 * WebSocket close codes after which the client stops instead of reconnecting, and why.
 * 4001 is terminal only after a fresh `auth` (a refused token); after a `resume` it means
 * "authenticate afresh" and the client does so at once.
 */
export const TERMINAL_CLOSE_CODES = Object.freeze({
  1000: 'closed',
  1008: 'policy-violation',
  4001: 'auth-failed',
  4003: 'room-closed',
  4004: 'replaced',
  4005: 'kicked',
});

/** Token errors that one fresh token from `getToken` may cure. */
const RETRYABLE_TOKEN_ERRORS = new Set(['token-expired', 'token-unknown-key', 'token-not-yet-valid']);

/** Signals relayed peer to peer through the server. */
const SIGNAL_TYPES = new Set(['sdp-offer', 'sdp-answer', 'ice-candidate']);

/** How many signals per peer are remembered for a re-send after `peer-unavailable`. */
const SENT_RING = 32;
/** How many signals per peer wait while that peer is unavailable. */
const HELD_MAX = 64;
/**
 * How long after a signal a `peer-unavailable` that names no peer is taken to be about it:
 * the server answers in order and at once, so the refused signal is a recent one.
 */
const UNNAMED_WINDOW_MS = 2000;

/**
 * @param {unknown} err
 * @returns {string}
 */
function errText(err) {
  return err instanceof Error ? err.message : String(err);
}

/** @param {Response} resp */
async function jsonBody(resp) {
  try {
    return await resp.json();
  } catch {
    return null;
  }
}

/**
 * @param {Response} resp
 * @param {any} body
 * @param {string} what
 */
function httpError(resp, body, what) {
  const code = body?.error?.code ?? 'http';
  const message = body?.error?.message ?? `${what} failed with HTTP ${resp.status}`;
  return new OctateError(code, message);
}

/**
 * The HTTP base URL of the server that serves the WebSocket `url` (same host and port).
 * @param {string} url
 * @returns {string}
 */
function httpBaseOf(url) {
  try {
    const u = new URL(url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    return u.origin;
  } catch {
    return '';
  }
}

/**
 * Milliseconds until the TURN credential in `iceServers` expires, read from its REST
 * username (`<unix expiry>:<id>`), or null when there is none or it cannot be read.
 * @param {any[]} iceServers
 * @param {number} nowMs
 * @returns {number|null}
 */
export function credentialLifetimeMs(iceServers, nowMs) {
  for (const s of iceServers) {
    if (!s || typeof s.credential !== 'string' || typeof s.username !== 'string') continue;
    const m = /^(\d{9,12}):/.exec(s.username);
    if (!m) return null;
    return Number(m[1]) * 1000 - nowMs;
  }
  return null;
}

/**
 * @param {any[]} iceServers
 * @returns {boolean} Whether one entry carries a credential (a TURN server).
 */
function hasCredential(iceServers) {
  return iceServers.some((s) => s && typeof s.credential === 'string');
}

/**
 * The user id a `peer-unavailable` error names in `data.peer`, if it does.
 * @param {any} data
 * @returns {string|null}
 */
function namedPeerOf(data) {
  return typeof data?.peer === 'string' ? data.peer : null;
}

/**
 * One remote peer: its RTCPeerConnection, data channel and negotiation state.
 * @typedef {object} PeerLink
 * @property {string} peerId
 * @property {RTCPeerConnection} pc
 * @property {RTCDataChannel} channel
 * @property {boolean} polite
 * @property {boolean} makingOffer
 * @property {boolean} ignoreOffer
 * @property {boolean} settingRemoteAnswer  An answer is being applied (the state is about to be stable).
 * @property {boolean} settingRemote  A remote description is being applied.
 * @property {boolean} yielding  This end is rolling its own offer back for the remote one.
 * @property {RTCIceCandidateInit[]} pendingCandidates  Candidates received before the remote description.
 * @property {boolean} everConnected  Whether the connection has ever reached `connected`.
 */

/**
 * Signals to one peer, kept for a re-send while the server answers `peer-unavailable`.
 * @typedef {object} Outbox
 * @property {string[]} sent  The last signals sent (JSON text), oldest first.
 * @property {number} failed  How many of the last `sent` the server refused since the last re-send.
 * @property {string[]} held  Signals not sent yet because the peer is unavailable.
 * @property {number} tries  Re-sends since the peer was last heard from.
 * @property {ReturnType<typeof setTimeout>|null} timer  The next re-send.
 * @property {number} lastSentAt  When a signal last went out to the peer (Unix ms).
 */

/**
 * An Octate room member: signaling client (with reconnect and session resume) plus a full
 * mesh of WebRTC data channels.
 * @extends EventTarget
 */
export class OctateClient extends EventTarget {
  /** @param {import('./octate-client.js').OctateClientOptions} options */
  constructor(options) {
    super();
    if (!options || typeof options.url !== 'string') throw new TypeError('OctateClient: options.url is required');
    if (!options.token && typeof options.getToken !== 'function') {
      throw new TypeError('OctateClient: give options.token or options.getToken');
    }
    /** @private */ this._opts = {
      reconnect: true,
      reconnectBaseMs: 500,
      reconnectMaxMs: 15000,
      maxReconnectAttempts: Infinity,
      resume: true,
      channelLabel: 'octate',
      offerFallbackMs: 3000,
      connectTimeoutMs: 10000,
      livenessTimeoutMs: 75000,
      rtcConfig: { iceServers: [] },
      useServerIceServers: true,
      turnRefresh: true,
      unavailableRetryMs: 250,
      unavailableRetryMaxMs: 4000,
      unavailableMaxTries: 20,
      random: Math.random,
      ...options,
    };
    /** @private @type {import('./octate-client.js').WebSocketConstructor} */ this._WebSocket = this._opts.WebSocket ?? globalThis.WebSocket;
    /** @private */ this._fetch = this._opts.fetch ?? globalThis.fetch?.bind(globalThis);
    /** @private */ this._RTC = this._opts.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    /** @private */ this._onOnline = () => {
      if (this._stopped || this.state !== 'reconnecting' || !this._timer) return;
      clearTimeout(this._timer);
      this._timer = null;
      this._debug('back online: reconnecting now');
      this._open();
    };
    /** @private */ this._httpBase = (this._opts.httpUrl ?? httpBaseOf(this._opts.url)).replace(/\/+$/, '');
    /** @private @type {import('./octate-client.js').WebSocketLike|null} */ this._ws = null;
    /** @private @type {'auth'|'resume'} */ this._mode = 'auth';
    /** @private @type {ResumeBlock|null} */ this._resume = null;
    /** @private @type {Map<string, PeerLink>} */ this._links = new Map();
    /** @private @type {Map<string, ReturnType<typeof setTimeout>>} */ this._offerTimers = new Map();
    /** @private @type {Map<string, PeerInfo>} */ this._peers = new Map();
    /** @private @type {Map<string, Outbox>} */ this._outboxes = new Map();
    /** @private */ this._stopped = true;
    /** @private */ this._attempt = 0;
    /** @private */ this._tokenRetries = 0;
    /** @private @type {ReturnType<typeof setTimeout>|null} */ this._timer = null;
    /** @private @type {ReturnType<typeof setTimeout>|null} */ this._turnTimer = null;
    /** @private @type {ReturnType<typeof setTimeout>|null} */ this._socketTimer = null;
    /** @private */ this._turnGeneration = 0;
    /** @private */ this._everConnected = false;
    /** @private @type {{resolve: (v: any) => void, reject: (e: any) => void}|null} */ this._pending = null;
    /** @private @type {OctateError|null} */ this._lastError = null;

    /** The connection's state. @type {import('./octate-client.js').ConnectionState} */
    this.state = 'idle';
    /** This user's id (from the token), once connected. @type {string|null} */
    this.userId = null;
    /** The room's id (from the token), once connected. @type {string|null} */
    this.roomId = null;
    /** The room as of the last `auth-ok`, `room-joined` or `resumed`. @type {RoomMetadata|null} */
    this.room = null;
    /** The STUN/TURN servers the server handed out last (empty if it has none). @type {RTCIceServer[]} */
    this.iceServers = [];
    /** The room's current host. @type {string|null} */
    this.hostId = null;
    /** Whether the signaling connection is authenticated and in the room. */
    this.connected = false;
  }

  /**
   * Connects and authenticates. Resolves with the room once the server answers `auth-ok`;
   * rejects with an {@link OctateError} if this first attempt fails (the client then stops).
   * @returns {Promise<any>}
   */
  connect() {
    if (this._pending) return Promise.reject(new Error('OctateClient: connect() already in progress'));
    if (!this._stopped) return Promise.reject(new Error('OctateClient: already connected'));
    if (typeof this._WebSocket !== 'function') {
      return Promise.reject(new TypeError('OctateClient: no WebSocket: pass options.WebSocket (Node < 22)'));
    }
    this._stopped = false;
    this._listenOnline(true);
    this._everConnected = false;
    this._resume = null;
    this._attempt = 0;
    this._tokenRetries = 0;
    return new Promise((resolve, reject) => {
      this._pending = { resolve, reject };
      this._open();
    });
  }

  /** Other peers of the room, as the server last described them. @returns {PeerInfo[]} */
  get peers() {
    return [...this._peers.values()];
  }

  /** Ids of the peers whose data channel is open. @returns {string[]} */
  get openPeers() {
    return [...this._links.values()].filter((l) => l.channel.readyState === 'open').map((l) => l.peerId);
  }

  /**
   * The RTCPeerConnection to `peerId`, if any (e.g. for `getStats()`).
   * @param {string} peerId
   * @returns {RTCPeerConnection|undefined}
   */
  peerConnection(peerId) {
    return this._links.get(peerId)?.pc;
  }

  /**
   * Sends `data` (any JSON value) to one peer over its data channel.
   * @param {string} peerId
   * @param {unknown} data
   * @returns {boolean} false if that peer's channel is not open.
   */
  send(peerId, data) {
    const link = this._links.get(peerId);
    if (!link || link.channel.readyState !== 'open') return false;
    link.channel.send(JSON.stringify(data));
    return true;
  }

  /**
   * Sends `data` (any JSON value) to every peer whose data channel is open.
   * @param {unknown} data
   * @returns {number} How many peers it was sent to.
   */
  broadcast(data) {
    const text = JSON.stringify(data);
    let n = 0;
    for (const link of this._links.values()) {
      if (link.channel.readyState === 'open') {
        link.channel.send(text);
        n++;
      }
    }
    return n;
  }

  /**
   * Tells the room this user's presence (relayed by the server).
   * @param {'active'|'idle'|'away'} status
   * @returns {boolean} false if not connected.
   */
  sendPresence(status) {
    return this._send({ type: 'presence', data: { status } });
  }

  /**
   * Tells the room this user's cursor position (relayed by the server).
   * @param {number} line  0-based, non-negative integer.
   * @param {number} column  0-based, non-negative integer.
   * @returns {boolean} false if not connected.
   */
  sendCursor(line, column) {
    return this._send({ type: 'cursor-update', data: { line: Math.max(0, line | 0), column: Math.max(0, column | 0) } });
  }

  /**
   * Sends a raw signal to one peer (for signaling-only use, without RTCPeerConnection).
   * It is re-sent if the peer is briefly unavailable, like the client's own signals.
   * @param {string} peerId
   * @param {'sdp-offer'|'sdp-answer'|'ice-candidate'} type
   * @param {object} data  The payload without `peer`, e.g. `{offer: {type, sdp}}`.
   * @returns {boolean} false if not connected.
   */
  sendSignal(peerId, type, data) {
    if (!SIGNAL_TYPES.has(type)) throw new TypeError(`OctateClient: not a signal type: ${type}`);
    return this._sendSignal(peerId, { type, data: { ...data, peer: peerId } });
  }

  /**
   * Listens to an event with a typed payload; same events as `addEventListener`.
   * @param {string} type
   * @param {(detail: any) => void} handler  Called with the event's `detail`.
   * @returns {() => void} Removes the handler.
   */
  on(type, handler) {
    /** @param {Event} e */
    const listener = (e) => handler(/** @type {CustomEvent} */ (e).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Leaves: closes every peer connection and the WebSocket (code 1000), and stops reconnecting. */
  close() {
    this._stop(1000, 'closed by the client', null);
  }

  // ---- signaling connection ----

  /**
   * @private
   * @param {import('./octate-client.js').ConnectionState} state
   */
  _setState(state) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this._emit('state', { state, previous });
  }

  /** Opens a socket: `resume` when a session is kept, else `auth` with a token from `getToken`. @private */
  async _open() {
    this._timer = null;
    if (this._stopped) return;
    const resume = this._opts.resume && this._everConnected ? this._resume : null;
    this._mode = resume ? 'resume' : 'auth';
    this._setState(resume ? 'resuming' : 'connecting');
    this._emit(resume ? 'resuming' : 'connecting', { attempt: this._attempt });
    /** @type {string} */
    let first;
    if (resume) {
      first = JSON.stringify({ type: 'resume', data: { sessionId: resume.sessionId, resumeToken: resume.resumeToken } });
    } else {
      let token;
      try {
        token = this._opts.getToken ? await this._opts.getToken() : this._opts.token;
        if (typeof token !== 'string' || !token) throw new OctateError('token', 'getToken returned no token');
      } catch (err) {
        const error = err instanceof OctateError ? err : new OctateError('token', errText(err));
        this._emit('error', { code: error.code, message: error.message });
        if (this._stopped) return;
        if (!this._everConnected) return this._stop(0, 'no token', error);
        return this._scheduleReconnect();
      }
      if (this._stopped) return;
      first = JSON.stringify({ type: 'auth', data: { token, ...(this._opts.userName ? { userName: this._opts.userName } : {}) } });
    }
    let ws;
    try {
      ws = new this._WebSocket(this._opts.url);
    } catch (err) {
      return this._stop(0, 'bad url', new OctateError('client', errText(err)));
    }
    this._ws = ws;
    this._lastError = null;
    const mode = this._mode;
    /** Gives up on this socket as if it had closed with `code` (once). */
    const fail = (/** @type {number} */ code, /** @type {string} */ reason) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._clearSocketTimer();
      // Any close frame but 1001 (which a page cannot send) ends the session on the server,
      // so an open socket that holds the session, or may (an unanswered `resume`), is left
      // to the next `resume`, which takes it over (the server closes it with 4004).
      const holdsSession = this.connected || mode === 'resume';
      if (ws.readyState === 0 || (ws.readyState === 1 && !holdsSession)) {
        try {
          ws.close();
        } catch {
          // already closing
        }
      }
      this._onSocketClosed(code, reason, mode);
    };
    // A socket that neither joins nor fails in time (a stalled handshake, an implementation
    // that reports no close) counts as closed.
    this._clearSocketTimer();
    this._socketTimer = setTimeout(() => fail(1006, 'no answer in time'), this._opts.connectTimeoutMs);
    ws.onopen = () => {
      if (this._ws === ws) ws.send(first);
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      let msg = null;
      try {
        msg = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data));
      } catch {
        // not JSON: ignored, but a sign of life all the same
      }
      if (msg && typeof msg.type === 'string') this._onServerMessage(msg);
      if (this._ws === ws) this._armLiveness(() => fail(1006, 'no message from the server in time'));
    };
    ws.onclose = (ev) => fail(ev.code, ev.reason ?? '');
    ws.onerror = () => {
      // A close event follows and carries what is known; should none come, this counts as one.
      setTimeout(() => fail(1006, 'socket error'), 250);
    };
  }

  /** @private */
  _clearSocketTimer() {
    if (this._socketTimer) clearTimeout(this._socketTimer);
    this._socketTimer = null;
  }

  /**
   * Restarts the liveness watchdog of an authenticated socket: the server sends a
   * `heartbeat` at least every 30 s (by default), so a longer silence means the connection
   * is dead even if the socket has not noticed (a sleeping laptop, a changed network).
   * @private
   * @param {() => void} onSilence
   */
  _armLiveness(onSilence) {
    if (!this.connected || !(this._opts.livenessTimeoutMs > 0)) return;
    this._clearSocketTimer();
    this._socketTimer = setTimeout(onSilence, this._opts.livenessTimeoutMs);
  }

  /**
   * Leaves the current socket behind (it closes on its own) and opens a fresh `auth` at once.
   * @private
   */
  _authAfresh() {
    const ws = this._ws;
    this._ws = null;
    this._resume = null;
    this.connected = false;
    this._clearSocketTimer();
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    this._debug('resume refused: authenticating afresh');
    this._open();
  }

  /**
   * @private
   * @param {number} code
   * @param {string} reason
   * @param {'auth'|'resume'} mode  What the socket opened with.
   */
  _onSocketClosed(code, reason, mode) {
    const wasConnected = this.connected;
    this.connected = false;
    if (this._stopped) return;
    this._emit('disconnected', { code, reason, wasConnected });
    if (mode === 'resume' && code === 4001) return this._authAfresh();
    /** @type {string|undefined} */
    const terminal = /** @type {any} */ (TERMINAL_CLOSE_CODES)[code];
    const lastCode = this._lastError?.code ?? '';
    const tokenRetry =
      code === 4001 && !!this._opts.getToken && this._everConnected && RETRYABLE_TOKEN_ERRORS.has(lastCode) && this._tokenRetries < 1;
    if (this._pending || (terminal && !tokenRetry) || !this._opts.reconnect) {
      const error = this._lastError ?? new OctateError(terminal ?? 'connection-closed', reason || `connection closed (${code})`, code);
      if (error.closeCode === undefined) error.closeCode = code;
      return this._stop(code, reason || terminal || 'connection closed', error);
    }
    if (tokenRetry) {
      this._tokenRetries++;
      this._resume = null;
    }
    this._scheduleReconnect();
  }

  /**
   * Follows the browser's `online` event while connecting: back online, a reconnect waiting
   * out its back-off starts at once.
   * @private
   * @param {boolean} on
   */
  _listenOnline(on) {
    const target = /** @type {any} */ (globalThis);
    if (typeof target.addEventListener !== 'function') return;
    if (on) target.addEventListener('online', this._onOnline);
    else target.removeEventListener('online', this._onOnline);
  }

  /** @private */
  _scheduleReconnect() {
    if (this._stopped || this._timer) return;
    this._attempt++;
    if (this._attempt > this._opts.maxReconnectAttempts) {
      const error = new OctateError('reconnect-exhausted', `gave up after ${this._attempt - 1} reconnect attempts`);
      return this._stop(0, 'reconnect attempts exhausted', error);
    }
    const delayMs = backoffDelay(this._attempt, this._opts.reconnectBaseMs, this._opts.reconnectMaxMs, this._opts.random);
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt: this._attempt, delayMs, resume: !!(this._opts.resume && this._resume) });
    this._timer = setTimeout(() => this._open(), delayMs);
  }

  /**
   * @private
   * @param {number} code
   * @param {string} reason
   * @param {OctateError|null} error
   */
  _stop(code, reason, error) {
    if (this._stopped) return;
    this._stopped = true;
    this.connected = false;
    this._resume = null;
    this._clearSocketTimer();
    this._listenOnline(false);
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    this._stopTurnRefresh();
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= 1) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    for (const peerId of [...this._links.keys()]) this._dropLink(peerId);
    for (const timer of this._offerTimers.values()) clearTimeout(timer);
    this._offerTimers.clear();
    this._clearOutboxes();
    this._peers.clear();
    this._setState('closed');
    if (this._pending) {
      this._pending.reject(error ?? new OctateError('closed', reason, code));
      this._pending = null;
    }
    this._emit('closed', { code, reason, ...(error ? { error } : {}) });
  }

  /**
   * Sends a message on the authenticated socket.
   * @private
   * @param {{type: string, data?: object}} msg
   * @returns {boolean}
   */
  _send(msg) {
    return this._sendText(JSON.stringify(msg));
  }

  /**
   * @private
   * @param {string} text
   * @returns {boolean}
   */
  _sendText(text) {
    const ws = this._ws;
    if (!ws || !this.connected || ws.readyState !== 1) return false;
    ws.send(text);
    return true;
  }

  /**
   * @private
   * @param {any} msg  A server message (docs/protocol.md, section 6).
   */
  _onServerMessage(msg) {
    const data = msg.data ?? {};
    if (typeof msg.userId === 'string' && msg.userId !== this.userId) this._heardFrom(msg.userId);
    switch (msg.type) {
      case 'auth-ok':
      case 'room-joined':
        return this._onJoined(msg, data);
      case 'resumed':
        return this._onResumed(msg, data);
      case 'heartbeat':
        this._ws?.send(JSON.stringify({ type: 'pong' }));
        return;
      case 'peer-joined': {
        const peer = data.peer;
        if (!peer || peer.userId === this.userId) return;
        // The same user may come back (a new session, "replaced"): start afresh with it.
        this._dropLink(peer.userId);
        this._dropOutbox(peer.userId);
        this._peers.set(peer.userId, peer);
        this._emit('peer-joined', { peer });
        this._armOfferFallback(peer.userId);
        return;
      }
      case 'peer-left': {
        const peer = data.peer;
        if (!peer) return;
        this._peers.delete(peer.userId);
        this._dropLink(peer.userId);
        this._dropOutbox(peer.userId);
        this._emit('peer-left', { peer, reason: data.reason ?? 'left' });
        return;
      }
      case 'host-changed':
        this._setHost(data.hostId, data.hostName);
        return;
      case 'room-closed':
        this._emit('room-closed', { reason: data.reason });
        return;
      case 'error':
        return this._onError(data);
      case 'sdp-offer':
      case 'sdp-answer':
      case 'ice-candidate':
        if (typeof msg.userId !== 'string') return;
        this._emit('signal', { from: msg.userId, type: msg.type, data });
        if (msg.type === 'sdp-offer' && data.offer) this._onDescription(msg.userId, data.offer);
        else if (msg.type === 'sdp-answer' && data.answer) this._onDescription(msg.userId, data.answer);
        else if (msg.type === 'ice-candidate' && data.candidate) this._onCandidate(msg.userId, data.candidate);
        return;
      case 'presence':
        this._emit('presence', { from: msg.userId, status: data.status });
        return;
      case 'cursor-update':
        this._emit('cursor-update', { from: msg.userId, line: data.line, column: data.column });
        return;
      case 'server-message':
        this._emit('server-message', { roomId: msg.roomId, data: msg.data });
        return;
      default:
        // Unknown types are ignored (protocol section 11).
        return;
    }
  }

  /**
   * @private
   * @param {any} data
   */
  _onError(data) {
    const err = new OctateError(typeof data.code === 'string' ? data.code : 'unknown', typeof data.message === 'string' ? data.message : 'error');
    if (err.code === 'resume-failed') {
      this._emit('error', { code: err.code, message: err.message });
      if (this._mode === 'resume') this._authAfresh();
      return;
    }
    if (err.code === 'peer-unavailable') {
      // The error may not say which peer: then it is about a peer signaled just now (with
      // several, each of them gets one re-send; duplicates of signals are harmless).
      const named = namedPeerOf(data);
      const peers = named ? [named] : this._recentlySignaled();
      const retrying = peers.filter((peerId) => this._onPeerUnavailable(peerId));
      if (retrying.length > 0) return;
    }
    this._lastError = err;
    this._emit('error', { code: err.code, message: err.message });
  }

  /**
   * @private
   * @param {string|undefined} hostId
   * @param {string|undefined} hostName
   */
  _setHost(hostId, hostName) {
    if (typeof hostId !== 'string' || hostId === this.hostId) return;
    this.hostId = hostId;
    for (const p of this._peers.values()) p.isHost = p.userId === hostId;
    this._emit('host-changed', { hostId, hostName: hostName ?? this._peers.get(hostId)?.userName ?? hostId });
  }

  /**
   * Keeps what every `auth-ok`, `room-joined` and `resumed` carries: identity, room, ICE
   * servers and the newest resume block.
   * @private
   * @param {any} msg
   * @param {any} data
   */
  _takeSession(msg, data) {
    this.userId = String(msg.userId);
    this.roomId = String(msg.roomId);
    this.room = data.room ?? null;
    const r = data.resume;
    this._resume = r && typeof r.sessionId === 'string' && typeof r.resumeToken === 'string' ? { sessionId: r.sessionId, resumeToken: r.resumeToken } : null;
    this._clearSocketTimer();
    this.connected = true;
    this._everConnected = true;
    this._attempt = 0;
    this._tokenRetries = 0;
    this._lastError = null;
    this._setIceServers(Array.isArray(data.iceServers) ? data.iceServers : [], null);
  }

  /**
   * @private
   * @param {any} data
   * @returns {PeerInfo[]} The others, from a join or resume snapshot.
   */
  _snapshotPeers(data) {
    return Array.isArray(data.peers) ? data.peers.filter((/** @type {PeerInfo} */ p) => p && typeof p.userId === 'string' && p.userId !== this.userId) : [];
  }

  /**
   * A fresh session (`auth-ok`, `room-joined`): the others dropped their connections to this
   * user, so every link starts afresh.
   * @private
   * @param {any} msg
   * @param {any} data
   */
  _onJoined(msg, data) {
    const reconnected = this._everConnected;
    this._takeSession(msg, data);
    const userId = /** @type {string} */ (this.userId);
    const roomId = /** @type {string} */ (this.roomId);
    const previousHost = this.hostId;
    this.hostId = this.room?.hostId ?? null;
    this._clearOutboxes();
    const peers = this._snapshotPeers(data);
    const now = new Set(peers.map((p) => p.userId));
    for (const [peerId, peer] of [...this._peers]) {
      this._dropLink(peerId);
      if (!now.has(peerId)) {
        this._peers.delete(peerId);
        this._emit('peer-left', { peer, reason: 'disconnected' });
      }
    }
    for (const peerId of [...this._links.keys()]) this._dropLink(peerId);
    const detail = { room: this.room, peers, userId, roomId, reconnected };
    this._setState('open');
    if (this._pending) {
      this._pending.resolve(detail);
      this._pending = null;
    }
    this._emit('connected', detail);
    this._emit('open', { resumed: false, reconnected });
    if (reconnected && previousHost !== this.hostId && this.hostId) {
      this._emit('host-changed', { hostId: this.hostId, hostName: this.room?.hostName ?? this.hostId });
    }
    for (const peer of peers) {
      const known = this._peers.has(peer.userId);
      this._peers.set(peer.userId, peer);
      if (!known) this._emit('peer-joined', { peer });
      this._ensureLink(peer.userId);
    }
  }

  /**
   * The same session on a new socket (`resumed`): links and channels carry on; only real
   * differences with the snapshot become events.
   * @private
   * @param {any} msg
   * @param {any} data
   */
  _onResumed(msg, data) {
    this._takeSession(msg, data);
    const peers = this._snapshotPeers(data);
    const now = new Map(peers.map((p) => [p.userId, p]));
    for (const [peerId, peer] of [...this._peers]) {
      const fresh = now.get(peerId);
      if (fresh && fresh.connectedAt === peer.connectedAt) continue;
      // Gone, or gone and back as a new session while this end was away.
      this._peers.delete(peerId);
      this._dropLink(peerId);
      this._dropOutbox(peerId);
      this._emit('peer-left', { peer, reason: 'disconnected' });
    }
    /** @type {string[]} */
    const joined = [];
    for (const peer of peers) {
      const known = this._peers.has(peer.userId);
      this._peers.set(peer.userId, peer);
      if (!known) joined.push(peer.userId);
    }
    this._setHost(this.room?.hostId, this.room?.hostName);
    const detail = { room: this.room, peers, userId: this.userId, roomId: this.roomId };
    this._setState('open');
    this._emit('resumed', detail);
    this._emit('open', { resumed: true, reconnected: true });
    for (const peerId of joined) {
      const peer = /** @type {PeerInfo} */ (this._peers.get(peerId));
      this._emit('peer-joined', { peer });
      this._armOfferFallback(peerId);
    }
    // Signals sent during the gap are lost: restart ICE where the connection is not up.
    for (const link of this._links.values()) {
      if (link.pc.connectionState !== 'connected') {
        this._debug(`${link.peerId}: restarting ICE after resume (${link.pc.connectionState})`);
        link.pc.restartIce();
      }
    }
  }

  // ---- peer-unavailable: re-send signals to a suspended peer ----

  /**
   * @private
   * @param {string} peerId
   * @returns {Outbox}
   */
  _outbox(peerId) {
    let box = this._outboxes.get(peerId);
    if (!box) {
      box = { sent: [], failed: 0, held: [], tries: 0, timer: null, lastSentAt: 0 };
      this._outboxes.set(peerId, box);
    }
    return box;
  }

  /**
   * Sends a signal, or holds it while its peer is unavailable.
   * @private
   * @param {string} peerId
   * @param {{type: string, data: object}} msg
   * @returns {boolean}
   */
  _sendSignal(peerId, msg) {
    if (!this.connected) return false;
    const text = JSON.stringify(msg);
    const box = this._outbox(peerId);
    if (box.timer) {
      box.held.push(text);
      if (box.held.length > HELD_MAX) box.held.shift();
      return true;
    }
    return this._sendTracked(box, text);
  }

  /**
   * @private
   * @param {Outbox} box
   * @param {string} text
   * @returns {boolean}
   */
  _sendTracked(box, text) {
    if (!this._sendText(text)) return false;
    box.sent.push(text);
    if (box.sent.length > SENT_RING) box.sent.shift();
    box.lastSentAt = Date.now();
    return true;
  }

  /**
   * Peers a signal went to within the last UNNAMED_WINDOW_MS.
   * @private
   * @returns {string[]}
   */
  _recentlySignaled() {
    const since = Date.now() - UNNAMED_WINDOW_MS;
    return [...this._outboxes].filter(([, box]) => box.lastSentAt >= since).map(([peerId]) => peerId);
  }

  /**
   * The server refused one signal to `peerId` (suspended): re-send it, and whatever else
   * failed or waits, after a bounded back-off.
   * @private
   * @param {string} peerId
   * @returns {boolean} false when the re-sends are exhausted.
   */
  _onPeerUnavailable(peerId) {
    const box = this._outbox(peerId);
    box.failed = Math.min(box.failed + 1, SENT_RING);
    if (box.timer) return true;
    if (box.tries >= this._opts.unavailableMaxTries) {
      this._dropOutbox(peerId);
      return false;
    }
    const delay = Math.min(this._opts.unavailableRetryMaxMs, this._opts.unavailableRetryMs * 2 ** Math.min(box.tries, 20));
    box.tries++;
    this._debug(`${peerId}: unavailable, re-sending in ${delay} ms (try ${box.tries})`);
    box.timer = setTimeout(() => {
      box.timer = null;
      if (this._outboxes.get(peerId) !== box) return;
      const again = [...box.sent.slice(box.sent.length - box.failed), ...box.held];
      box.sent.splice(box.sent.length - box.failed);
      box.failed = 0;
      box.held = [];
      for (const text of again) this._sendTracked(box, text);
    }, delay);
    return true;
  }

  /**
   * A message from `peerId` arrived: it is reachable, its re-send count starts over.
   * @private
   * @param {string} peerId
   */
  _heardFrom(peerId) {
    const box = this._outboxes.get(peerId);
    if (box) box.tries = 0;
  }

  /** @private @param {string} peerId */
  _dropOutbox(peerId) {
    const box = this._outboxes.get(peerId);
    if (box?.timer) clearTimeout(box.timer);
    this._outboxes.delete(peerId);
  }

  /** @private */
  _clearOutboxes() {
    for (const peerId of [...this._outboxes.keys()]) this._dropOutbox(peerId);
  }

  // ---- TURN credentials ----

  /**
   * Takes a new ICE server list, applies it to live connections and schedules its refresh.
   * @private
   * @param {RTCIceServer[]} iceServers
   * @param {number|null} ttlSecs  From `POST /api/turn/credentials`; null when read from a join.
   */
  _setIceServers(iceServers, ttlSecs) {
    const changed = JSON.stringify(iceServers) !== JSON.stringify(this.iceServers);
    this.iceServers = iceServers;
    if (changed && this._opts.useServerIceServers) {
      for (const link of this._links.values()) {
        try {
          link.pc.setConfiguration({ ...link.pc.getConfiguration(), iceServers: this._mergedIceServers() });
        } catch (err) {
          this._localError(`could not apply new ICE servers to ${link.peerId}: ${errText(err)}`);
        }
      }
    }
    if (changed) this._emit('ice-servers', { iceServers, ...(ttlSecs !== null ? { ttl: ttlSecs } : {}) });
    this._scheduleTurnRefresh(ttlSecs);
  }

  /** @private */
  _stopTurnRefresh() {
    if (this._turnTimer) clearTimeout(this._turnTimer);
    this._turnTimer = null;
    this._turnGeneration++;
  }

  /**
   * Refreshes the TURN credential at half its lifetime.
   * @private
   * @param {number|null} ttlSecs
   */
  _scheduleTurnRefresh(ttlSecs) {
    this._stopTurnRefresh();
    if (!this._opts.turnRefresh || !hasCredential(this.iceServers) || typeof this._fetch !== 'function') return;
    let lifetimeMs = ttlSecs !== null ? ttlSecs * 1000 : credentialLifetimeMs(this.iceServers, Date.now());
    // An unreadable or implausible lifetime (clock skew): ask the server for one at once.
    if (lifetimeMs === null || lifetimeMs <= 0 || lifetimeMs > 8 * 86400_000) lifetimeMs = 0;
    const delayMs = Math.max(500, Math.floor(lifetimeMs / 2));
    this._armTurnRefresh(delayMs, Math.max(1000, delayMs));
  }

  /**
   * @private
   * @param {number} delayMs
   * @param {number} retryMs  Delay before another try when this one fails.
   */
  _armTurnRefresh(delayMs, retryMs) {
    const generation = this._turnGeneration;
    this._turnTimer = setTimeout(async () => {
      this._turnTimer = null;
      try {
        const body = await this._fetchTurnCredentials();
        if (this._stopped || generation !== this._turnGeneration) return;
        this._setIceServers(body.iceServers, body.ttl);
      } catch (err) {
        if (this._stopped || generation !== this._turnGeneration) return;
        const code = err instanceof OctateError ? err.code : 'turn';
        this._emit('error', { code, message: `TURN credential refresh failed: ${errText(err)}` });
        this._armTurnRefresh(Math.min(retryMs, 60_000), Math.min(retryMs * 2, 60_000));
      }
    }, delayMs);
  }

  /**
   * `POST /api/turn/credentials` with the room token.
   * @private
   * @returns {Promise<{iceServers: RTCIceServer[], ttl: number}>}
   */
  async _fetchTurnCredentials() {
    const token = this._opts.getToken ? await this._opts.getToken() : this._opts.token;
    const resp = await /** @type {typeof fetch} */ (this._fetch)(`${this._httpBase}/api/turn/credentials`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    const body = await jsonBody(resp);
    if (!resp.ok || !body || !Array.isArray(body.iceServers) || typeof body.ttl !== 'number') {
      throw httpError(resp, body, 'TURN credential request');
    }
    return body;
  }

  /** @private @returns {RTCIceServer[]} */
  _mergedIceServers() {
    return [...(this._opts.rtcConfig.iceServers ?? []), ...this.iceServers];
  }

  // ---- WebRTC: one RTCPeerConnection per remote peer, perfect negotiation ----

  /**
   * The peer already in the room waits for the newcomer's offer (the newcomer got it in its
   * join snapshot); it offers itself only if none comes within `offerFallbackMs`. Offering
   * from both ends at once works too (perfect negotiation), but costs a round of rollback.
   * @private
   * @param {string} peerId
   */
  _armOfferFallback(peerId) {
    if (!this._RTC) return;
    clearTimeout(this._offerTimers.get(peerId));
    this._offerTimers.set(
      peerId,
      setTimeout(() => {
        this._offerTimers.delete(peerId);
        if (this.connected && this._peers.has(peerId)) this._ensureLink(peerId);
      }, this._opts.offerFallbackMs),
    );
  }

  /**
   * The configuration of a new RTCPeerConnection: `rtcConfig`, plus the server's ICE servers
   * and the transport policy when those options are set.
   * @private
   * @returns {RTCConfiguration}
   */
  _rtcConfiguration() {
    const { rtcConfig, useServerIceServers, iceTransportPolicy } = this._opts;
    /** @type {RTCConfiguration} */
    const config = { ...rtcConfig };
    if (useServerIceServers) config.iceServers = this._mergedIceServers();
    if (iceTransportPolicy !== undefined) config.iceTransportPolicy = iceTransportPolicy;
    return config;
  }

  /**
   * @private
   * @param {string} peerId
   * @returns {PeerLink|null} null without RTCPeerConnection (signaling-only use).
   */
  _ensureLink(peerId) {
    const existing = this._links.get(peerId);
    if (existing) return existing;
    if (!this._RTC) return null;
    clearTimeout(this._offerTimers.get(peerId));
    this._offerTimers.delete(peerId);
    const pc = new this._RTC(this._rtcConfiguration());
    // Both ends create the same pre-negotiated channel (id 0): no in-band announcement needed,
    // and either end's offer carries it.
    const channel = pc.createDataChannel(this._opts.channelLabel, { negotiated: true, id: 0, ordered: true });
    /** @type {PeerLink} */
    const link = {
      peerId,
      pc,
      channel,
      // A deterministic rule both ends agree on: the larger user id yields on collisions.
      polite: String(this.userId) > peerId,
      makingOffer: false,
      ignoreOffer: false,
      settingRemoteAnswer: false,
      settingRemote: false,
      yielding: false,
      pendingCandidates: [],
      everConnected: false,
    };
    this._links.set(peerId, link);
    const current = () => this._links.get(peerId) === link;

    pc.onnegotiationneeded = async () => {
      try {
        link.makingOffer = true;
        this._debug(`${peerId}: negotiation needed (${pc.signalingState})`);
        await pc.setLocalDescription();
        // If a remote offer is rolling this one back, there is nothing to send.
        if (current() && !link.yielding && pc.localDescription?.type === 'offer') {
          this._sendDescription(peerId, pc.localDescription);
        }
      } catch (err) {
        if (current()) this._localError(`negotiation with ${peerId} failed: ${errText(err)}`);
      } finally {
        link.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      // `null` marks the end of gathering; nothing to relay.
      if (candidate && candidate.candidate && current()) {
        this._sendSignal(peerId, { type: 'ice-candidate', data: { peer: peerId, candidate: candidate.toJSON() } });
      }
    };
    pc.oniceconnectionstatechange = () => {
      this._debug(`${peerId}: ice ${pc.iceConnectionState}`);
      if (current() && pc.iceConnectionState === 'failed') pc.restartIce();
    };
    pc.onconnectionstatechange = () => {
      if (!current()) return;
      if (pc.connectionState === 'connected') link.everConnected = true;
      if (pc.connectionState === 'failed') pc.restartIce();
    };
    channel.onopen = () => {
      if (current()) this._emit('channel-open', { peerId });
    };
    channel.onclose = () => {
      if (current()) this._emit('channel-closed', { peerId });
    };
    channel.onmessage = (ev) => {
      if (!current()) return;
      let data = ev.data;
      if (typeof data === 'string') {
        try {
          data = JSON.parse(data);
        } catch {
          // not JSON: handed over as the string it is
        }
      }
      this._emit('message', { from: peerId, data });
    };
    return link;
  }

  /**
   * @private
   * @param {string} peerId
   */
  _dropLink(peerId) {
    clearTimeout(this._offerTimers.get(peerId));
    this._offerTimers.delete(peerId);
    const link = this._links.get(peerId);
    if (!link) return;
    this._links.delete(peerId);
    const wasOpen = link.channel.readyState === 'open';
    try {
      link.channel.close();
      link.pc.close();
    } catch {
      // already closed
    }
    if (wasOpen) this._emit('channel-closed', { peerId });
  }

  /**
   * @private
   * @param {string} peerId
   * @param {RTCSessionDescription|null} description
   */
  _sendDescription(peerId, description) {
    if (!description) return;
    this._debug(`${peerId}: sending ${description.type}`);
    const desc = { type: description.type, sdp: description.sdp };
    if (description.type === 'offer') this._sendSignal(peerId, { type: 'sdp-offer', data: { peer: peerId, offer: desc } });
    else if (description.type === 'answer') this._sendSignal(peerId, { type: 'sdp-answer', data: { peer: peerId, answer: desc } });
  }

  /**
   * @private
   * @param {string} peerId
   * @param {RTCSessionDescriptionInit} description
   */
  async _onDescription(peerId, description) {
    this._debug(`${peerId}: got ${description.type}`);
    if (peerId === this.userId || !this._peers.has(peerId)) return;
    let link = this._ensureLink(peerId);
    if (!link) return;
    let { pc } = link;
    try {
      if (description.type === 'answer' && pc.signalingState !== 'have-local-offer' && !link.makingOffer) {
        // An answer to no offer of ours (one re-sent after the peer was unavailable, or to an
        // offer that was rolled back): nothing to apply.
        this._debug(`${peerId}: dropping an answer in ${pc.signalingState}`);
        return;
      }
      // An offer that arrives while an answer is being applied is no collision: the state
      // is about to be stable, and ignoring it would leave the other end waiting forever.
      const readyForOffer = !link.makingOffer && (pc.signalingState === 'stable' || link.settingRemoteAnswer);
      const offerCollision = description.type === 'offer' && !readyForOffer;
      link.ignoreOffer = !link.polite && offerCollision;
      this._debug(`${peerId}: ${description.type} in ${pc.signalingState}, collision=${offerCollision}, ignored=${link.ignoreOffer}`);
      if (link.ignoreOffer) return;
      const rollingBack = offerCollision && link.everConnected;
      if (offerCollision && !link.everConnected) {
        // The polite peer yields. Before the first connection there is nothing to keep, so it
        // takes the remote offer on a fresh RTCPeerConnection rather than rolling its own offer
        // back: Chromium can leave ICE gathering stalled on a connection whose first offer was
        // rolled back moments after it was made.
        const queued = link.pendingCandidates;
        this._dropLink(peerId);
        link = /** @type {PeerLink} */ (this._ensureLink(peerId));
        link.pendingCandidates.push(...queued);
        pc = link.pc;
      }
      // Otherwise, on a collision, setting the remote offer while a local one is pending rolls
      // the local one back (implicit rollback).
      link.settingRemoteAnswer = description.type === 'answer';
      link.settingRemote = true;
      link.yielding = rollingBack;
      try {
        await pc.setRemoteDescription(description);
      } finally {
        link.settingRemoteAnswer = false;
        link.settingRemote = false;
        link.yielding = false;
      }
      await this._flushCandidates(link);
      if (description.type === 'offer') {
        await pc.setLocalDescription();
        if (this._links.get(peerId) === link) this._sendDescription(peerId, pc.localDescription);
      }
    } catch (err) {
      if (this._links.get(peerId) === link) this._localError(`signaling with ${peerId} failed: ${errText(err)}`);
    }
  }

  /**
   * @private
   * @param {string} peerId
   * @param {RTCIceCandidateInit} candidate
   */
  async _onCandidate(peerId, candidate) {
    this._debug(`${peerId}: got candidate ${candidate.candidate}`);
    if (peerId === this.userId || !this._peers.has(peerId)) return;
    const link = this._ensureLink(peerId);
    if (!link) return;
    const remote = link.pc.remoteDescription;
    if (!remote || link.settingRemote) {
      link.pendingCandidates.push(candidate);
      return;
    }
    // A candidate for a description this end never took (an offer it ignored or that was
    // rolled back) carries an ICE username fragment that the remote description lacks.
    if (candidate.usernameFragment && !remote.sdp.includes(`a=ice-ufrag:${candidate.usernameFragment}`)) {
      this._debug(`${peerId}: dropping a candidate of another negotiation`);
      return;
    }
    try {
      await link.pc.addIceCandidate(candidate);
    } catch (err) {
      if (!link.ignoreOffer && this._links.get(peerId) === link) {
        this._localError(`ICE candidate from ${peerId} rejected: ${errText(err)}`);
      }
    }
  }

  /** @private @param {PeerLink} link */
  async _flushCandidates(link) {
    const queued = link.pendingCandidates.splice(0);
    for (const candidate of queued) {
      try {
        await link.pc.addIceCandidate(candidate);
      } catch {
        // A candidate of a rolled-back or superseded negotiation: harmless.
      }
    }
  }

  /**
   * @private
   * @param {string} message
   */
  _debug(message) {
    if (this._opts.debug) this._opts.debug(message);
  }

  /**
   * @private
   * @param {string} message
   */
  _localError(message) {
    this._emit('error', { code: 'client', message });
  }

  /**
   * @private
   * @param {string} type
   * @param {any} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new EventWithDetail(type, { detail }));
  }
}
