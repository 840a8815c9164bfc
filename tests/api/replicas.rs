//! Several otp-relay instances sharing one Redis or one Redis Cluster, as replicas
//! behind a load balancer.

use std::sync::Arc;

use serde_json::json;
use wiremock::MockServer;

use crate::fakes::{hits, mount_twilio, provider_vars, twilio_accepted};
use crate::helpers::{captured_logs, TestApp};
use crate::redis_server::{RedisCluster, RedisServer};

/// A replica using Twilio at `twilio` and the Redis at `redis_url`, with `extra` set.
pub async fn replica(twilio: &MockServer, redis_url: &str, extra: &[(&str, &str)]) -> TestApp {
    TestApp::builder()
        .env(&provider_vars(&twilio.uri(), None))
        // A test machine under load may take longer than the default second to schedule
        // a call; a call that times out would be served from memory, which is not what
        // these tests are about.
        .env(&[("REDIS_URL", redis_url), ("REDIS_TIMEOUT", "2500ms")])
        .env(extra)
        .real_providers()
        .spawn()
        .await
}

pub async fn send(app: &TestApp, mobile: &str, text: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/sms"))
        .header("Content-Type", "application/json")
        .body(json!({"mobile": mobile, "totp": text}).to_string());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

/// Sends `count` codes to `mobile`, in turn through `a` and `b`; how many were
/// accepted (the others rate limited).
async fn sends_accepted(a: &TestApp, b: &TestApp, mobile: &str, count: usize) -> usize {
    let mut accepted = 0;
    for i in 0..count {
        let app = if i % 2 == 0 { a } else { b };
        let response = send(app, mobile, &format!("Code 5000{i:02}"), None).await;
        match response.status().as_u16() {
            200 => accepted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    accepted
}

async fn ready_status(app: &TestApp) -> u16 {
    readiness(app).await.0
}

/// The readiness status and the store's part of its body.
async fn readiness(app: &TestApp) -> (u16, serde_json::Value) {
    let (status, body) = crate::health::ready(app).await;
    (status, body["store"].clone())
}

/// Whether the replica reports ready within 30 s (it is asked every 50 ms): a failed
/// store operation keeps it unready for 10 s.
async fn becomes_ready(app: &TestApp) -> bool {
    for _ in 0..600 {
        if ready_status(app).await == 200 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn one_idempotency_key_sends_once_across_replicas() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let twilio = MockServer::start().await;
    mount_twilio(
        &twilio,
        twilio_accepted().set_delay(std::time::Duration::from_millis(300)),
    )
    .await;
    let a = Arc::new(replica(&twilio, &redis.url(), &[]).await);
    let b = Arc::new(replica(&twilio, &redis.url(), &[]).await);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let app = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.spawn(async move {
            let response = send(&app, "+5511966191717", "Code 424242", Some("shared-key")).await;
            (response.status().as_u16(), response.text().await.unwrap())
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }

    assert_eq!(hits(&twilio).await, 1, "one provider request in all");
    assert_eq!(answers[0].0, 200);
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "identical answers"
    );
}

#[tokio::test]
async fn the_per_number_limit_is_shared_across_replicas() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let limit = [("RATE_LIMIT_PER_NUMBER", "5/1h")];
    let a = replica(&twilio, &redis.url(), &limit).await;
    let b = replica(&twilio, &redis.url(), &limit).await;

    let accepted = sends_accepted(&a, &b, "+5511966191717", 12).await;

    assert_eq!(accepted, 5);
    assert_eq!(hits(&twilio).await, 5);
}

#[tokio::test]
async fn losing_redis_degrades_to_local_limits_and_recovers() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let limit = [("RATE_LIMIT_PER_NUMBER", "2/1h")];
    let a = replica(&twilio, &redis.url(), &limit).await;
    let b = replica(&twilio, &redis.url(), &limit).await;
    assert_eq!(ready_status(&a).await, 200);

    let port = redis.stop().await;

    // Logins go on, each replica counting for itself.
    assert_eq!(
        send(&a, "+5511966191717", "Code 600001", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&a, "+5511966191717", "Code 600002", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&a, "+5511966191717", "Code 600003", None)
            .await
            .status(),
        429
    );
    assert_eq!(
        send(&b, "+5511966191717", "Code 600004", None)
            .await
            .status(),
        200
    );
    assert_eq!(ready_status(&a).await, 503);

    let _redis = RedisServer::start_on(port).await.expect("redis comes back");

    // Each replica reconnects on its own, at its next use of the store (a readiness
    // check is one); until then its sends would still count locally.
    for replica in [&a, &b] {
        assert!(becomes_ready(replica).await, "a replica did not recover");
    }
    // Shared again: two sends in all for a new number, whichever replica takes them.
    assert_eq!(
        send(&a, "+14155552671", "Code 700001", None).await.status(),
        200
    );
    assert_eq!(
        send(&b, "+14155552671", "Code 700002", None).await.status(),
        200
    );
    assert_eq!(
        send(&a, "+14155552671", "Code 700003", None).await.status(),
        429
    );
    assert_eq!(
        send(&b, "+14155552671", "Code 700004", None).await.status(),
        429
    );
}

#[tokio::test]
async fn a_report_received_by_one_replica_is_seen_by_another() {
    use crate::receipts::{status_of, twilio_callback, twilio_signature};

    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let public = [("PUBLIC_BASE_URL", "https://otp.example.com")];
    let a = replica(&twilio, &redis.url(), &public).await;
    let b = replica(&twilio, &redis.url(), &public).await;
    let response = send(&a, "+5511966191717", "Code 818181", None).await;
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let report = [
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "delivered"),
    ];
    let signature = twilio_signature("https://otp.example.com/webhooks/twilio", &report);
    assert_eq!(
        twilio_callback(&b, &report, Some(signature)).await.status(),
        200
    );

    assert_eq!(status_of(&a, &id).await["status"], "delivered");
    assert_eq!(status_of(&b, &id).await["status"], "delivered");
}

#[tokio::test]
async fn replicas_sharing_a_cluster_enforce_one_limit_per_number() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    // Every limit on, so each send's script takes five keys at once; dedupe on, so
    // each send also writes a key of its own.
    let vars = [
        ("REDIS_CLUSTER", "true"),
        ("RATE_LIMIT_PER_NUMBER", "2/1h"),
        ("RATE_LIMIT_PER_PREFIX", "1000/1h"),
        ("RATE_LIMIT_PER_CLIENT", "1000/1h"),
        ("RATE_LIMIT_PER_COUNTRY", "*=1000/1h"),
        ("RATE_LIMIT_GLOBAL", "1000/1h"),
        ("DEDUPE_WINDOW", "60s"),
    ];
    let a = replica(&twilio, &cluster.urls(), &vars).await;
    // The other replica knows one node only, and finds the rest.
    let b = replica(&twilio, &cluster.nodes[2].url(), &vars).await;

    let numbers: Vec<String> = (10..18).map(|i| format!("+55119661917{i}")).collect();
    for number in &numbers {
        let accepted = sends_accepted(&a, &b, number, 3).await;
        assert_eq!(accepted, 2, "{number}: one limit for both replicas");
    }
    assert_eq!(hits(&twilio).await, 2 * numbers.len());

    // Nothing was served from a replica's own memory, and every node took part.
    for app in [&a, &b] {
        let (status, store) = readiness(app).await;
        assert_eq!(status, 200, "{store}");
        assert_eq!(store["degraded"], false);
    }
    let counts = cluster.keys_per_node().await;
    assert!(counts.iter().all(|&n| n > 0), "keys per node: {counts:?}");
}

#[tokio::test]
async fn a_cluster_addressed_as_one_server_is_not_ready() {
    let Some(cluster) = RedisCluster::start().await else {
        return;
    };
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    // REDIS_CLUSTER unset: one node answers pings, but MOVED for the other nodes' keys.
    let limit = [("RATE_LIMIT_PER_NUMBER", "5/1h")];
    let app = replica(&twilio, &cluster.nodes[0].url(), &limit).await;
    assert_eq!(ready_status(&app).await, 200, "a ping alone looks fine");

    for i in 10..16 {
        let number = format!("+55119661918{i}");
        // Logins go on from the replica's memory.
        assert_eq!(send(&app, &number, "Code 424242", None).await.status(), 200);
    }

    let (status, store) = readiness(&app).await;
    assert_eq!(status, 503, "{store}");
    assert_eq!(store["reachable"], true);
    assert_eq!(store["degraded"], true);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otp_relay_store_errors_total{backend="redis",operation="#),
        "{metrics}"
    );
    let logs = captured_logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("state store operations failing")
                && (line.contains("Moved") || line.contains("CrossSlot"))),
        "the failure is logged with its cause"
    );
}
