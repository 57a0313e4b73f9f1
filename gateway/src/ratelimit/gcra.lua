-- GCRA (the generic cell rate algorithm) for one bucket, as one atomic step in Redis.
-- Loaded and run by gateway/src/ratelimit/shared.rs; the arithmetic is governor's, so a limit
-- counted here answers exactly as the in-process one would.
--
-- KEYS[1]  the bucket: gateway:ratelimit:v1:<scope>:<who>
-- ARGV[1]  interval: microseconds one request takes out of the bucket (60 s / rpm)
-- ARGV[2]  burst: requests the bucket holds when full
--
-- Returns {admitted, remaining, wait_us, reset_us}:
--   admitted   1, or 0 when refused (and then nothing is written)
--   remaining  requests that could follow right now (0 when refused)
--   wait_us    until this request would have been admitted (0 when admitted)
--   reset_us   until the bucket is full again
--
-- The whole state is one number, the theoretical arrival time (TAT): the moment the bucket would
-- be full again if nothing else came. A request moves it one interval later; it is refused when
-- that would put the TAT more than `burst` intervals ahead of now. Time is Redis's own clock
-- (TIME), so instances whose clocks disagree still share one bucket correctly. The key expires
-- when the bucket is full again: an idle client costs Redis nothing, and a missing key reads as
-- a full bucket, which is exactly what it is.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local next_tat = tat + interval
local allowed_at = next_tat - interval * burst
if now < allowed_at then
  return {0, 0, allowed_at - now, tat - now}
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000))
return {1, math.floor((now + interval * burst - next_tat) / interval), 0, next_tat - now}
