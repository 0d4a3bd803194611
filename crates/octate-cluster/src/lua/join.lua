-- Commits a member. ARGV: prefix, room, user, name, node, conn, kind (auth|join|create),
-- room name, file id ('' = none), max peers, max rooms, max rooms per user, session id
-- ('' = none: resume is off), token id and token expiry ms ('' = none: kept so that a
-- kick from any node can revoke the token, with resume on or off), protocol ('y' =
-- y-webrtc, '' = native), node reporting lifecycle events ('' = none).
-- Returns {'ok', snapshot, 'joined'|'replaced', replaced session's node ('' if none)}
-- or {'err', code}.
local r, user, uname, node, conn, kind = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local room_name, file_id = ARGV[8], ARGV[9]
local max_peers, max_rooms, max_per_user = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local session = ARGV[13]
hooks_for(ARGV[17])
local created = false
if session == '' then session = nil end
local token_id, token_expiry = ARGV[14], ARGV[15]
if token_id == '' then token_id = nil end
if token_expiry == '' then token_expiry = nil end
local now = now_ms()
local meta = read_meta(r)
if meta and kind == 'create' then return { 'err', 'room-exists' } end
local mk = k_members(r)
local old = decode_member(redis.call('HGET', mk, user))
if meta and old and old.n == node and old.c == conn then
  return { 'ok', snapshot_json(r, meta, load_members(r)), 'joined', '' }
end
if meta then
  local count = redis.call('HLEN', mk)
  if old then count = count - 1 end
  if count >= max_peers then return { 'err', 'room-full' } end
else
  local refused = check_limits(user, max_rooms, max_per_user, now)
  if refused then return { 'err', refused } end
  if room_name == '' then room_name = r end
  meta = new_meta(r, room_name, user, num(now), file_id)
  created = true
end
keep_room(r, meta)
if created then hook('room.created', r) end
local nodes = {}
if old then
  redis.call('SREM', k_node_set(old.n), r .. ' ' .. user)
  forget_session(r, user, old)
  nodes[old.n] = true
end
local protocol = ARGV[16]
if protocol == '' then protocol = nil end
save_member(r, user, { n = node, c = conn, j = num(now), u = uname, s = session,
  t = token_id, e = token_expiry, p = protocol })
if session then redis.call('SET', k_session(session), r .. ' ' .. user) end
redis.call('SADD', k_node_set(node), r .. ' ' .. user)
local list = load_members(r)
for _, m in ipairs(list) do nodes[m.n] = true end
meta.host = elect(meta, list)
bump(meta)
write_host_ver(r, meta)
local snap = snapshot_json(r, meta, list)
local how, old_node = 'joined', ''
if old then how, old_node = 'replaced', old.n end
publish_membership(snap, cause_json(how, 'user', user), nodes, node)
hook('peer.' .. how, r, user)
return { 'ok', snap, how, old_node }
