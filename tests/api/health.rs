//! Liveness, readiness, and the application as configured from the environment.

use otp_relay::startup::Application;

use crate::helpers::{spawn_app, test_config};

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

    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["providers"], serde_json::json!({"recorder": "closed"}));
    assert_eq!(
        body["store"],
        serde_json::json!({"backend": "memory", "reachable": true, "degraded": false})
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
