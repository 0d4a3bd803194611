-- A node leaving for good: deregisters it and hands its members to the reap set.
-- ARGV: prefix, node, lease ms.
local node, lease = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
redis.call('ZREM', K_NODES, node)
redis.call('DEL', P .. 'node:' .. node .. ':info')
local owned, reap = k_node_set(node), P .. 'reap:' .. node
if redis.call('EXISTS', owned) == 1 then
  redis.call('SUNIONSTORE', reap, reap, owned)
  redis.call('DEL', owned)
end
redis.call('ZADD', K_REAPING, now + lease, node)
return 1
