#!lua
-- Store a request's predictions for late labels, in one command (not one SET per key).
-- KEYS[i]   a key to set: a prediction's features, or what was served for it
-- ARGV[1]   TTL in seconds; ARGV[1+i] the value of KEYS[i]
-- Returns the number of keys set.
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
end
return #KEYS
