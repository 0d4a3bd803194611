// Octate browser client: signaling over WebSocket, a full mesh of WebRTC data channels.
//
// A dependency-free ES module. It authenticates to an Octate signaling server, keeps one
// RTCPeerConnection per remote peer of the room, negotiates it with the "perfect
// negotiation" pattern through the server, and exposes one data channel per peer. The
// server only relays the signaling (SDP and ICE); what is sent with `send`/`broadcast`
// goes peer to peer and never reaches it.
//
//   import { OctateClient, getToken } from './octate-client.js';
//   const client = new OctateClient({
//     url: 'ws://127.0.0.1:3000/ws',
//     getToken: () => getToken('http://127.0.0.1:3000', 'alice', 'room1'),
//     userName: 'Alice',
//   });
//   client.addEventListener('message', (e) => console.log(e.detail.from, e.detail.data));
//   await client.connect();
//   client.broadcast({ hello: 'world' });
//
// Wire protocol: docs/protocol.md.

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
 * @property {string} [fileId]
 * @property {number} [version]
 * @property {number} createdAt
 * @property {number} lastActivity
 * @property {'ACTIVE'|'IDLE'|'CLOSED'} state
 * @property {PeerInfo[]} peers  All peers, this one included.
 * @property {number} peerCount
 */

/**
 * Options of {@link OctateClient}. Give `token` or `getToken`; with `getToken`, every
 * (re)connection asks it for a fresh token.
 * @typedef {object} OctateClientOptions
 * @property {string} url  WebSocket URL of the signaling server, e.g. `ws://host:3000/ws`.
 * @property {string} [token]  A token from `POST /api/auth/token` (or from the app's backend).
 * @property {() => (string|Promise<string>)} [getToken]  Returns a fresh token.
 * @property {string} [userName]  Display name shown to the other peers.
 * @property {RTCConfiguration} [rtcConfig]  Passed to every RTCPeerConnection; default `{ iceServers: [] }`.
 * @property {boolean} [useServerIceServers]  Add the `iceServers` of the last `auth-ok` (the server's
 *   STUN/TURN servers, with fresh TURN credentials) to `rtcConfig.iceServers`; default false.
 * @property {RTCIceTransportPolicy} [iceTransportPolicy]  Overrides `rtcConfig.iceTransportPolicy`,
 *   e.g. `relay` to connect only through TURN; default: `rtcConfig`'s (the browser's `all`).
 * @property {boolean} [reconnect]  Reconnect after an unexpected drop; default true.
 * @property {number} [reconnectBaseMs]  First reconnect delay; default 500.
 * @property {number} [reconnectMaxMs]  Longest reconnect delay; default 15000.
 * @property {string} [channelLabel]  Label of the data channels; default `octate`.
 * @property {number} [offerFallbackMs]  How long a peer already in the room waits for a newcomer's
 *   offer before offering itself; default 3000.
 * @property {typeof WebSocket} [WebSocket]  WebSocket constructor (for tests); default the global.
 * @property {(message: string) => void} [debug]  Called with a line per signaling step, for debugging.
 */

/**
 * The client's events and their payloads. Every event is a `CustomEvent` whose `detail` is
 * the payload; listen with `addEventListener(type, (e) => e.detail…)` or the typed `on()`.
 * - `connected`: the server accepted the token (`auth-ok`); again after every reconnect.
 * - `peer-joined`, `peer-left`: the room's membership, as the server reports it.
 * - `open`: the data channel with `peerId` is open (again after a reconnect).
 * - `channel-closed`: the data channel with `peerId` closed.
 * - `message`: `data` as the remote peer passed it to `send`/`broadcast`.
 * - `presence`, `cursor-update`: relayed by the server from `from`.
 * - `host-changed`, `room-closed`: as the server reports them.
 * - `error`: an `error` from the server (its `code`), a local WebRTC failure (code `client`),
 *   or a failed `getToken` (the HTTP error's code, or `token` when the request itself failed).
 * - `disconnected`: the WebSocket closed; a reconnect follows unless `closed` does.
 * - `reconnecting`: the next attempt, after `delayMs`.
 * - `closed`: the client stopped for good: `close()`, or a close it does not retry (bad token
 *   4001, replaced 4004, room closed 4003, room full 1008), or a failed first `connect()`.
 * @typedef {{
 *   'connected': {room: RoomMetadata|null, peers: PeerInfo[], userId: string, roomId: string, reconnected: boolean},
 *   'peer-joined': {peer: PeerInfo},
 *   'peer-left': {peer: PeerInfo, reason: string},
 *   'open': {peerId: string},
 *   'channel-closed': {peerId: string},
 *   'message': {from: string, data: any},
 *   'presence': {from: string, status: 'active'|'idle'|'away'},
 *   'cursor-update': {from: string, line: number, column: number},
 *   'host-changed': {hostId: string, hostName: string},
 *   'room-closed': {reason: string},
 *   'error': {code: string, message: string},
 *   'disconnected': {code: number, reason: string, wasConnected: boolean},
 *   'reconnecting': {attempt: number, delayMs: number},
 *   'closed': {code: number, reason: string, error?: OctateError},
 * }} OctateEventMap
 */

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
 * @returns {Promise<string>} The token.
 */
export async function getToken(baseUrl, userId, roomId, adminKey) {
  /** @type {Record<string, string>} */
  const headers = { 'content-type': 'application/json' };
  if (adminKey) headers.authorization = `Bearer ${adminKey}`;
  const resp = await fetch(`${baseUrl.replace(/\/+$/, '')}/api/auth/token`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ userId, roomId }),
  });
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // handled below
  }
  if (!resp.ok || !body || typeof body.token !== 'string') {
    const code = body?.error?.code ?? 'http';
    const message = body?.error?.message ?? `token request failed with HTTP ${resp.status}`;
    throw new OctateError(code, message);
  }
  return body.token;
}

/**
 * @param {unknown} err
 * @returns {string}
 */
function errText(err) {
  return err instanceof Error ? err.message : String(err);
}

/** Close codes after which the client does not reconnect. */
const FATAL_CLOSE = new Map([
  [4001, 'auth-failed'],
  [4003, 'room-closed'],
  [4004, 'replaced'],
  [1008, 'policy-violation'],
]);

/** Token errors that a fresh token from `getToken` may cure. */
const RETRYABLE_TOKEN_ERRORS = new Set(['token-expired', 'token-unknown-key', 'token-not-yet-valid']);

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
 * An Octate room member: signaling client plus a full mesh of WebRTC data channels.
 * @extends EventTarget
 */
export class OctateClient extends EventTarget {
  /** @param {OctateClientOptions} options */
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
      channelLabel: 'octate',
      offerFallbackMs: 3000,
      rtcConfig: { iceServers: [] },
      ...options,
    };
    /** @private @type {WebSocket|null} */ this._ws = null;
    /** @private @type {Map<string, PeerLink>} */ this._links = new Map();
    /** @private @type {Map<string, ReturnType<typeof setTimeout>>} */ this._offerTimers = new Map();
    /** @private @type {Map<string, PeerInfo>} */ this._peers = new Map();
    /** @private */ this._stopped = false;
    /** @private */ this._attempt = 0;
    /** @private @type {ReturnType<typeof setTimeout>|null} */ this._timer = null;
    /** @private */ this._everConnected = false;
    /** @private @type {{resolve: (v: any) => void, reject: (e: any) => void}|null} */ this._pending = null;
    /** @private @type {OctateError|null} */ this._lastError = null;

    /** This user's id (from the token), once connected. @type {string|null} */
    this.userId = null;
    /** The room's id (from the token), once connected. @type {string|null} */
    this.roomId = null;
    /** The room as of the last `auth-ok`. @type {RoomMetadata|null} */
    this.room = null;
    /** The STUN/TURN servers of the last `auth-ok` (empty if the server has none). @type {RTCIceServer[]} */
    this.iceServers = [];
    /** The room's current host. @type {string|null} */
    this.hostId = null;
    /** Whether the signaling connection is authenticated and in the room. */
    this.connected = false;
  }

  /**
   * Connects and authenticates. Resolves with the room once the server answers `auth-ok`;
   * rejects with an {@link OctateError} if this first attempt fails (the client then stops).
   * @returns {Promise<OctateEventMap['connected']>}
   */
  connect() {
    if (this._pending) return Promise.reject(new Error('OctateClient: connect() already in progress'));
    if (!this._stopped && (this._ws || this._timer)) return Promise.reject(new Error('OctateClient: already connected'));
    this._stopped = false;
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
    return this._signal({ type: 'presence', data: { status } });
  }

  /**
   * Tells the room this user's cursor position (relayed by the server).
   * @param {number} line  0-based, non-negative integer.
   * @param {number} column  0-based, non-negative integer.
   * @returns {boolean} false if not connected.
   */
  sendCursor(line, column) {
    return this._signal({ type: 'cursor-update', data: { line: Math.max(0, line | 0), column: Math.max(0, column | 0) } });
  }

  /**
   * Listens to an event with a typed payload; same events as `addEventListener`.
   * @template {keyof OctateEventMap} K
   * @param {K} type
   * @param {(detail: OctateEventMap[K]) => void} handler  Called with the event's `detail`.
   * @returns {() => void} Removes the handler.
   */
  on(type, handler) {
    /** @param {Event} e */
    const listener = (e) => handler(/** @type {CustomEvent<OctateEventMap[K]>} */ (e).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /** Leaves: closes every peer connection and the WebSocket, and stops reconnecting. */
  close() {
    this._stop(1000, 'closed by the client', null);
  }

  // ---- signaling connection ----

  /** @private */
  async _open() {
    this._timer = null;
    let token;
    try {
      token = this._opts.getToken ? await this._opts.getToken() : this._opts.token;
    } catch (err) {
      const error = err instanceof OctateError ? err : new OctateError('token', errText(err));
      this._emit('error', { code: error.code, message: error.message });
      if (this._stopped) return;
      if (!this._everConnected) return this._stop(0, 'no token', error);
      return this._scheduleReconnect();
    }
    if (this._stopped) return;
    const WS = this._opts.WebSocket ?? WebSocket;
    let ws;
    try {
      ws = new WS(this._opts.url);
    } catch (err) {
      return this._stop(0, 'bad url', new OctateError('client', errText(err)));
    }
    this._ws = ws;
    this._lastError = null;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'auth', data: { token, ...(this._opts.userName ? { userName: this._opts.userName } : {}) } }));
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg && typeof msg.type === 'string') this._onServerMessage(msg);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._onSocketClosed(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // A close event always follows; it carries what is known.
    };
  }

  /**
   * @private
   * @param {number} code
   * @param {string} reason
   */
  _onSocketClosed(code, reason) {
    const wasConnected = this.connected;
    this.connected = false;
    if (this._stopped) return;
    const fatal = FATAL_CLOSE.get(code);
    const lastCode = this._lastError?.code;
    const retryableAuth = code === 4001 && this._opts.getToken && RETRYABLE_TOKEN_ERRORS.has(lastCode ?? '') && this._everConnected;
    if (this._pending || (fatal && !retryableAuth) || !this._opts.reconnect) {
      const error = this._lastError ?? new OctateError(fatal ?? 'connection-closed', reason || `connection closed (${code})`, code);
      if (error.closeCode === undefined) error.closeCode = code;
      return this._stop(code, reason || fatal || 'connection closed', error);
    }
    this._emit('disconnected', { code, reason, wasConnected });
    this._scheduleReconnect();
  }

  /** @private */
  _scheduleReconnect() {
    if (this._stopped || this._timer) return;
    this._attempt++;
    const base = Math.min(this._opts.reconnectMaxMs, this._opts.reconnectBaseMs * 2 ** (this._attempt - 1));
    const delayMs = Math.round(base / 2 + Math.random() * (base / 2));
    this._emit('reconnecting', { attempt: this._attempt, delayMs });
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
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
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
    this._peers.clear();
    if (this._pending) {
      this._pending.reject(error ?? new OctateError('closed', reason, code));
      this._pending = null;
    }
    this._emit('closed', { code, reason, ...(error ? { error } : {}) });
  }

  /**
   * @private
   * @param {{type: string, data?: object}} msg
   * @returns {boolean}
   */
  _signal(msg) {
    const ws = this._ws;
    if (!ws || !this.connected || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  /**
   * @private
   * @param {any} msg  A server message (docs/protocol.md, section 6).
   */
  _onServerMessage(msg) {
    const data = msg.data ?? {};
    switch (msg.type) {
      case 'auth-ok':
      case 'room-joined':
        return this._onJoined(msg, data);
      case 'heartbeat':
        this._ws?.send(JSON.stringify({ type: 'pong' }));
        return;
      case 'peer-joined': {
        const peer = data.peer;
        if (!peer || peer.userId === this.userId) return;
        // The same user may come back (reconnect, "replaced"): start afresh with it.
        this._dropLink(peer.userId);
        this._peers.set(peer.userId, peer);
        this._emit('peer-joined', { peer });
        // The newcomer offers (it got this peer in its auth-ok); the link is made when its
        // offer arrives. Offering from both ends at once works too (perfect negotiation), but
        // costs a round of rollback, so this end only offers if the newcomer stays silent.
        this._offerTimers.set(
          peer.userId,
          setTimeout(() => {
            this._offerTimers.delete(peer.userId);
            if (this.connected && this._peers.has(peer.userId)) this._ensureLink(peer.userId);
          }, this._opts.offerFallbackMs),
        );
        return;
      }
      case 'peer-left': {
        const peer = data.peer;
        if (!peer) return;
        this._peers.delete(peer.userId);
        this._dropLink(peer.userId);
        this._emit('peer-left', { peer, reason: data.reason ?? 'left' });
        return;
      }
      case 'host-changed':
        this.hostId = data.hostId;
        for (const p of this._peers.values()) p.isHost = p.userId === data.hostId;
        this._emit('host-changed', { hostId: data.hostId, hostName: data.hostName });
        return;
      case 'room-closed':
        this._emit('room-closed', { reason: data.reason });
        return;
      case 'error': {
        const err = new OctateError(data.code ?? 'unknown', data.message ?? 'error');
        this._lastError = err;
        this._emit('error', { code: err.code, message: err.message });
        return;
      }
      case 'sdp-offer':
        if (msg.userId && data.offer) this._onDescription(msg.userId, data.offer);
        return;
      case 'sdp-answer':
        if (msg.userId && data.answer) this._onDescription(msg.userId, data.answer);
        return;
      case 'ice-candidate':
        if (msg.userId && data.candidate) this._onCandidate(msg.userId, data.candidate);
        return;
      case 'presence':
        this._emit('presence', { from: msg.userId, status: data.status });
        return;
      case 'cursor-update':
        this._emit('cursor-update', { from: msg.userId, line: data.line, column: data.column });
        return;
      default:
        // Unknown types are ignored (protocol section 11).
        return;
    }
  }

  /**
   * @private
   * @param {any} msg
   * @param {any} data
   */
  _onJoined(msg, data) {
    const reconnected = this._everConnected;
    const userId = String(msg.userId);
    const roomId = String(msg.roomId);
    this.userId = userId;
    this.roomId = roomId;
    this.room = data.room ?? null;
    this.hostId = this.room?.hostId ?? null;
    this.iceServers = Array.isArray(data.iceServers) ? data.iceServers : [];
    this.connected = true;
    this._everConnected = true;
    this._attempt = 0;
    this._lastError = null;
    /** @type {PeerInfo[]} */
    const peers = Array.isArray(data.peers) ? data.peers.filter((/** @type {PeerInfo} */ p) => p && p.userId !== this.userId) : [];
    const now = new Set(peers.map((p) => p.userId));
    // After a reconnect the others have dropped their connections to us: start every link afresh.
    for (const [peerId, peer] of [...this._peers]) {
      this._dropLink(peerId);
      if (!now.has(peerId)) {
        this._peers.delete(peerId);
        this._emit('peer-left', { peer, reason: 'disconnected' });
      }
    }
    for (const peerId of [...this._links.keys()]) this._dropLink(peerId);
    const detail = { room: this.room, peers, userId, roomId, reconnected };
    if (this._pending) {
      this._pending.resolve(detail);
      this._pending = null;
    }
    this._emit('connected', detail);
    for (const peer of peers) {
      const known = this._peers.has(peer.userId);
      this._peers.set(peer.userId, peer);
      if (!known) this._emit('peer-joined', { peer });
      this._ensureLink(peer.userId);
    }
  }

  // ---- WebRTC: one RTCPeerConnection per remote peer, perfect negotiation ----

  /**
   * The configuration of a new RTCPeerConnection: `rtcConfig`, plus the server's ICE servers
   * and the transport policy when those options are set.
   * @private
   * @returns {RTCConfiguration}
   */
  _rtcConfiguration() {
    const { rtcConfig, useServerIceServers, iceTransportPolicy } = this._opts;
    if (!useServerIceServers && iceTransportPolicy === undefined) return rtcConfig;
    /** @type {RTCConfiguration} */
    const config = { ...rtcConfig };
    if (useServerIceServers) config.iceServers = [...(rtcConfig.iceServers ?? []), ...this.iceServers];
    if (iceTransportPolicy !== undefined) config.iceTransportPolicy = iceTransportPolicy;
    return config;
  }

  /**
   * @private
   * @param {string} peerId
   * @returns {PeerLink}
   */
  _ensureLink(peerId) {
    const existing = this._links.get(peerId);
    if (existing) return existing;
    clearTimeout(this._offerTimers.get(peerId));
    this._offerTimers.delete(peerId);
    const pc = new RTCPeerConnection(this._rtcConfiguration());
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
        this._signal({ type: 'ice-candidate', data: { peer: peerId, candidate: candidate.toJSON() } });
      }
    };
    pc.oniceconnectionstatechange = () => this._debug(`${peerId}: ice ${pc.iceConnectionState}`);
    pc.onconnectionstatechange = () => {
      if (!current()) return;
      if (pc.connectionState === 'connected') link.everConnected = true;
      if (pc.connectionState === 'failed') pc.restartIce();
    };
    channel.onopen = () => {
      if (current()) this._emit('open', { peerId });
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
    if (description.type === 'offer') this._signal({ type: 'sdp-offer', data: { peer: peerId, offer: desc } });
    else if (description.type === 'answer') this._signal({ type: 'sdp-answer', data: { peer: peerId, answer: desc } });
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
    let { pc } = link;
    try {
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
        link = this._ensureLink(peerId);
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
   * @template {keyof OctateEventMap} K
   * @param {K} type
   * @param {OctateEventMap[K]} detail
   */
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
