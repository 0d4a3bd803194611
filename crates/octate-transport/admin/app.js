// The Octate admin dashboard: live figures from the stats stream, rooms a page at a time,
// a room's peers when it is opened, kick and close with a confirmation.
//
// The admin key lives in sessionStorage (this tab only) and goes in the Authorization
// header; it is never put in a URL. Everything the server sends is shown with
// textContent, never parsed as HTML.
"use strict";

const KEY_ITEM = "octate-admin-key";
const PAGE_SIZE = 50;
// Points kept per chart: one a second, five minutes.
const HISTORY = 300;
const RECONNECT_MS = 2000;
const BUSY_RETRY_MS = 5000;

const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY_ITEM),
  stream: null, // AbortController of the open stream
  rates: [],
  heap: [],
  cursors: [null], // cursor of each page seen; the last is the current page's
  nextCursor: null,
  open: new Set(), // ids of the rooms whose peers are shown
  lastCounts: "",
  refreshTimer: null,
};

// ---- the key ----

function showLogin(message) {
  stopStream();
  $("dashboard").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setStatus("offline", "offline");
  $("key").focus();
}

function forgetKey(message) {
  sessionStorage.removeItem(KEY_ITEM);
  state.key = null;
  showLogin(message);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  state.key = key;
  $("key").value = "";
  start();
});

$("forget").addEventListener("click", () => forgetKey(""));

// ---- API calls ----

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const json = await resp.json().catch(() => null);
  if (resp.status === 401 || resp.status === 403) {
    if (json?.error?.code === "forbidden" && /address/.test(json.error.message)) {
      throw new ApiError(resp.status, json.error.code, json.error.message);
    }
    forgetKey(json?.error?.message || "the key was refused");
    throw new ApiError(resp.status, json?.error?.code, "the key was refused");
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, json?.error?.code, json?.error?.message || `HTTP ${resp.status}`);
  }
  return json;
}

// ---- the stats stream ----

function setStatus(stateName, text) {
  const el = $("status");
  el.dataset.state = stateName;
  el.textContent = text;
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

async function runStream() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  let retry = RECONNECT_MS;
  try {
    setStatus("connecting", "connecting");
    const resp = await fetch("/api/admin/stream", {
      headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    });
    if (resp.status === 401 || resp.status === 403) {
      const json = await resp.json().catch(() => null);
      forgetKey(json?.error?.message || "the key was refused");
      return;
    }
    if (!resp.ok || !resp.body) {
      const json = await resp.json().catch(() => null);
      if (resp.status === 503) retry = BUSY_RETRY_MS;
      setStatus("error", json?.error?.message || `stream: HTTP ${resp.status}`);
    } else {
      setStatus("live", "live");
      await readEvents(resp.body.getReader());
      setStatus("connecting", "stream ended; reconnecting");
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    setStatus("error", "stream lost; reconnecting");
  }
  if (state.stream === controller && !controller.signal.aborted) {
    setTimeout(() => {
      if (state.stream === controller && state.key) runStream();
    }, retry);
  }
}

// Reads server-sent events (`data: <json>` then a blank line) until the stream ends.
async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!data) continue;
      try {
        onStats(JSON.parse(data));
      } catch (err) {
        console.warn("bad stats event", err);
      }
    }
    // A well-behaved server never sends this much without a blank line.
    if (buffer.length > 1 << 20) buffer = "";
  }
}

function formatBytes(n) {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}

function formatCount(n) {
  return Number(n).toLocaleString("en");
}

function onStats(s) {
  $("v-connections").textContent = formatCount(s.connections);
  $("v-rooms").textContent = formatCount(s.rooms);
  $("v-peers").textContent = formatCount(s.peers);
  $("v-suspended").textContent = formatCount(s.suspended);
  $("v-rate").textContent = s.messagesPerSecond.toFixed(1);
  $("v-relayed").textContent = formatCount(s.messagesRelayed);
  $("v-heap").textContent = formatBytes(s.heapBytes);
  const level = $("v-level");
  level.textContent = s.memoryLevel;
  level.dataset.level = s.memoryLevel;
  document.body.dataset.relayed = String(s.messagesRelayed);

  push(state.rates, s.messagesPerSecond);
  push(state.heap, s.heapBytes);
  drawChart($("chart-messages"), state.rates, (v) => v.toFixed(1));
  drawChart($("chart-heap"), state.heap, formatBytes);
  $("c-rate-max").textContent = `max ${Math.max(...state.rates).toFixed(1)}`;
  $("c-heap-max").textContent = `max ${formatBytes(Math.max(...state.heap))}`;

  showNodes(s);

  // Rooms or peers changed: read the current page again, at most every two seconds.
  const counts = `${s.rooms}/${s.peers}/${s.suspended}`;
  if (counts !== state.lastCounts) {
    state.lastCounts = counts;
    scheduleRefresh();
  }
}

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

function showNodes(s) {
  const list = $("nodes");
  const nodes = s.clusterNodes || [s.nodeId || "this server"];
  const me = s.nodeId || "this server";
  if (list.dataset.nodes === nodes.join(",")) return;
  list.dataset.nodes = nodes.join(",");
  list.replaceChildren(
    ...nodes.map((id) => {
      const li = document.createElement("li");
      li.textContent = id;
      if (id === me) {
        li.classList.add("me");
        li.title = "the node this page is served by";
      }
      return li;
    }),
  );
}

// ---- charts ----

// Draws `series` as a filled line on `canvas`; the newest point is on the right. The
// canvas keeps the newest value in `data-last` and the number of points in `data-points`.
function drawChart(canvas, series, label) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const styles = getComputedStyle(canvas);
  const line = styles.getPropertyValue("--line").trim() || "#2563eb";
  const fill = styles.getPropertyValue("--fill").trim() || "rgba(37,99,235,.15)";
  const grid = styles.getPropertyValue("--grid").trim() || "#e5e7eb";
  const text = styles.getPropertyValue("--text").trim() || "#6b7280";

  const max = Math.max(1e-9, ...series);
  const top = 14;
  const plot = height - top - 2;
  ctx.strokeStyle = grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, top + 0.5);
  ctx.lineTo(width, top + 0.5);
  ctx.moveTo(0, height - 1.5);
  ctx.lineTo(width, height - 1.5);
  ctx.stroke();
  ctx.fillStyle = text;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(label(max > 1e-9 ? max : 0), 4, 11);

  if (series.length > 0) {
    const step = width / (HISTORY - 1);
    const x0 = width - (series.length - 1) * step;
    const y = (v) => top + plot - (v / max) * plot;
    ctx.beginPath();
    ctx.moveTo(x0, height - 1);
    series.forEach((v, i) => ctx.lineTo(x0 + i * step, y(v)));
    ctx.lineTo(width, height - 1);
    ctx.closePath();
    ctx.fillStyle = fill;
    ctx.fill();
    ctx.beginPath();
    series.forEach((v, i) => (i ? ctx.lineTo(x0 + i * step, y(v)) : ctx.moveTo(x0, y(v))));
    ctx.strokeStyle = line;
    ctx.lineWidth = 1.5;
    ctx.stroke();
  }
  canvas.dataset.last = String(series.length ? series[series.length - 1] : 0);
  canvas.dataset.points = String(series.length);
}

// ---- rooms ----

function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    loadRooms();
  }, 2000);
}

$("state").addEventListener("change", () => {
  state.cursors = [null];
  loadRooms();
});
$("refresh").addEventListener("click", () => loadRooms());
$("next").addEventListener("click", () => {
  if (!state.nextCursor) return;
  state.cursors.push(state.nextCursor);
  loadRooms();
});
$("prev").addEventListener("click", () => {
  if (state.cursors.length < 2) return;
  state.cursors.pop();
  loadRooms();
});
$("find").addEventListener("input", () => applyFilter());
$("find").addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault();
  const id = $("find").value.trim();
  if (id) openRoomById(id);
});

async function loadRooms() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const roomState = $("state").value;
  if (roomState) params.set("state", roomState);
  const cursor = state.cursors[state.cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  let page;
  try {
    page = await api("GET", `/api/rooms?${params}`);
  } catch (err) {
    $("rooms-note").textContent =
      err.status === 503
        ? `${err.message}. Type a room id in Find and press Enter to open it.`
        : `Rooms could not be read: ${err.message}`;
    return;
  }
  $("rooms-note").textContent = page.rooms.length ? "" : "No rooms.";
  state.nextCursor = page.nextCursor || null;
  $("next").disabled = !state.nextCursor;
  $("prev").disabled = state.cursors.length < 2;
  $("page").textContent = `page ${state.cursors.length}`;
  const body = $("rooms");
  // Opened rooms keep their peer lists on screen until the fresh ones arrive.
  const shown = new Map(
    [...body.querySelectorAll("tr.peers-row")].map((tr) => [tr.dataset.room, tr.firstElementChild]),
  );
  body.replaceChildren();
  for (const room of page.rooms) {
    const [tr, peersRow] = roomRows(room);
    const previous = shown.get(room.roomId);
    if (previous && state.open.has(room.roomId)) peersRow.firstElementChild.replaceChildren(...previous.childNodes);
    body.append(tr, peersRow);
  }
  applyFilter();
  for (const id of state.open) {
    const row = body.querySelector(`tr.peers-row[data-room="${CSS.escape(id)}"]`);
    if (row) loadPeers(id, row);
  }
}

// The room's row and the hidden row its peers are shown in once opened.
function roomRows(room) {
  const tr = document.createElement("tr");
  tr.className = "room-row";
  tr.dataset.room = room.roomId;
  tr.dataset.search = `${room.roomId} ${room.roomName || ""}`.toLowerCase();
  const cells = [room.roomId, room.roomName || "", room.state, String(room.peerCount)];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (i === 3) td.className = "num";
    tr.append(td);
  });
  const actions = document.createElement("td");
  actions.className = "actions";
  const toggle = button("Peers", "quiet", () => togglePeers(room.roomId));
  toggle.classList.add("toggle-peers");
  toggle.setAttribute("aria-expanded", String(state.open.has(room.roomId)));
  const close = button("Close room", "danger", () =>
    confirmThen(`Close room “${room.roomId}”? Every peer in it is disconnected.`, () =>
      closeRoom(room.roomId),
    ),
  );
  close.classList.add("close-room");
  actions.append(toggle, close);
  tr.append(actions);

  const peersRow = document.createElement("tr");
  peersRow.className = "peers-row";
  peersRow.dataset.room = room.roomId;
  peersRow.hidden = !state.open.has(room.roomId);
  const td = document.createElement("td");
  td.colSpan = 5;
  peersRow.append(td);
  return [tr, peersRow];
}

function button(text, kind, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.className = kind;
  b.addEventListener("click", onClick);
  return b;
}

function applyFilter() {
  const needle = $("find").value.trim().toLowerCase();
  for (const tr of $("rooms").querySelectorAll("tr.room-row")) {
    const show = !needle || tr.dataset.search.includes(needle);
    tr.hidden = !show;
    const peersRow = tr.nextElementSibling;
    if (peersRow) peersRow.hidden = !show || !state.open.has(tr.dataset.room);
  }
}

function togglePeers(roomId) {
  const body = $("rooms");
  const peersRow = body.querySelector(`tr.peers-row[data-room="${CSS.escape(roomId)}"]`);
  const toggle = body.querySelector(`tr.room-row[data-room="${CSS.escape(roomId)}"] .toggle-peers`);
  if (state.open.has(roomId)) {
    state.open.delete(roomId);
    if (peersRow) peersRow.hidden = true;
    toggle?.setAttribute("aria-expanded", "false");
    return;
  }
  state.open.add(roomId);
  toggle?.setAttribute("aria-expanded", "true");
  if (peersRow) {
    peersRow.hidden = false;
    loadPeers(roomId, peersRow);
  }
}

// Opens a room by its id, on this page or not (a cluster node lists no rooms).
async function openRoomById(roomId) {
  let room;
  try {
    room = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}`);
  } catch (err) {
    $("rooms-note").textContent = `Room “${roomId}”: ${err.message}`;
    return;
  }
  const body = $("rooms");
  body.querySelectorAll(`tr[data-room="${CSS.escape(room.roomId)}"]`).forEach((tr) => tr.remove());
  state.open.add(room.roomId);
  const [tr, peersRow] = roomRows(room);
  body.prepend(tr, peersRow);
  $("rooms-note").textContent = "";
  loadPeers(room.roomId, peersRow);
}

async function loadPeers(roomId, peersRow) {
  const cell = peersRow.firstElementChild;
  let peers;
  try {
    peers = await api("GET", `/api/rooms/${encodeURIComponent(roomId)}/peers`);
  } catch (err) {
    cell.textContent = err.status === 404 ? "The room is gone." : `Peers could not be read: ${err.message}`;
    return;
  }
  if (peers.length === 0) {
    cell.textContent = "No peers.";
    return;
  }
  const list = document.createElement("ul");
  list.className = "peers";
  for (const peer of peers) {
    const li = document.createElement("li");
    li.dataset.user = peer.userId;
    const name = document.createElement("span");
    name.className = "peer-name";
    name.textContent = peer.userName && peer.userName !== peer.userId ? `${peer.userName} (${peer.userId})` : peer.userId;
    li.append(name);
    if (peer.isHost) {
      const host = document.createElement("span");
      host.className = "badge";
      host.textContent = "host";
      li.append(host);
    }
    const since = document.createElement("span");
    since.className = "muted";
    since.textContent = `since ${new Date(peer.connectedAt).toLocaleTimeString()}`;
    li.append(since);
    const kick = button("Kick", "danger", () =>
      confirmThen(
        `Kick “${peer.userId}” from “${roomId}”?`,
        (revoke) => kickPeer(roomId, peer.userId, revoke),
        { offerRevoke: true },
      ),
    );
    kick.classList.add("kick");
    li.append(kick);
    list.append(li);
  }
  cell.replaceChildren(list);
}

async function kickPeer(roomId, userId, revokeToken) {
  try {
    await api(
      "POST",
      `/api/rooms/${encodeURIComponent(roomId)}/peers/${encodeURIComponent(userId)}/kick`,
      { reason: "removed from the admin dashboard", revokeToken },
    );
  } catch (err) {
    $("rooms-note").textContent = `Kick failed: ${err.message}`;
  }
  loadRooms();
}

async function closeRoom(roomId) {
  try {
    await api("DELETE", `/api/rooms/${encodeURIComponent(roomId)}`);
    state.open.delete(roomId);
  } catch (err) {
    $("rooms-note").textContent = `Closing the room failed: ${err.message}`;
  }
  loadRooms();
}

// ---- confirmation ----

let confirmed = null;

// `action` gets whether "also revoke its token" was ticked (offered for kicks only).
function confirmThen(text, action, { offerRevoke = false } = {}) {
  confirmed = action;
  $("confirm-text").textContent = text;
  $("confirm-revoke-row").hidden = !offerRevoke;
  $("confirm-revoke").checked = false;
  $("confirm").showModal();
  $("confirm-cancel").focus();
}

$("confirm-ok").addEventListener("click", () => {
  const action = confirmed;
  const revoke = !$("confirm-revoke-row").hidden && $("confirm-revoke").checked;
  confirmed = null;
  $("confirm").close();
  if (action) action(revoke);
});
$("confirm-cancel").addEventListener("click", () => {
  confirmed = null;
  $("confirm").close();
});
$("confirm").addEventListener("close", () => {
  confirmed = null;
});

// ---- start ----

function start() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("forget").hidden = false;
  runStream();
  loadRooms();
}

if (state.key) start();
else showLogin("");
