//! The Redis store, shared by every replica. Each operation is one atomic Lua script,
//! and rate-limit time comes from the Redis server so replicas agree on it.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use secrecy::{ExposeSecret, SecretString};

use super::{Claim, RateDecision, RateLimit, Record, Store, StoreError, StoredAnswer};

/// Every key otp-relay writes starts with this, so it can share a Redis.
const PREFIX: &str = "otp-relay:";

/// GCRA with the server's clock, over several limits at once, all or nothing.
/// KEYS: the limits. ARGV: period ms and emission interval ms of each, in order.
/// Returns {0, 0} when every limit admits the event (each then counts it), else
/// {i, ms to wait} for the first that refuses (1-based), and counts nothing.
const RATE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new_tats = {}
for i, key in ipairs(KEYS) do
  local period = tonumber(ARGV[2 * i - 1])
  local interval = tonumber(ARGV[2 * i])
  local tat = now
  local stored = redis.call('GET', key)
  if stored then tat = math.max(tonumber(stored), now) end
  local new_tat = tat + interval
  local allowed_at = new_tat - period
  if allowed_at > now then return {i, allowed_at - now} end
  new_tats[i] = new_tat
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, new_tats[i], 'PX', new_tats[i] - now)
end
return {0, 0}
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
            rate: Script::new(RATE_SCRIPT),
            claim: Script::new(CLAIM_SCRIPT),
            finish: Script::new(FINISH_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            replace: Script::new(REPLACE_SCRIPT),
        })
    }

    fn key(key: &str) -> String {
        format!("{PREFIX}{key}")
    }
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
        let mut invocation = self.rate.prepare_invoke();
        for limit in limits {
            let period = millis(limit.spec.per);
            let interval = (period / u64::from(limit.spec.count)).max(1);
            invocation
                .key(Self::key(limit.key))
                .arg(period)
                .arg(interval);
        }
        let (refused, wait): (usize, u64) = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(match refused.checked_sub(1) {
            None => RateDecision::Allowed,
            Some(limit) => RateDecision::Limited {
                limit,
                retry_after: Duration::from_millis(wait),
            },
        })
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
