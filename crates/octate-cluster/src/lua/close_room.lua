-- Deletes a room and tells every node with members (the caller too). ARGV: prefix, room,
-- reason, quiet ms ('' = close in any case; for inactivity: close only if no node
-- reported activity, `act`, within it), node reporting lifecycle events ('' = none).
-- Returns 1 if the room was closed, -1 if it is still active, 0 if it did not exist (with
-- a quiet time: {'gone', version}, the close's version for the asking node's replica).
local r, reason, quiet = ARGV[2], ARGV[3], tonumber(ARGV[4])
hooks_for(ARGV[5])
local meta = read_meta(r)
local list = load_members(r)
if not meta and #list == 0 then
  if quiet then return { 'gone', num(now_us()) } end
  return 0
end
if quiet and meta and meta.act and now_ms() - tonumber(meta.act) < quiet then return -1 end
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
