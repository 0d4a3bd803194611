// Types of @octate/client (src/octate-client.js), written by hand. Wire protocol: docs/protocol.md.

/** A peer of a room, as the server describes it. */
export interface PeerInfo {
  userId: string;
  userName: string;
  isHost: boolean;
  /** Unix milliseconds. */
  connectedAt: number;
  /** Unix milliseconds. */
  lastHeartbeat: number;
}

/** A room's metadata, as the server describes it (never any document content). */
export interface RoomMetadata {
  roomId: string;
  roomName: string;
  hostId: string;
  hostName: string;
  fileId?: string;
  version?: number;
  createdAt: number;
  lastActivity: number;
  state: 'ACTIVE' | 'IDLE' | 'CLOSED' | string;
  /** All peers, this one included. */
  peers: PeerInfo[];
  peerCount: number;
}

/** An ICE server in the browser's RTCIceServer shape (also without DOM typings). */
export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

/**
 * The connection's state: `idle` before `connect()`; `connecting` (socket opening, fresh
 * `auth`); `resuming` (socket opening, `resume` of the kept session); `open` (in the room);
 * `reconnecting` (waiting for the next attempt); `closed` (stopped for good).
 */
export type ConnectionState = 'idle' | 'connecting' | 'resuming' | 'open' | 'reconnecting' | 'closed';

/** A WebSocket constructor, e.g. the global one, or the `ws` package's in Node < 22. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What the client uses of a WebSocket (handlers get `{data}` for a message, `{code, reason}` for a close). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** Options of {@link OctateClient}. Give `token` or `getToken`. */
export interface OctateClientOptions {
  /** WebSocket URL of the signaling server, e.g. `wss://host/ws` or the signaling port `ws://host:3001`. */
  url: string;
  /** A fixed token (from `POST /api/auth/token` or the app's backend). Prefer `getToken`. */
  token?: string;
  /** Returns a token; called for every fresh `auth` (first connect, reconnects that cannot resume) and every TURN refresh. */
  getToken?: () => string | Promise<string>;
  /** Display name shown to the other peers. */
  userName?: string;
  /** HTTP base URL of the server's API (TURN refresh); default: `url`'s host with http(s). Set it when `url` is the signaling port. */
  httpUrl?: string;
  /** Passed to every RTCPeerConnection; default `{ iceServers: [] }`. */
  rtcConfig?: RTCConfiguration;
  /** Add the server's `iceServers` (STUN/TURN, fresh credentials) to `rtcConfig.iceServers`, on new and live connections; default true. */
  useServerIceServers?: boolean;
  /** Overrides `rtcConfig.iceTransportPolicy`, e.g. `relay` to connect only through TURN. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Refresh TURN credentials at half their lifetime via `POST /api/turn/credentials`; default true. */
  turnRefresh?: boolean;
  /** Reconnect after an unexpected drop; default true. */
  reconnect?: boolean;
  /** Back-off base: the first retry waits up to this long; default 500 ms. */
  reconnectBaseMs?: number;
  /** Back-off ceiling: no retry waits longer; default 15000 ms. */
  reconnectMaxMs?: number;
  /** Consecutive failed attempts before the client gives up (`closed` with `reconnect-exhausted`); default Infinity. */
  maxReconnectAttempts?: number;
  /** How long a socket may take to open and be answered (`auth-ok`, `resumed`) before it counts as failed; default 10000 ms. */
  connectTimeoutMs?: number;
  /** Silence from the server (no message, not even a `heartbeat`) after which an open connection counts as lost; default 75000 ms (2.5 server heartbeats); 0 = off. */
  livenessTimeoutMs?: number;
  /** Resume the session after a drop (when the server offers it); default true. */
  resume?: boolean;
  /** Label of the data channels; default `octate`. */
  channelLabel?: string;
  /** How long a peer already in the room waits for a newcomer's offer before offering itself; default 3000 ms. */
  offerFallbackMs?: number;
  /** First delay before re-sending signals refused with `peer-unavailable`; default 250 ms (doubling). */
  unavailableRetryMs?: number;
  /** Longest delay between such re-sends; default 4000 ms. */
  unavailableRetryMaxMs?: number;
  /** Re-sends to one unavailable peer before giving up (an `error` `peer-unavailable`); default 20. */
  unavailableMaxTries?: number;
  /** WebSocket constructor; default the global one (Node ≥ 22, browsers). */
  WebSocket?: WebSocketConstructor;
  /** fetch function (TURN refresh); default the global one. */
  fetch?: typeof fetch;
  /** RTCPeerConnection constructor; default the global one. Without one, the client does signaling only. */
  RTCPeerConnection?: typeof RTCPeerConnection;
  /** Uniform random numbers in [0, 1) for the back-off jitter; default `Math.random`. */
  random?: () => number;
  /** Called with a line per signaling step, for debugging. */
  debug?: (message: string) => void;
}

/** Payloads of the client's events (each is a CustomEvent whose `detail` is the payload). */
export interface OctateEventMap {
  /** `state` changed. */
  state: { state: ConnectionState; previous: ConnectionState };
  /** A socket opens to send a fresh `auth`. */
  connecting: { attempt: number };
  /** A socket opens to send `resume`. */
  resuming: { attempt: number };
  /** The server accepted a fresh `auth` (`auth-ok`, `room-joined`); again after a reconnect that could not resume. */
  connected: { room: RoomMetadata | null; peers: PeerInfo[]; userId: string; roomId: string; reconnected: boolean };
  /** The session was resumed on a new socket; peer connections and channels carried on. */
  resumed: { room: RoomMetadata | null; peers: PeerInfo[]; userId: string; roomId: string };
  /** The connection is usable again: after `connected` or `resumed`. */
  open: { resumed: boolean; reconnected: boolean };
  /** The socket closed; `reconnecting` or `closed` follows. */
  disconnected: { code: number; reason: string; wasConnected: boolean };
  /** The next attempt starts after `delayMs`; `resume` tells whether it will try `resume` first. */
  reconnecting: { attempt: number; delayMs: number; resume: boolean };
  /** The client stopped for good: `close()`, a terminal close code, a failed first `connect()`, or `maxReconnectAttempts`. */
  closed: { code: number; reason: string; error?: OctateError };
  'peer-joined': { peer: PeerInfo };
  /** `reason` is the server's (`left`, `timeout`, `replaced`, ...), or `disconnected` for a peer gone while this client was away. */
  'peer-left': { peer: PeerInfo; reason: string };
  'host-changed': { hostId: string; hostName: string };
  'room-closed': { reason: string };
  /** The data channel with `peerId` opened. */
  'channel-open': { peerId: string };
  /** The data channel with `peerId` closed. */
  'channel-closed': { peerId: string };
  /** `data` as the remote peer passed it to `send`/`broadcast`. */
  message: { from: string; data: any };
  presence: { from: string; status: 'active' | 'idle' | 'away' };
  'cursor-update': { from: string; line: number; column: number };
  /** A message from the app's backend (`POST /api/rooms/:roomId/broadcast` or `.../peers/:userId/message`). */
  'server-message': { roomId: string; data: any };
  /** A raw signal from `from` (also handled by the client when it manages RTCPeerConnections). */
  signal: { from: string; type: 'sdp-offer' | 'sdp-answer' | 'ice-candidate'; data: any };
  /** New ICE servers from the server (a join, a resume or a TURN refresh, with its `ttl` in seconds). */
  'ice-servers': { iceServers: IceServer[]; ttl?: number };
  /** An `error` from the server (its `code`), `client` for a local WebRTC failure, or a failed `getToken` / TURN refresh. */
  error: { code: string; message: string };
}

/** An error with the server's machine-readable `code` (docs/protocol.md, section 8). */
export class OctateError extends Error {
  constructor(code: string, message: string, closeCode?: number);
  readonly name: 'OctateError';
  code: string;
  /** The WebSocket close code, when the connection was closed. */
  closeCode?: number;
}

/** An Octate room member: signaling client (reconnect, resume) plus a full mesh of WebRTC data channels. */
export class OctateClient extends EventTarget {
  constructor(options: OctateClientOptions);
  /** The connection's state. */
  readonly state: ConnectionState;
  /** This user's id (from the token), once connected. */
  readonly userId: string | null;
  /** The room's id (from the token), once connected. */
  readonly roomId: string | null;
  /** The room as of the last `auth-ok`, `room-joined` or `resumed`. */
  readonly room: RoomMetadata | null;
  /** The STUN/TURN servers the server handed out last (empty if it has none). */
  readonly iceServers: IceServer[];
  /** The room's current host. */
  readonly hostId: string | null;
  /** Whether the signaling connection is authenticated and in the room. */
  readonly connected: boolean;
  /** Other peers of the room, as the server last described them. */
  readonly peers: PeerInfo[];
  /** Ids of the peers whose data channel is open. */
  readonly openPeers: string[];

  /** Connects and authenticates; resolves on `auth-ok`, rejects with an {@link OctateError} if this first attempt fails. */
  connect(): Promise<OctateEventMap['connected']>;
  /** Leaves: closes every peer connection and the WebSocket (1000), and stops reconnecting. */
  close(): void;
  /** The RTCPeerConnection to `peerId`, if any. */
  peerConnection(peerId: string): RTCPeerConnection | undefined;
  /** Sends any JSON value to one peer over its data channel; false if that channel is not open. */
  send(peerId: string, data: unknown): boolean;
  /** Sends any JSON value to every open data channel; returns how many. */
  broadcast(data: unknown): number;
  /** Tells the room this user's presence; false if not connected. */
  sendPresence(status: 'active' | 'idle' | 'away'): boolean;
  /** Tells the room this user's cursor position; false if not connected. */
  sendCursor(line: number, column: number): boolean;
  /** Sends a raw signal (signaling-only use); re-sent while the peer is briefly unavailable. */
  sendSignal(peerId: string, type: 'sdp-offer' | 'sdp-answer' | 'ice-candidate', data: object): boolean;
  /** Listens with a typed payload; returns a function that removes the listener. */
  on<K extends keyof OctateEventMap>(type: K, handler: (detail: OctateEventMap[K]) => void): () => void;
  addEventListener<K extends keyof OctateEventMap>(
    type: K,
    listener: (ev: CustomEvent<OctateEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof OctateEventMap>(
    type: K,
    listener: (ev: CustomEvent<OctateEventMap[K]>) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** `POST {baseUrl}/api/auth/token` (with the admin key as Bearer when given); resolves with the token. */
export function getToken(
  baseUrl: string,
  userId: string,
  roomId: string,
  adminKey?: string,
  options?: { fetch?: typeof fetch; ttlSeconds?: number },
): Promise<string>;

/** Exponential back-off with full jitter: uniform in `[0, min(maxMs, baseMs * 2^(attempt-1)))`. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random?: () => number): number;

/** Milliseconds until the TURN credential in `iceServers` expires (from its `<expiry>:<id>` username), or null. */
export function credentialLifetimeMs(iceServers: IceServer[], nowMs: number): number | null;

/** Close codes after which the client stops instead of reconnecting (4001 only after a fresh `auth`). */
export const TERMINAL_CLOSE_CODES: Readonly<Record<number, string>>;
