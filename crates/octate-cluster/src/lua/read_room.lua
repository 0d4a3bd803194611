-- A room's snapshot, or nil. ARGV: prefix, room.
local r = ARGV[2]
local meta = read_meta(r)
if not meta then return false end
return snapshot_json(r, meta, load_members(r))
