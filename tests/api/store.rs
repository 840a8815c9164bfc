//! The store contract, run alike against the memory store, a real Redis and a real
//! Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use std::time::{Instant, SystemTime};

use otp_relay::config::RATE_PERIODS;
use otp_relay::store::memory::MemoryStore;
use otp_relay::store::redis::{RedisStore, Topology};
use otp_relay::store::RateSpec;
use otp_relay::store::{
    Claim, FallbackStore, RateDecision, RateLimit, Store, StoredAnswer, TakenFallback,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use secrecy::SecretString;

use crate::redis_server::{RedisCluster, RedisServer};

async fn contract(store: Arc<dyn Store>) {
    store.ping().await.expect("reachable");
    contract_after_ping(store).await;
}

async fn contract_after_ping(store: Arc<dyn Store>) {
    // Rate: a burst of `count`, then a wait.
    let spec = RateSpec {
        count: 3,
        per: Duration::from_secs(3600),
    };
    let one = |key| [RateLimit { key, spec }];
    for _ in 0..3 {
        assert_eq!(
            store.rate_acquire(&one("rate:t")).await.unwrap(),
            RateDecision::Allowed
        );
    }
    match store.rate_acquire(&one("rate:t")).await.unwrap() {
        RateDecision::Limited { limit, retry_after } => {
            assert_eq!(limit, 0);
            assert!(
                retry_after > Duration::from_secs(1100) && retry_after <= Duration::from_secs(1200)
            )
        }
        RateDecision::Allowed => panic!("the fourth must wait"),
    }
    assert_eq!(
        store.rate_acquire(&one("rate:other")).await.unwrap(),
        RateDecision::Allowed
    );

    // Several limits count together or not at all: the one that refuses is named,
    // and the others keep their allowance.
    let once = RateSpec {
        count: 1,
        per: Duration::from_secs(3600),
    };
    let pair = |(a, a_spec), (b, b_spec)| {
        [
            RateLimit {
                key: a,
                spec: a_spec,
            },
            RateLimit {
                key: b,
                spec: b_spec,
            },
        ]
    };
    let both = pair(("rate:wide", spec), ("rate:narrow", once));
    assert_eq!(
        store.rate_acquire(&both).await.unwrap(),
        RateDecision::Allowed
    );
    for _ in 0..3 {
        assert!(matches!(
            store.rate_acquire(&both).await.unwrap(),
            RateDecision::Limited { limit: 1, .. }
        ));
    }
    let wide = one("rate:wide");
    for _ in 0..2 {
        assert_eq!(
            store.rate_acquire(&wide).await.unwrap(),
            RateDecision::Allowed,
            "refused sends used up the wide limit"
        );
    }
    assert!(matches!(
        store.rate_acquire(&wide).await.unwrap(),
        RateDecision::Limited { limit: 0, .. }
    ));

    // Give-back: a send that never left returns its allowance to every limit it was
    // counted against, and never more than the burst.
    let two = RateSpec {
        count: 2,
        per: Duration::from_secs(3600),
    };
    let given = pair(("rate:give-a", two), ("rate:give-b", once));
    store.rate_refund(&given).await.unwrap();
    assert_eq!(
        store.rate_acquire(&given).await.unwrap(),
        RateDecision::Allowed
    );
    assert!(matches!(
        store.rate_acquire(&given).await.unwrap(),
        RateDecision::Limited { limit: 1, .. }
    ));
    store.rate_refund(&given).await.unwrap();
    assert_eq!(
        store.rate_acquire(&given).await.unwrap(),
        RateDecision::Allowed,
        "the give-back returned the allowance"
    );
    for _ in 0..3 {
        store.rate_refund(&given).await.unwrap();
    }
    let a = &given[..1];
    for _ in 0..2 {
        assert_eq!(store.rate_acquire(a).await.unwrap(), RateDecision::Allowed);
    }
    assert!(
        matches!(
            store.rate_acquire(a).await.unwrap(),
            RateDecision::Limited { .. }
        ),
        "give-backs beyond what was counted grant nothing"
    );

    // Claims: one holder at a time; others see it in flight, then done.
    let ttl = Duration::from_secs(30);
    assert_eq!(
        store.claim("idem:a", "t1", "fp", ttl).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store.claim("idem:a", "t2", "fp", ttl).await.unwrap(),
        Claim::InFlight {
            fingerprint: "fp".into()
        }
    );
    let answer = StoredAnswer {
        status: 503,
        body: r#"{"id":"x"}"#.into(),
        retry_after: Some(7),
    };
    // Someone else's token neither finishes nor releases the claim.
    store
        .finish("idem:a", "t2", "fp", &answer, ttl)
        .await
        .unwrap();
    store.release("idem:a", "t2").await.unwrap();
    assert_eq!(
        store.peek("idem:a").await.unwrap(),
        Some(Claim::InFlight {
            fingerprint: "fp".into()
        })
    );
    store
        .finish("idem:a", "t1", "fp", &answer, ttl)
        .await
        .unwrap();
    let done = Claim::Done {
        fingerprint: "fp".into(),
        answer: answer.clone(),
    };
    assert_eq!(store.peek("idem:a").await.unwrap(), Some(done.clone()));
    assert_eq!(store.claim("idem:a", "t3", "fp", ttl).await.unwrap(), done);

    // Release frees the key for the next request.
    assert_eq!(
        store.claim("idem:b", "t1", "fp", ttl).await.unwrap(),
        Claim::Claimed
    );
    store.release("idem:b", "t1").await.unwrap();
    assert_eq!(store.peek("idem:b").await.unwrap(), None);
    assert_eq!(
        store.claim("idem:b", "t2", "fp", ttl).await.unwrap(),
        Claim::Claimed
    );

    // Plain values: stored, compared-and-swapped, deleted.
    store.put(&[("v:a", "one")], Some(ttl)).await.unwrap();
    store.put(&[("v:forever", "kept")], None).await.unwrap();
    store
        .put(&[("v:pair-1", "first"), ("v:pair-2", "second")], Some(ttl))
        .await
        .unwrap();
    assert_eq!(
        store.get("v:pair-1").await.unwrap().as_deref(),
        Some("first")
    );
    assert_eq!(
        store.get("v:pair-2").await.unwrap().as_deref(),
        Some("second")
    );
    assert_eq!(store.get("v:a").await.unwrap().as_deref(), Some("one"));
    assert!(!store.replace("v:a", "stale", "two").await.unwrap());
    assert!(store.replace("v:a", "one", "two").await.unwrap());
    assert_eq!(store.get("v:a").await.unwrap().as_deref(), Some("two"));
    assert!(!store.replace("v:missing", "", "x").await.unwrap());
    assert!(
        !store.delete_if("v:a", "one").await.unwrap(),
        "not the value"
    );
    assert_eq!(store.get("v:a").await.unwrap().as_deref(), Some("two"));
    assert!(store.delete_if("v:a", "two").await.unwrap());
    assert_eq!(store.get("v:a").await.unwrap(), None);
    assert!(!store.delete_if("v:missing", "").await.unwrap());
    store.put(&[("v:a", "three")], None).await.unwrap();
    store.delete("v:a").await.unwrap();
    assert_eq!(store.get("v:a").await.unwrap(), None);
    assert_eq!(
        store.get("v:forever").await.unwrap().as_deref(),
        Some("kept")
    );

    fallbacks(&store).await;

    // Concurrent claims: exactly one wins.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .claim("idem:race", &format!("t{i}"), "fp", ttl)
                .await
                .unwrap()
        });
    }
    let mut winners = 0;
    while let Some(claim) = tasks.join_next().await {
        if claim.unwrap() == Claim::Claimed {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// Pending channel fallbacks: a due one comes out once, leased; a hastened one is due
/// at once and says so; a cancelled one and one not yet due never come out; concurrent
/// takers never share one. Then leases: a live one keeps others off, one that ran out
/// is taken again (still saying why it was due), and finishing or cancelling ends it.
async fn fallbacks(store: &Arc<dyn Store>) {
    let hour = Duration::from_secs(3600);
    store
        .schedule_fallback("01F1", "p1", Duration::ZERO, hour)
        .await
        .unwrap();
    for id in ["01F2", "01F3"] {
        store.schedule_fallback(id, "p", hour, hour).await.unwrap();
    }
    store
        .schedule_fallback("01F4", "p4", Duration::ZERO, hour)
        .await
        .unwrap();
    assert!(store.cancel_fallback("01F4").await.unwrap());
    assert!(!store.cancel_fallback("01F4").await.unwrap());
    assert!(store.hasten_fallback("01F2").await.unwrap());
    assert!(!store.hasten_fallback("01F9").await.unwrap());
    // A zero lease runs out at once: the next take takes them again.
    let taken = sorted(store.take_due_fallbacks(10, Duration::ZERO).await.unwrap());
    assert_eq!(taken, ["01F1 p1", "01F2 p hastened"]);
    // A leased one is being sent: a failure report leaves it be.
    assert!(!store.hasten_fallback("01F1").await.unwrap());
    let taken = sorted(store.take_due_fallbacks(10, hour).await.unwrap());
    assert_eq!(taken, ["01F1 p1 retaken", "01F2 p hastened retaken"]);
    // Live leases: nobody else takes them.
    assert!(store.take_due_fallbacks(10, hour).await.unwrap().is_empty());
    store.finish_fallback("01F1").await.unwrap();
    assert!(!store.cancel_fallback("01F1").await.unwrap(), "finished");
    assert!(store.cancel_fallback("01F2").await.unwrap(), "leased");
    assert!(!store.cancel_fallback("01F2").await.unwrap());
    assert!(store.cancel_fallback("01F3").await.unwrap(), "waiting");
    // Rescheduling a leased one makes it wait again.
    store
        .schedule_fallback("01F5", "p5", Duration::ZERO, hour)
        .await
        .unwrap();
    assert_eq!(store.take_due_fallbacks(10, hour).await.unwrap().len(), 1);
    store
        .schedule_fallback("01F5", "p6", Duration::ZERO, hour)
        .await
        .unwrap();
    let taken = sorted(store.take_due_fallbacks(10, Duration::ZERO).await.unwrap());
    assert_eq!(taken, ["01F5 p6"]);
    store.finish_fallback("01F5").await.unwrap();
    assert!(store
        .take_due_fallbacks(10, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());

    for n in 0..20 {
        let id = format!("01R{n:02}");
        store
            .schedule_fallback(&id, "p", Duration::ZERO, hour)
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let store = Arc::clone(store);
        tasks.spawn(async move { store.take_due_fallbacks(3, hour).await.unwrap() });
    }
    let mut ids = Vec::new();
    while let Some(taken) = tasks.join_next().await {
        let taken = taken.unwrap();
        assert!(taken.len() <= 3);
        ids.extend(taken.into_iter().map(|t| t.id));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "each taken once: {ids:?}");
}

/// Taken fallbacks as `id payload`, with `hastened` and `retaken` when they are, by id.
fn sorted(mut taken: Vec<TakenFallback>) -> Vec<String> {
    taken.sort_by(|a, b| a.id.cmp(&b.id));
    taken
        .into_iter()
        .map(|t| {
            let mut text = format!("{} {}", t.id, t.payload);
            for (flag, name) in [(t.hastened, " hastened"), (t.retaken, " retaken")] {
                if flag {
                    text.push_str(name);
                }
            }
            text
        })
        .collect()
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    contract(Arc::new(MemoryStore::default())).await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_contract() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let store = RedisStore::connect(&SecretString::from(redis.url())).unwrap();
    contract(Arc::new(store)).await;
}

/// On a single server each thread sends the store's commands over a connection of its
/// own, made on that thread's runtime: an HTTP worker's commands never wait for another
/// thread to be driven (with one shared connection, whose task ran on the thread that
/// opened the store, they did), and a runtime that stops takes only its own connection.
#[test]
fn each_thread_reaches_redis_over_a_connection_of_its_own() {
    let current_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let home = current_thread();
    let Some(redis) = home.block_on(RedisServer::start()) else {
        return;
    };
    let store = {
        let _entered = home.enter();
        Arc::new(RedisStore::connect(&SecretString::from(redis.url())).unwrap())
    };
    home.block_on(store.put(&[("msg:home", "1")], None))
        .unwrap();

    // Another thread and runtime, while this one is blocked in `join` (not driven).
    let elsewhere = Arc::clone(&store);
    std::thread::spawn(move || {
        current_thread().block_on(async {
            elsewhere
                .put(&[("msg:elsewhere", "2")], None)
                .await
                .unwrap();
            assert_eq!(
                elsewhere.get("msg:home").await.unwrap().as_deref(),
                Some("1")
            );
        });
    })
    .join()
    .expect("the other thread's commands are answered");

    // That runtime is gone, and its connection with it; this thread's still serves.
    home.block_on(async {
        assert_eq!(
            store.get("msg:elsewhere").await.unwrap().as_deref(),
            Some("2")
        );
    });
}

#[tokio::test]
async fn the_redis_store_keeps_the_contract_on_a_cluster() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    // A bound for the first calls, which also learn the cluster's layout.
    let timeout = Duration::from_secs(5);
    // One seed is enough: the other nodes are discovered.
    let seed = SecretString::from(cluster.nodes[1].url());
    let store = Arc::new(RedisStore::connect_with(&seed, Topology::Cluster, timeout).unwrap());
    contract(Arc::clone(&store) as Arc<dyn Store>).await;

    // The keys were spread over the nodes, and each node answered for its own.
    let counts = cluster.keys_per_node().await;
    assert!(counts.iter().all(|&n| n > 0), "keys per node: {counts:?}");

    // A node that lost its scripts (a restart, a failover) answers NOSCRIPT: the
    // script is loaded again and the call goes through.
    for node in &cluster.nodes {
        let mut flush = redis::cmd("SCRIPT");
        flush.arg("FLUSH");
        node.query::<()>(&flush).await;
    }
    let spec = RateSpec {
        count: 1,
        per: Duration::from_secs(60),
    };
    let limits = [
        RateLimit {
            key: "rate:number:flushed",
            spec,
        },
        RateLimit {
            key: "rate:global:",
            spec,
        },
    ];
    assert_eq!(
        store.rate_acquire(&limits).await.unwrap(),
        RateDecision::Allowed
    );
}

#[tokio::test]
async fn a_hung_redis_does_not_hold_a_call() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let urls = SecretString::from(cluster.urls());
    let timeout = Duration::from_millis(300);
    let store = RedisStore::connect_with(&urls, Topology::Cluster, timeout).unwrap();
    // Connected (with a few tries: a loaded machine may be slower than the timeout).
    let mut answered = false;
    for _ in 0..20 {
        answered = store.get("v:hung").await.is_ok();
        if answered {
            break;
        }
    }
    assert!(answered, "the cluster never answered");
    for node in &cluster.nodes {
        node.freeze().await;
    }

    // Generous: only there to end the test should the store wait forever.
    let failed = tokio::time::timeout(Duration::from_secs(30), async {
        let limit = [RateLimit {
            key: "rate:hung",
            spec: RateSpec {
                count: 1,
                per: Duration::from_secs(60),
            },
        }];
        (
            store.get("v:hung").await,
            store.rate_acquire(&limit).await,
            store.put(&[("v:a", "1"), ("v:b", "2")], None).await,
        )
    })
    .await
    .expect("a store call waited on a hung Redis");
    assert!(failed.0.is_err() && failed.1.is_err() && failed.2.is_err());
}

#[tokio::test]
async fn the_fallback_store_keeps_the_contract_with_redis_up_or_down() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let fallback = |url: String| {
        let primary = RedisStore::connect(&SecretString::from(url)).unwrap();
        Arc::new(FallbackStore::new(
            Box::new(primary),
            MemoryStore::default(),
        ))
    };
    contract(fallback(redis.url())).await;
    let url = redis.url();
    redis.stop().await;
    let down = fallback(url);
    // The contract starts with a ping, which fails while Redis is down: the rest runs
    // on the local memory.
    assert!(down.ping().await.is_err());
    assert!(!down.overloaded());
    let memory: Arc<dyn Store> = down;
    contract_after_ping(memory).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_reported() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    redis.stop().await;
    let store = RedisStore::connect(&SecretString::from(url)).unwrap();
    assert!(store.ping().await.is_err());
}

/// A rate the configuration accepts, as written in it: `COUNT/PERIOD` with any count up to
/// `most` and any accepted period (at least one microsecond per event).
fn accepted_rate(most: u32) -> impl Strategy<Value = RateSpec> {
    let (shortest, longest) = (
        RATE_PERIODS.0.as_nanos() as u64,
        RATE_PERIODS.1.as_nanos() as u64,
    );
    (1..=most)
        .prop_flat_map(move |count| {
            let shortest = shortest.max(u64::from(count) * 1_000);
            let period = prop_oneof![
                shortest..=shortest + 1_000_000,
                shortest..=longest,
                // The longest periods, where Redis's doubles have the fewest digits left.
                longest - 1_000_000..=longest,
            ];
            (Just(count), period)
        })
        .prop_map(|(count, period)| {
            let text = format!("{count}/{period}ns");
            text.parse::<RateSpec>()
                .unwrap_or_else(|e| panic!("{text} refused: {e}"))
        })
}

/// Whole microseconds at or after `duration` (the Redis clock's resolution).
fn micros_up(duration: Duration) -> Duration {
    Duration::from_micros(duration.as_nanos().div_ceil(1_000) as u64)
}

/// What every store must do with `spec`, given a way to count at a chosen instant
/// (`at`, the time after the first burst): exactly `count` at one instant, a refusal
/// saying to wait the interval, one more after it, and a refusal again.
fn check_burst_and_replenish(
    spec: RateSpec,
    after: Duration,
    mut acquire: impl FnMut(Duration) -> RateDecision,
) -> Result<(), TestCaseError> {
    for n in 0..spec.count {
        prop_assert_eq!(
            acquire(Duration::ZERO),
            RateDecision::Allowed,
            "event {} of the burst",
            n
        );
    }
    match acquire(Duration::ZERO) {
        RateDecision::Limited { limit, retry_after } => {
            prop_assert_eq!(limit, 0);
            prop_assert!(retry_after > Duration::ZERO);
            prop_assert!(retry_after <= spec.per / spec.count);
            prop_assert_eq!(retry_after, spec.interval());
        }
        RateDecision::Allowed => prop_assert!(false, "one past the burst was admitted"),
    }
    prop_assert_eq!(
        acquire(after),
        RateDecision::Allowed,
        "replenished after PERIOD/COUNT"
    );
    let again = acquire(after);
    prop_assert!(
        matches!(again, RateDecision::Limited { .. }),
        "a second one after one interval: {:?}",
        again
    );
    Ok(())
}

/// A million a second: one per microsecond, the finest rate accepted. A burst of a
/// million is too many calls for a test, so the clock goes back instead: one event
/// counted at `start + (per - interval)` is a full window ahead of `start`. There the
/// store refuses with a wait of one microsecond (not zero), and one microsecond later
/// it admits one more.
fn check_the_finest_rate(mut acquire: impl FnMut(&[RateLimit<'_>], Duration) -> RateDecision) {
    let spec: RateSpec = "1000000/1s".parse().unwrap();
    let limit = [RateLimit {
        key: "rate:finest",
        spec,
    }];
    let full = spec.per - spec.interval();
    assert_eq!(acquire(&limit, full), RateDecision::Allowed);
    assert_eq!(
        acquire(&limit, Duration::ZERO),
        RateDecision::Limited {
            limit: 0,
            retry_after: Duration::from_micros(1)
        }
    );
    assert_eq!(
        acquire(&limit, Duration::from_micros(1)),
        RateDecision::Allowed
    );
}

#[test]
fn the_memory_store_counts_the_finest_rate_to_the_microsecond() {
    let store = MemoryStore::default();
    let start = Instant::now();
    check_the_finest_rate(|limit, offset| store.rate_acquire_at(limit, start + offset));
}

#[test]
fn the_memory_store_admits_exactly_count_then_one_per_interval() {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(128));
    runner
        .run(&accepted_rate(3_000), |spec| {
            let store = MemoryStore::default();
            let start = Instant::now();
            let limit = [RateLimit {
                key: "rate:p",
                spec,
            }];
            check_burst_and_replenish(spec, spec.per / spec.count, |offset| {
                store.rate_acquire_at(&limit, start + offset)
            })
        })
        .unwrap();
}

#[test]
fn the_redis_store_admits_exactly_count_then_one_per_interval() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Some(redis) = runtime.block_on(RedisServer::start()) else {
        return;
    };
    let _context = runtime.enter();
    let store = RedisStore::connect(&SecretString::from(redis.url())).unwrap();
    // A fixed clock, so that nothing depends on how fast the calls go.
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let case = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    runner
        .run(&accepted_rate(120), |spec| {
            case.set(case.get() + 1);
            let key = format!("rate:p{}", case.get());
            let limit = [RateLimit { key: &key, spec }];
            check_burst_and_replenish(spec, micros_up(spec.per / spec.count), |offset| {
                runtime
                    .block_on(store.rate_acquire_at(&limit, start + offset))
                    .unwrap()
            })
        })
        .unwrap();
    check_the_finest_rate(|limit, offset| {
        runtime
            .block_on(store.rate_acquire_at(limit, start + offset))
            .unwrap()
    });
    // The give-back at a fixed clock too: one back, one more admitted.
    let spec = RateSpec {
        count: 3,
        per: Duration::from_secs(3),
    };
    let limit = [RateLimit {
        key: "rate:given",
        spec,
    }];
    runtime.block_on(async {
        for _ in 0..3 {
            assert_eq!(
                store.rate_acquire_at(&limit, start).await.unwrap(),
                RateDecision::Allowed
            );
        }
        store.rate_refund_at(&limit, start).await.unwrap();
        assert_eq!(
            store.rate_acquire_at(&limit, start).await.unwrap(),
            RateDecision::Allowed
        );
        assert!(matches!(
            store.rate_acquire_at(&limit, start).await.unwrap(),
            RateDecision::Limited { .. }
        ));
    });
    drop(redis);
}
