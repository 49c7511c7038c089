#!lua
-- Apply a batch of labels, in order, to the class-frequency EMA; return the estimates.
-- Mirrors models/frequency.py (ema_step, time_decay, estimates, ClassFrequencyEstimator.update)
-- operation for operation, so the doubles come out bit for bit equal. Floats arrive as
-- Python repr() strings and leave as '%.17g' strings: both round-trip a double exactly,
-- while a Lua number returned to Redis would be truncated to an integer.
-- KEYS[1]  the EMA hash (m0..m{K-1}, norm, count, last_time)
-- ARGV     K, decay, floor, time_half_life ('' = event mode), has_timestamps ('1'/'0'), n,
--          labels[n], timestamps[n] (present only when has_timestamps is '1')
-- Event mode adds (1 - decay) per event; time mode adds 1 per event (counts fading with time).
-- Returns  p[K], m[K], norm, count, last_time ('' = none), all strings.
local key = KEYS[1]
local k = tonumber(ARGV[1])
local event_decay = tonumber(ARGV[2])
local floor = tonumber(ARGV[3])
local time_mode = ARGV[4] ~= ''
local time_half_life = tonumber(ARGV[4])
local timed = time_mode and ARGV[5] == '1'
local n = tonumber(ARGV[6])

local fields = {}
for c = 1, k do fields[c] = 'm' .. (c - 1) end
fields[k + 1] = 'norm'
fields[k + 2] = 'count'
fields[k + 3] = 'last_time'
local stored = redis.call('HMGET', key, unpack(fields))
local m = {}
for c = 1, k do m[c] = tonumber(stored[c]) or 0.0 end
local norm = tonumber(stored[k + 1]) or 0.0
local count = tonumber(stored[k + 2]) or 0
local last_time = nil
if stored[k + 3] and stored[k + 3] ~= '' then last_time = tonumber(stored[k + 3]) end

for i = 1, n do
  local label = tonumber(ARGV[6 + i]) + 1
  local decay = event_decay
  if timed then
    local t = tonumber(ARGV[6 + n + i])
    if last_time == nil then
      last_time = t
    else
      local dt = t - last_time
      local gap = 0.0
      if dt > 0.0 then gap = dt end
      decay = 0.5 ^ (gap / time_half_life)
      if t > last_time then last_time = t end
    end
  end
  local rest = 1.0 - decay
  if time_mode then rest = 1.0 end
  for c = 1, k do
    local indicator = 0.0
    if c == label then indicator = 1.0 end
    m[c] = decay * m[c] + rest * indicator
  end
  norm = decay * norm + rest
end
count = count + n

local function fmt(x) return string.format('%.17g', x) end
local p = {}
if norm == 0.0 then
  for c = 1, k do p[c] = 1.0 / k end
else
  local s = 0.0
  for c = 1, k do
    local v = m[c] / norm
    if not (v > floor) then v = floor end
    p[c] = v
    s = s + v
  end
  for c = 1, k do p[c] = p[c] / s end
end

local write, out = {}, {}
for c = 1, k do
  out[c] = fmt(p[c])
  out[k + c] = fmt(m[c])
  write[#write + 1] = fields[c]
  write[#write + 1] = out[k + c]
end
out[2 * k + 1] = fmt(norm)
out[2 * k + 2] = string.format('%d', count)
out[2 * k + 3] = ''
write[#write + 1] = 'norm'
write[#write + 1] = out[2 * k + 1]
write[#write + 1] = 'count'
write[#write + 1] = out[2 * k + 2]
if last_time ~= nil then
  out[2 * k + 3] = fmt(last_time)
  write[#write + 1] = 'last_time'
  write[#write + 1] = out[2 * k + 3]
end
redis.call('HSET', key, unpack(write))
return out
