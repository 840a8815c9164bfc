//! Liveness, readiness, and the application as configured from the environment.

use wiremock::MockServer;

use crate::fakes::{mount_twilio, provider_vars, twilio_error};
use crate::helpers::TestApp;

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
    let app = TestApp::builder().spawn().await;

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
    let app = TestApp::builder().real_providers().spawn().await;

    let response = app
        .client
        .post(app.url("/api/sms"))
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
    let app = TestApp::builder()
        .env(&provider_vars(&twilio.uri(), None))
        .env(&[("CIRCUIT_FAILURES", "1"), ("CIRCUIT_COOLDOWN", "1h")])
        .real_providers()
        .spawn()
        .await;
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
