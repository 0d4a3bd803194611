-- One page of rooms in the order of their ids, read from the room index. ARGV: prefix,
-- cursor ('' = from the start; the list starts after it), most rooms, most index entries
-- to look at. An entry whose room is gone (an empty room whose grace ran out) is removed.
-- Returns {where the scan stopped ('' = the index ended), snapshot...}.
local cursor, limit, budget = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local from = '-'
if cursor ~= '' then from = '(' .. cursor end
local out = { '' }
local stopped = ''
while #out - 1 < limit do
  if budget <= 0 then break end
  local want = math.min(limit - (#out - 1), budget)
  local ids = redis.call('ZRANGEBYLEX', K_ROOM_INDEX, from, '+', 'LIMIT', 0, want)
  if #ids == 0 then
    stopped = ''
    break
  end
  budget = budget - #ids
  for _, r in ipairs(ids) do
    local meta = read_meta(r)
    if meta and meta.by and meta.by ~= '' then
      out[#out + 1] = snapshot_json(r, meta, load_members(r))
    elseif not meta and redis.call('EXISTS', k_members(r)) == 0 then
      redis.call('ZREM', K_ROOM_INDEX, r)
    end
  end
  from = '(' .. ids[#ids]
  stopped = ids[#ids]
  if #ids < want then
    stopped = ''
    break
  end
end
out[1] = stopped
return out
