-- GCRA rate limit of one source (service/ingest/rate_limit.py has the same arithmetic in
-- Python, `gcra`, and the tests compare the two).
-- KEYS[1] the source's TAT key. ARGV[1] emission interval (microseconds per event, float),
-- ARGV[2] burst (events), ARGV[3] cost (events), ARGV[4] "now" in microseconds or "" for the
-- server clock. Returns {allowed 0/1, retry_after_us (string, -1: never), remaining events}.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tolerance = interval * burst
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = math.max(tonumber(stored), now)
end
local new_tat = tat + cost * interval
local allow_at = new_tat - tolerance
if allow_at > now then
  local retry = allow_at - now
  if cost > burst then
    retry = -1
  end
  return {0, string.format('%.17g', retry), math.floor((now - (tat - tolerance)) / interval)}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl_ms)
return {1, '0', math.floor((now - (new_tat - tolerance)) / interval)}
