// Octate demo: a collaborative plain-text editor.
//
// The page gets a token from its own origin (POST /api/auth/token), joins the room named
// in the URL (?room=demo), and connects to every other tab in the room over WebRTC data
// channels. Edits are merged with Yjs and sent peer to peer as RemoteOperation messages
// carrying the Yjs update; the server sees only signaling, presence and cursor positions.

import * as Y from './vendor/yjs.mjs';
// The client package's file (clients/js/src/octate-client.js), copied next to this one by
// examples/browser/site.mjs.
import { OctateClient, getToken } from './octate-client.js';

const ID = /^[A-Za-z0-9\-_.:@]{1,128}$/;
const params = new URLSearchParams(location.search);
const roomId = ID.test(params.get('room') ?? '') ? params.get('room') : 'demo';
const userId = ID.test(params.get('user') ?? '') ? params.get('user') : `user-${Math.random().toString(36).slice(2, 8)}`;
const userName = (params.get('name') ?? '').trim() || userId;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const editor = /** @type {HTMLTextAreaElement} */ ($('editor'));
const overlay = $('overlay');
const statusEl = $('status');
$('room-name').textContent = roomId;
$('user-name').textContent = userName;
/** @type {HTMLAnchorElement} */ ($('share-link')).href = `?room=${encodeURIComponent(roomId)}`;

// ---- the document ----

const doc = new Y.Doc();
const ytext = doc.getText('content');
/** What the textarea showed after the last sync with `ytext`. */
let shown = '';
/** Origin of transactions made by this page's user. */
const LOCAL = 'local';

/**
 * RemoteOperation (an edit, sent peer to peer):
 * {id, peerId, timestamp, type: 'insert'|'delete'|'replace', position, content?, version, update}
 * where `update` is the Yjs update (base64) that carries the edit, and `version` this peer's
 * Yjs clock after it. A joining peer gets {type: 'sync', peerId, timestamp, update} with the
 * whole document state once its channel opens.
 */
let pendingOp = null;

/** Turns the textarea's new value into Yjs operations (one transaction, one message). */
function applyLocalText(next) {
  const prev = shown;
  if (next === prev) return;
  let start = 0;
  const max = Math.min(prev.length, next.length);
  while (start < max && prev.charCodeAt(start) === next.charCodeAt(start)) start++;
  let endPrev = prev.length;
  let endNext = next.length;
  while (endPrev > start && endNext > start && prev.charCodeAt(endPrev - 1) === next.charCodeAt(endNext - 1)) {
    endPrev--;
    endNext--;
  }
  // Never split a surrogate pair.
  if (start > 0 && isHighSurrogate(prev.charCodeAt(start - 1)) && (start === endPrev || start === endNext)) start--;
  if (endPrev < prev.length && isLowSurrogate(prev.charCodeAt(endPrev))) {
    endPrev++;
    endNext++;
  }
  const removed = endPrev - start;
  const inserted = next.slice(start, endNext);
  shown = next;
  pendingOp = {
    type: removed && inserted ? 'replace' : inserted ? 'insert' : 'delete',
    position: start,
    ...(inserted ? { content: inserted } : {}),
  };
  doc.transact(() => {
    if (removed) ytext.delete(start, removed);
    if (inserted) ytext.insert(start, inserted);
  }, LOCAL);
  pendingOp = null;
  renderCursors();
}

const isHighSurrogate = (c) => c >= 0xd800 && c <= 0xdbff;
const isLowSurrogate = (c) => c >= 0xdc00 && c <= 0xdfff;

let opCounter = 0;
const stats = { opsSent: 0, opsReceived: 0, syncsReceived: 0 };

doc.on('update', (update, origin) => {
  if (origin !== LOCAL || !pendingOp) return;
  const op = {
    id: `${userId}:${++opCounter}`,
    peerId: userId,
    timestamp: Date.now(),
    ...pendingOp,
    version: Y.getState(doc.store, doc.clientID),
    update: toBase64(update),
  };
  client.broadcast(op);
  stats.opsSent++;
});

// Remote changes: update the textarea and keep the local selection where it was.
ytext.observe((event, tr) => {
  if (tr.origin === LOCAL) return;
  let start = editor.selectionStart;
  let end = editor.selectionEnd;
  let index = 0;
  for (const d of event.delta) {
    if (d.retain) {
      index += d.retain;
    } else if (d.insert) {
      const n = typeof d.insert === 'string' ? d.insert.length : 1;
      if (index < start) start += n;
      if (index < end) end += n;
      index += n;
    } else if (d.delete) {
      const n = d.delete;
      if (index < start) start -= Math.min(n, start - index);
      if (index < end) end -= Math.min(n, end - index);
    }
  }
  shown = ytext.toString();
  editor.value = shown;
  editor.setSelectionRange(start, end);
  renderCursors();
});

editor.addEventListener('input', () => {
  applyLocalText(editor.value);
  markActive();
  queueCursor();
});

// ---- signaling and peers ----

const client = new OctateClient({
  url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
  getToken: () => getToken('', userId, roomId),
  userName,
  rtcConfig: { iceServers: [] },
  ...(params.has('debug') ? { debug: (line) => console.debug(`[octate] ${line}`) } : {}),
});

/** userId → {name, isHost, status, line, column} for everyone else in the room. */
const people = new Map();
/** Test and debugging view of what happened. */
const state = {
  connected: false,
  closed: false,
  closeCode: null,
  errors: /** @type {{code: string, message: string}[]} */ ([]),
  events: /** @type {{type: string, peerId?: string, reason?: string, at: number}[]} */ ([]),
  seenPeers: /** @type {string[]} */ ([]),
};

function record(type, extra = {}) {
  state.events.push({ type, ...extra, at: Date.now() });
}

function seen(peerId) {
  if (!state.seenPeers.includes(peerId)) state.seenPeers.push(peerId);
}

client.on('connected', (detail) => {
  const { room, reconnected } = detail;
  state.connected = true;
  record('connected', { reconnected });
  setStatus('connected', 'connected');
  editor.disabled = false;
  for (const p of room?.peers ?? []) if (p.userId !== userId) people.get(p.userId) || addPerson(p);
  log(reconnected ? 'reconnected' : `joined ${room?.roomName ?? roomId}`);
  client.sendPresence(document.hidden ? 'away' : 'active');
  sendCursorNow();
  renderPeers();
});

client.on('peer-joined', (detail) => {
  const { peer } = detail;
  seen(peer.userId);
  record('peer-joined', { peerId: peer.userId });
  addPerson(peer);
  log(`${peer.userName} joined`);
  // Tell the newcomer where this user is.
  client.sendPresence(document.hidden ? 'away' : idle ? 'idle' : 'active');
  sendCursorNow();
  renderPeers();
});

client.on('peer-left', (detail) => {
  const { peer, reason } = detail;
  record('peer-left', { peerId: peer.userId, reason });
  people.delete(peer.userId);
  log(`${peer.userName} left (${reason})`);
  renderPeers();
  renderCursors();
});

client.on('channel-open', (detail) => {
  const { peerId } = detail;
  record('open', { peerId });
  log(`direct channel open with ${people.get(peerId)?.name ?? peerId}`);
  // Bring the peer up to date: the whole state, merged idempotently on its side.
  client.send(peerId, { type: 'sync', peerId: userId, timestamp: Date.now(), update: toBase64(Y.encodeStateAsUpdate(doc)) });
  renderPeers();
});

client.on('channel-closed', (detail) => {
  record('channel-closed', { peerId: detail.peerId });
  renderPeers();
});

/** While held (test hook), remote operations wait here, as if the network were slow. */
let held = null;

client.on('message', (detail) => {
  if (held) held.push(detail);
  else receive(detail);
});

function receive({ from, data }) {
  if (!data || typeof data.update !== 'string') return;
  try {
    Y.applyUpdate(doc, fromBase64(data.update), from);
  } catch (err) {
    state.errors.push({ code: 'bad-update', message: String(err) });
    return;
  }
  if (data.type === 'sync') stats.syncsReceived++;
  else stats.opsReceived++;
}

client.on('presence', (detail) => {
  const p = people.get(detail.from);
  if (p) p.status = detail.status;
  renderPeers();
});

client.on('cursor-update', (detail) => {
  const p = people.get(detail.from);
  if (p) {
    p.line = detail.line;
    p.column = detail.column;
  }
  renderPeers();
  renderCursors();
});

client.on('host-changed', (detail) => {
  for (const [id, p] of people) p.isHost = id === detail.hostId;
  log(`${detail.hostName} is now the host`);
  renderPeers();
});

client.on('room-closed', (detail) => log(`room closed (${detail.reason})`));

client.on('error', (detail) => {
  state.errors.push(detail);
  record('error', { reason: detail.code });
  if (detail.code !== 'client') log(`error: ${detail.code}`);
  else console.warn(detail.message);
});

client.on('resumed', () => {
  state.connected = true;
  record('resumed');
  setStatus('connected', 'connected');
  log('resumed');
  renderPeers();
});

client.on('disconnected', (detail) => {
  state.connected = false;
  record('disconnected', { reason: String(detail.code) });
  setStatus('connecting', 'reconnecting…');
});

client.on('reconnecting', (detail) => log(`${detail.resume ? 'resuming' : 'reconnecting'} in ${(detail.delayMs / 1000).toFixed(1)} s`));

client.on('closed', (detail) => {
  state.connected = false;
  state.closed = true;
  state.closeCode = detail.code;
  record('closed', { reason: detail.error?.code ?? detail.reason });
  editor.disabled = true;
  setStatus('error', `disconnected: ${detail.error?.code ?? detail.reason}`);
  people.clear();
  renderPeers();
  renderCursors();
});

// A closed tab leaves at once (close 1000); a dropped connection is resumed instead, so
// without this the others would see the tab linger until the server's resume grace ends.
addEventListener('pagehide', (event) => {
  if (!event.persisted) client.close();
});

const ready = client.connect();
ready.catch((err) => log(`could not join: ${err.code ?? err.message}`));

// ---- presence and cursors ----

let idle = false;
let idleTimer = null;
function markActive() {
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    idle = true;
    if (!document.hidden) client.sendPresence('idle');
  }, 60_000);
  if (idle) {
    idle = false;
    client.sendPresence('active');
  }
}
document.addEventListener('visibilitychange', () => {
  client.sendPresence(document.hidden ? 'away' : idle ? 'idle' : 'active');
});

let cursorTimer = null;
let lastCursor = '';
function queueCursor() {
  if (cursorTimer) return;
  cursorTimer = setTimeout(() => {
    cursorTimer = null;
    sendCursorNow(false);
  }, 50);
}
function sendCursorNow(force = true) {
  const { line, column } = lineColumn(editor.value, editor.selectionStart);
  const key = `${line}:${column}`;
  if (!force && key === lastCursor) return;
  lastCursor = key;
  client.sendCursor(line, column);
}
document.addEventListener('selectionchange', () => {
  if (document.activeElement === editor) queueCursor();
});
editor.addEventListener('keyup', queueCursor);
editor.addEventListener('click', () => {
  markActive();
  queueCursor();
});
editor.addEventListener('scroll', () => {
  overlay.scrollTop = editor.scrollTop;
});

function lineColumn(text, offset) {
  const before = text.slice(0, offset);
  const line = before.split('\n').length - 1;
  return { line, column: offset - (before.lastIndexOf('\n') + 1) };
}

function offsetOf(text, line, column) {
  let offset = 0;
  const lines = text.split('\n');
  const l = Math.min(line, lines.length - 1);
  for (let i = 0; i < l; i++) offset += lines[i].length + 1;
  return offset + Math.min(column, lines[l].length);
}

function colorOf(id) {
  let h = 0x811c9dc5;
  for (const ch of id) h = Math.imul(h ^ ch.codePointAt(0), 16777619);
  return `hsl(${(h >>> 0) % 360} 65% 42%)`;
}

function addPerson(peer) {
  seen(peer.userId);
  const old = people.get(peer.userId);
  people.set(peer.userId, {
    name: peer.userName || peer.userId,
    isHost: peer.isHost,
    status: old?.status ?? 'active',
    line: old?.line,
    column: old?.column,
  });
}

function renderCursors() {
  const text = shown;
  const marks = [];
  for (const [id, p] of people) {
    if (p.line == null) continue;
    marks.push({ at: offsetOf(text, p.line, p.column), id, p });
  }
  marks.sort((a, b) => a.at - b.at);
  overlay.replaceChildren();
  let pos = 0;
  for (const m of marks) {
    overlay.append(text.slice(pos, m.at));
    pos = m.at;
    const caret = document.createElement('span');
    caret.className = 'cursor';
    caret.style.setProperty('--c', colorOf(m.id));
    const label = document.createElement('span');
    label.className = 'label';
    label.textContent = m.p.name;
    caret.append(label);
    overlay.append(caret);
  }
  // A trailing newline needs something after it to take up its line.
  overlay.append(text.slice(pos) + '\u200b');
  overlay.scrollTop = editor.scrollTop;
}

function renderPeers() {
  const list = $('peers');
  list.replaceChildren();
  const me = { name: `${userName} (you)`, isHost: client.hostId === userId, status: state.connected ? 'active' : 'offline' };
  const rows = [[userId, me, null], ...[...people].map(([id, p]) => [id, p, client.openPeers.includes(id)])];
  for (const [id, p, open] of rows) {
    const li = document.createElement('li');
    li.dataset.peer = id;
    li.style.setProperty('--c', colorOf(id));
    const dot = document.createElement('span');
    dot.className = 'dot';
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = p.name;
    li.append(dot, name);
    if (p.isHost) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = 'host';
      li.append(badge);
    }
    const meta = document.createElement('span');
    meta.className = 'meta';
    const where = p.line != null ? ` · Ln ${p.line + 1}, Col ${p.column + 1}` : '';
    const link = open === null ? '' : open ? ' · direct' : ' · connecting';
    meta.textContent = `${p.status}${where}${link}`;
    li.append(meta);
    list.append(li);
  }
}

function setStatus(kind, text) {
  statusEl.className = `status ${kind}`;
  statusEl.textContent = text;
}

function log(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  const list = $('log');
  list.prepend(li);
  while (list.children.length > 50) list.lastChild?.remove();
}

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

renderPeers();
renderCursors();

// ---- hooks for tests and the console ----

/** Edits the textarea as typing would, through the same path as the `input` event. */
function edit(next, caret) {
  editor.value = next;
  editor.setSelectionRange(caret, caret);
  applyLocalText(next);
  queueCursor();
}

/** @type {any} */ (window).octateDemo = {
  userId,
  roomId,
  client,
  doc,
  ready: ready.then(() => true, () => false),
  state,
  stats,
  /** The document's text. */
  get text() {
    return ytext.toString();
  },
  /** What the textarea shows (equal to `text` between events). */
  get editorText() {
    return editor.value;
  },
  insert(position, text) {
    const v = editor.value;
    const p = Math.max(0, Math.min(position, v.length));
    edit(v.slice(0, p) + text + v.slice(p), p + text.length);
    return ytext.toString();
  },
  remove(position, length) {
    const v = editor.value;
    const p = Math.max(0, Math.min(position, v.length));
    edit(v.slice(0, p) + v.slice(p + length), p);
    return ytext.toString();
  },
  /** User ids of the other peers the server says are in the room. */
  peers: () => client.peers.map((p) => p.userId).sort(),
  /** User ids of the peers with an open data channel. */
  openPeers: () => client.openPeers.sort(),
  /** Cursor positions received from the others: userId → {line, column}. */
  cursors: () => Object.fromEntries([...people].filter(([, p]) => p.line != null).map(([id, p]) => [id, { line: p.line, column: p.column }])),
  /** Holds (true) or releases (false) incoming remote edits, to make edits concurrent. */
  hold(on) {
    if (on && !held) held = [];
    if (!on && held) {
      const queued = held;
      held = null;
      queued.forEach(receive);
    }
  },
};
