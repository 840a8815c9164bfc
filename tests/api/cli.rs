//! The operator's commands, run as the real binary against mock providers.

use std::process::Output;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fakes::{hits, mount_twilio, provider_vars, twilio_accepted, TWILIO_SID};
use crate::helpers::{run_binary, TestApp};
use crate::redis_server::RedisServer;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn check_probes_credentials_and_fails_on_a_refused_token() {
    let good = MockServer::start().await;
    let bad = MockServer::start().await;
    let account_path = format!("/2010-04-01/Accounts/{TWILIO_SID}.json");
    Mock::given(method("GET"))
        .and(path(account_path.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": TWILIO_SID, "status": "active", "type": "Full", "friendly_name": "ops@example.com",
            "auth_token": "fake-token"
        })))
        .mount(&good)
        .await;
    Mock::given(method("GET"))
        .and(path(account_path))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "code": 20003, "message": "Authenticate", "status": 401
        })))
        .mount(&bad)
        .await;

    let ok = run_binary(&["check"], &provider_vars(&good.uri(), None)).await;
    let refused = run_binary(&["check"], &provider_vars(&bad.uri(), None)).await;

    assert!(ok.status.success(), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("ok   twilio"), "{}", stdout(&ok));
    assert!(!stdout(&ok).contains("fake-token"), "the token is masked");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stdout(&refused).contains("FAIL twilio: unauthorized"),
        "{}",
        stdout(&refused)
    );
}

#[tokio::test]
async fn send_reaches_the_configured_provider() {
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;

    let output = run_binary(
        &[
            "send",
            "--to",
            "+55 11 96619-1717",
            "--text",
            "Test from the CLI 8642",
        ],
        &provider_vars(&twilio.uri(), None),
    )
    .await;

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout(&output).contains("via twilio"),
        "{}",
        stdout(&output)
    );
    assert_eq!(hits(&twilio).await, 1);
    let request = &twilio.received_requests().await.unwrap()[0];
    let form = String::from_utf8_lossy(&request.body);
    assert!(form.contains("To=%2B5511966191717"), "{form}");
    assert!(form.contains("Body=Test+from+the+CLI+8642"), "{form}");
}

/// `otp-relay send` to +5511966191717 with `vars` added to a Twilio mock's variables.
async fn cli_send(twilio: &MockServer, text: &str, vars: &[(&str, &str)]) -> Output {
    let mut all = provider_vars(&twilio.uri(), None);
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    run_binary(&["send", "--to", "+5511966191717", "--text", text], &all).await
}

#[tokio::test]
async fn send_is_refused_by_the_country_policy_and_reaches_no_provider() {
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;

    let output = cli_send(&twilio, "Your code is 8642", &[("ALLOWED_COUNTRIES", "US")]).await;

    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(stderr.contains("country_not_allowed"), "{stderr}");
    assert_eq!(hits(&twilio).await, 0, "nothing reaches the provider");
}

#[tokio::test]
async fn cli_sends_count_against_the_rate_limits_in_the_shared_store() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let url = redis.url();
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("RATE_LIMIT_PER_NUMBER", "1/1h"),
    ];

    let first = cli_send(&twilio, "Your code is 1111", &vars).await;
    // Another text: not a repeat of the first, a second send to the same number.
    let second = cli_send(&twilio, "Your code is 2222", &vars).await;

    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(second.status.code(), Some(1), "{}", stdout(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("rate_limited"), "{stderr}");
    assert_eq!(hits(&twilio).await, 1, "the second send is not made");
}

#[tokio::test]
async fn healthcheck_follows_the_server() {
    let app = TestApp::builder().spawn().await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let up = vec![("BIND_ADDR".to_owned(), format!("0.0.0.0:{port}"))];
    let nobody = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        vec![(
            "BIND_ADDR".to_owned(),
            listener.local_addr().unwrap().to_string(),
        )]
    };

    assert!(run_binary(&["healthcheck"], &up).await.status.success());
    assert_eq!(
        run_binary(&["healthcheck"], &nobody).await.status.code(),
        Some(1)
    );
}

#[tokio::test]
async fn a_bad_configuration_exits_2_naming_the_variable() {
    let output = run_binary(&["check"], &[("MESSAGE_TTL".into(), "soon".into())]).await;

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("MESSAGE_TTL: not a duration"), "{stderr}");
}

#[tokio::test]
async fn telegram_set_webhook_registers_the_public_url_and_secret() {
    let bot = MockServer::start().await;
    let token = "123456789:AAH-cli_bot_token";
    Mock::given(method("POST"))
        .and(path(format!("/bot{token}/setWebhook")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "result": true, "description": "Webhook was set"
        })))
        .mount(&bot)
        .await;
    let vars: Vec<(String, String)> = [
        ("PROVIDERS", "telegram"),
        ("AUTH_DISABLED", "true"),
        ("TELEGRAM_MODE", "bot"),
        ("TELEGRAM_BOT_TOKEN", token),
        ("TELEGRAM_BOT_BASE_URL", &bot.uri()),
        ("TELEGRAM_WEBHOOK_SECRET", "cli-secret"),
        ("PUBLIC_BASE_URL", "https://otp.example.com"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let output = run_binary(&["telegram", "set-webhook"], &vars).await;

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout(&output).contains("Webhook was set"),
        "{}",
        stdout(&output)
    );
    let request = &bot.received_requests().await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["url"], "https://otp.example.com/webhooks/telegram-bot");
    assert_eq!(body["secret_token"], "cli-secret");
    let without_url: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k != "PUBLIC_BASE_URL")
        .collect();
    assert_eq!(
        run_binary(&["telegram", "set-webhook"], &without_url)
            .await
            .status
            .code(),
        Some(2)
    );
}
