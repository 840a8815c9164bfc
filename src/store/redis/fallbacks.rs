//! Pending channel fallbacks on Redis: a sorted set of waiting message ids by due time
//! (in milliseconds of the server's clock, so replicas agree on it), a sorted set of
//! taken ones by the end of their lease, and one payload key per message, with the
//! message's time to live. All of them carry the `{fallback}` hash tag on a cluster, so
//! that each script's keys sit in one slot; a payload key is built inside the scripts
//! from its prefix (ARGV) and the id.
//!
//! A fallback made due by a failure report gets the score 0, which no time has: that is
//! how a taker tells it from one due by time. Taken, it is leased as `h:<id>` (hastened)
//! or `t:<id>` (due by time), so that a taker after a lapsed lease still knows why.

use std::time::Duration;

use redis::Script;

use super::{millis, RedisStore};
use crate::store::{StoreError, TakenFallback};

/// The server's time in milliseconds.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: the due set, the leased set. ARGV: payload key prefix, id, payload, delay ms,
/// ttl ms.
const SCHEDULE: &str = r"
redis.call('ZREM', KEYS[2], 'h:' .. ARGV[2], 't:' .. ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('SET', ARGV[1] .. ARGV[2], ARGV[3], 'PX', ARGV[5])
return 1
";

/// KEYS: the due set, the leased set. ARGV: payload key prefix, id. Returns 1 when one
/// was waiting or leased.
const CANCEL: &str = r"
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
  + redis.call('ZREM', KEYS[2], 'h:' .. ARGV[2], 't:' .. ARGV[2])
redis.call('DEL', ARGV[1] .. ARGV[2])
return removed > 0 and 1 or 0
";

/// KEYS: the due set, the leased set. ARGV: payload key prefix, id.
const FINISH: &str = r"
redis.call('ZREM', KEYS[2], 'h:' .. ARGV[2], 't:' .. ARGV[2])
redis.call('DEL', ARGV[1] .. ARGV[2])
return 1
";

/// KEYS: the due set (the leased set is not looked at: a leased fallback is being
/// sent). ARGV: payload key prefix, id. Returns 1 when one was waiting.
const HASTEN: &str = r"
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
return 1
";

/// KEYS: the due set, the leased set. ARGV: payload key prefix, most to take, lease ms.
/// Returns a flat list of id, payload, hastened (1 or 0), retaken (1 or 0) for each
/// taken fallback whose payload has not lapsed: those whose lease ran out first, then
/// due ones. Each is leased until now + lease; one whose payload lapsed is dropped.
const TAKE: &str = r"
local limit, until_ = tonumber(ARGV[2]), now + tonumber(ARGV[3])
local taken = {}
local function take(id, member, retaken)
  local payload = redis.call('GET', ARGV[1] .. id)
  if not payload then
    redis.call('ZREM', KEYS[2], member)
    return
  end
  redis.call('ZADD', KEYS[2], until_, member)
  taken[#taken + 1] = id
  taken[#taken + 1] = payload
  taken[#taken + 1] = string.sub(member, 1, 1) == 'h' and 1 or 0
  taken[#taken + 1] = retaken
end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(lapsed) do
  take(string.sub(member, 3), member, 1)
end
local left = limit - #lapsed
if left > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, left)
  for i = 1, #due, 2 do
    local id, score = due[i], tonumber(due[i + 1])
    redis.call('ZREM', KEYS[1], id)
    take(id, (score == 0 and 'h:' or 't:') .. id, 0)
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
    finish: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            schedule: Script::new(&format!("{NOW}{SCHEDULE}")),
            finish: Script::new(FINISH),
            cancel: Script::new(CANCEL),
            hasten: Script::new(HASTEN),
            take: Script::new(&format!("{NOW}{TAKE}")),
        }
    }
}

impl RedisStore {
    /// The due set's key, the leased set's and the payload keys' prefix.
    fn fallback_keys(&self) -> (String, String, String) {
        (
            self.key("fallback:due"),
            self.key("fallback:leased"),
            self.key("fallback:msg:"),
        )
    }

    /// Runs `script` with the due and leased sets and `args` after the payload prefix.
    async fn fallback_script<T: redis::FromRedisValue + Send>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, StoreError> {
        let (due, leased, prefix) = self.fallback_keys();
        let mut invocation = script.prepare_invoke();
        invocation.key(due).key(leased).arg(prefix);
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

    pub(super) async fn finish_fallback_on(&self, id: &str) -> Result<(), StoreError> {
        self.fallback_script::<i64>(&self.fallbacks.finish, &[id])
            .await
            .map(drop)
    }

    pub(super) async fn take_due_fallbacks_on(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<TakenFallback>, StoreError> {
        let limit = limit.max(1).to_string();
        let lease = lease.as_millis().to_string();
        let flat: Vec<redis::Value> = self
            .fallback_script(&self.fallbacks.take, &[&limit, &lease])
            .await?;
        let flag = |value: &redis::Value| redis::from_redis_value_ref::<i64>(value).ok() == Some(1);
        flat.chunks_exact(4)
            .map(|entry| {
                let text = |value: &redis::Value| {
                    redis::from_redis_value_ref::<String>(value)
                        .map_err(|_| StoreError("unreadable pending fallback".into()))
                };
                Ok(TakenFallback {
                    id: text(&entry[0])?,
                    payload: text(&entry[1])?,
                    hastened: flag(&entry[2]),
                    retaken: flag(&entry[3]),
                })
            })
            .collect()
    }
}
