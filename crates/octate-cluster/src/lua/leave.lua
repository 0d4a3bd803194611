-- Removes a member if the session (node, conn) still owns it. ARGV: prefix, room, user,
-- node, conn, reason, node reporting lifecycle events ('' = none). Returns 1 if
-- removed, else 0.
local r, user, node, conn, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
hooks_for(ARGV[7])
local mk = k_members(r)
local m = decode_member(redis.call('HGET', mk, user))
if not m or m.n ~= node or m.c ~= conn then return 0 end
redis.call('HDEL', mk, user)
redis.call('SREM', k_node_set(node), r .. ' ' .. user)
forget_session(r, user, m)
hook('peer.left', r, user, reason)
-- The leaving node is told too: it hears its own change in the store's order, which
-- settles a host it elected from a replica that was behind.
settle_room(r, cause_json('left', 'user', user, reason), nil)
return 1
