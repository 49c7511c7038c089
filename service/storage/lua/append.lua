#!lua
-- Append one request's events to the stream, dropping ids seen before (one round trip).
-- KEYS[1]   the events stream; KEYS[2..] one idempotency key per distinct event id
-- ARGV[1]   idempotency TTL in seconds; ARGV[2] n, the number of events
-- ARGV[1+2i] slot of event i in KEYS (0: no id, never deduplicated); ARGV[2+2i] its JSON
-- Returns {accepted, duplicates, entry id or nil}.
-- Ids are checked first and marked only after the XADD, so an id is never marked
-- without its event stored.
local n = tonumber(ARGV[2])
local seen, fresh, parts = {}, {}, {}
local duplicates = 0
for i = 1, n do
  local slot = tonumber(ARGV[1 + 2 * i])
  if slot == 0 then
    parts[#parts + 1] = ARGV[2 + 2 * i]
  elseif seen[slot] or redis.call('EXISTS', KEYS[slot]) == 1 then
    duplicates = duplicates + 1
  else
    seen[slot] = true
    fresh[#fresh + 1] = KEYS[slot]
    parts[#parts + 1] = ARGV[2 + 2 * i]
  end
end
if #parts == 0 then
  return {0, duplicates, false}
end
local id = redis.call('XADD', KEYS[1], '*', 'e', '[' .. table.concat(parts, ',') .. ']')
for _, key in ipairs(fresh) do
  redis.call('SET', key, id, 'EX', ARGV[1])
end
return {#parts, duplicates, id}
