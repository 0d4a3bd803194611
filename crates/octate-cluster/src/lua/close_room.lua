-- Deletes a room and tells every node with members (the caller too). ARGV: prefix, room,
-- reason. Returns 1 if the room existed, else 0.
local r, reason = ARGV[2], ARGV[3]
local meta = read_meta(r)
local list = load_members(r)
if not meta and #list == 0 then return 0 end
for _, m in ipairs(list) do
  redis.call('SREM', k_node_set(m.n), r .. ' ' .. m.user)
end
drop_room(r, meta)
local msg = 'C{"room":' .. cjson.encode(r) .. ',"reason":' .. cjson.encode(reason) .. '}'
for n, _ in pairs(nodes_of(list)) do
  redis.call('PUBLISH', inbox(n), msg)
end
return 1
