//! Pending channel fallbacks on Redis: a sorted set of message ids by due time (in
//! milliseconds of the server's clock, so replicas agree on it) and one payload key per
//! message, with the message's time to live. All of them carry the `{fallback}` hash
//! tag on a cluster, so that each script's keys sit in one slot; a payload key is built
//! inside the scripts from its prefix (ARGV) and the id.
//!
//! A fallback made due by a failure report gets the score 0, which no time has: that is
//! how a taker tells it from one due by time.

use std::time::Duration;

use redis::Script;

use super::{millis, RedisStore};
use crate::store::{StoreError, TakenFallback};

/// The server's time in milliseconds.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: the due set. ARGV: payload key prefix, id, payload, delay ms, ttl ms.
const SCHEDULE: &str = r"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[5])
return 1
";

/// KEYS: the due set. ARGV: payload key prefix, id. Returns 1 when one was pending.
const CANCEL: &str = r"
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('DEL', ARGV[1] .. ARGV[2])
return removed
";

/// KEYS: the due set. ARGV: payload key prefix, id. Returns 1 when one was pending.
const HASTEN: &str = r"
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
return 1
";

/// KEYS: the due set. ARGV: payload key prefix, most to take. Returns a flat list of
/// id, payload, hastened (1 or 0) for each taken fallback whose payload has not lapsed;
/// every due entry looked at is removed, so no other caller can take it.
const TAKE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local taken = {}
for i = 1, #due, 2 do
  local id, score = due[i], tonumber(due[i + 1])
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[1] .. id
  local payload = redis.call('GET', key)
  if payload then
    redis.call('DEL', key)
    taken[#taken + 1] = id
    taken[#taken + 1] = payload
    taken[#taken + 1] = score == 0 and 1 or 0
  end
end
return taken
";

/// The fallback scripts, each loaded once.
pub(super) struct Scripts {
    schedule: Script,
    cancel: Script,
    hasten: Script,
    take: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            schedule: Script::new(&format!("{NOW}{SCHEDULE}")),
            cancel: Script::new(CANCEL),
            hasten: Script::new(HASTEN),
            take: Script::new(&format!("{NOW}{TAKE}")),
        }
    }
}

impl RedisStore {
    /// The due set's key and the payload keys' prefix.
    fn fallback_keys(&self) -> (String, String) {
        (self.key("fallback:due"), self.key("fallback:msg:"))
    }

    /// Runs `script` with the due set and `args` after the payload prefix.
    async fn fallback_script<T: redis::FromRedisValue + Send>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, StoreError> {
        let (due, prefix) = self.fallback_keys();
        let mut invocation = script.prepare_invoke();
        invocation.key(due).arg(prefix);
        for arg in args {
            invocation.arg(*arg);
        }
        self.bounded(
            |mut connection| async move { Ok(invocation.invoke_async(&mut connection).await?) },
        )
        .await
    }

    pub(super) async fn schedule_fallback_on(
        &self,
        id: &str,
        payload: &str,
        delay: Duration,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let delay = delay.as_millis().to_string();
        let ttl = millis(ttl).to_string();
        self.fallback_script::<i64>(&self.fallbacks.schedule, &[id, payload, &delay, &ttl])
            .await
            .map(drop)
    }

    pub(super) async fn cancel_fallback_on(&self, id: &str) -> Result<bool, StoreError> {
        let removed: i64 = self.fallback_script(&self.fallbacks.cancel, &[id]).await?;
        Ok(removed == 1)
    }

    pub(super) async fn hasten_fallback_on(&self, id: &str) -> Result<bool, StoreError> {
        let hastened: i64 = self.fallback_script(&self.fallbacks.hasten, &[id]).await?;
        Ok(hastened == 1)
    }

    pub(super) async fn take_due_fallbacks_on(
        &self,
        limit: usize,
    ) -> Result<Vec<TakenFallback>, StoreError> {
        let limit = limit.max(1).to_string();
        let flat: Vec<redis::Value> = self
            .fallback_script(&self.fallbacks.take, &[&limit])
            .await?;
        flat.chunks_exact(3)
            .map(|entry| {
                let text = |value: &redis::Value| {
                    redis::from_redis_value_ref::<String>(value)
                        .map_err(|_| StoreError("unreadable pending fallback".into()))
                };
                Ok(TakenFallback {
                    id: text(&entry[0])?,
                    payload: text(&entry[1])?,
                    hastened: redis::from_redis_value_ref::<i64>(&entry[2]).ok() == Some(1),
                })
            })
            .collect()
    }
}
