-- Claims one dead node (or an unfinished reap whose lease ran out) for the caller to
-- reap. ARGV: prefix, caller node, ttl ms, stall ms, lease ms, node reporting lifecycle
-- events ('' = none). Returns the node or nil.
local self, ttl, stall, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
hooks_for(ARGV[6])
local now = now_ms()
local last = redis.call('GET', P .. 'lastbeat')
if last and now - tonumber(last) > stall then
  redis.call('SET', P .. 'stall', num(now + ttl), 'PX', ttl)
  return false
end
if redis.call('EXISTS', P .. 'stall') == 1 then return false end
local unfinished = redis.call('ZRANGEBYSCORE', K_REAPING, '-inf', now, 'LIMIT', 0, 1)
if unfinished[1] then
  redis.call('ZADD', K_REAPING, now + lease, unfinished[1])
  return unfinished[1]
end
local dead = redis.call('ZRANGEBYSCORE', K_NODES, '-inf', now, 'LIMIT', 0, 2)
for _, n in ipairs(dead) do
  if n ~= self then
    redis.call('ZREM', K_NODES, n)
    local owned, reap = k_node_set(n), P .. 'reap:' .. n
    if redis.call('EXISTS', owned) == 1 then
      redis.call('SUNIONSTORE', reap, reap, owned)
      redis.call('DEL', owned)
    end
    redis.call('SET', P .. 'dead:' .. n, '1', 'EX', 3600)
    redis.call('DEL', P .. 'node:' .. n .. ':info')
    redis.call('ZADD', K_REAPING, now + lease, n)
    adopt_hooks(n)
    hook('node.down', nil, nil, nil, n)
    return n
  end
end
return false
