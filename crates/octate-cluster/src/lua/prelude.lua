-- Shared by every script. ARGV[1] is the key prefix; every key is derived here, so a
-- script is called with no KEYS (standalone Redis; see docs/cluster.md).
local P = ARGV[1]

local function now_parts()
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[2])
end
local function now_ms()
  local s, us = now_parts()
  return s * 1000 + math.floor(us / 1000)
end
local function now_us()
  local s, us = now_parts()
  return s * 1000000 + us
end
local function num(x) return string.format('%d', x) end

local function k_meta(r) return P .. 'room:{' .. r .. '}:meta' end
local function k_members(r) return P .. 'room:{' .. r .. '}:m' end
local function k_node_set(n) return P .. 'node:' .. n .. ':s' end
local function k_user_rooms(u) return P .. 'user:' .. u .. ':rooms' end
local function inbox(n) return P .. 'inbox:' .. n end
local K_ROOMS = P .. 'rooms'
local K_NODES = P .. 'nodes'
local K_REAPING = P .. 'reaping'
-- Every room id with score 0, for listing rooms in the order of their ids (ZRANGEBYLEX).
local K_ROOM_INDEX = P .. 'roomidx'
-- Suspended members ('<room> <user>') by the end of their resume grace (Unix ms).
local K_SUSPENDED = P .. 'suspended'
-- A resumable session's room and user ('<room> <user>'), by session id.
local function k_session(s) return P .. 'session:' .. s end

-- A room's metadata as a table, or nil when the room does not exist.
local function read_meta(r)
  local flat = redis.call('HGETALL', k_meta(r))
  if #flat == 0 then return nil end
  local meta = {}
  for i = 1, #flat, 2 do meta[flat[i]] = flat[i + 1] end
  return meta
end

-- A room's members, longest joined first (ties: by user id).
local function load_members(r)
  local flat = redis.call('HGETALL', k_members(r))
  local list = {}
  for i = 1, #flat, 2 do
    local ok, m = pcall(cjson.decode, flat[i + 1])
    if ok and type(m) == 'table' then
      m.user = flat[i]
      list[#list + 1] = m
    end
  end
  table.sort(list, function(a, b)
    local ja, jb = tonumber(a.j) or 0, tonumber(b.j) or 0
    if ja ~= jb then return ja < jb end
    return a.user < b.user
  end)
  return list
end

local function decode_member(raw)
  if not raw then return nil end
  local ok, m = pcall(cjson.decode, raw)
  if ok and type(m) == 'table' then return m end
  return nil
end

-- Writes a member back with every field it has: node, conn, joined at, name, and its
-- session (s), token digest (d), suspended-until (x), token id (t) and expiry (e), and
-- what it speaks (p: 'y' for y-webrtc, absent for the native protocol).
local function save_member(r, user, m)
  redis.call('HSET', k_members(r), user, cjson.encode({
    n = m.n, c = m.c, j = m.j, u = m.u, s = m.s, d = m.d, x = m.x, t = m.t, e = m.e,
    p = m.p }))
end

-- Forgets the session of a member that is gone or replaced.
local function forget_session(r, user, m)
  if m and m.s then
    redis.call('DEL', k_session(m.s))
  end
  redis.call('ZREM', K_SUSPENDED, r .. ' ' .. user)
end

local function json_or_null(s)
  if s == nil or s == false or s == '' then return 'null' end
  return cjson.encode(s)
end

-- The snapshot JSON that Rust decodes (numbers travel as strings: Lua numbers are doubles).
local function snapshot_json(r, meta, list)
  local parts = {}
  for i, m in ipairs(list) do
    parts[i] = '{"user":' .. cjson.encode(m.user) .. ',"name":' .. cjson.encode(m.u or '')
      .. ',"node":' .. cjson.encode(m.n) .. ',"conn":' .. cjson.encode(m.c)
      .. ',"joinedAt":' .. cjson.encode(m.j) .. ',"session":' .. json_or_null(m.s)
      .. ',"suspended":' .. (m.x and 'true' or 'false')
      .. (m.p == 'y' and ',"ywebrtc":true' or '') .. '}'
  end
  return '{"room":' .. cjson.encode(r) .. ',"ver":' .. cjson.encode(meta.ver or '0')
    .. ',"name":' .. cjson.encode(meta.name or r) .. ',"createdBy":' .. cjson.encode(meta.by or '')
    .. ',"createdAt":' .. cjson.encode(meta.at or '0') .. ',"fileId":' .. json_or_null(meta.file)
    .. ',"host":' .. json_or_null(meta.host) .. ',"members":[' .. table.concat(parts, ',') .. ']}'
end

-- Keeps the host while it is a member, else the longest joined member.
local function elect(meta, list)
  for _, m in ipairs(list) do
    if m.user == meta.host then return meta.host end
  end
  if list[1] then return list[1].user end
  return nil
end

-- Bumps the room's version: larger than before and than Redis' clock in microseconds, so
-- versions keep growing across a Redis restart that lost every key.
local function bump(meta)
  local v = math.max((tonumber(meta.ver) or 0) + 1, now_us())
  meta.ver = num(v)
end

local function write_host_ver(r, meta)
  if meta.host then
    redis.call('HSET', k_meta(r), 'host', meta.host, 'ver', meta.ver)
  else
    redis.call('HDEL', k_meta(r), 'host')
    redis.call('HSET', k_meta(r), 'ver', meta.ver)
  end
end

-- Lifecycle events (webhooks): a script that changes membership appends them to the
-- outbox of the node that ran it (HOOKS.node, from its last argument; none: webhooks are
-- off), in the same atomic step. Only that node drains its outbox, so each change is
-- reported once per cluster, by one node.
local HOOKS = { node = nil }
local HOOKS_MAX = 10000
-- The seq of the last event reported by any node: each event's is larger (Redis' clock in
-- µs, or one more), also across a Redis restart that lost it.
local K_HOOK_SEQ = P .. 'hookseq'
local function hooks_for(node)
  if node and node ~= '' then HOOKS.node = node end
end
local function hook(kind, r, user, reason, node)
  if not HOOKS.node then return end
  local key = P .. 'hooks:' .. HOOKS.node
  local count = 0
  if r then count = redis.call('HLEN', k_members(r)) end
  -- One reading of the clock for both, so that seq is never below createdAt in µs.
  local secs, micros = now_parts()
  local at = secs * 1000 + math.floor(micros / 1000)
  local seq = num(math.max((tonumber(redis.call('GET', K_HOOK_SEQ)) or 0) + 1,
    secs * 1000000 + micros))
  redis.call('SET', K_HOOK_SEQ, seq)
  redis.call('RPUSH', key, cjson.encode({
    type = kind, room = r, user = user, reason = reason, node = node,
    count = count, at = at, seq = seq }))
  redis.call('LTRIM', key, -HOOKS_MAX, -1)
end
-- Takes over a dead node's outbox: the events it committed but did not send yet go out
-- from the node reporting now (before what it reports next), so none is lost or doubled.
local function adopt_hooks(dead)
  if HOOKS.node == dead then return end
  local from = P .. 'hooks:' .. dead
  if not HOOKS.node then
    redis.call('DEL', from)
    return
  end
  local to = P .. 'hooks:' .. HOOKS.node
  while redis.call('LMOVE', from, to, 'LEFT', 'RIGHT') do end
  redis.call('LTRIM', to, -HOOKS_MAX, -1)
end

local function drop_room(r, meta)
  redis.call('DEL', k_meta(r), k_members(r))
  redis.call('ZREM', K_ROOMS, r)
  redis.call('ZREM', K_ROOM_INDEX, r)
  if meta and meta.by then redis.call('ZREM', k_user_rooms(meta.by), r) end
end

-- Marks a room as live (it has members): no grace expiry. (It is indexed again too, for a
-- room written before the index existed.)
local function keep_room(r, meta)
  redis.call('PERSIST', k_meta(r))
  redis.call('ZADD', K_ROOMS, 'inf', r)
  redis.call('ZADD', K_ROOM_INDEX, 0, r)
  if meta.by then redis.call('ZADD', k_user_rooms(meta.by), 'inf', r) end
end

local function new_meta(r, name, by, at, file)
  local meta = { name = name, by = by, at = at, ver = '0' }
  if file and file ~= '' then meta.file = file end
  redis.call('HSET', k_meta(r), 'name', meta.name, 'by', by, 'at', at, 'ver', '0')
  if meta.file then redis.call('HSET', k_meta(r), 'file', meta.file) end
  redis.call('ZADD', K_ROOM_INDEX, 0, r)
  return meta
end

-- Closes the rooms created over HTTP whose grace ran out before anybody joined (their
-- metadata expires with it): each leaves the indexes and is reported closed (empty) once,
-- by whichever script sees it first. At most `limit` rooms (nil: all). Returns how many.
local function close_expired(now, limit)
  local due
  if limit then
    due = redis.call('ZRANGEBYSCORE', K_ROOMS, '-inf', now, 'LIMIT', 0, limit)
  else
    due = redis.call('ZRANGEBYSCORE', K_ROOMS, '-inf', now)
  end
  for _, r in ipairs(due) do
    if redis.call('HLEN', k_members(r)) == 0 then
      redis.call('DEL', k_meta(r))
      redis.call('ZREM', K_ROOMS, r)
      redis.call('ZREM', K_ROOM_INDEX, r)
      hook('room.closed', r, nil, 'empty')
    else
      -- A room with members is live: it never expires.
      redis.call('ZADD', K_ROOMS, 'inf', r)
    end
  end
  return #due
end

-- nil when a new room may be created by `user`, else the refusal code.
local function check_limits(user, max_rooms, max_per_user, now)
  close_expired(now, nil)
  if redis.call('ZCARD', K_ROOMS) >= max_rooms then return 'too-many-rooms' end
  local ku = k_user_rooms(user)
  redis.call('ZREMRANGEBYSCORE', ku, '-inf', now)
  if redis.call('ZCARD', ku) >= max_per_user then return 'too-many-rooms-for-user' end
  return nil
end

local function cause_json(kind, field, value, reason)
  local s = '{"kind":"' .. kind .. '"'
  if field then s = s .. ',"' .. field .. '":' .. cjson.encode(value) end
  if reason then s = s .. ',"reason":' .. cjson.encode(reason) end
  return s .. '}'
end

-- Sends a membership event to every node in `nodes` (a set) but `skip`.
local function publish_membership(snap, cause, nodes, skip)
  local msg = 'M{"cause":' .. cause .. ',"snapshot":' .. snap .. '}'
  for n, _ in pairs(nodes) do
    if n ~= skip then redis.call('PUBLISH', inbox(n), msg) end
  end
end

local function nodes_of(list)
  local nodes = {}
  for _, m in ipairs(list) do nodes[m.n] = true end
  return nodes
end

-- A room with members (`list`) after a change: keeps or re-elects its host, bumps its
-- version, and returns its snapshot JSON.
local function restamp_room(r, list)
  local meta = read_meta(r)
  if not meta then
    meta = new_meta(r, r, list[1].user, list[1].j, nil)
    keep_room(r, meta)
  end
  meta.host = elect(meta, list)
  bump(meta)
  write_host_ver(r, meta)
  return snapshot_json(r, meta, list)
end

-- After members were removed: deletes an emptied room, or moves the host, bumps the
-- version and tells the room's nodes (but `skip`). Returns nothing.
local function settle_room(r, cause, skip)
  local list = load_members(r)
  if #list == 0 then
    local meta = read_meta(r)
    if meta then hook('room.closed', r, nil, 'empty') end
    drop_room(r, meta)
    return
  end
  publish_membership(restamp_room(r, list), cause, nodes_of(list), skip)
end
