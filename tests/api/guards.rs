//! Guards before dispatch: idempotency and dedupe, rate limits, number policy, and the
//! in-flight bound.

use std::sync::Arc;

use otp_relay_providers::ProviderError;
use serde_json::{json, Value};

use crate::helpers::{problem, GatedProvider, RecordingProvider, TestApp};

fn body(mobile: &str, text: &str) -> String {
    json!({"mobile": mobile, "totp": text}).to_string()
}

async fn post_with_key(app: &TestApp, key: &str, body: String) -> reqwest::Response {
    post_with(app, ("Idempotency-Key", key), body).await
}

/// Posts `body` to the canonical path with one extra header.
async fn post_with(app: &TestApp, (name, value): (&str, &str), body: String) -> reqwest::Response {
    app.client
        .post(app.url("/v1/messages"))
        .header("Content-Type", "application/json")
        .header(name, value)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_requests_with_one_key_send_once_and_answer_alike() {
    let gate = GatedProvider::new();
    let app = Arc::new(
        TestApp::builder()
            .providers(vec![gate.clone()])
            .spawn()
            .await,
    );

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let app = Arc::clone(&app);
        tasks.spawn(async move {
            let response =
                post_with_key(&app, "login-42", body("+5511966191717", "Code 111222")).await;
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        });
    }
    // Exactly one send reaches the provider; let it finish only then.
    gate.arrived.notified().await;
    gate.release.add_permits(1000);

    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    assert_eq!(answers.len(), 200);
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "identical answers"
    );
    assert_eq!(answers[0].0, 200);
    assert_eq!(
        gate.release.available_permits(),
        999,
        "exactly one send was released"
    );
}

#[tokio::test]
async fn a_repeat_after_success_is_replayed_and_marked() {
    let app = TestApp::builder()
        .env(&[("DEDUPE_WINDOW", "60s")])
        .spawn()
        .await;

    let first = app
        .post_raw("/api/sms", body("+5511966191717", "Code 333444"))
        .await;
    let second = app
        .post_raw("/api/sms", body("+55 11 96619-1717", "Code 333444"))
        .await;
    let other_text = app
        .post_raw("/api/sms", body("+5511966191717", "Code 333445"))
        .await;

    assert!(!first.headers().contains_key("idempotent-replayed"));
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let first: Value = first.json().await.unwrap();
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(other_text.status(), 200);
    assert_eq!(app.recorder().received().len(), 2);
}

#[tokio::test]
async fn a_failure_that_never_reached_a_provider_is_not_replayed() {
    let provider = RecordingProvider::failing_with(ProviderError::Connect {
        detail: "connection refused".into(),
    });
    let app = TestApp::builder()
        .env(&[("DEDUPE_WINDOW", "60s"), ("RETRY_MAX", "0")])
        .provider(provider)
        .spawn()
        .await;

    for _ in 0..2 {
        let response = app
            .post_raw("/api/sms", body("+5511966191717", "Code 555666"))
            .await;
        assert!(!response.headers().contains_key("idempotent-replayed"));
        problem(response, 503, "no_provider_available").await;
    }
    assert_eq!(app.recorder().received().len(), 2, "the repeat sent again");
}

#[tokio::test]
async fn a_failure_a_provider_may_have_acted_on_is_replayed_not_resent() {
    let provider = RecordingProvider::failing_with(ProviderError::Unavailable {
        detail: "HTTP 500".into(),
    });
    let app = TestApp::builder()
        .env(&[("DEDUPE_WINDOW", "60s")])
        .provider(provider)
        .spawn()
        .await;

    let first = app
        .post_raw("/api/sms", body("+5511966191717", "Code 555667"))
        .await;
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let waited = first.headers()["retry-after"].clone();
    let first = problem(first, 503, "no_provider_available").await;
    let repeat = app
        .post_raw("/api/sms", body("+5511966191717", "Code 555667"))
        .await;
    assert_eq!(repeat.headers()["idempotent-replayed"], "true");
    assert_eq!(
        repeat.headers()["retry-after"],
        waited,
        "the 503 says when, again"
    );
    let repeat = problem(repeat, 503, "no_provider_available").await;

    assert_eq!(repeat, first, "the same answer, message id included");
    assert_eq!(app.recorder().received().len(), 1, "sent once");
}

#[tokio::test]
async fn dedupe_is_per_caller() {
    let app = TestApp::builder()
        .env(&[
            ("AUTH_API_KEYS", "caller-a,caller-b"),
            ("DEDUPE_WINDOW", "60s"),
        ])
        .spawn()
        .await;
    let send = |key: &'static str| {
        post_with(
            &app,
            ("X-API-Key", key),
            body("+5511966191717", "Code 121212"),
        )
    };

    let a = send("caller-a").await;
    let b = send("caller-b").await;
    let a_again = send("caller-a").await;

    assert_eq!(a.status(), 200);
    assert_eq!(b.status(), 200);
    assert!(!b.headers().contains_key("idempotent-replayed"));
    assert_eq!(a_again.headers()["idempotent-replayed"], "true");
    let (a, b): (Value, Value) = (a.json().await.unwrap(), b.json().await.unwrap());
    assert_ne!(a["id"], b["id"], "B got its own send, not A's answer");
    assert_eq!(a_again.json::<Value>().await.unwrap(), a);
    assert_eq!(app.recorder().received().len(), 2);
}

mod over_the_wire {
    //! Exactly once against a mock Twilio: what a timeout or a refused connection does
    //! to a repeat under the same `Idempotency-Key`.

    use serde_json::Value;
    use wiremock::MockServer;

    use crate::fakes::{hits, mount_twilio, provider_vars, twilio_accepted, SLOW};
    use crate::helpers::{problem, TestApp};

    const BODY: &str = r#"{"mobile": "+5511966191717", "totp": "Your code is 864200"}"#;

    async fn app_at(base_url: &str) -> TestApp {
        TestApp::builder()
            .env(&provider_vars(base_url, None))
            .env(&[("PROVIDER_TIMEOUT", "1s"), ("RETRY_MAX", "0")])
            .real_providers()
            .spawn()
            .await
    }

    async fn post(app: &TestApp, key: &str) -> reqwest::Response {
        super::post_with_key(app, key, BODY.to_owned()).await
    }

    #[tokio::test]
    async fn a_provider_slower_than_its_timeout_gets_one_request_per_key() {
        let twilio = MockServer::start().await;
        // It accepts, but answers after otp-relay stopped waiting.
        mount_twilio(&twilio, twilio_accepted().set_delay(SLOW)).await;
        let app = app_at(&twilio.uri()).await;

        let first = post(&app, "login-7").await;
        let status = first.status().as_u16();
        assert!(!first.headers().contains_key("idempotent-replayed"));
        let first: Value = first.json().await.unwrap();
        assert_eq!(first["attempts"][0]["code"], "timeout", "{first}");
        let repeat = post(&app, "login-7").await;

        assert_eq!(repeat.headers()["idempotent-replayed"], "true");
        let repeat = problem(repeat, status, first["code"].as_str().unwrap()).await;
        assert_eq!(repeat, first);
        assert_eq!(hits(&twilio).await, 1, "one SMS for one key");
    }

    #[tokio::test]
    async fn a_refused_connection_lets_the_repeat_send() {
        // Bound but not listening: connections are refused until it listens.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let base_url = format!("http://{}", socket.local_addr().unwrap());
        let app = app_at(&base_url).await;

        let refused = post(&app, "login-8").await;
        let refused = problem(refused, 503, "no_provider_available").await;
        assert_eq!(
            refused["attempts"][0]["code"], "connect_failed",
            "{refused}"
        );

        let listener = socket.listen(16).unwrap().into_std().unwrap();
        let twilio = MockServer::builder().listener(listener).start().await;
        mount_twilio(&twilio, twilio_accepted()).await;
        let repeat = post(&app, "login-8").await;

        assert!(!repeat.headers().contains_key("idempotent-replayed"));
        assert_eq!(repeat.status(), 200);
        assert_eq!(hits(&twilio).await, 1, "the repeat was sent");
    }
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let app = TestApp::builder().spawn().await;

    let first = post_with_key(&app, "k-1", body("+5511966191717", "Code 777888")).await;
    assert_eq!(first.status(), 200);
    let other = post_with_key(&app, "k-1", body("+5511966191717", "Code 999000")).await;

    problem(other, 422, "idempotency_key_reused").await;
    let bad = post_with_key(&app, &"x".repeat(256), body("+5511966191717", "Code 1")).await;
    problem(bad, 400, "invalid_idempotency_key").await;
    assert_eq!(app.recorder().received().len(), 1);
}

#[tokio::test]
async fn the_per_number_limit_refuses_with_retry_after_and_replays_do_not_count() {
    let app = TestApp::builder()
        .env(&[("RATE_LIMIT_PER_NUMBER", "3/1h"), ("DEDUPE_WINDOW", "60s")])
        .spawn()
        .await;

    for i in 0..3 {
        let response = app
            .post_raw(
                "/api/sms",
                body("+5511966191717", &format!("Code 10000{i}")),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    // A replay of an earlier send is answered without counting.
    let replay = app
        .post_raw("/api/sms", body("+5511966191717", "Code 100000"))
        .await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");

    let limited = app
        .post_raw("/api/sms", body("+5511966191717", "Code 100009"))
        .await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry_after), "{retry_after}");
    problem(limited, 429, "rate_limited").await;

    let other_number = app
        .post_raw("/api/sms", body("+14155552671", "Code 100009"))
        .await;
    assert_eq!(other_number.status(), 200);
    assert_eq!(app.recorder().received().len(), 4);
}

#[tokio::test]
async fn per_client_and_global_limits_hold() {
    let per_client = TestApp::builder()
        .env(&[("RATE_LIMIT_PER_CLIENT", "2/1h")])
        .spawn()
        .await;
    let global = TestApp::builder()
        .env(&[("RATE_LIMIT_GLOBAL", "1/1h")])
        .spawn()
        .await;

    for app in [&per_client, &global] {
        let limit = if std::ptr::eq(app, &per_client) { 2 } else { 1 };
        for i in 0..limit {
            let number = format!("+55119661917{i:02}");
            assert_eq!(
                app.post_raw("/api/sms", body(&number, "Code 2222"))
                    .await
                    .status(),
                200
            );
        }
        problem(
            app.post_raw("/api/sms", body("+14155552671", "Code 2222"))
                .await,
            429,
            "rate_limited",
        )
        .await;
    }
}

#[tokio::test]
async fn countries_and_line_types_are_policed() {
    let allowed_br = TestApp::builder()
        .env(&[("ALLOWED_COUNTRIES", "BR")])
        .spawn()
        .await;
    let blocked_us = TestApp::builder()
        .env(&[("BLOCKED_COUNTRIES", "US")])
        .spawn()
        .await;
    let strict = TestApp::builder().spawn().await;
    let lenient = TestApp::builder()
        .env(&[("ALLOW_NON_MOBILE", "true")])
        .spawn()
        .await;
    let us = body("+14155552671", "Code 4321");
    let premium = body("+44 909 879 0000", "Code 4321");
    let fixed = body("+55 11 3333-4444", "Code 4321");

    problem(
        allowed_br.post_raw("/api/sms", us.clone()).await,
        403,
        "country_not_allowed",
    )
    .await;
    assert_eq!(
        allowed_br
            .post_raw("/api/sms", body("+5511966191717", "Code 4321"))
            .await
            .status(),
        200
    );
    problem(
        blocked_us.post_raw("/api/sms", us.clone()).await,
        403,
        "country_not_allowed",
    )
    .await;
    assert_eq!(
        strict.post_raw("/api/sms", us).await.status(),
        200,
        "US numbers may be either"
    );
    problem(
        strict.post_raw("/api/sms", premium.clone()).await,
        422,
        "unsupported_number_type",
    )
    .await;
    problem(
        strict.post_raw("/api/sms", fixed.clone()).await,
        422,
        "unsupported_number_type",
    )
    .await;
    assert_eq!(lenient.post_raw("/api/sms", fixed).await.status(), 200);
    problem(
        lenient.post_raw("/api/sms", premium).await,
        422,
        "unsupported_number_type",
    )
    .await;
}

#[tokio::test]
async fn past_max_in_flight_requests_are_refused_at_once() {
    let gate = GatedProvider::new();
    let app = Arc::new(
        TestApp::builder()
            .env(&[("MAX_IN_FLIGHT", "1")])
            .providers(vec![gate.clone()])
            .spawn()
            .await,
    );
    let first = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            app.post_raw("/api/sms", body("+5511966191717", "Code 1111"))
                .await
        })
    };
    gate.arrived.notified().await;

    let refused = app
        .post_raw("/api/sms", body("+5511966191718", "Code 2222"))
        .await;

    assert_eq!(refused.headers()["retry-after"], "1");
    problem(refused, 503, "overloaded").await;
    gate.release.add_permits(1);
    assert_eq!(first.await.unwrap().status(), 200);
}
