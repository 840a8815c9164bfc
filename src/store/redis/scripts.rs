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
local function ahead_in(stored)
  if not stored then return 0 end
  local s, n = string.match(stored, '^(%d+) (%d+)$')
  if not s then return 0 end
  return (tonumber(s) - sec) * 1e9 + (tonumber(n) - nsec)
end
local function ahead_of(key)
  return ahead_in(redis.call('GET', key))
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
/// `count(n, stored)` counts one event against KEYS[1] to KEYS[n], whose values MGET read
/// into `stored` (one read for them all) and whose interval ns and window ns (`count`
/// intervals) follow the clock in ARGV, in order. Returns nil when every limit admits the
/// event (each then counts it), else {i, ns to wait} for the first that refuses
/// (1-based), and counts nothing. A counter with a fixed clock is kept until deleted: its
/// expiry would run on the real one.
pub(super) const RATE_COUNT: &str = r"
local function count(n, stored)
  local ahead_by = {}
  for i = 1, n do
    local interval, window = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
    local a = math.max(ahead_in(stored[i]), 0)
    -- Compared before adding, so that no sum passes the window (and 2^53).
    if a > window - interval then return {i, a - (window - interval)} end
    ahead_by[i] = a + interval
  end
  for i = 1, n do store(KEYS[i], ahead_by[i]) end
  return nil
end
";

/// Counts one event against every limit, all or nothing. KEYS: the limits. ARGV: the
/// clock, then interval and window of each. Returns {0, 0} when counted, else {i, ns to
/// wait} for the first that refuses (1-based).
pub(super) const RATE_SCRIPT: &str = r"
if #KEYS == 0 then return {0, 0} end
return count(#KEYS, redis.call('MGET', unpack(KEYS))) or {0, 0}
";

/// Claims a key and counts the limits of one send in one step: the claim of
/// `CLAIM_SCRIPT` and the count of `RATE_SCRIPT`, the key taken only when every limit
/// admits the event. KEYS: the limits, then the key to claim (read with them in one
/// MGET). ARGV: the clock, interval and window of each limit, then the in-flight record
/// and its ttl ms. Returns {-1, holder's record} when someone holds the key (nothing
/// counted), {0, 0} when claimed and counted, else {i, ns to wait} for the first limit
/// that refuses (nothing written).
pub(super) const CLAIM_RATE_SCRIPT: &str = r"
local n = #KEYS - 1
local stored = redis.call('MGET', unpack(KEYS))
local held = stored[n + 1]
if held then return {-1, held} end
local refused = count(n, stored)
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

/// What settling a claim does, shared by the scripts that settle one: `finish(key, ours,
/// done, ttl)` stores the final answer `done` unless someone else holds the key (it may
/// already be done: then it stays so), returning 1 when stored; `release(key, ours)`
/// drops the key if it still holds our in-flight record `ours`.
pub(super) const SETTLE: &str = r"
local function finish(key, ours, done, ttl)
  local held = redis.call('GET', key)
  if held and held ~= ours then return 0 end
  redis.call('SET', key, done, 'PX', ttl)
  return 1
end
local function release(key, ours)
  if redis.call('GET', key) == ours then return redis.call('DEL', key) end
  return 0
end
";

/// Finishes a claim (after `SETTLE`). ARGV: our in-flight record, the done record, ttl ms.
pub(super) const FINISH_SCRIPT: &str = r"
return finish(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
";

/// Drops our in-flight claim (after `SETTLE`). ARGV: our in-flight record.
pub(super) const RELEASE_SCRIPT: &str = r"
return release(KEYS[1], ARGV[1])
";

/// Writes a new message record with its index entries and settles the send's claim, in
/// one step (after `SETTLE`): finished when ARGV holds the done record, else released.
/// KEYS: the entries, then the claim's key. ARGV: each entry's value, their ttl ms (''
/// for none), our in-flight record, then the done record and its ttl ms (to finish).
pub(super) const PUT_SETTLE_SCRIPT: &str = r"
local m = #KEYS - 1
local ttl = ARGV[m + 1]
for i = 1, m do
  if ttl == '' then
    redis.call('SET', KEYS[i], ARGV[i])
  else
    redis.call('SET', KEYS[i], ARGV[i], 'PX', ttl)
  end
end
if ARGV[m + 3] then return finish(KEYS[m + 1], ARGV[m + 2], ARGV[m + 3], ARGV[m + 4]) end
return release(KEYS[m + 1], ARGV[m + 2])
";

/// Swaps a value only if it is still the expected one, keeping its expiry.
/// ARGV: expected, new. Returns 1 when swapped.
pub(super) const REPLACE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";
