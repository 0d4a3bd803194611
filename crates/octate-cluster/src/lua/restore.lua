-- Re-registers this node's live members after Redis lost them (or reaped this node).
-- ARGV: prefix, node, announce (1: tell the rooms' other nodes), then per member: room,
-- user, name, conn, joined at, room name, created by, created at, file id, host as the
-- node last saw it ('' = unknown), session id and its resume token's digest ('' = none),
-- token id and token expiry ms ('' = none), protocol ('y' = y-webrtc, '' = native). A restored member keeps its session (it can
-- still resume, on any node) and its token (a kick can still revoke it).
-- A member now owned by another session is left alone. Returns how many were added.
local node, announce = ARGV[2], ARGV[3]
local touched, added = {}, 0
-- Any reap of this node still running would remove the members restored here.
redis.call('DEL', P .. 'reap:' .. node)
redis.call('ZREM', K_REAPING, node)
local hints = {}
local function blank(v) if v == '' then return nil end return v end
for i = 4, #ARGV - 14, 15 do
  local r, user, uname, conn, joined = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if ARGV[i + 9] ~= '' then hints[r] = ARGV[i + 9] end
  local session, digest = blank(ARGV[i + 10]), blank(ARGV[i + 11])
  local token_id, expiry = blank(ARGV[i + 12]), blank(ARGV[i + 13])
  local protocol = blank(ARGV[i + 14])
  local mk = k_members(r)
  local m = decode_member(redis.call('HGET', mk, user))
  if m and m.n == node and m.c == conn then
    redis.call('SADD', k_node_set(node), r .. ' ' .. user)
    if m.x then
      -- Suspended by a reap while this node was unreachable: its connection is live.
      m.x = nil
      save_member(r, user, m)
      redis.call('ZREM', K_SUSPENDED, r .. ' ' .. user)
      touched[r] = true
    end
  elseif not m then
    local meta = read_meta(r)
    if not meta then
      local name = ARGV[i + 5]
      if name == '' then name = r end
      meta = new_meta(r, name, ARGV[i + 6], ARGV[i + 7], ARGV[i + 8])
    end
    keep_room(r, meta)
    save_member(r, user, { n = node, c = conn, j = joined, u = uname, s = session,
      d = digest, t = token_id, e = expiry, p = protocol })
    if session then redis.call('SET', k_session(session), r .. ' ' .. user) end
    redis.call('SADD', k_node_set(node), r .. ' ' .. user)
    touched[r] = true
    added = added + 1
  end
end
for r, _ in pairs(touched) do
  local meta = read_meta(r)
  local list = load_members(r)
  -- Nodes restore one after the other: the host they saw wins once it is back, so the
  -- host does not move to whoever was restored first.
  local hint = hints[r]
  for _, m in ipairs(list) do
    if m.user == hint then meta.host = hint end
  end
  meta.host = elect(meta, list)
  bump(meta)
  write_host_ver(r, meta)
  if announce == '1' then
    publish_membership(snapshot_json(r, meta, list), cause_json('resync'), nodes_of(list), node)
  end
end
return added
