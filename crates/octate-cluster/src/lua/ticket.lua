-- Records the ticket just handed to a member's session: the digest of its resume token
-- (the one before is spent) and the token the session runs on. ARGV: prefix, room, user,
-- node, conn, session, digest (hex), token id ('' = none), token expiry ms ('' = none).
-- Returns 1 if the session (node, conn) still owns the member, else 0.
local r, user, node, conn = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local session, digest, token_id, expiry = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local m = decode_member(redis.call('HGET', k_members(r), user))
if not m or m.n ~= node or m.c ~= conn or m.x then return 0 end
if m.s and m.s ~= session then redis.call('DEL', k_session(m.s)) end
m.s, m.d = session, digest
if token_id ~= '' then m.t = token_id else m.t = nil end
if expiry ~= '' then m.e = expiry else m.e = nil end
save_member(r, user, m)
redis.call('SET', k_session(session), r .. ' ' .. user)
return 1
