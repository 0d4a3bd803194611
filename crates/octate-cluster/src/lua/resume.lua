-- Moves a session to a connection of the calling node when the presented token is its
-- current one and its grace has not run out (it may also still be held by a connection
-- the server has not seen drop: that one is replaced). The next token's digest replaces
-- the spent one. Every node of the room, and the node that held the session, is told
-- (cause resumed). ARGV: prefix, session, presented digest (hex), node, conn, next
-- digest (hex), node reporting lifecycle events ('' = none). Returns {'ok', snapshot,
-- user, token id, token expiry} or {'err', why}.
local session, presented, node, conn, next_digest = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
hooks_for(ARGV[7])
local now = now_ms()
local where = redis.call('GET', k_session(session))
if not where then return { 'err', 'unknown' } end
local sp = string.find(where, ' ', 1, true)
if not sp then return { 'err', 'unknown' } end
local r, user = string.sub(where, 1, sp - 1), string.sub(where, sp + 1)
local m = decode_member(redis.call('HGET', k_members(r), user))
if not m or m.s ~= session then return { 'err', 'unknown' } end
if m.d ~= presented then return { 'err', 'token' } end
if m.x and tonumber(m.x) <= now then return { 'err', 'expired' } end
local old_node = m.n
if not m.x then redis.call('SREM', k_node_set(m.n), r .. ' ' .. user) end
redis.call('ZREM', K_SUSPENDED, r .. ' ' .. user)
-- A resumed session speaks the native protocol (y-webrtc sessions are not resumable).
m.n, m.c, m.x, m.d, m.p = node, conn, nil, next_digest, nil
save_member(r, user, m)
redis.call('SADD', k_node_set(node), r .. ' ' .. user)
local list = load_members(r)
local snap = restamp_room(r, list)
local nodes = nodes_of(list)
nodes[old_node] = true
publish_membership(snap, cause_json('resumed', 'user', user), nodes, node)
hook('peer.resumed', r, user)
return { 'ok', snap, user, m.t or '', m.e or '' }
