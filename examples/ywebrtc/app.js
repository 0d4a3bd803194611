// The y-webrtc demo: one Y.Text shared by every tab of a room, with Octate as the only
// signaling server. The only Octate-specific line is the signaling URL, which carries a
// token for the room (see docs/y-webrtc.md).
//
// Query parameters: `room` (default `ywebrtc-demo`), `password` (encrypts signaling and
// the document's traffic), `server` (Octate's base URL, default this page's origin),
// `token` (otherwise one is asked of `server`, which allows that in development mode
// only), `notoken` (connect without a token: the server refuses), `user`.

import { Y, WebrtcProvider } from './vendor/y-webrtc.mjs';

const params = new URLSearchParams(location.search);
const server = (params.get('server') || location.origin).replace(/\/+$/, '');
const room = params.get('room') || 'ywebrtc-demo';
const password = params.get('password') || undefined;
const user = params.get('user') || `user-${Math.random().toString(36).slice(2, 8)}`;
const status = document.getElementById('status');
const editor = document.getElementById('editor');

function show(text, bad = false) {
  status.textContent = text;
  status.className = bad ? 'bad' : '';
}

/** A token for `user` in `room`, from the server's development-mode token endpoint. */
async function fetchToken() {
  const resp = await fetch(`${server}/api/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId: user, roomId: room }),
  });
  const body = await resp.json().catch(() => null);
  if (!resp.ok || typeof body?.token !== 'string') {
    throw new Error(body?.error?.message ?? `token request failed with HTTP ${resp.status}`);
  }
  return body.token;
}

/** Applies the textarea's new value to `text` as one replaced span (common ends kept). */
function applyEdit(text, before, after) {
  let start = 0;
  while (start < before.length && start < after.length && before[start] === after[start]) start++;
  let end = 0;
  while (end < before.length - start && end < after.length - start
    && before[before.length - 1 - end] === after[after.length - 1 - end]) end++;
  text.doc.transact(() => {
    text.delete(start, before.length - start - end);
    text.insert(start, after.slice(start, after.length - end));
  });
}

const token = params.has('notoken') ? null : (params.get('token') ?? await fetchToken());
const ws = server.replace(/^http/, 'ws');
// The one line that differs from a y-webrtc app without Octate:
const signaling = [token ? `${ws}/y-webrtc?token=${encodeURIComponent(token)}` : `${ws}/y-webrtc`];

const doc = new Y.Doc();
const text = doc.getText('text');
const provider = new WebrtcProvider(room, doc, {
  signaling,
  password,
  // No STUN server: peers on one host or LAN find each other with host candidates.
  peerOpts: { config: { iceServers: [] } },
});

let shown = '';
text.observe(() => {
  shown = text.toString();
  if (editor.value !== shown) editor.value = shown;
});
editor.addEventListener('input', () => {
  applyEdit(text, shown, editor.value);
  shown = editor.value;
});
editor.disabled = false;

provider.on('status', ({ connected }) => show(`room ${room}: ${connected ? 'connected' : 'not connected'}`));
provider.on('peers', ({ webrtcPeers }) => show(`room ${room}: ${webrtcPeers.length} peer(s) over WebRTC`));
show(`room ${room}: waiting for peers`);

/** What the browser test reads: whether the signaling socket is open, and the peers. */
function state() {
  const conns = provider.signalingConns;
  const webrtc = provider.room ? [...provider.room.webrtcConns.values()] : [];
  return {
    text: text.toString(),
    signalingConnected: conns.some((c) => c.connected),
    webrtcConnected: webrtc.filter((c) => c.connected).length,
    broadcastChannelPeers: provider.room ? provider.room.bcConns.size : 0,
  };
}

window.ywebrtcDemo = { Y, doc, text, provider, state };
