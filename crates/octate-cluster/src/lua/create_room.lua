-- Creates an empty room that expires unless joined within the grace period.
-- ARGV: prefix, room, name, created by, file id ('' = none), max rooms, max rooms per
-- user, grace ms, node reporting lifecycle events ('' = none). Returns {'ok', snapshot}
-- or {'err', code}.
local r, name, by, file = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
hooks_for(ARGV[9])
local max_rooms, max_per_user, grace = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local now = now_ms()
if redis.call('EXISTS', k_meta(r)) == 1 then return { 'err', 'room-exists' } end
local refused = check_limits(by, max_rooms, max_per_user, now)
if refused then return { 'err', refused } end
local meta = new_meta(r, name, by, num(now), file)
bump(meta)
redis.call('HSET', k_meta(r), 'ver', meta.ver)
redis.call('PEXPIRE', k_meta(r), grace)
redis.call('ZADD', K_ROOMS, now + grace, r)
redis.call('ZADD', k_user_rooms(by), now + grace, r)
hook('room.created', r)
return { 'ok', snapshot_json(r, meta, {}) }
