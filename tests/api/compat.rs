//! Other identity servers' payloads, byte for byte as each product sends them.

use crate::helpers::TestApp;

const KEY: &str = "compat-key-31337";

async fn app() -> TestApp {
    TestApp::builder()
        .env(&[("AUTH_API_KEYS", KEY)])
        .spawn()
        .await
}

async fn post(
    app: &TestApp,
    path: &str,
    content_type: &str,
    authorization: &str,
    body: &'static str,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("Content-Type", content_type)
        .header("Authorization", authorization)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// authentik's generic SMS provider: `requests.post(url, json=payload, headers=...)`.
const AUTHENTIK_BODY: &str = r#"{"From": "+15005550006", "To": "+5511966191717", "Body": "482913", "Message": "Use this code to authenticate in authentik: 482913"}"#;

#[tokio::test]
async fn authentik_with_bearer_or_basic_auth() {
    let app = app().await;
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("authentik:{KEY}"))
    );

    let bearer = post(
        &app,
        "/v1/compat/authentik",
        "application/json",
        &format!("Bearer {KEY}"),
        AUTHENTIK_BODY,
    )
    .await;
    let basic = post(
        &app,
        "/v1/compat/authentik",
        "application/json",
        &basic,
        AUTHENTIK_BODY,
    )
    .await;
    let wrong = post(
        &app,
        "/v1/compat/authentik",
        "application/json",
        "Bearer nope",
        AUTHENTIK_BODY,
    )
    .await;

    assert_eq!(bearer.status(), 200);
    assert_eq!(basic.status(), 200);
    assert_eq!(wrong.status(), 401);
    let received = app.recorder().received();
    assert_eq!(received.len(), 2);
    for message in received {
        assert_eq!(message.to, "+5511966191717");
        assert_eq!(
            message.text,
            "Use this code to authenticate in authentik: 482913"
        );
        assert_eq!(message.code.as_deref(), Some("482913"));
    }
}

#[tokio::test]
async fn keycloak_mfa_plugins_json_and_form() {
    let app = app().await;
    // ApiSmsService builds the JSON by hand: message, receiver, sender, no spaces.
    let json = r#"{"text":"Your SMS code is 735194","to":"+4917612345678","from":"Keycloak"}"#;
    // The urlencode variant: the same attributes, URL-encoded, in the same order.
    let form = "text=Your+SMS+code+is+735195&to=%2B4917612345678&from=Keycloak";

    let json = post(
        &app,
        "/v1/compat/keycloak-mfa-plugins",
        "application/json",
        KEY,
        json,
    )
    .await;
    let form = post(
        &app,
        "/v1/compat/keycloak-mfa-plugins",
        "application/x-www-form-urlencoded",
        KEY,
        form,
    )
    .await;

    assert_eq!(json.status(), 200);
    assert_eq!(form.status(), 200);
    let received = app.recorder().received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|m| m.to == "+4917612345678"));
    let texts: Vec<&str> = received.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["Your SMS code is 735194", "Your SMS code is 735195"]
    );
}
