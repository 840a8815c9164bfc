//! Failover, retries, deadlines and circuit breakers against mock providers.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::fakes::{
    hits, mount_twilio, mount_vonage, provider_vars, twilio_accepted, twilio_error, twilio_path,
    vonage_accepted, vonage_error_500, SLOW,
};
use crate::helpers::{problem, spawn_configured_app, TestApp};

const BODY: &str = r#"{"mobile": "+5511966191717", "totp": "Your code is 246813"}"#;

/// Twilio then Vonage, both mocked, with `extra` settings.
async fn two_providers(extra: &[(&str, &str)]) -> (TestApp, MockServer, MockServer) {
    let primary = MockServer::start().await;
    let secondary = MockServer::start().await;
    let app = app_for(&primary, Some(&secondary), extra).await;
    (app, primary, secondary)
}

async fn app_for(
    primary: &MockServer,
    secondary: Option<&MockServer>,
    extra: &[(&str, &str)],
) -> TestApp {
    let mut vars = provider_vars(&primary.uri(), secondary.map(|s| s.uri()).as_deref());
    // Short enough for the timeout tests, long enough that a loaded machine never
    // turns a mock's prompt answer into a timeout.
    vars.push(("PROVIDER_TIMEOUT".into(), "2s".into()));
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_configured_app(&pairs).await
}

async fn ok_body(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_primary_500_fails_over_to_the_secondary() {
    let (app, primary, secondary) = two_providers(&[]).await;
    mount_twilio(&primary, twilio_error(500, 20500, "Internal Server Error")).await;
    mount_vonage(&secondary, vonage_accepted()).await;

    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;

    assert_eq!(body["provider"], "vonage");
    assert_eq!(
        body["attempts"],
        json!([
            {"provider": "twilio", "outcome": "failed", "code": "unavailable"},
            {"provider": "vonage", "outcome": "sent", "code": null}
        ])
    );
    assert_eq!((hits(&primary).await, hits(&secondary).await), (1, 1));
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_at_the_same_provider() {
    let (app, primary, secondary) = two_providers(&[]).await;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(
            twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "1"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&primary)
        .await;
    mount_twilio(&primary, twilio_accepted()).await;
    mount_vonage(&secondary, vonage_accepted()).await;

    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;

    assert_eq!(body["provider"], "twilio");
    assert_eq!(
        body["attempts"],
        json!([
            {"provider": "twilio", "outcome": "failed", "code": "rate_limited"},
            {"provider": "twilio", "outcome": "sent", "code": null}
        ])
    );
    assert_eq!((hits(&primary).await, hits(&secondary).await), (2, 0));
}

#[tokio::test]
async fn a_timeout_fails_over_without_retrying_the_primary() {
    let (app, primary, secondary) = two_providers(&[]).await;
    mount_twilio(&primary, twilio_accepted().set_delay(SLOW)).await;
    mount_vonage(&secondary, vonage_accepted()).await;

    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;

    assert_eq!(body["provider"], "vonage");
    assert_eq!(body["attempts"][0]["code"], "timeout");
    assert_eq!(body["attempts"].as_array().unwrap().len(), 2);
    assert_eq!((hits(&primary).await, hits(&secondary).await), (1, 1));
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_fails_over() {
    let secondary = MockServer::start().await;
    mount_vonage(&secondary, vonage_accepted()).await;
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let mut vars = provider_vars(&refused, Some(&secondary.uri()));
    vars.push(("RETRY_MAX".into(), "1".into()));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_configured_app(&pairs).await;

    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;

    assert_eq!(
        body["attempts"],
        json!([
            {"provider": "twilio", "outcome": "failed", "code": "connect_failed"},
            {"provider": "twilio", "outcome": "failed", "code": "connect_failed"},
            {"provider": "vonage", "outcome": "sent", "code": null}
        ])
    );
}

#[tokio::test]
async fn an_invalid_recipient_stops_without_failover() {
    let (app, primary, secondary) = two_providers(&[]).await;
    mount_twilio(
        &primary,
        twilio_error(400, 21211, "The 'To' number is not a valid phone number."),
    )
    .await;
    mount_vonage(&secondary, vonage_accepted()).await;

    let problem = problem(
        app.post_raw("/api/sms", BODY).await,
        422,
        "invalid_recipient",
    )
    .await;

    assert_eq!(problem["attempts"].as_array().unwrap().len(), 1);
    assert_eq!((hits(&primary).await, hits(&secondary).await), (1, 0));
}

#[tokio::test]
async fn all_providers_down_is_503_with_retry_after() {
    let (app, primary, secondary) = two_providers(&[]).await;
    mount_twilio(&primary, twilio_error(503, 20503, "Service Unavailable")).await;
    mount_vonage(&secondary, vonage_error_500()).await;

    let response = app.post_raw("/api/sms", BODY).await;

    assert!(response.headers().contains_key("retry-after"));
    let problem = problem(response, 503, "no_provider_available").await;
    assert_eq!(problem["attempts"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_deadline_shorter_than_the_provider_is_504() {
    let (app, primary, secondary) =
        two_providers(&[("REQUEST_DEADLINE", "300ms"), ("PROVIDER_TIMEOUT", "5s")]).await;
    mount_twilio(&primary, twilio_accepted().set_delay(SLOW)).await;
    mount_vonage(&secondary, vonage_accepted()).await;

    let problem = problem(
        app.post_raw("/api/sms", BODY).await,
        504,
        "deadline_exceeded",
    )
    .await;

    assert_eq!(problem["retryable"], true);
    assert_eq!(
        hits(&secondary).await,
        0,
        "no time was left for the secondary"
    );
}

#[tokio::test]
async fn the_circuit_opens_half_opens_and_closes() {
    let cooldown = Duration::from_millis(300);
    let primary = MockServer::start().await;
    let app = app_for(
        &primary,
        None,
        &[("CIRCUIT_FAILURES", "2"), ("CIRCUIT_COOLDOWN", "300ms")],
    )
    .await;
    mount_twilio(&primary, twilio_error(500, 20500, "Internal Server Error")).await;

    for _ in 0..2 {
        problem(
            app.post_raw("/api/sms", BODY).await,
            503,
            "no_provider_available",
        )
        .await;
    }
    // Open: the provider is skipped and receives nothing.
    let skipped = problem(
        app.post_raw("/api/sms", BODY).await,
        503,
        "no_provider_available",
    )
    .await;
    assert_eq!(
        skipped["attempts"],
        json!([{"provider": "twilio", "outcome": "skipped", "code": "circuit_open"}])
    );
    assert_eq!(hits(&primary).await, 2);
    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    // The cooldown itself is what is tested here: nothing to await but time.
    tokio::time::sleep(cooldown).await;
    primary.reset().await;
    mount_twilio(&primary, twilio_accepted()).await;

    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;
    assert_eq!(body["provider"], "twilio");
    assert_eq!(hits(&primary).await, 1, "the half-open trial went through");
    let ready: Value = serde_json::from_str(&app.get_text("/health/ready").await).unwrap();
    assert_eq!(ready["providers"]["twilio"], "closed");
}

#[tokio::test]
async fn a_bounded_load_with_a_flaky_primary_loses_nothing() {
    use std::sync::atomic::Ordering;

    use crate::fakes::Coin;

    let primary = MockServer::start().await;
    let secondary = MockServer::start().await;
    let (primary_coin, primary_accepted) = Coin::new(
        twilio_accepted(),
        twilio_error(500, 20500, "Internal Server Error"),
    );
    let (secondary_coin, secondary_accepted) = Coin::new(vonage_accepted(), vonage_error_500());
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(primary_coin)
        .mount(&primary)
        .await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(secondary_coin)
        .mount(&secondary)
        .await;
    // The default attempt timeout: a slow answer under load must not turn an acceptance
    // into an unknown outcome here.
    let app = app_for(
        &primary,
        Some(&secondary),
        &[("CIRCUIT_FAILURES", "1000"), ("PROVIDER_TIMEOUT", "5s")],
    )
    .await;

    let requests = 2_000;
    let concurrency = 100;
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        let client = app.client.clone();
        let url = app.url("/api/sms");
        tasks.spawn(async move {
            let body = format!(
                r#"{{"mobile": "+5511966191717", "totp": "Your code is {:06}"}}"#,
                i
            );
            let response = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .expect("every request is answered");
            drop(permit);
            response.status().as_u16()
        });
    }
    let mut ok = 0;
    let mut answered = 0;
    while let Some(status) = tasks.join_next().await {
        let status = status.unwrap();
        answered += 1;
        assert!(
            status == 200 || status == 503,
            "a documented answer: {status}"
        );
        if status == 200 {
            ok += 1;
        }
    }
    assert_eq!(answered, requests, "zero lost");
    let accepted =
        primary_accepted.load(Ordering::Relaxed) + secondary_accepted.load(Ordering::Relaxed);
    assert_eq!(
        ok, accepted,
        "every 200 is one provider acceptance and vice versa"
    );
    assert!(
        ok > requests / 2,
        "failover rescued most of the primary's failures: {ok}"
    );
}

/// <https://www.twilio.com/docs/errors/21609>: Twilio refuses our StatusCallback URL.
/// That is our configuration, not the message: Vonage may deliver (was a 502 with no
/// failover). It is logged at error level once per interval, counted by provider and
/// code, and shown in /health/ready.
#[tokio::test]
async fn a_configuration_error_fails_over_and_is_counted_logged_once_and_shown() {
    let (app, primary, secondary) = two_providers(&[]).await;
    mount_twilio(
        &primary,
        twilio_error(400, 21609, "Invalid StatusCallback url"),
    )
    .await;
    mount_vonage(&secondary, vonage_accepted()).await;

    for _ in 0..2 {
        let body = ok_body(app.post_raw("/api/sms", BODY).await).await;
        assert_eq!(body["provider"], "vonage");
        assert_eq!(body["attempts"][0]["code"], "provider_misconfigured");
    }

    let ready: Value = serde_json::from_str(&app.get_text("/health/ready").await).unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["config_errors"]["twilio"]["code"], "21609");
    assert!(ready["config_errors"].get("vonage").is_none());
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains(
            r#"otp_relay_provider_config_errors_total{provider="twilio",code="21609"} 2"#
        ),
        "{metrics}"
    );
    // Two failures, one error line (no other test makes Twilio answer 21609).
    let logs = crate::helpers::captured_logs();
    let logged: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains(r#""level":"ERROR""#) && line.contains("21609"))
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
}

/// 21611 (the sender's queue is full) is throttling: fail over. 21635 (a landline) is
/// the number: 422 and no failover.
#[tokio::test]
async fn twilio_throttling_fails_over_and_a_landline_is_the_callers_problem() {
    let (app, primary, secondary) = two_providers(&[("RETRY_MAX", "0")]).await;
    mount_twilio(
        &primary,
        twilio_error(
            400,
            21611,
            "This 'From' number has exceeded the maximum number of queued messages",
        ),
    )
    .await;
    mount_vonage(&secondary, vonage_accepted()).await;
    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;
    assert_eq!(body["provider"], "vonage");
    assert_eq!(body["attempts"][0]["code"], "rate_limited");

    let (app, primary, secondary) = two_providers(&[]).await;
    mount_twilio(
        &primary,
        twilio_error(400, 21635, "'To' number cannot be a landline"),
    )
    .await;
    mount_vonage(&secondary, vonage_accepted()).await;
    problem(
        app.post_raw("/api/sms", BODY).await,
        422,
        "invalid_recipient",
    )
    .await;
    assert_eq!((hits(&primary).await, hits(&secondary).await), (1, 0));
}

/// A 201 whose body has no sid is Twilio's acceptance: 200, no provider id, queued, and
/// never a failover (it sent the user a second code through Vonage).
#[tokio::test]
async fn a_2xx_without_an_id_is_an_acceptance_never_failed_over() {
    let (app, primary, secondary) = two_providers(&[]).await;
    mount_twilio(
        &primary,
        wiremock::ResponseTemplate::new(201)
            .set_body_raw("{\"status\":\"queued\"}", "application/json"),
    )
    .await;
    mount_vonage(&secondary, vonage_accepted()).await;

    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;

    assert_eq!(body["provider"], "twilio");
    assert_eq!(body["provider_message_id"], Value::Null);
    assert_eq!(body["status"], "queued");
    assert_eq!((hits(&primary).await, hits(&secondary).await), (1, 0));
}
