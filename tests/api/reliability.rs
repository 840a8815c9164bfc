//! Failover, retries, deadlines and circuit breakers against mock providers.

use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::fakes::{
    hits, mount_twilio, mount_vonage, provider_vars, twilio_accepted, twilio_error, twilio_path,
    vonage_accepted, vonage_error_500, SLOW,
};
use crate::health::ready;
use crate::helpers::{problem, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::{Request, Respond, ResponseTemplate};

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
    TestApp::builder()
        .env(&provider_vars(
            &primary.uri(),
            secondary.map(|s| s.uri()).as_deref(),
        ))
        // Short enough for the timeout tests, long enough that a loaded machine never
        // turns a mock's prompt answer into a timeout.
        .env(&[("PROVIDER_TIMEOUT", "2s")])
        .env(extra)
        .real_providers()
        .spawn()
        .await
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
    let app = TestApp::builder()
        .env(&provider_vars(&refused, Some(&secondary.uri())))
        .env(&[("RETRY_MAX", "1")])
        .real_providers()
        .spawn()
        .await;

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
        two_providers(&[("REQUEST_DEADLINE", "300ms"), ("PROVIDER_TIMEOUT", "300ms")]).await;
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
    assert_eq!(ready(&app).await.0, 503);

    // The cooldown itself is what is tested here: nothing to await but time.
    tokio::time::sleep(cooldown).await;
    primary.reset().await;
    mount_twilio(&primary, twilio_accepted()).await;

    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;
    assert_eq!(body["provider"], "twilio");
    assert_eq!(hits(&primary).await, 1, "the half-open trial went through");
    assert_eq!(ready(&app).await.1["providers"]["twilio"], "closed");
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

/// An app with `primary` alone and `CIRCUIT_FAILURES=1` (and `extra`), whose circuit a
/// first send answered 503 has opened; later requests are accepted unless the test
/// mounts a reply of higher priority.
async fn tripped_app(primary: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("CIRCUIT_FAILURES", "1")];
    vars.extend_from_slice(extra);
    let app = app_for(primary, None, &vars).await;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(twilio_error(503, 20503, "Service Unavailable"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(primary)
        .await;
    mount_twilio(primary, twilio_accepted()).await;
    problem(
        app.post_raw("/api/sms", BODY).await,
        503,
        "no_provider_available",
    )
    .await;
    app
}

/// `POST /api/sms` with `BODY`, as bytes for a raw connection.
fn raw_request(host: &str) -> String {
    format!(
        "POST /api/sms HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
}

/// Posts `BODY` over a raw connection, writing the first half, then the rest after
/// `pause`; returns the answer's status code.
async fn post_in_two_parts(app: &TestApp, pause: Duration) -> u16 {
    let mut socket = tokio::net::TcpStream::connect(app.socket_address())
        .await
        .unwrap();
    let request = raw_request(app.socket_address());
    let (first, rest) = request.split_at(request.len() - BODY.len() / 2);
    socket.write_all(first.as_bytes()).await.unwrap();
    tokio::time::sleep(pause).await;
    socket.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

#[tokio::test]
async fn a_slow_body_neither_spends_the_deadline_nor_strands_the_circuit() {
    // As observed: one 503 opens the circuit; the next send's body takes longer than
    // both the cooldown and the whole request deadline to arrive.
    let primary = MockServer::start().await;
    let app = tripped_app(
        &primary,
        &[
            ("CIRCUIT_COOLDOWN", "1s"),
            ("REQUEST_DEADLINE", "1s"),
            ("PROVIDER_TIMEOUT", "1s"),
        ],
    )
    .await;

    let status = post_in_two_parts(&app, Duration::from_millis(1200)).await;

    assert_eq!(status, 200, "the trial ran with the whole deadline");
    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;
    assert_eq!(body["provider"], "twilio");
    assert_eq!(hits(&primary).await, 3);
}

/// Answers `reply` (held as long as it says), and says on `arrived` when a request
/// comes in.
struct Held {
    reply: ResponseTemplate,
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Respond for Held {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let _ = self.arrived.send(());
        self.reply.clone()
    }
}

#[tokio::test]
async fn a_send_dropped_during_the_trial_gives_the_trial_back_and_ready_follows() {
    let primary = MockServer::start().await;
    // The trial's attempt time is long: only giving the trial back, not its expiry,
    // can free the circuit within the bound below.
    let app = tripped_app(
        &primary,
        &[("CIRCUIT_COOLDOWN", "300ms"), ("PROVIDER_TIMEOUT", "8s")],
    )
    .await;
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    // The trial, held.
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(Held {
            reply: twilio_accepted().set_delay(Duration::from_secs(30)),
            arrived: arrived_tx,
        })
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&primary)
        .await;
    // The cooldown itself is what is waited for here.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut caller = tokio::net::TcpStream::connect(app.socket_address())
        .await
        .unwrap();
    caller
        .write_all(raw_request(app.socket_address()).as_bytes())
        .await
        .unwrap();
    arrived
        .recv()
        .await
        .expect("the trial reached the provider");
    let (status, body) = ready(&app).await;
    assert_eq!(
        (status, body["providers"]["twilio"].as_str()),
        (503, Some("trial")),
        "no send can be admitted while the trial is out: {body}"
    );

    // The caller goes away abruptly (a reset, as when its process dies): the server
    // drops its connection and the send with it.
    caller.set_zero_linger().unwrap();
    drop(caller);
    let given_back = tokio::time::timeout(Duration::from_secs(5), async {
        while ready(&app).await.1["providers"]["twilio"] != "half_open" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(given_back.is_ok(), "the dropped send gave the trial back");

    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;
    assert_eq!(body["provider"], "twilio");
    assert_eq!(ready(&app).await.0, 200);
}

#[tokio::test]
async fn a_429_with_retry_after_0_is_retried_only_retry_max_times() {
    let primary = MockServer::start().await;
    let app = app_for(&primary, None, &[("RETRY_MAX", "1")]).await;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(
            twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "0"),
        )
        .expect(2)
        .mount(&primary)
        .await;

    problem(
        app.post_raw("/api/sms", BODY).await,
        503,
        "no_provider_available",
    )
    .await;

    assert_eq!(hits(&primary).await, 2, "the first try and one retry");
}

#[tokio::test]
async fn a_huge_retry_after_is_answered_clamped_and_the_server_keeps_serving() {
    let primary = MockServer::start().await;
    let app = app_for(&primary, None, &[]).await;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(
            twilio_error(429, 20429, "Too Many Requests")
                .insert_header("Retry-After", "18446744073709551615"),
        )
        .mount(&primary)
        .await;

    let response = app.post_raw("/api/sms", BODY).await;

    assert_eq!(
        response.headers().get("retry-after").unwrap(),
        "3600",
        "the provider's delay, clamped to an hour"
    );
    problem(response, 503, "no_provider_available").await;
    assert_eq!(
        hits(&primary).await,
        1,
        "a wait past the deadline is not waited"
    );
    let again = app.post_raw("/api/sms", BODY).await;
    assert_eq!(again.status(), 503, "still serving");
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

    // Fixed by the operator: the next accepted message clears it from readiness.
    primary.reset().await;
    mount_twilio(&primary, twilio_accepted()).await;
    let body = ok_body(app.post_raw("/api/sms", BODY).await).await;
    assert_eq!(body["provider"], "twilio");
    let ready: Value = serde_json::from_str(&app.get_text("/health/ready").await).unwrap();
    assert!(ready.get("config_errors").is_none(), "{ready}");
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
