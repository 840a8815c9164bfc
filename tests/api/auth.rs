//! Caller access: API keys, allowed networks, trusted proxies.

use crate::helpers::{problem, spawn_app, TestApp};

const BODY: &str = r#"{"mobile": "+5511966191717", "totp": "Your code is 246810"}"#;

async fn send(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/sms"))
        .header("Content-Type", "application/json")
        .body(BODY);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn api_keys_are_required_and_checked() {
    let app = spawn_app(&[("AUTH_API_KEYS", "first-key, second-key")]).await;

    let missing = send(&app, &[]).await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    problem(missing, 401, "unauthorized").await;
    problem(
        send(&app, &[("Authorization", "Bearer wrong-key")]).await,
        401,
        "unauthorized",
    )
    .await;
    problem(
        send(&app, &[("X-API-Key", "first-key-but-longer")]).await,
        401,
        "unauthorized",
    )
    .await;
    assert!(app.recorder().received().is_empty());

    assert_eq!(
        send(&app, &[("Authorization", "Bearer first-key")])
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&app, &[("Authorization", "bearer second-key")])
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&app, &[("X-API-Key", "second-key")]).await.status(),
        200
    );
    assert_eq!(app.recorder().received().len(), 3);
}

#[tokio::test]
async fn allowed_networks_admit_callers_without_headers() {
    let allowed = spawn_app(&[("AUTH_ALLOWED_CIDRS", "127.0.0.0/8")]).await;
    let elsewhere = spawn_app(&[("AUTH_ALLOWED_CIDRS", "10.0.0.0/8,192.168.7.7")]).await;

    assert_eq!(send(&allowed, &[]).await.status(), 200);
    problem(send(&elsewhere, &[]).await, 403, "forbidden").await;
    assert!(elsewhere.recorder().received().is_empty());
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let behind_proxy = spawn_app(&[
        ("AUTH_ALLOWED_CIDRS", "10.0.0.0/8"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let no_proxy = spawn_app(&[("AUTH_ALLOWED_CIDRS", "10.0.0.0/8")]).await;

    assert_eq!(
        send(&behind_proxy, &[("X-Forwarded-For", "10.20.30.40")])
            .await
            .status(),
        200
    );
    problem(
        send(
            &behind_proxy,
            &[("X-Forwarded-For", "10.20.30.40, 203.0.113.5")],
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // The header means nothing from a peer that is not a trusted proxy.
    problem(
        send(&no_proxy, &[("X-Forwarded-For", "10.20.30.40")]).await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn access_can_be_disabled_on_purpose() {
    let app = spawn_app(&[("AUTH_DISABLED", "true"), ("AUTH_API_KEYS", "unused")]).await;

    assert_eq!(send(&app, &[]).await.status(), 200);
}
