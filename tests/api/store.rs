//! The store contract, run alike against the memory store, a real Redis and a real
//! Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use otp_relay::config::RateSpec;
use otp_relay::store::memory::MemoryStore;
use otp_relay::store::redis::{RedisStore, Topology};
use otp_relay::store::{Claim, RateDecision, RateLimit, Store, StoredAnswer};
use secrecy::SecretString;

use crate::redis_server::{RedisCluster, RedisServer};

async fn contract(store: Arc<dyn Store>) {
    store.ping().await.expect("reachable");

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
    let both = [
        RateLimit {
            key: "rate:wide",
            spec,
        },
        RateLimit {
            key: "rate:narrow",
            spec: once,
        },
    ];
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
        status: 200,
        body: r#"{"id":"x"}"#.into(),
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
    store.delete("v:a").await.unwrap();
    assert_eq!(store.get("v:a").await.unwrap(), None);
    assert_eq!(
        store.get("v:forever").await.unwrap().as_deref(),
        Some("kept")
    );

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
async fn an_unreachable_redis_is_reported() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let url = redis.url();
    redis.stop().await;
    let store = RedisStore::connect(&SecretString::from(url)).unwrap();
    assert!(store.ping().await.is_err());
}
