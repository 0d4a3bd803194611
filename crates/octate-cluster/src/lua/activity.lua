-- Records that a node's peers were active in a room (other nodes may not see that
-- traffic): a node that finds the room quiet for the inactivity timeout closes it only
-- if no node reported activity within it (close_room). ARGV: prefix, room. Returns 1 if
-- the room exists, else 0.
local r = ARGV[2]
if redis.call('EXISTS', k_meta(r)) == 0 then return 0 end
redis.call('HSET', k_meta(r), 'act', num(now_ms()))
return 1
