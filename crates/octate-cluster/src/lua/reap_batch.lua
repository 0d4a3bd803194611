-- Takes up to `batch` members of a dead (or retired) node: a member with a resumable
-- session is suspended for the resume grace, so that it resumes on another node; any
-- other is removed, moving hosts. The remaining nodes are told (cause node-down).
-- ARGV: prefix, dead node, batch, lease ms, resume grace ms (0: resume is off), node
-- reporting lifecycle events ('' = none). Returns how many members are left to reap.
local dead, batch, lease, grace = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]) or 0
hooks_for(ARGV[6])
local until_ms = now_ms() + grace
local set = P .. 'reap:' .. dead
if redis.call('ZSCORE', K_NODES, dead) then
  -- The node came back (it was only unreachable): it re-registers its own members.
  redis.call('DEL', set)
  redis.call('ZREM', K_REAPING, dead)
  return 0
end
-- What the node committed and did not send (it died, or left for good) goes out from here.
adopt_hooks(dead)
local entries = redis.call('SPOP', set, batch)
local rooms = {}
for _, e in ipairs(entries) do
  local sp = string.find(e, ' ', 1, true)
  if sp then
    local r, user = string.sub(e, 1, sp - 1), string.sub(e, sp + 1)
    local m = decode_member(redis.call('HGET', k_members(r), user))
    if m and m.n == dead and not m.x then
      if m.s and m.d and grace > 0 then
        m.x = num(until_ms)
        save_member(r, user, m)
        redis.call('ZADD', K_SUSPENDED, until_ms, r .. ' ' .. user)
        hook('peer.suspended', r, user)
      else
        redis.call('HDEL', k_members(r), user)
        forget_session(r, user, m)
        hook('peer.left', r, user, 'node-down')
      end
      rooms[r] = true
    end
  end
end
local cause = cause_json('node-down', 'node', dead)
for r, _ in pairs(rooms) do settle_room(r, cause, nil) end
local left = redis.call('SCARD', set)
if left == 0 then
  redis.call('ZREM', K_REAPING, dead)
else
  redis.call('ZADD', K_REAPING, now_ms() + lease, dead)
end
return left
