//! Shared state: rate-limit counters, idempotency records and plain records (message
//! status, Telegram links), behind one trait with an in-process memory implementation
//! and a Redis one for several replicas.
//!
//! Keys are built by the callers from digests, never from raw numbers or text, so no
//! store holds a phone number or a message.

pub mod memory;
pub mod rate;
pub mod redis;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use secrecy::SecretString;

pub use rate::RateSpec;

/// The store could not be reached or answered nonsense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

/// One limit to count an event against: its key and its rate.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit<'a> {
    pub key: &'a str,
    pub spec: RateSpec,
}

/// A rate limiter's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// `limit` (its place in the list asked about) refused first; nothing was counted.
    Limited {
        limit: usize,
        retry_after: Duration,
    },
}

/// The answer given to a request, kept so that a repeat gets the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    /// The JSON body, as sent.
    pub body: String,
    /// The `Retry-After` seconds sent with it, if any (absent in answers kept before
    /// it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// What an idempotency key stands for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller now owns the key and must `finish` or `release` it.
    Claimed,
    /// Another request holds the key and has not finished.
    InFlight { fingerprint: String },
    /// A request with this key finished with this answer.
    Done {
        fingerprint: String,
        answer: StoredAnswer,
    },
}

/// The record kept under an idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    InFlight {
        token: String,
        fingerprint: String,
    },
    Done {
        fingerprint: String,
        answer: StoredAnswer,
    },
}

impl Record {
    fn into_claim(self) -> Claim {
        match self {
            Record::InFlight { fingerprint, .. } => Claim::InFlight { fingerprint },
            Record::Done {
                fingerprint,
                answer,
            } => Claim::Done {
                fingerprint,
                answer,
            },
        }
    }
}

/// How a store is doing, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// It answers now.
    pub reachable: bool,
    /// Operations failed lately and were served from this process's memory instead.
    pub degraded: bool,
    /// Live guard state fills the memory budget: sends are refused (see
    /// [`Store::overloaded`]).
    pub overloaded: bool,
}

impl StoreHealth {
    pub fn is_ready(self) -> bool {
        self.reachable && !self.degraded && !self.overloaded
    }
}

/// Shared state for rate limits and idempotency.
///
/// Implementations are atomic per key: two callers (in one process or in two replicas
/// sharing Redis) never both get [`Claim::Claimed`] for a live key, and never both get
/// the last unit of a rate limit.
#[async_trait]
pub trait Store: Send + Sync {
    /// `memory` or `redis`.
    fn backend(&self) -> &'static str;

    /// Whether the store answers now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether the store answers now and serves as it should.
    async fn health(&self) -> StoreHealth {
        StoreHealth {
            reachable: self.ping().await.is_ok(),
            degraded: false,
            overloaded: self.overloaded(),
        }
    }

    /// Counts one event against every limit (GCRA: `count` events per `per`, evenly
    /// replenished), all or nothing: when each admits it, each counts it; when one
    /// refuses, none does, so a refused send uses up nobody's allowance.
    async fn rate_acquire(&self, limits: &[RateLimit<'_>]) -> Result<RateDecision, StoreError>;

    /// Gives back one event that [`Store::rate_acquire`] counted against every limit, for
    /// a send that provably never left: each counter moves back one interval, never to
    /// before now, so a give-back never grants more than the limit's burst.
    async fn rate_refund(&self, limits: &[RateLimit<'_>]) -> Result<(), StoreError>;

    /// Takes `key` for a request whose content hashes to `fingerprint`, if nobody holds
    /// it. `token` identifies this holder; the claim lapses after `ttl`.
    async fn claim(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError>;

    /// What `key` stands for now; `None` when nobody holds it.
    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError>;

    /// Replaces the holder's in-flight claim with the final answer, kept for `ttl`.
    async fn finish(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Gives up the holder's claim so that a repeat may try again.
    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError>;

    /// Stores each value under its key, for `ttl` or (with `None`) until deleted: all in
    /// one step, except on a Redis Cluster for keys in different slots, which are
    /// written one after another in the order given (see [`redis`]).
    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError>;

    /// The value under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Replaces the value under `key` with `new` only if it is still `expected`, keeping
    /// its expiry. Returns whether it did.
    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError>;

    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Deletes `key` only if its value is still `expected`. Returns whether it did.
    async fn delete_if(&self, key: &str, expected: &str) -> Result<bool, StoreError>;

    /// Bytes this process holds for the store, as the memory store weighs them (0 for a
    /// store that keeps everything elsewhere).
    fn memory_bytes(&self) -> u64 {
        0
    }

    /// Whether live guard state (rate counters, claims, `Idempotency-Key` answers) alone
    /// fills this process's memory budget, so that new sends must be refused rather than
    /// make the store forget a limit. Always false for a store that keeps everything
    /// elsewhere.
    fn overloaded(&self) -> bool {
        false
    }
}

/// Which store to open and how (read from the environment by the configuration).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `REDIS_URL`: one server, or with `redis_cluster` one or more seeds of a cluster
    /// (a comma list).
    pub redis_url: Option<SecretString>,
    /// `REDIS_CLUSTER`: `redis_url` names a Redis Cluster.
    pub redis_cluster: bool,
    /// `REDIS_TIMEOUT`: the longest one store operation may take, within
    /// `REQUEST_DEADLINE`.
    pub redis_timeout: Duration,
    /// Most memory the in-process store may use, in bytes (`MEMORY_STORE_MIB`).
    pub memory_bytes: u64,
}

/// The store the application uses: memory, or Redis (`REDIS_URL`, a cluster with
/// `REDIS_CLUSTER`) with a per-replica memory fallback, the memory within
/// `MEMORY_STORE_MIB`. A Redis Cluster's connection runs on the Tokio runtime this is
/// called on.
pub fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    let memory = memory::MemoryStore::with_budget(settings.memory_bytes);
    Ok(match &settings.redis_url {
        None => Arc::new(memory),
        Some(url) => {
            let topology = if settings.redis_cluster {
                redis::Topology::Cluster
            } else {
                redis::Topology::Single
            };
            let redis = redis::RedisStore::connect_with(url, topology, settings.redis_timeout)?;
            Arc::new(FallbackStore::new(Box::new(redis), memory))
        }
    })
}

/// Failures are logged at most once per this interval, and readiness reports the shared
/// store degraded until this long has passed without one.
pub const ERROR_INTERVAL: Duration = Duration::from_secs(10);

/// A shared store that, while its operations fail, serves from this process's memory so
/// logins go on (with per-replica limits), and goes back to it as soon as it answers.
///
/// Every failure is counted (`otp_relay_store_errors_total`); they are logged at most
/// once per interval, with how many there were; and while any failed within the last
/// interval the store reports itself degraded, so that readiness does not claim shared
/// limits that are in fact per replica (a store may answer a ping yet fail operations:
/// a cluster node asked for another node's keys answers MOVED).
pub struct FallbackStore {
    primary: Box<dyn Store>,
    fallback: memory::MemoryStore,
    interval: Duration,
    /// Set on a failure, cleared once an interval passed without one: lets successes
    /// skip the lock while all is well.
    troubled: AtomicBool,
    failures: Mutex<Failures>,
}

/// The recent failures of a [`FallbackStore`].
#[derive(Default)]
struct Failures {
    last: Option<Instant>,
    last_logged: Option<Instant>,
    /// Failures since the last log line.
    unlogged: u64,
}

impl FallbackStore {
    pub fn new(primary: Box<dyn Store>, fallback: memory::MemoryStore) -> Self {
        Self::with_interval(primary, fallback, ERROR_INTERVAL)
    }

    /// With failures logged, and held against readiness, per `interval`.
    pub fn with_interval(
        primary: Box<dyn Store>,
        fallback: memory::MemoryStore,
        interval: Duration,
    ) -> Self {
        FallbackStore {
            primary,
            fallback,
            interval,
            troubled: AtomicBool::new(false),
            failures: Mutex::new(Failures::default()),
        }
    }

    /// Runs `primary`; when the shared store fails, notes it and runs `fallback`.
    async fn either<T, P, F, Fut>(
        &self,
        operation: &'static str,
        primary: P,
        fallback: F,
    ) -> Result<T, StoreError>
    where
        P: Future<Output = Result<T, StoreError>>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        // A span per shared-store call for traces (the memory store costs no time).
        let span = tracing::info_span!(
            "store operation",
            operation,
            backend = self.primary.backend()
        );
        match self.noted(operation, primary.instrument(span).await) {
            Ok(value) => Ok(value),
            Err(_) => fallback().await,
        }
    }

    /// Counts and logs a failure, or notes a success.
    fn noted<T>(
        &self,
        operation: &'static str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.succeeded(),
            Err(error) => self.failed(operation, error),
        }
        result
    }

    fn failed(&self, operation: &'static str, error: &StoreError) {
        let backend = self.primary.backend();
        metrics::counter!(
            crate::prometheus::STORE_ERRORS,
            "backend" => backend,
            "operation" => operation
        )
        .increment(1);
        self.troubled.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let failures = {
            let mut state = self.lock();
            state.last = Some(now);
            state.unlogged += 1;
            let due = state
                .last_logged
                .is_none_or(|at| now.duration_since(at) >= self.interval);
            if !due {
                return;
            }
            state.last_logged = Some(now);
            std::mem::take(&mut state.unlogged)
        };
        tracing::warn!(
            backend,
            operation,
            %error,
            failures,
            interval = %humantime::format_duration(self.interval),
            "state store operations failing: serving from per-replica memory, so limits \
             count per replica (failures = how many since the last such line)"
        );
    }

    fn succeeded(&self) {
        if self.troubled.load(Ordering::Relaxed) {
            self.degraded();
        }
    }

    /// Whether an operation failed within the interval; notes (once) when that ends.
    fn degraded(&self) -> bool {
        let mut state = self.lock();
        let Some(last) = state.last else {
            return false;
        };
        if last.elapsed() < self.interval {
            return true;
        }
        if self.troubled.swap(false, Ordering::Relaxed) {
            let unlogged = std::mem::take(&mut state.unlogged);
            state.last_logged = None;
            drop(state);
            tracing::info!(
                backend = self.primary.backend(),
                failures = unlogged,
                "state store healthy again: shared limits apply"
            );
        }
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // The state is a few numbers, valid whatever a panicking holder left.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for FallbackStore {
    fn backend(&self) -> &'static str {
        self.primary.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.noted("ping", self.primary.ping().await)
    }

    async fn health(&self) -> StoreHealth {
        let reachable = self.ping().await.is_ok();
        StoreHealth {
            reachable,
            degraded: self.degraded(),
            overloaded: self.overloaded(),
        }
    }

    async fn rate_acquire(&self, limits: &[RateLimit<'_>]) -> Result<RateDecision, StoreError> {
        self.either("rate_acquire", self.primary.rate_acquire(limits), || {
            self.fallback.rate_acquire(limits)
        })
        .await
    }

    async fn rate_refund(&self, limits: &[RateLimit<'_>]) -> Result<(), StoreError> {
        self.either("rate_refund", self.primary.rate_refund(limits), || {
            self.fallback.rate_refund(limits)
        })
        .await
    }

    async fn claim(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        self.either(
            "claim",
            self.primary.claim(key, token, fingerprint, ttl),
            || self.fallback.claim(key, token, fingerprint, ttl),
        )
        .await
    }

    async fn peek(&self, key: &str) -> Result<Option<Claim>, StoreError> {
        self.either("peek", self.primary.peek(key), || self.fallback.peek(key))
            .await
    }

    async fn finish(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.either(
            "finish",
            self.primary.finish(key, token, fingerprint, answer, ttl),
            || self.fallback.finish(key, token, fingerprint, answer, ttl),
        )
        .await
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        // Release both: the claim may have been taken in either place.
        let local = self.fallback.release(key, token).await;
        self.either("release", self.primary.release(key, token), || async {
            local
        })
        .await
    }

    async fn put(&self, entries: &[(&str, &str)], ttl: Option<Duration>) -> Result<(), StoreError> {
        self.either("put", self.primary.put(entries, ttl), || {
            self.fallback.put(entries, ttl)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.either("get", self.primary.get(key), || self.fallback.get(key))
            .await
    }

    async fn replace(&self, key: &str, expected: &str, new: &str) -> Result<bool, StoreError> {
        self.either("replace", self.primary.replace(key, expected, new), || {
            self.fallback.replace(key, expected, new)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.either("delete", self.primary.delete(key), || {
            self.fallback.delete(key)
        })
        .await
    }

    async fn delete_if(&self, key: &str, expected: &str) -> Result<bool, StoreError> {
        self.either("delete_if", self.primary.delete_if(key, expected), || {
            self.fallback.delete_if(key, expected)
        })
        .await
    }

    fn memory_bytes(&self) -> u64 {
        self.fallback.memory_bytes()
    }

    /// Only while the local memory stands in for the shared store: what it held from an
    /// earlier outage refuses nothing once Redis answers.
    fn overloaded(&self) -> bool {
        self.fallback.overloaded() && self.degraded()
    }
}

/// GCRA in nanoseconds: given the stored theoretical arrival time (`tat`) and `now`,
/// returns the new `tat` to store, or how long to wait (never zero).
///
/// Each event moves `tat` one interval (`per / count`) ahead of the later of itself and
/// `now`; an event is admitted while `tat` stays within `count` intervals of `now`. So a
/// burst of exactly `count` fits at one instant, and one more each interval after it.
fn gcra(tat: Option<u64>, now: u64, spec: RateSpec) -> Result<u64, Duration> {
    let (interval, window) = gcra_steps(spec);
    let tat = tat.map_or(now, |tat| tat.max(now));
    let ahead = (tat - now).saturating_add(interval);
    if ahead > window {
        Err(Duration::from_nanos(ahead - window))
    } else {
        Ok(now.saturating_add(ahead))
    }
}

/// A limit's interval and window (`count` intervals: how far ahead of now a counter may
/// run), in nanoseconds.
fn gcra_steps(spec: RateSpec) -> (u64, u64) {
    let interval = nanos(spec.interval());
    (
        interval,
        interval.saturating_mul(u64::from(spec.count.max(1))),
    )
}

/// Gives one event back to a GCRA counter: `tat` moves one interval back, never before
/// `now`. `None` when nothing is left to count (the counter may go).
fn gcra_refund(tat: u64, now: u64, spec: RateSpec) -> Option<u64> {
    let tat = tat.saturating_sub(nanos(spec.interval()));
    (tat > now).then_some(tat)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A shared store that answers a ping but fails every operation, as a cluster node
    /// asked for another node's keys does.
    struct Misrouted;

    fn moved<T>() -> Result<T, StoreError> {
        Err(StoreError("MOVED 1234 127.0.0.1:7001".into()))
    }

    #[async_trait]
    impl Store for Misrouted {
        fn backend(&self) -> &'static str {
            "redis"
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn rate_acquire(&self, _: &[RateLimit<'_>]) -> Result<RateDecision, StoreError> {
            moved()
        }
        async fn rate_refund(&self, _: &[RateLimit<'_>]) -> Result<(), StoreError> {
            moved()
        }
        async fn claim(&self, _: &str, _: &str, _: &str, _: Duration) -> Result<Claim, StoreError> {
            moved()
        }
        async fn peek(&self, _: &str) -> Result<Option<Claim>, StoreError> {
            moved()
        }
        async fn finish(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &StoredAnswer,
            _: Duration,
        ) -> Result<(), StoreError> {
            moved()
        }
        async fn release(&self, _: &str, _: &str) -> Result<(), StoreError> {
            moved()
        }
        async fn put(&self, _: &[(&str, &str)], _: Option<Duration>) -> Result<(), StoreError> {
            moved()
        }
        async fn get(&self, _: &str) -> Result<Option<String>, StoreError> {
            moved()
        }
        async fn replace(&self, _: &str, _: &str, _: &str) -> Result<bool, StoreError> {
            moved()
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            moved()
        }
        async fn delete_if(&self, _: &str, _: &str) -> Result<bool, StoreError> {
            moved()
        }
    }

    fn misrouted(interval: Duration) -> FallbackStore {
        FallbackStore::with_interval(
            Box::new(Misrouted),
            memory::MemoryStore::default(),
            interval,
        )
    }

    fn run<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_failure_is_counted_and_they_are_logged_once_per_interval() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let logs = Buffer::default();
        let writer = logs.clone();
        let subscriber =
            crate::telemetry::subscriber(crate::telemetry::LogFormat::Json, "debug", move || {
                writer.clone()
            });
        metrics::with_local_recorder(&recorder, || {
            tracing::subscriber::with_default(subscriber, || {
                run(async {
                    let store = misrouted(Duration::from_secs(3600));
                    for _ in 0..30 {
                        // Served from memory meanwhile.
                        assert_eq!(store.get("k").await.unwrap(), None);
                    }
                    store.put(&[("k", "v")], None).await.unwrap();
                    assert_eq!(store.get("k").await.unwrap().as_deref(), Some("v"));
                })
            })
        });

        let metrics = metrics.render();
        for expected in [
            r#"otp_relay_store_errors_total{backend="redis",operation="get"} 31"#,
            r#"otp_relay_store_errors_total{backend="redis",operation="put"} 1"#,
        ] {
            assert!(metrics.contains(expected), "missing {expected}\n{metrics}");
        }
        let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("state store operations failing"))
            .collect();
        assert_eq!(lines.len(), 1, "{logs}");
        assert!(
            lines[0].contains("MOVED") && lines[0].contains("WARN"),
            "{logs}"
        );
    }

    #[test]
    fn a_store_that_answers_pings_but_fails_operations_is_degraded() {
        run(async {
            let store = misrouted(Duration::from_secs(3600));
            let healthy = StoreHealth {
                reachable: true,
                degraded: false,
                overloaded: false,
            };
            assert_eq!(store.health().await, healthy);
            store.rate_acquire(&[]).await.unwrap();
            let health = store.health().await;
            assert!(health.reachable && health.degraded && !health.is_ready());

            // A failure counts against readiness for one interval only.
            let store = misrouted(Duration::ZERO);
            store.rate_acquire(&[]).await.unwrap();
            assert_eq!(store.health().await, healthy);
        });
    }

    #[test]
    fn gcra_allows_a_burst_of_count_then_one_per_interval() {
        let spec = RateSpec {
            count: 5,
            per: Duration::from_secs(10),
        };
        let second = 1_000_000_000;
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(gcra(tat, second, spec).expect("within the burst"));
        }
        assert_eq!(gcra(tat, second, spec), Err(Duration::from_secs(2)));
        // One interval later exactly one more fits.
        let later = gcra(tat, 3 * second, spec).expect("replenished");
        assert_eq!(
            gcra(Some(later), 3 * second, spec),
            Err(Duration::from_secs(2))
        );
    }

    #[test]
    fn gcra_counts_rates_finer_than_a_millisecond() {
        // A million a second: the burst is a million, not the thousand milliseconds of a
        // second, and the wait after it is one microsecond, not zero.
        let spec = RateSpec {
            count: 1_000_000,
            per: Duration::from_secs(1),
        };
        let mut tat = None;
        for _ in 0..1_000_000 {
            tat = Some(gcra(tat, 0, spec).expect("within the burst"));
        }
        assert_eq!(gcra(tat, 0, spec), Err(Duration::from_micros(1)));
        assert!(gcra(tat, 1_000, spec).is_ok());
    }

    #[test]
    fn a_refund_moves_back_one_interval_but_not_before_now() {
        let spec = RateSpec {
            count: 2,
            per: Duration::from_secs(10),
        };
        let tat = gcra(gcra(None, 0, spec).ok(), 0, spec).unwrap();
        assert!(gcra(Some(tat), 0, spec).is_err());
        let refunded = gcra_refund(tat, 0, spec);
        assert_eq!(refunded, Some(5_000_000_000));
        assert!(gcra(refunded, 0, spec).is_ok());
        assert_eq!(gcra_refund(5_000_000_000, 0, spec), None);
        assert_eq!(gcra_refund(5_000_000_000, 4_000_000_000, spec), None);
    }
}
