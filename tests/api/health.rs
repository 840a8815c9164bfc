//! Liveness, readiness, and the application as configured from the environment.

use otp_relay::startup::Application;
use wiremock::MockServer;

use crate::fakes::{mount_twilio, provider_vars, twilio_error};
use crate::helpers::{spawn_app, spawn_configured_app, test_config, TestApp};

/// `GET /health/ready`: its status and body.
pub async fn ready(app: &TestApp) -> (u16, serde_json::Value) {
    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn live_and_ready_answer() {
    let app = spawn_app(&[]).await;

    let live = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);

    let (status, body) = ready(&app).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    assert_eq!(body["providers"], serde_json::json!({"recorder": "closed"}));
    assert_eq!(
        body["store"],
        serde_json::json!({"backend": "memory", "reachable": true, "degraded": false, "overloaded": false})
    );
}

#[tokio::test]
async fn the_default_configuration_serves_through_the_console_provider() {
    let app = Application::build(test_config(&[])).expect("default configuration starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());

    let response = reqwest::Client::new()
        .post(format!("{address}/api/sms"))
        .header("Content-Type", "application/json")
        .body(r#"{"mobile": "+5511966191717", "totp": "32232", "used": false}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "console");
    assert_eq!(body["status"], "sent");
}

#[tokio::test]
async fn ready_is_unavailable_while_the_only_provider_is_skipped() {
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_error(503, 20503, "Service Unavailable")).await;
    let mut vars = provider_vars(&twilio.uri(), None);
    vars.extend([
        ("CIRCUIT_FAILURES".to_owned(), "1".to_owned()),
        ("CIRCUIT_COOLDOWN".to_owned(), "1h".to_owned()),
    ]);
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = spawn_configured_app(&pairs).await;
    assert_eq!(ready(&app).await.0, 200);

    let sent = app
        .post_raw(
            "/api/sms",
            r#"{"mobile": "+5511966191717", "totp": "Your code is 246813"}"#,
        )
        .await;
    assert_eq!(sent.status(), 503);

    let (status, body) = ready(&app).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["providers"], serde_json::json!({"twilio": "open"}));
}
