-- Records the token a member's session now runs on after a `refresh`, so that a resume or
-- a kick on any node holds it to that token. ARGV: prefix, room, user, node, conn, token id
-- ('' = none), token expiry ms ('' = none).
-- Returns 1 if the session (node, conn) still owns the member, else 0.
local r, user, node, conn = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local token_id, expiry = ARGV[6], ARGV[7]
local m = decode_member(redis.call('HGET', k_members(r), user))
if not m or m.n ~= node or m.c ~= conn or m.x then return 0 end
if token_id ~= '' then m.t = token_id else m.t = nil end
if expiry ~= '' then m.e = expiry else m.e = nil end
save_member(r, user, m)
return 1
