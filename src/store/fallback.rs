//! The Redis store with a per-replica memory stand-in: what the application uses when
//! `REDIS_URL` is set.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;

use super::{
    memory, Claim, ClaimAndCount, PutAndSettle, RateDecision, RateLimit, Settle, Store, StoreError,
    StoreHealth, StoredAnswer, TakenFallback,
};

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

    async fn claim_and_acquire(
        &self,
        key: &str,
        token: &str,
        fingerprint: &str,
        ttl: Duration,
        limits: &[RateLimit<'_>],
    ) -> Result<ClaimAndCount, StoreError> {
        self.either(
            "claim_and_acquire",
            self.primary
                .claim_and_acquire(key, token, fingerprint, ttl, limits),
            || {
                self.fallback
                    .claim_and_acquire(key, token, fingerprint, ttl, limits)
            },
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

    async fn put_and_settle(
        &self,
        entries: &[(&str, &str)],
        ttl: Option<Duration>,
        claim: &Settle<'_>,
    ) -> PutAndSettle {
        // Release both: the claim may have been taken in either place.
        let local = match claim.answer {
            None => Some(self.fallback.release(claim.key, claim.token).await),
            Some(_) => None,
        };
        let span = tracing::info_span!(
            "store operation",
            operation = "put_and_settle",
            backend = self.primary.backend()
        );
        let shared = self
            .primary
            .put_and_settle(entries, ttl, claim)
            .instrument(span)
            .await;
        // Each part that failed is served from memory, as its plain operation would be.
        let put = match self.noted("put", shared.put) {
            Ok(()) => Ok(()),
            Err(_) => self.fallback.put(entries, ttl).await,
        };
        let settle = match (claim.answer, local) {
            (Some((answer, keep)), _) => match self.noted("finish", shared.settle) {
                Ok(()) => Ok(()),
                Err(_) => {
                    let (key, token, fingerprint) = (claim.key, claim.token, claim.fingerprint);
                    self.fallback
                        .finish(key, token, fingerprint, answer, keep)
                        .await
                }
            },
            (None, local) => self
                .noted("release", shared.settle)
                .or_else(|_| local.unwrap_or(Ok(()))),
        };
        PutAndSettle { put, settle }
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

    /// Kept in local memory while Redis fails: lost if this replica stops, but sent if
    /// it does not.
    async fn schedule_fallback(
        &self,
        id: &str,
        payload: &str,
        delay: Duration,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.either(
            "schedule_fallback",
            self.primary.schedule_fallback(id, payload, delay, ttl),
            || self.fallback.schedule_fallback(id, payload, delay, ttl),
        )
        .await
    }

    async fn cancel_fallback(&self, id: &str) -> Result<bool, StoreError> {
        // Both: it may have been scheduled in either place.
        let local = self.fallback.cancel_fallback(id).await?;
        let shared = self.noted("cancel_fallback", self.primary.cancel_fallback(id).await);
        Ok(local || shared.unwrap_or(false))
    }

    async fn hasten_fallback(&self, id: &str) -> Result<bool, StoreError> {
        let local = self.fallback.hasten_fallback(id).await?;
        let shared = self.noted("hasten_fallback", self.primary.hasten_fallback(id).await);
        Ok(local || shared.unwrap_or(false))
    }

    /// Those kept locally during an outage first, then the shared ones.
    async fn take_due_fallbacks(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<TakenFallback>, StoreError> {
        let mut taken = self.fallback.take_due_fallbacks(limit, lease).await?;
        let left = limit.saturating_sub(taken.len());
        if left > 0 {
            let shared = self.primary.take_due_fallbacks(left, lease).await;
            taken.extend(self.noted("take_due_fallbacks", shared).unwrap_or_default());
        }
        Ok(taken)
    }

    /// Both, as it may have been taken from either place. A shared lease that cannot
    /// be ended now (the failure is counted and logged) runs out, and the next taker
    /// finds the leg on the record.
    async fn finish_fallback(&self, id: &str) -> Result<(), StoreError> {
        self.fallback.finish_fallback(id).await?;
        let _ = self.noted("finish_fallback", self.primary.finish_fallback(id).await);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;

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
        async fn schedule_fallback(
            &self,
            _: &str,
            _: &str,
            _: Duration,
            _: Duration,
        ) -> Result<(), StoreError> {
            moved()
        }
        async fn cancel_fallback(&self, _: &str) -> Result<bool, StoreError> {
            moved()
        }
        async fn hasten_fallback(&self, _: &str) -> Result<bool, StoreError> {
            moved()
        }
        async fn take_due_fallbacks(
            &self,
            _: usize,
            _: Duration,
        ) -> Result<Vec<TakenFallback>, StoreError> {
            moved()
        }
        async fn finish_fallback(&self, _: &str) -> Result<(), StoreError> {
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
}
