//! The Redis store, shared by every replica: one server, or a Redis Cluster. Each
//! operation is one atomic Lua script, and rate-limit time comes from the Redis server so
//! replicas agree on it.
//!
//! # Keys on a Redis Cluster
//!
//! A cluster keeps each key in one of 16384 slots, spread over its nodes, and refuses a
//! script or a MULTI/EXEC whose keys sit in different slots (CROSSSLOT). So on a cluster
//! the keys that one operation touches together share a hash tag (`{...}`, the only part
//! of a key the slot is computed from):
//!
//! - every rate-limit key (`rate:*`) is tagged `{rate}`: one send counts against the
//!   number's, its block's, the caller's, its region's and the global limit in one
//!   all-or-nothing script, so they must sit together. One slot (one node) carries all the deployment's limits: one short
//!   script per login is far within what one Redis node serves;
//! - Telegram links (`chat:*`, `chat-owner:*`) are tagged `{chat}`: a link and its owner
//!   entry are written together, and there is one pair per registered user;
//! - pending channel fallbacks (`fallback:*`: the due set, the leased set and the
//!   payloads) are tagged `{fallback}`: one script leases due entries and reads their
//!   payloads together;
//! - everything else (message records, their provider-id index, idempotency records)
//!   is hashed whole and spreads over the nodes. A record and its index cannot share a
//!   tag (the index is looked up by the provider's id alone), and need not be written
//!   atomically: `put` writes them one after another, and a status report that finds no
//!   index entry is ignored as for an unknown message. For the same reason a send's
//!   claim goes apart from its limits, and its record apart from its answer, which one
//!   server takes in one round trip each (see `combined`).
//!
//! On a single server the keys keep the names they always had (`otp-relay:<key>`), so an
//! upgrade keeps existing limits, records and Telegram links.

mod combined;
mod connection;
mod fallbacks;
mod rate;
mod scripts;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManagerConfig;
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_routing::Slot;
use redis::{Pipeline, Script};
use secrecy::{ExposeSecret, SecretString};

use super::{
    Claim, ClaimAndCount, PutAndSettle, RateDecision, RateLimit, Record, Settle, Store, StoreError,
    StoredAnswer, TakenFallback,
};
pub use connection::Topology;
use connection::{Connection, Connections, PerThread};
use scripts::{
    CLAIM_RATE_SCRIPT, CLAIM_SCRIPT, FINISH_SCRIPT, PUT_SETTLE_SCRIPT, RATE_CLOCK, RATE_COUNT,
    RATE_SCRIPT, REFUND_SCRIPT, RELEASE_SCRIPT, REPLACE_SCRIPT, SETTLE,
};

/// Every key otp-relay writes starts with this, so it can share a Redis.
const PREFIX: &str = "otp-relay:";

/// On a cluster: the key prefixes whose keys one operation uses together, and the hash
/// tag that keeps them in one slot (see the module documentation).
const TAGGED: &[(&str, &str)] = &[
    ("rate:", "rate"),
    ("chat:", "chat"),
    ("chat-owner:", "chat"),
    ("fallback:", "fallback"),
];

/// How long one store operation may take when nothing else is said (`REDIS_TIMEOUT`).
/// A healthy Redis answers in well under a millisecond; this leaves room for a busy
/// one (a fork for a snapshot, a slow disk) before falling back to local memory.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// State in a Redis server or cluster.
pub struct RedisStore {
    connections: Connections,
    topology: Topology,
    /// The longest one operation may take, round trips and reconnects included.
    timeout: Duration,
    rate: Script,
    refund: Script,
    claim: Script,
    /// The claim and the rate limits of one send together (one server only).
    claim_rate: Script,
    finish: Script,
    release: Script,
    /// A new record and the claim's settlement together (one server only).
    put_settle: Script,
    replace: Script,
    fallbacks: fallbacks::Scripts,
}

impl From<redis::RedisError> for StoreError {
    fn from(error: redis::RedisError) -> Self {
        // Redis errors do not carry the URL or password.
        StoreError(error.to_string())
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().max(1) as u64
}

impl RedisStore {
    /// A single server at `url`, with the default timeout.
    pub fn connect(url: &SecretString) -> Result<RedisStore, StoreError> {
        Self::connect_with(url, Topology::Single, DEFAULT_TIMEOUT)
    }

    /// Prepares a connection that is made on first use and remade after a failure, so a
    /// Redis that is down at startup does not stop otp-relay. For a cluster, `urls` is a
    /// comma list of seed nodes (one is enough: the others are discovered). Every
    /// operation gives up after `timeout`.
    ///
    /// On a single server each thread that sends commands has its own connection, made
    /// on its first command; a cluster's connection runs on the Tokio runtime this is
    /// called on.
    pub fn connect_with(
        urls: &SecretString,
        topology: Topology,
        timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let invalid = || StoreError("REDIS_URL is not a valid Redis URL".into());
        let connections = match topology {
            Topology::Single => {
                let client = redis::Client::open(urls.expose_secret()).map_err(|_| invalid())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Connections::Single(Box::new(PerThread::new(client, config)))
            }
            Topology::Cluster => {
                let seeds: Vec<&str> = urls.expose_secret().split(',').map(str::trim).collect();
                let client = ClusterClientBuilder::new(seeds)
                    // Redirections (MOVED, ASK) and reconnects, within `timeout` overall.
                    .retries(3)
                    .max_retry_wait(200)
                    .build()
                    .map_err(|_| invalid())?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Connections::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        Ok(RedisStore {
            connections,
            topology,
            timeout,
            rate: Script::new(&format!("{RATE_CLOCK}{RATE_COUNT}{RATE_SCRIPT}")),
            refund: Script::new(&format!("{RATE_CLOCK}{REFUND_SCRIPT}")),
            claim: Script::new(CLAIM_SCRIPT),
            claim_rate: Script::new(&format!("{RATE_CLOCK}{RATE_COUNT}{CLAIM_RATE_SCRIPT}")),
            finish: Script::new(&format!("{SETTLE}{FINISH_SCRIPT}")),
            release: Script::new(&format!("{SETTLE}{RELEASE_SCRIPT}")),
            put_settle: Script::new(&format!("{SETTLE}{PUT_SETTLE_SCRIPT}")),
            replace: Script::new(REPLACE_SCRIPT),
            fallbacks: fallbacks::Scripts::default(),
        })
    }

    /// The Redis key for a store key (see the module documentation).
    fn key(&self, key: &str) -> String {
        let tag = match self.topology {
            Topology::Single => None,
            Topology::Cluster => TAGGED
                .iter()
                .find(|(prefix, _)| key.starts_with(prefix))
                .map(|(_, tag)| tag),
        };
        match tag {
            None => format!("{PREFIX}{key}"),
            Some(tag) => format!("{PREFIX}{{{tag}}}:{key}"),
        }
    }

    /// Runs one operation on the connection within the timeout.
    async fn bounded<T, F, Fut>(&self, operation: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let connection = self.connections.here()?;
        match tokio::time::timeout(self.timeout, operation(connection)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
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
        self.bounded(|mut connection| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await?;
            Ok(())
        })
        .await
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
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(self.key(key))
            .arg(in_flight(token, fingerprint))
            .arg(millis(ttl));
        let held: Option<String> = self
            .bounded(
                |mut connection| async move { Ok(invocation.invoke_async(&mut connection).await?) },
            )
            .await?;
        match held {
            None => Ok(Claim::Claimed),
            Some(text) => Ok(parse_record(&text)?.into_claim()),
        }
    }

    async fn claim_and_acquire(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
        limits: &[RateLimit<'_>],
    ) -> Result<ClaimAndCount, StoreError> {
        let claim = (key, token, fingerprint, ttl);
        self.claim_and_acquire_on(claim, limits, None).await
    }

    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        let held = self.get(key).await?;
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
        let mut invocation = self.finish.prepare_invoke();
        invocation
            .key(self.key(key))
            .arg(in_flight(token, fingerprint))
            .arg(done)
            .arg(millis(ttl));
        self.bounded(|mut connection| async move {
            invocation.invoke_async::<i64>(&mut connection).await?;
            Ok(())
        })
        .await?;
        Ok(())
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        self.bounded(|mut connection| async move {
            // The record holds the fingerprint too; read it to rebuild our exact value.
            let held: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut connection)
                .await?;
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
            self.release
                .key(&key)
                .arg(in_flight(token, &fingerprint))
                .invoke_async::<i64>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError> {
        let keyed: Vec<(String, &str)> = entries
            .iter()
            .map(|&(key, value)| (self.key(key), value))
            .collect();
        let set = |pipeline: &mut Pipeline, key: &str, value: &str| {
            let command = pipeline.cmd("SET").arg(key).arg(value);
            if let Some(ttl) = ttl {
                command.arg("PX").arg(millis(ttl));
            }
            command.ignore();
        };
        // One round trip, applied together (MULTI/EXEC), where the keys allow it: always
        // on one server, on a cluster when they share a slot. Otherwise one after the
        // other, in the order given.
        let together = self.topology == Topology::Single
            || keyed
                .windows(2)
                .all(|pair| Slot::for_key(&pair[0].0) == Slot::for_key(&pair[1].0));
        let steps: Vec<Pipeline> = if together {
            let mut pipeline = redis::pipe();
            pipeline.atomic();
            for (key, value) in &keyed {
                set(&mut pipeline, key, value);
            }
            vec![pipeline]
        } else {
            keyed
                .iter()
                .map(|(key, value)| {
                    let mut pipeline = redis::pipe();
                    set(&mut pipeline, key, value);
                    pipeline
                })
                .collect()
        };
        self.bounded(|mut connection| async move {
            for step in steps {
                step.query_async::<()>(&mut connection).await?;
            }
            Ok(())
        })
        .await
    }

    async fn put_and_settle(
        &self,
        entries: &[(&str, &str)],
        ttl: Option<Duration>,
        claim: &Settle<'_>,
    ) -> PutAndSettle {
        self.put_and_settle_on(entries, ttl, claim).await
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = self.key(key);
        self.bounded(|mut connection| async move {
            Ok(redis::cmd("GET")
                .arg(key)
                .query_async(&mut connection)
                .await?)
        })
        .await
    }

    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError> {
        let mut invocation = self.replace.prepare_invoke();
        invocation.key(self.key(key)).arg(expected).arg(new);
        let swapped: i64 = self
            .bounded(
                |mut connection| async move { Ok(invocation.invoke_async(&mut connection).await?) },
            )
            .await?;
        Ok(swapped == 1)
    }

    async fn delete_if(&self, key: &str, expected: &str) -> Result<bool, StoreError> {
        // The release script is a compare-and-delete of any value.
        let mut invocation = self.release.prepare_invoke();
        invocation.key(self.key(key)).arg(expected);
        let deleted: i64 = self
            .bounded(
                |mut connection| async move { Ok(invocation.invoke_async(&mut connection).await?) },
            )
            .await?;
        Ok(deleted == 1)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        self.bounded(|mut connection| async move {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut connection)
                .await?;
            Ok(())
        })
        .await
    }

    async fn schedule_fallback(
        &self,
        id: &str,
        payload: &str,
        delay: Duration,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.schedule_fallback_on(id, payload, delay, ttl).await
    }

    async fn cancel_fallback(&self, id: &str) -> Result<bool, StoreError> {
        self.cancel_fallback_on(id).await
    }

    async fn hasten_fallback(&self, id: &str) -> Result<bool, StoreError> {
        self.hasten_fallback_on(id).await
    }

    async fn take_due_fallbacks(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<TakenFallback>, StoreError> {
        self.take_due_fallbacks_on(limit, lease).await
    }

    async fn finish_fallback(&self, id: &str) -> Result<(), StoreError> {
        self.finish_fallback_on(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(topology: Topology) -> RedisStore {
        // Nothing listens there: building the store makes no connection.
        let url = SecretString::from("redis://127.0.0.1:1".to_owned());
        RedisStore::connect_with(&url, topology, DEFAULT_TIMEOUT).unwrap()
    }

    #[tokio::test]
    async fn a_single_server_keeps_the_key_names_deployments_already_have() {
        let store = store(Topology::Single);
        for key in ["rate:number:ab12", "chat:cd34", "chat-owner:42", "msg:01J"] {
            assert_eq!(store.key(key), format!("otp-relay:{key}"));
        }
    }

    #[tokio::test]
    async fn on_a_cluster_keys_used_together_share_a_slot_and_the_rest_spread() {
        let store = store(Topology::Cluster);
        let slot = |key: &str| Slot::for_key(store.key(key));
        // One send's limits: the number's, its block's, the caller's, its region's and
        // the global one.
        let rate = slot("rate:number:ab12");
        assert_eq!(slot("rate:prefix:9a0b"), rate);
        assert_eq!(slot("rate:client:ef56"), rate);
        assert_eq!(slot("rate:country:BR"), rate);
        assert_eq!(slot("rate:global:"), rate);
        assert_eq!(slot("chat:cd34"), slot("chat-owner:42"));
        // A fallback's scripts touch the due set and its payload together.
        assert_eq!(slot("fallback:due"), slot("fallback:msg:01J"));
        assert_eq!(slot("fallback:due"), slot("fallback:leased"));
        assert_eq!(store.key("rate:global:"), "otp-relay:{rate}:rate:global:");
        // Records and idempotency keys are not piled onto one node.
        let spread: std::collections::HashSet<_> = (0..20)
            .map(|i| slot(&format!("msg:01J{i}")))
            .chain((0..20).map(|i| slot(&format!("idem:key:{i}"))))
            .collect();
        assert!(spread.len() > 30, "{} slots", spread.len());
    }
}
