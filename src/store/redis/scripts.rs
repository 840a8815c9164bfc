//! The Lua scripts that make each store operation one atomic step on the server.

/// What the rate scripts share: time in nanoseconds, from the server's clock so that
/// replicas agree on it (or, when ARGV[1] is not empty, from ARGV[1] seconds and ARGV[2]
/// microseconds: tests fix the clock so that nothing they check depends on how fast
/// they run). A counter holds its theoretical arrival time as `SECONDS NANOSECONDS`:
/// Lua's numbers are doubles, exact up to 2^53, too few for nanoseconds since 1970 but
/// plenty for the distance between a counter and now.
pub(super) const RATE_CLOCK: &str = r"
local sec, nsec, fixed
if ARGV[1] ~= '' then
  sec, nsec, fixed = tonumber(ARGV[1]), tonumber(ARGV[2]) * 1000, true
else
  local t = redis.call('TIME')
  sec, nsec, fixed = tonumber(t[1]), tonumber(t[2]) * 1000, false
end
local function ahead_of(key)
  local stored = redis.call('GET', key)
  if not stored then return 0 end
  local s, n = string.match(stored, '^(%d+) (%d+)$')
  if not s then return 0 end
  return (tonumber(s) - sec) * 1e9 + (tonumber(n) - nsec)
end
local function store(key, ahead)
  local total = nsec + ahead
  local value = string.format('%d %d', sec + math.floor(total / 1e9), total % 1e9)
  if fixed then
    redis.call('SET', key, value)
  else
    redis.call('SET', key, value, 'PX', math.ceil(ahead / 1e6))
  end
end
";

/// GCRA over several limits at once, all or nothing (see `gcra` in the store module):
/// `count(n)` counts one event against KEYS[1] to KEYS[n], whose interval ns and window
/// ns (`count` intervals) follow the clock in ARGV, in order. Returns nil when every
/// limit admits the event (each then counts it), else {i, ns to wait} for the first that
/// refuses (1-based), and counts nothing. A counter with a fixed clock is kept until
/// deleted: its expiry would run on the real one.
pub(super) const RATE_COUNT: &str = r"
local function count(n)
  local ahead = {}
  for i = 1, n do
    local interval, window = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
    local a = math.max(ahead_of(KEYS[i]), 0)
    -- Compared before adding, so that no sum passes the window (and 2^53).
    if a > window - interval then return {i, a - (window - interval)} end
    ahead[i] = a + interval
  end
  for i = 1, n do store(KEYS[i], ahead[i]) end
  return nil
end
";

/// Counts one event against every limit, all or nothing. KEYS: the limits. ARGV: the
/// clock, then interval and window of each. Returns {0, 0} when counted, else {i, ns to
/// wait} for the first that refuses (1-based).
pub(super) const RATE_SCRIPT: &str = r"
return count(#KEYS) or {0, 0}
";

/// Claims a key and counts the limits of one send in one step: the claim of
/// `CLAIM_SCRIPT` and the count of `RATE_SCRIPT`, the key taken only when every limit
/// admits the event. KEYS: the limits, then the key to claim. ARGV: the clock, interval
/// and window of each limit, then the in-flight record and its ttl ms. Returns {-1,
/// holder's record} when someone holds the key (nothing counted), {0, 0} when claimed and
/// counted, else {i, ns to wait} for the first limit that refuses (nothing written).
pub(super) const CLAIM_RATE_SCRIPT: &str = r"
local n = #KEYS - 1
local held = redis.call('GET', KEYS[n + 1])
if held then return {-1, held} end
local refused = count(n)
if refused then return refused end
redis.call('SET', KEYS[n + 1], ARGV[2 * n + 3], 'PX', ARGV[2 * n + 4])
return {0, 0}
";

/// Gives one event back to each counter: moves it one interval back, never to before
/// now. KEYS: the limits. ARGV after the clock: the interval ns of each, in order.
pub(super) const REFUND_SCRIPT: &str = r"
for i, key in ipairs(KEYS) do
  local a = ahead_of(key) - tonumber(ARGV[i + 2])
  if a > 0 then store(key, a) else redis.call('DEL', key) end
end
return 0
";

/// Takes the key when free. ARGV: in-flight record, ttl ms. Returns the holder's
/// record, or nil when claimed.
pub(super) const CLAIM_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Stores the final answer unless someone else holds the key or it is already done.
/// ARGV: our in-flight record, the done record, ttl ms.
pub(super) const FINISH_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Drops our in-flight claim. ARGV: our in-flight record.
pub(super) const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Swaps a value only if it is still the expected one, keeping its expiry.
/// ARGV: expected, new. Returns 1 when swapped.
pub(super) const REPLACE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";
