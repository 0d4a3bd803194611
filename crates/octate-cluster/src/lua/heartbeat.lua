-- Reads the epoch (set at first boot) and maybe marks the node alive until now + ttl.
-- ARGV: prefix, node, ttl ms, stall ms, epoch candidate, mode, info, expected epoch.
-- mode 0: read only; 1: register unless this node was reaped or the epoch is not the
-- expected one ('' = any); 2: register (after this node re-registered its members).
-- Returns {epoch, now ms, reaped (1 if this node was declared dead), alive nodes with
-- their deadlines}.
local node, ttl, stall = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local candidate, mode, info, expected = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local now = now_ms()
redis.call('SET', P .. 'epoch', candidate, 'NX')
local epoch = redis.call('GET', P .. 'epoch')
local reaped = 0
-- The tombstone stays until the node registers again after restoring its members.
if redis.call('EXISTS', P .. 'dead:' .. node) == 1 then reaped = 1 end
local register = mode == '2' or (mode == '1' and reaped == 0 and (expected == '' or expected == epoch))
if register then
  local last = redis.call('GET', P .. 'lastbeat')
  if last and now - tonumber(last) > stall then
    -- Nobody's heartbeat was processed for a while: Redis itself stalled. Reap nobody
    -- until every node had one ttl to heartbeat again.
    redis.call('SET', P .. 'stall', num(now + ttl), 'PX', ttl)
  end
  redis.call('SET', P .. 'lastbeat', num(now))
  redis.call('ZADD', K_NODES, now + ttl, node)
  redis.call('SET', P .. 'node:' .. node .. ':info', info, 'PX', ttl)
  redis.call('DEL', P .. 'dead:' .. node)
end
local alive = redis.call('ZRANGEBYSCORE', K_NODES, now, '+inf', 'WITHSCORES')
return { epoch, num(now), reaped, alive }
