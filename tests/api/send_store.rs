//! The store operations that do two steps of a send at once (the claim with the rate
//! limits, the record with the claim's settlement): they decide exactly as the plain
//! operations one after the other, on the memory store, a real Redis and a real Redis
//! Cluster, and on one Redis server each is one round trip, so that a send through the
//! application takes two.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use otp_relay::store::memory::MemoryStore;
use otp_relay::store::redis::{RedisStore, Topology};
use otp_relay::store::{
    Claim, ClaimAndCount, FallbackStore, RateDecision, RateLimit, RateSpec, Settle, Store,
    StoredAnswer,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use secrecy::SecretString;

use crate::fakes::{mount_twilio, twilio_accepted};
use crate::redis_server::{RedisCluster, RedisServer};
use crate::replicas::{replica, send};

/// Long enough that no claim lapses during a case, whatever clock a store reads.
const CLAIM_TTL: Duration = Duration::from_secs(86_400);

/// One step of a random history over a few keys, tokens and limits.
#[derive(Debug, Clone)]
enum Step {
    /// Claim `key` and count the limits (rate key, count per hour), `at` seconds in.
    Begin {
        key: u8,
        token: u8,
        fingerprint: u8,
        limits: Vec<(u8, u32)>,
        at: u64,
    },
    Finish {
        key: u8,
        token: u8,
        fingerprint: u8,
    },
    Release {
        key: u8,
        token: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3u8, 0..3u8, 0..2u8, prop::collection::vec((0..3u8, 1..4u32), 0..4), 0..7200u64)
            .prop_map(|(key, token, fingerprint, limits, at)| Step::Begin {
                key,
                token,
                fingerprint,
                limits,
                at,
            }),
        1 => (0..3u8, 0..3u8, 0..2u8).prop_map(|(key, token, fingerprint)| Step::Finish {
            key,
            token,
            fingerprint,
        }),
        1 => (0..3u8, 0..3u8).prop_map(|(key, token)| Step::Release { key, token }),
    ]
}

/// The names a side of the comparison uses (each side has keys of its own).
struct Names {
    side: String,
}

impl Names {
    fn key(&self, key: u8) -> String {
        format!("idem:{}:{key}", self.side)
    }
    fn rate(&self, rate: u8) -> String {
        format!("rate:{}:{rate}", self.side)
    }
}

fn answer(token: u8) -> StoredAnswer {
    StoredAnswer {
        status: 200,
        body: format!(r#"{{"by":{token}}}"#),
        retry_after: None,
    }
}

/// How a store counts limits at a chosen instant, seconds after a fixed start.
trait AtStore {
    fn store(&self) -> &dyn Store;
    async fn acquire_at(&self, limits: &[RateLimit<'_>], at: u64) -> RateDecision;
    async fn combined_at(
        &self,
        claim: (&str, &str, &str, Duration),
        limits: &[RateLimit<'_>],
        at: u64,
    ) -> ClaimAndCount;
}

struct Memory(MemoryStore, Instant);

impl AtStore for Memory {
    fn store(&self) -> &dyn Store {
        &self.0
    }
    async fn acquire_at(&self, limits: &[RateLimit<'_>], at: u64) -> RateDecision {
        self.0
            .rate_acquire_at(limits, self.1 + Duration::from_secs(at))
    }
    async fn combined_at(
        &self,
        claim: (&str, &str, &str, Duration),
        limits: &[RateLimit<'_>],
        at: u64,
    ) -> ClaimAndCount {
        self.0
            .claim_and_acquire_at(claim, limits, self.1 + Duration::from_secs(at))
    }
}

struct Redis(RedisStore, SystemTime);

impl AtStore for Redis {
    fn store(&self) -> &dyn Store {
        &self.0
    }
    async fn acquire_at(&self, limits: &[RateLimit<'_>], at: u64) -> RateDecision {
        self.0
            .rate_acquire_at(limits, self.1 + Duration::from_secs(at))
            .await
            .unwrap()
    }
    async fn combined_at(
        &self,
        claim: (&str, &str, &str, Duration),
        limits: &[RateLimit<'_>],
        at: u64,
    ) -> ClaimAndCount {
        self.0
            .claim_and_acquire_at(claim, limits, self.1 + Duration::from_secs(at))
            .await
            .unwrap()
    }
}

/// Runs `steps` on the combined operation (side `a`) and on claim, count and release one
/// after the other (side `b`) of the same store, and checks that every step decides
/// alike and leaves each key in the same state.
async fn same_decisions(store: &impl AtStore, case: usize, steps: &[Step]) {
    let a = Names {
        side: format!("a{case}"),
    };
    let b = Names {
        side: format!("b{case}"),
    };
    let plain = store.store();
    for (n, step) in steps.iter().enumerate() {
        let key = match step {
            Step::Begin { key, .. } | Step::Finish { key, .. } | Step::Release { key, .. } => *key,
        };
        match step {
            Step::Begin {
                key,
                token,
                fingerprint,
                limits,
                at,
            } => {
                let (token, fingerprint) = (format!("t{token}"), format!("f{fingerprint}"));
                let rates = |names: &Names| -> Vec<(String, RateSpec)> {
                    let per = Duration::from_secs(3600);
                    limits
                        .iter()
                        .map(|&(rate, count)| (names.rate(rate), RateSpec { count, per }))
                        .collect()
                };
                let (rates_a, rates_b) = (rates(&a), rates(&b));
                let (limits_a, limits_b) = (rate_limits(&rates_a), rate_limits(&rates_b));
                let key_a = a.key(*key);
                let combined = store
                    .combined_at((&key_a, &token, &fingerprint, CLAIM_TTL), &limits_a, *at)
                    .await;
                let key_b = b.key(*key);
                let sequence = match plain
                    .claim(&key_b, &token, &fingerprint, CLAIM_TTL)
                    .await
                    .unwrap()
                {
                    Claim::Claimed => match store.acquire_at(&limits_b, *at).await {
                        RateDecision::Allowed => ClaimAndCount::Claimed,
                        RateDecision::Limited { limit, retry_after } => {
                            plain.release(&key_b, &token).await.unwrap();
                            ClaimAndCount::Limited { limit, retry_after }
                        }
                    },
                    held => ClaimAndCount::Held(held),
                };
                assert_eq!(combined, sequence, "step {n}: {step:?}");
            }
            Step::Finish {
                key,
                token,
                fingerprint,
            } => {
                let (token_text, fingerprint) = (format!("t{token}"), format!("f{fingerprint}"));
                for names in [&a, &b] {
                    plain
                        .finish(
                            &names.key(*key),
                            &token_text,
                            &fingerprint,
                            &answer(*token),
                            CLAIM_TTL,
                        )
                        .await
                        .unwrap();
                }
            }
            Step::Release { key, token } => {
                for names in [&a, &b] {
                    plain
                        .release(&names.key(*key), &format!("t{token}"))
                        .await
                        .unwrap();
                }
            }
        }
        assert_eq!(
            plain.peek(&a.key(key)).await.unwrap(),
            plain.peek(&b.key(key)).await.unwrap(),
            "step {n}: {step:?} left the key in another state"
        );
    }
}

fn rate_limits(rates: &[(String, RateSpec)]) -> Vec<RateLimit<'_>> {
    rates
        .iter()
        .map(|(key, spec)| RateLimit { key, spec: *spec })
        .collect()
}

fn history() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..40)
}

/// Runs `same_decisions` over random histories on `store`, within `runtime`.
fn check_same_decisions(runtime: &tokio::runtime::Runtime, store: &impl AtStore, cases: u32) {
    let case = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&history(), |steps| {
            case.set(case.get() + 1);
            runtime.block_on(same_decisions(store, case.get(), &steps));
            Ok(())
        })
        .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fixed clock for Redis's counters, so that nothing depends on how fast calls go.
fn fixed_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

#[test]
fn the_memory_stores_claim_with_limits_decides_as_claim_then_count() {
    let store = Memory(MemoryStore::default(), Instant::now());
    check_same_decisions(&runtime(), &store, 128);
}

#[test]
fn the_redis_stores_claim_with_limits_decides_as_claim_then_count() {
    let runtime = runtime();
    let Some(redis) = runtime.block_on(RedisServer::start()) else {
        return;
    };
    let _context = runtime.enter();
    let store = Redis(
        RedisStore::connect(&SecretString::from(redis.url())).unwrap(),
        fixed_start(),
    );
    check_same_decisions(&runtime, &store, 48);
    drop(redis);
}

#[test]
fn a_clusters_claim_with_limits_decides_as_claim_then_count() {
    let runtime = runtime();
    let Some(cluster) = runtime.block_on(RedisCluster::start()) else {
        return;
    };
    let _context = runtime.enter();
    let seed = SecretString::from(cluster.nodes[0].url());
    let store = RedisStore::connect_with(&seed, Topology::Cluster, Duration::from_secs(5));
    let store = Redis(store.unwrap(), fixed_start());
    check_same_decisions(&runtime, &store, 16);
    drop(cluster);
}

/// What every store does with a record written together with a claim's settlement.
async fn settles_with_a_write(store: &dyn Store) {
    let ttl = Duration::from_secs(30);
    let answer = StoredAnswer {
        status: 200,
        body: r#"{"id":"m1"}"#.into(),
        retry_after: None,
    };
    let settle = |key, token, answer| Settle {
        key,
        token,
        fingerprint: "fp",
        answer,
    };

    // Finished: the entries are written and the answer is kept for repeats.
    assert_eq!(
        store.claim("idem:w1", "t1", "fp", ttl).await.unwrap(),
        Claim::Claimed
    );
    let entries = [("msg:w1", "record"), ("msg-by-provider:x:w1", "w1")];
    let done = store
        .put_and_settle(
            &entries,
            Some(ttl),
            &settle("idem:w1", "t1", Some((&answer, ttl))),
        )
        .await;
    done.put.unwrap();
    done.settle.unwrap();
    assert_eq!(
        store.get("msg:w1").await.unwrap().as_deref(),
        Some("record")
    );
    assert_eq!(
        store.get("msg-by-provider:x:w1").await.unwrap().as_deref(),
        Some("w1")
    );
    let finished = Claim::Done {
        fingerprint: "fp".into(),
        answer: answer.clone(),
    };
    assert_eq!(store.peek("idem:w1").await.unwrap(), Some(finished.clone()));

    // Released: written, and the key is free for a repeat.
    store.claim("idem:w2", "t1", "fp", ttl).await.unwrap();
    let done = store
        .put_and_settle(
            &[("msg:w2", "failed")],
            Some(ttl),
            &settle("idem:w2", "t1", None),
        )
        .await;
    done.put.unwrap();
    done.settle.unwrap();
    assert_eq!(
        store.get("msg:w2").await.unwrap().as_deref(),
        Some("failed")
    );
    assert_eq!(store.peek("idem:w2").await.unwrap(), None);

    // Another holder's claim is neither finished nor released; the write still happens.
    store.claim("idem:w3", "t1", "fp", ttl).await.unwrap();
    let in_flight = Some(Claim::InFlight {
        fingerprint: "fp".into(),
    });
    for answer in [Some((&answer, ttl)), None] {
        let done = store
            .put_and_settle(
                &[("msg:w3", "late")],
                Some(ttl),
                &settle("idem:w3", "t2", answer),
            )
            .await;
        done.put.unwrap();
        done.settle.unwrap();
        assert_eq!(store.peek("idem:w3").await.unwrap(), in_flight);
    }
    assert_eq!(store.get("msg:w3").await.unwrap().as_deref(), Some("late"));
    // A finished key stays finished.
    let done = store
        .put_and_settle(&[], Some(ttl), &settle("idem:w1", "t1", None))
        .await;
    done.settle.unwrap();
    assert_eq!(store.peek("idem:w1").await.unwrap(), Some(finished));
}

#[tokio::test]
async fn every_store_writes_a_record_and_settles_a_claim_together() {
    settles_with_a_write(&MemoryStore::default()).await;
    // Redis down: the memory stand-in does both.
    let nowhere = SecretString::from("redis://127.0.0.1:1".to_owned());
    let down = RedisStore::connect_with(&nowhere, Topology::Single, Duration::from_millis(200));
    let fallback = FallbackStore::new(Box::new(down.unwrap()), MemoryStore::default());
    settles_with_a_write(&fallback).await;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let url = SecretString::from(redis.url());
    settles_with_a_write(&RedisStore::connect(&url).unwrap()).await;
    redis.query::<()>(&redis::cmd("FLUSHALL")).await;
    let fallback = FallbackStore::new(
        Box::new(RedisStore::connect(&url).unwrap()),
        MemoryStore::default(),
    );
    settles_with_a_write(&fallback).await;
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let seed = SecretString::from(cluster.nodes[1].url());
    let store = RedisStore::connect_with(&seed, Topology::Cluster, Duration::from_secs(5));
    settles_with_a_write(&store.unwrap()).await;
}

/// Requests the server read (one per round trip when one client waits for each answer).
async fn reads(redis: &RedisServer) -> u64 {
    let mut info = redis::cmd("INFO");
    info.arg("stats");
    let text: String = redis.query(&info).await;
    text.lines()
        .find_map(|line| line.strip_prefix("total_reads_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_reads_processed")
}

/// The round trips `operation` took: the reads it made the server do, less those of
/// counting them (measured with nothing in between).
async fn round_trips<F: std::future::Future<Output = ()>>(
    redis: &RedisServer,
    operation: impl FnOnce() -> F,
) -> u64 {
    let (before, counting) = (reads(redis).await, reads(redis).await);
    let idle = counting - before;
    let start = reads(redis).await;
    operation().await;
    reads(redis).await - start - idle
}

#[tokio::test]
async fn on_one_server_each_combined_operation_is_one_round_trip() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = Arc::new(RedisStore::connect(&SecretString::from(redis.url())).unwrap());
    let spec = RateSpec {
        count: 1,
        per: Duration::from_secs(3600),
    };
    let limits = [
        RateLimit {
            key: "rate:number:r",
            spec,
        },
        RateLimit {
            key: "rate:global:",
            spec: RateSpec {
                count: 100,
                per: Duration::from_secs(3600),
            },
        },
    ];
    let ttl = Duration::from_secs(30);
    let answer = StoredAnswer {
        status: 200,
        body: "{}".into(),
        retry_after: None,
    };
    // The first calls connect and load the script.
    store
        .claim_and_acquire("idem:warm", "t", "fp", ttl, &limits[1..])
        .await
        .unwrap();
    let settle = Settle {
        key: "idem:warm",
        token: "t",
        fingerprint: "fp",
        answer: Some((&answer, ttl)),
    };
    let done = store
        .put_and_settle(&[("msg:warm", "r")], None, &settle)
        .await;
    done.put.unwrap();

    let claimed = round_trips(&redis, || async {
        let claimed = store
            .claim_and_acquire("idem:r1", "t", "fp", ttl, &limits)
            .await;
        assert_eq!(claimed.unwrap(), ClaimAndCount::Claimed);
    })
    .await;
    assert_eq!(claimed, 1, "a send's claim and limits");
    let refused = round_trips(&redis, || async {
        let refused = store
            .claim_and_acquire("idem:r2", "t", "fp", ttl, &limits)
            .await;
        assert!(matches!(
            refused.unwrap(),
            ClaimAndCount::Limited { limit: 0, .. }
        ));
    })
    .await;
    assert_eq!(refused, 1, "a refused send's claim and limits");
    for answer in [Some((&answer, ttl)), None] {
        let settle = Settle {
            key: "idem:r1",
            token: "t",
            fingerprint: "fp",
            answer,
        };
        let entries = [("msg:r1", "record"), ("msg-by-provider:x:r1", "r1")];
        let settled = round_trips(&redis, || async {
            let done = store.put_and_settle(&entries, Some(ttl), &settle).await;
            done.put.unwrap();
            done.settle.unwrap();
        })
        .await;
        assert_eq!(settled, 1, "a send's record and settlement");
    }
}

#[tokio::test]
async fn a_send_on_one_redis_server_takes_two_round_trips_and_a_refusal_one() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let twilio = wiremock::MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    // The guards of the benchmark's `redis` scenario: dedupe, per-number, per-client and
    // global limits.
    let vars = [
        ("DEDUPE_WINDOW", "60s"),
        ("RATE_LIMIT_PER_NUMBER", "1/1h"),
        ("RATE_LIMIT_PER_CLIENT", "1000/1h"),
        ("RATE_LIMIT_GLOBAL", "1000/1h"),
    ];
    let app = replica(&twilio, &redis.url(), &vars).await;
    // The first send connects and loads the scripts.
    let first = send(&app, "+5511966190100", "Your code is 1", None).await;
    assert_eq!(first.status(), 200);

    let sent = round_trips(&redis, || async {
        for n in 1..=3 {
            let mobile = format!("+55119661901{n:02}");
            let response = send(&app, &mobile, "Your code is 1", None).await;
            assert_eq!(response.status(), 200);
        }
    })
    .await;
    assert_eq!(sent, 2 * 3, "three sends");
    let refused = round_trips(&redis, || async {
        for n in 2..=4 {
            let text = format!("Your code is {n}");
            let response = send(&app, "+5511966190100", &text, None).await;
            assert_eq!(response.status(), 429);
        }
    })
    .await;
    assert_eq!(refused, 3, "three refusals");
}
