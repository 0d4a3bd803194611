-- Deletes a room and tells every node with members (the caller too). ARGV: prefix, room,
-- reason, node reporting lifecycle events ('' = none). Returns 1 if the room existed,
-- else 0.
local r, reason = ARGV[2], ARGV[3]
hooks_for(ARGV[4])
local meta = read_meta(r)
local list = load_members(r)
if not meta and #list == 0 then return 0 end
hook('room.closed', r, nil, reason)
for _, m in ipairs(list) do
  redis.call('SREM', k_node_set(m.n), r .. ' ' .. m.user)
  forget_session(r, m.user, m)
end
drop_room(r, meta)
-- The close's version: later than every join of the room it deletes (their versions are at
-- most Redis' clock then), earlier than any join that creates the room again.
local msg = 'C{"room":' .. cjson.encode(r) .. ',"reason":' .. cjson.encode(reason)
  .. ',"ver":"' .. num(now_us()) .. '"}'
for n, _ in pairs(nodes_of(list)) do
  redis.call('PUBLISH', inbox(n), msg)
end
return 1
