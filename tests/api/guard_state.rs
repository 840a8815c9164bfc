//! Guard state that must count what was sent and outlive memory pressure: a send that
//! never left gives its rate-limit allowance back, and a full memory store gives up
//! history before any live limit or `Idempotency-Key` answer.

use serde_json::json;
use wiremock::MockServer;

use crate::fakes::{hits, mount_twilio, provider_vars, twilio_accepted};
use crate::helpers::{problem, TestApp};

fn body(mobile: &str, text: &str) -> String {
    json!({"mobile": mobile, "totp": text}).to_string()
}

async fn send(app: &TestApp, key: Option<&str>, mobile: &str, text: &str) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/messages"))
        .header("Content-Type", "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.body(body(mobile, text)).send().await.unwrap()
}

/// A different valid mobile number for each `n`.
fn number(n: usize) -> String {
    format!("+551196{n:07}")
}

#[tokio::test]
async fn sends_that_never_reached_the_provider_give_their_allowance_back() {
    // A port nobody listens on, for now: the provider refuses connections.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let app = TestApp::builder()
        .env(&provider_vars(&format!("http://127.0.0.1:{port}"), None))
        .env(&[
            ("RATE_LIMIT_PER_NUMBER", "2/1h"),
            ("CIRCUIT_FAILURES", "100"),
        ])
        .real_providers()
        .spawn()
        .await;

    for i in 0..3 {
        let response = send(&app, None, "+5511966191717", &format!("Code 30000{i}")).await;
        problem(response, 503, "no_provider_available").await;
    }

    // The provider is back at the same address.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let provider = MockServer::builder().listener(listener).start().await;
    mount_twilio(&provider, twilio_accepted()).await;
    let response = send(&app, None, "+5511966191717", "Code 300009").await;
    assert_eq!(response.status(), 200, "refused for sends that never left");
    // The limit still counts what was sent: one more fits, then it refuses.
    let response = send(&app, None, "+5511966191717", "Code 300010").await;
    assert_eq!(response.status(), 200);
    let response = send(&app, None, "+5511966191717", "Code 300011").await;
    problem(response, 429, "rate_limited").await;
    assert_eq!(hits(&provider).await, 2);
}

#[tokio::test]
async fn under_memory_pressure_live_limits_and_idempotency_answers_stay() {
    let app = TestApp::builder()
        .env(&[
            ("MEMORY_STORE_MIB", "1"),
            ("RATE_LIMIT_PER_NUMBER", "1/1h"),
            ("DEDUPE_WINDOW", "60s"),
        ])
        .spawn()
        .await;
    let first = send(&app, Some("login-1"), &number(0), "Code 400000").await;
    assert_eq!(first.status(), 200);
    let answer = first.text().await.unwrap();

    // Far more history than a mebibyte holds: records, their index, dedupe answers.
    for n in 1..=2_000 {
        let response = send(&app, None, &number(n), "Code 400001").await;
        assert_eq!(response.status(), 200, "send {n}");
    }

    let replay = send(&app, Some("login-1"), &number(0), "Code 400000").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), answer);
    problem(
        send(&app, None, &number(0), "Code 400002").await,
        429,
        "rate_limited",
    )
    .await;
    assert_eq!(app.recorder().received().len(), 2_001, "one send per key");

    let metrics = app.get_text("/metrics").await;
    let given_up = r#"otp_relay_store_evictions_total{kind="record",live="true"}"#;
    assert!(metrics.contains(given_up), "{metrics}");
}

#[tokio::test]
async fn when_live_guard_state_alone_fills_the_memory_sends_are_refused() {
    let app = TestApp::builder()
        .env(&[("MEMORY_STORE_MIB", "1"), ("RATE_LIMIT_PER_NUMBER", "1/1h")])
        .spawn()
        .await;
    // Each send leaves an answer kept for MESSAGE_RETENTION and a counter for an hour.
    let mut sent = 0;
    let refused = loop {
        let response = send(
            &app,
            Some(&format!("k{sent}")),
            &number(sent),
            "Code 500000",
        )
        .await;
        if response.status() != 200 {
            break response;
        }
        sent += 1;
        assert!(sent < 5_000, "a mebibyte never filled");
    };
    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, 503, "overloaded").await;
    // Readiness says so, so a load balancer sends logins to another replica.
    let ready: serde_json::Value =
        serde_json::from_str(&app.get_text("/health/ready").await).unwrap();
    assert_eq!(ready["status"], "unavailable");
    assert_eq!(ready["store"]["overloaded"], true);
    // Nothing was forgotten to make room: the first answer still replays, the first
    // number's limit still holds.
    assert!(sent > 1_000, "only {sent} sends before the store filled");
    let replay = send(&app, Some("k0"), &number(0), "Code 500000").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(app.recorder().received().len(), sent);
}
