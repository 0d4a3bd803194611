-- Ends suspended members whose resume grace has run out: each is removed and its room
-- told (cause left, reason timeout); and closes rooms created over HTTP that nobody joined
-- within their grace. Any node may run it; a grace so survives the node that started it.
-- ARGV: prefix, most members (and rooms) per call, node reporting lifecycle events
-- ('' = none). Returns how many members ended.
local limit = tonumber(ARGV[2])
hooks_for(ARGV[3])
local now = now_ms()
close_expired(now, limit)
local due = redis.call('ZRANGEBYSCORE', K_SUSPENDED, '-inf', now, 'LIMIT', 0, limit)
local ended = 0
for _, e in ipairs(due) do
  redis.call('ZREM', K_SUSPENDED, e)
  local sp = string.find(e, ' ', 1, true)
  if sp then
    local r, user = string.sub(e, 1, sp - 1), string.sub(e, sp + 1)
    local m = decode_member(redis.call('HGET', k_members(r), user))
    if m and m.x and tonumber(m.x) <= now then
      redis.call('HDEL', k_members(r), user)
      forget_session(r, user, m)
      hook('peer.left', r, user, 'timeout')
      settle_room(r, cause_json('left', 'user', user, 'timeout'), nil)
      ended = ended + 1
    end
  end
end
return ended
