//! The Redis store, shared by every replica. Each operation is one atomic Lua script,
//! and rate-limit time comes from the Redis server so replicas agree on it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use secrecy::{ExposeSecret, SecretString};

use super::{Claim, RateDecision, RateLimit, Record, Store, StoreError, StoredAnswer};

/// Every key otp-relay writes starts with this, so it can share a Redis.
const PREFIX: &str = "otp-relay:";

/// What the rate scripts share: time in nanoseconds, from the server's clock so that
/// replicas agree on it (or, when ARGV[1] is not empty, from ARGV[1] seconds and ARGV[2]
/// microseconds: tests fix the clock so that nothing they check depends on how fast
/// they run). A counter holds its theoretical arrival time as `SECONDS NANOSECONDS`:
/// Lua's numbers are doubles, exact up to 2^53, too few for nanoseconds since 1970 but
/// plenty for the distance between a counter and now.
const RATE_CLOCK: &str = r"
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

/// GCRA over several limits at once, all or nothing (see `gcra` in the store module).
/// KEYS: the limits. ARGV after the clock: interval ns and window ns (`count`
/// intervals) of each, in order. Returns {0, 0} when every limit admits the event (each
/// then counts it), else {i, ns to wait} for the first that refuses (1-based), and
/// counts nothing. A counter with a fixed clock is kept until deleted: its expiry would
/// run on the real one.
const RATE_SCRIPT: &str = r"
local ahead = {}
for i, key in ipairs(KEYS) do
  local interval, window = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  local a = math.max(ahead_of(key), 0)
  -- Compared before adding, so that no sum passes the window (and 2^53).
  if a > window - interval then return {i, a - (window - interval)} end
  ahead[i] = a + interval
end
for i, key in ipairs(KEYS) do store(key, ahead[i]) end
return {0, 0}
";

/// Gives one event back to each counter: moves it one interval back, never to before
/// now. KEYS: the limits. ARGV after the clock: the interval ns of each, in order.
const REFUND_SCRIPT: &str = r"
for i, key in ipairs(KEYS) do
  local a = ahead_of(key) - tonumber(ARGV[i + 2])
  if a > 0 then store(key, a) else redis.call('DEL', key) end
end
return 0
";

/// Takes the key when free. ARGV: in-flight record, ttl ms. Returns the holder's
/// record, or nil when claimed.
const CLAIM_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Stores the final answer unless someone else holds the key or it is already done.
/// ARGV: our in-flight record, the done record, ttl ms.
const FINISH_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Drops our in-flight claim. ARGV: our in-flight record.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Swaps a value only if it is still the expected one, keeping its expiry.
/// ARGV: expected, new. Returns 1 when swapped.
const REPLACE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
";

/// State in a Redis server.
pub struct RedisStore {
    connection: ConnectionManager,
    rate: Script,
    refund: Script,
    claim: Script,
    finish: Script,
    release: Script,
    replace: Script,
}

fn unavailable(error: redis::RedisError) -> StoreError {
    // Redis errors do not carry the URL or password.
    StoreError(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().max(1) as u64
}

impl RedisStore {
    /// Prepares a connection that is made on first use and remade after a failure, so a
    /// Redis that is down at startup does not stop otp-relay.
    pub fn connect(url: &SecretString) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url.expose_secret())
            .map_err(|_| StoreError("REDIS_URL is not a valid Redis URL".into()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisStore {
            connection,
            rate: Script::new(&format!("{RATE_CLOCK}{RATE_SCRIPT}")),
            refund: Script::new(&format!("{RATE_CLOCK}{REFUND_SCRIPT}")),
            claim: Script::new(CLAIM_SCRIPT),
            finish: Script::new(FINISH_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            replace: Script::new(REPLACE_SCRIPT),
        })
    }

    fn key(key: &str) -> String {
        format!("{PREFIX}{key}")
    }

    /// [`Store::rate_acquire`] as if the server's clock read `at`, for tests: counters
    /// written so are kept until deleted.
    pub async fn rate_acquire_at(
        &self,
        limits: &[RateLimit<'_>],
        at: SystemTime,
    ) -> Result<RateDecision, StoreError> {
        self.rate_acquire_on(limits, Some(at)).await
    }

    /// [`Store::rate_refund`] as if the server's clock read `at`, for tests.
    pub async fn rate_refund_at(
        &self,
        limits: &[RateLimit<'_>],
        at: SystemTime,
    ) -> Result<(), StoreError> {
        self.rate_refund_on(limits, Some(at)).await
    }

    async fn rate_acquire_on(
        &self,
        limits: &[RateLimit<'_>],
        at: Option<SystemTime>,
    ) -> Result<RateDecision, StoreError> {
        let mut invocation = self.rate.prepare_invoke();
        clock(&mut invocation, at);
        for limit in limits {
            let (interval, window) = super::gcra_steps(limit.spec);
            invocation
                .key(Self::key(limit.key))
                .arg(interval)
                .arg(window);
        }
        let (refused, wait): (usize, u64) = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(match refused.checked_sub(1) {
            None => RateDecision::Allowed,
            Some(limit) => RateDecision::Limited {
                limit,
                retry_after: Duration::from_nanos(wait.max(1)),
            },
        })
    }

    async fn rate_refund_on(
        &self,
        limits: &[RateLimit<'_>],
        at: Option<SystemTime>,
    ) -> Result<(), StoreError> {
        let mut invocation = self.refund.prepare_invoke();
        clock(&mut invocation, at);
        for limit in limits {
            invocation
                .key(Self::key(limit.key))
                .arg(super::nanos(limit.spec.interval()));
        }
        invocation
            .invoke_async::<i64>(&mut self.connection.clone())
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

/// The clock arguments of the rate scripts: empty for the server's own, else `at`.
fn clock(invocation: &mut redis::ScriptInvocation<'_>, at: Option<SystemTime>) {
    match at.map(|at| at.duration_since(UNIX_EPOCH).unwrap_or_default()) {
        None => invocation.arg("").arg(""),
        Some(since) => invocation.arg(since.as_secs()).arg(since.subsec_micros()),
    };
}

fn in_flight(token: &str, fingerprint: &str) -> String {
    serde_json::to_string(&Record::InFlight {
        token: token.to_owned(),
        fingerprint: fingerprint.to_owned(),
    })
    .expect("a record serializes")
}

fn parse_record(text: &str) -> Result<Record, StoreError> {
    serde_json::from_str(text).map_err(|_| StoreError("unreadable idempotency record".into()))
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn rate_acquire(&self, limits: &[RateLimit<'_>]) -> Result<RateDecision, StoreError> {
        self.rate_acquire_on(limits, None).await
    }

    async fn rate_refund(&self, limits: &[RateLimit<'_>]) -> Result<(), StoreError> {
        self.rate_refund_on(limits, None).await
    }

    async fn claim(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let held: Option<String> = self
            .claim
            .key(Self::key(key))
            .arg(in_flight(token, fingerprint))
            .arg(millis(ttl))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        match held {
            None => Ok(Claim::Claimed),
            Some(text) => Ok(parse_record(&text)?.into_claim()),
        }
    }

    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        let held: Option<String> = redis::cmd("GET")
            .arg(Self::key(key))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        held.map(|text| parse_record(&text).map(Record::into_claim))
            .transpose()
    }

    async fn finish(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let done = serde_json::to_string(&Record::Done {
            fingerprint: fingerprint.to_owned(),
            answer: answer.clone(),
        })
        .expect("a record serializes");
        let _: i64 = self
            .finish
            .key(Self::key(key))
            .arg(in_flight(token, fingerprint))
            .arg(done)
            .arg(millis(ttl))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        // The record holds the fingerprint too; read it to rebuild our exact value.
        let mut connection = self.connection.clone();
        let held: Option<String> = redis::cmd("GET")
            .arg(Self::key(key))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let Some(Record::InFlight {
            token: holder,
            fingerprint,
        }) = held.as_deref().map(parse_record).transpose()?
        else {
            return Ok(());
        };
        if holder != token {
            return Ok(());
        }
        let _: i64 = self
            .release
            .key(Self::key(key))
            .arg(in_flight(token, &fingerprint))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError> {
        // One round trip, applied together (MULTI/EXEC).
        let mut pipeline = redis::pipe();
        pipeline.atomic();
        for &(key, value) in entries {
            let command = pipeline.cmd("SET").arg(Self::key(key)).arg(value);
            if let Some(ttl) = ttl {
                command.arg("PX").arg(millis(ttl));
            }
            command.ignore();
        }
        pipeline
            .query_async::<()>(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        redis::cmd("GET")
            .arg(Self::key(key))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }

    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError> {
        let swapped: i64 = self
            .replace
            .key(Self::key(key))
            .arg(expected)
            .arg(new)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(swapped == 1)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        redis::cmd("DEL")
            .arg(Self::key(key))
            .query_async::<()>(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }
}
