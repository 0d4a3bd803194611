-- Suspends a member whose connection was lost, for the resume grace: it stays in its
-- room (host, limits, peer lists) and no node holds it; the rooms' nodes are told
-- (cause suspended). Without a resumable session it is removed instead. ARGV: prefix,
-- room, user, node, conn, grace ms, node reporting lifecycle events ('' = none).
-- Returns 1 if suspended, 2 if removed, else 0.
local r, user, node, conn, grace = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
hooks_for(ARGV[7])
local m = decode_member(redis.call('HGET', k_members(r), user))
if not m or m.n ~= node or m.c ~= conn or m.x then return 0 end
redis.call('SREM', k_node_set(node), r .. ' ' .. user)
if not (m.s and m.d) or grace <= 0 then
  redis.call('HDEL', k_members(r), user)
  forget_session(r, user, m)
  hook('peer.left', r, user, 'disconnected')
  settle_room(r, cause_json('left', 'user', user, 'disconnected'), nil)
  return 2
end
local until_ms = now_ms() + grace
m.x = num(until_ms)
save_member(r, user, m)
redis.call('ZADD', K_SUSPENDED, until_ms, r .. ' ' .. user)
hook('peer.suspended', r, user)
settle_room(r, cause_json('suspended', 'user', user), nil)
return 1
