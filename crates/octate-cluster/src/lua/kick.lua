-- Removes a user from a room on an administrator's order, whatever node or connection
-- holds it, or while it is suspended; its resumable session ends. Every node of the room
-- and the node that held the user are told (cause left, reason kicked): that node closes
-- the connection with 4005. An emptied room is deleted after its last snapshot (no
-- members) is published. ARGV: prefix, room, user, node reporting lifecycle events
-- ('' = none).
-- Returns {'ok', token id, token expiry, node that held it} or {'err', code}.
local r, user = ARGV[2], ARGV[3]
hooks_for(ARGV[4])
local mk = k_members(r)
local meta = read_meta(r)
local m = decode_member(redis.call('HGET', mk, user))
if not m then
  if not meta and redis.call('EXISTS', mk) == 0 then return { 'err', 'room-not-found' } end
  return { 'err', 'peer-not-found' }
end
redis.call('HDEL', mk, user)
redis.call('SREM', k_node_set(m.n), r .. ' ' .. user)
forget_session(r, user, m)
hook('peer.left', r, user, 'kicked')
local list = load_members(r)
local nodes = nodes_of(list)
nodes[m.n] = true
local snap
if #list == 0 then
  if meta then hook('room.closed', r, nil, 'empty') end
  meta = meta or {}
  meta.host = nil
  bump(meta)
  snap = snapshot_json(r, meta, list)
  drop_room(r, meta)
else
  snap = restamp_room(r, list)
end
publish_membership(snap, cause_json('left', 'user', user, 'kicked'), nodes, nil)
return { 'ok', m.t or '', m.e or '', m.n }
