//! Delivery receipts: records, the status endpoint, and each provider's signed
//! callback, with signatures computed here from each provider's documented scheme.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fakes::{mount_twilio, mount_vonage, provider_vars, twilio_accepted, vonage_accepted};
use crate::helpers::{problem, TestApp};

const PUBLIC: &str = "https://otp.example.com";
const QIAM: &str = "{\n  \"mobile\": \"+5511966191717\",\n  \"totp\": \"Your SMS code is 123456\",\n  \"used\": false\n}";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn send(app: &TestApp) -> Value {
    let response = app.post_raw("/api/sms", QIAM).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Sends the QIAM body with one extra header; the id of the message.
async fn send_with(app: &TestApp, (name, value): (&str, &str)) -> String {
    let sent = app
        .client
        .post(app.url("/api/sms"))
        .header("Content-Type", "application/json")
        .header(name, value)
        .body(QIAM)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let sent: Value = sent.json().await.unwrap();
    sent["id"].as_str().unwrap().to_owned()
}

async fn get_record(app: &TestApp, id: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/v1/messages/{id}")))
        .send()
        .await
        .unwrap()
}

pub async fn status_of(app: &TestApp, id: &str) -> Value {
    let response = get_record(app, id).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Twilio: base64 HMAC-SHA1, keyed by the auth token, over the URL followed by each
/// parameter name and value, sorted by name.
pub fn twilio_signature(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut text = url.to_owned();
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"fake-token").unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub async fn twilio_callback(
    app: &TestApp,
    params: &[(&str, &str)],
    signature: Option<String>,
) -> reqwest::Response {
    let body = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&");
    let mut request = app
        .client
        .post(app.url("/webhooks/twilio"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn twilio_reports_update_the_record_and_never_move_it_back() {
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let app = TestApp::builder()
        .env(&provider_vars(&twilio.uri(), None))
        .env(&[("PUBLIC_BASE_URL", PUBLIC)])
        .real_providers()
        .spawn()
        .await;
    let sent = send(&app).await;
    let id = sent["id"].as_str().unwrap();
    let sid = "SM0123456789abcdef0123456789abcdef";
    let record = status_of(&app, id).await;
    assert_eq!(record["status"], "queued");
    assert_eq!(record["provider_message_id"], sid);
    assert_eq!(record["to"], "+55119*****17");
    let url = format!("{PUBLIC}/webhooks/twilio");

    let delivered = [
        ("MessageSid", sid),
        ("MessageStatus", "delivered"),
        ("AccountSid", crate::fakes::TWILIO_SID),
    ];
    let forged = twilio_callback(
        &app,
        &[("MessageSid", sid), ("MessageStatus", "failed")],
        Some(twilio_signature(&url, &delivered)),
    )
    .await;
    problem(forged, 401, "invalid_signature").await;
    problem(
        twilio_callback(&app, &delivered, None).await,
        401,
        "invalid_signature",
    )
    .await;
    assert_eq!(
        status_of(&app, id).await["status"],
        "queued",
        "refused callbacks change nothing"
    );

    // Twilio only POSTs: a GET, even a signed one, is not a callback.
    let query = serde_urlencoded_like(
        &delivered
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
    );
    let get = app
        .client
        .get(app.url(&format!("/webhooks/twilio?{query}")))
        .header("X-Twilio-Signature", twilio_signature(&url, &delivered))
        .send()
        .await
        .unwrap();
    problem(get, 405, "method_not_allowed").await;
    assert_eq!(status_of(&app, id).await["status"], "queued");

    let ok = twilio_callback(&app, &delivered, Some(twilio_signature(&url, &delivered))).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(status_of(&app, id).await["status"], "delivered");

    let late = [("MessageSid", sid), ("MessageStatus", "sent")];
    let late = twilio_callback(&app, &late, Some(twilio_signature(&url, &late))).await;
    assert_eq!(late.status(), 200);
    let record = status_of(&app, id).await;
    assert_eq!(
        record["status"], "delivered",
        "a late sent does not undo delivered"
    );
    assert_eq!(record["provider_status"], "delivered");

    let failed = [("MessageSid", sid), ("MessageStatus", "failed")];
    let failed = twilio_callback(&app, &failed, Some(twilio_signature(&url, &failed))).await;
    assert_eq!(failed.status(), 200);
    let record = status_of(&app, id).await;
    assert_eq!(record["status"], "delivered", "a final status is final");
    assert_eq!(record["provider_status"], "delivered");
}

#[tokio::test]
async fn a_record_is_shown_only_to_the_caller_that_sent_it() {
    let app = TestApp::builder()
        .env(&[("AUTH_API_KEYS", "caller-a,caller-b")])
        .spawn()
        .await;
    let get = |id: String, key: &'static str| {
        app.client
            .get(app.url(&format!("/v1/messages/{id}")))
            .header("X-API-Key", key)
            .send()
    };
    let id = send_with(&app, ("X-API-Key", "caller-a")).await;

    let own = get(id.clone(), "caller-a").await.unwrap();
    assert_eq!(own.status(), 200);
    let own: Value = own.json().await.unwrap();
    assert_eq!(own["id"], id.as_str());
    assert!(own.get("owner").is_none(), "{own}");
    let other = get(id, "caller-b").await.unwrap();
    problem(other, 404, "message_not_found").await;
}

#[tokio::test]
async fn a_caller_of_unknown_address_reads_no_record() {
    let app = TestApp::builder()
        .env(&[("AUTH_DISABLED", "true"), ("TRUSTED_PROXIES", "127.0.0.1")])
        .spawn()
        .await;
    let id = send_with(&app, ("X-Forwarded-For", "junk")).await;

    let read = app
        .client
        .get(app.url(&format!("/v1/messages/{id}")))
        .header("X-Forwarded-For", "junk")
        .send()
        .await
        .unwrap();
    problem(read, 404, "message_not_found").await;
}

/// Vonage SMS API: each parameter as `&name=value` (with `&` and `=` in values
/// replaced by `_`), sorted by name, HMAC-SHA256 keyed by the signature secret, hex.
fn vonage_signed(params: &[(&str, String)]) -> Vec<(String, String)> {
    let mut sorted: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    sorted.sort();
    let text: String = sorted
        .iter()
        .map(|(k, v)| format!("&{k}={}", v.replace(['&', '='], "_")))
        .collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"vonage-signature-secret").unwrap();
    mac.update(text.as_bytes());
    sorted.push(("sig".into(), hex(&mac.finalize().into_bytes())));
    sorted
}

/// An app sending through Vonage alone (a fake that accepts), its webhooks signed with
/// HMAC-SHA256 and the secret `vonage-signature-secret`; the fake lives as long as it.
async fn signed_vonage_app() -> (TestApp, MockServer) {
    let vonage = MockServer::start().await;
    mount_vonage(&vonage, vonage_accepted()).await;
    let mut vars = provider_vars("http://127.0.0.1:9", Some(&vonage.uri()));
    vars.retain(|(k, _)| !k.starts_with("TWILIO") && k != "PROVIDERS");
    let app = TestApp::builder()
        .env(&vars)
        .env(&[
            ("PROVIDERS", "vonage"),
            ("VONAGE_SIGNATURE_SECRET", "vonage-signature-secret"),
            ("VONAGE_SIGNATURE_METHOD", "sha256"),
        ])
        .real_providers()
        .spawn()
        .await;
    (app, vonage)
}

#[tokio::test]
async fn vonage_receipts_and_status_webhooks_are_verified() {
    let (app, _vonage) = signed_vonage_app().await;
    let id = send(&app).await["id"].as_str().unwrap().to_owned();
    let receipt = |status: &str, timestamp: u64| {
        vonage_signed(&[
            ("messageId", "0A0000001234".into()),
            ("msisdn", "5511966191717".into()),
            ("status", status.into()),
            ("err-code", "0".into()),
            ("nonce", "6e1a1b3c-aaaa".into()),
            ("timestamp", timestamp.to_string()),
        ])
    };
    let post_form = |params: Vec<(String, String)>| {
        let body = serde_urlencoded_like(&params);
        app.client
            .post(app.url("/webhooks/vonage"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    let stale = post_form(receipt("delivered", unix_now() - 3600))
        .await
        .unwrap();
    problem(stale, 401, "invalid_signature").await;
    let mut unsigned = receipt("delivered", unix_now());
    unsigned.retain(|(k, _)| k != "sig");
    problem(post_form(unsigned).await.unwrap(), 401, "invalid_signature").await;
    let mut tampered = receipt("delivered", unix_now());
    tampered[0].1 = "0B9999999999".into();
    problem(post_form(tampered).await.unwrap(), 401, "invalid_signature").await;
    assert_eq!(status_of(&app, &id).await["status"], "queued");

    assert_eq!(
        post_form(receipt("delivered", unix_now()))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(status_of(&app, &id).await["status"], "delivered");

    // Messages API: a JWT (HS256, signature secret) whose payload_hash is the body's SHA-256.
    let body = json!({"message_uuid": "0A0000001234", "status": "read", "to": "5511966191717",
                      "timestamp": "2026-11-28T00:00:00Z", "channel": "sms"})
    .to_string();
    let token = vonage_status_token(&body, "e2e-jti");
    let altered = body.replace("read", "rejected");
    problem(
        post_vonage_status(&app, altered, &token).await,
        401,
        "invalid_signature",
    )
    .await;
    assert_eq!(post_vonage_status(&app, body, &token).await.status(), 200);
    assert_eq!(status_of(&app, &id).await["provider_status"], "read");
}

#[tokio::test]
async fn vonage_receipts_sent_as_get_are_verified_too() {
    let (app, _vonage) = signed_vonage_app().await;
    let id = send(&app).await["id"].as_str().unwrap().to_owned();
    let receipt = vonage_signed(&[
        ("messageId", "0A0000001234".into()),
        ("msisdn", "5511966191717".into()),
        ("status", "delivered".into()),
        ("err-code", "0".into()),
        ("nonce", "6e1a1b3c-bbbb".into()),
        ("timestamp", unix_now().to_string()),
    ]);
    let get = |params: &[(String, String)]| {
        let query = serde_urlencoded_like(params);
        app.client
            .get(app.url(&format!("/webhooks/vonage?{query}")))
            .send()
    };

    let mut unsigned = receipt.clone();
    unsigned.retain(|(k, _)| k != "sig");
    problem(get(&unsigned).await.unwrap(), 401, "invalid_signature").await;
    assert_eq!(status_of(&app, &id).await["status"], "queued");

    assert_eq!(get(&receipt).await.unwrap().status(), 200);
    assert_eq!(status_of(&app, &id).await["status"], "delivered");
}

/// The `Authorization` bearer token Vonage signs a Messages API status webhook with: an
/// HS256 JWT (the signature secret) whose `payload_hash` is the body's SHA-256.
pub fn vonage_status_token(body: &str, jti: &str) -> String {
    let claims = json!({"iat": unix_now(), "jti": jti, "iss": "Vonage",
                        "payload_hash": hex(&Sha256::digest(body.as_bytes()))});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"vonage-signature-secret"),
    )
    .unwrap()
}

/// Posts a Messages API status webhook with `token`.
pub async fn post_vonage_status(app: &TestApp, body: String, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/webhooks/vonage"))
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

fn serde_urlencoded_like(params: &[(String, String)]) -> String {
    reqwest::Url::parse_with_params("http://x/", params)
        .unwrap()
        .query()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn telegram_gateway_reports_are_verified() {
    let gateway = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sendVerificationMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "result": {"request_id": "7d3c1f2a9b", "phone_number": "+5511966191717", "request_cost": 0.01}
        })))
        .mount(&gateway)
        .await;
    let app = TestApp::builder()
        .env(&[
            ("PROVIDERS", "telegram"),
            ("DEFAULT_CHANNEL", "telegram"),
            ("AUTH_DISABLED", "true"),
            ("TELEGRAM_GATEWAY_TOKEN", "gateway-token-e2e"),
            ("TELEGRAM_GATEWAY_BASE_URL", &gateway.uri()),
        ])
        .real_providers()
        .spawn()
        .await;
    let id = send(&app).await["id"].as_str().unwrap().to_owned();
    let body =
        json!({"request_id": "7d3c1f2a9b", "phone_number": "+5511966191717", "request_cost": 0.01,
                      "delivery_status": {"status": "delivered", "updated_at": unix_now()}})
        .to_string();
    // hex HMAC-SHA256, keyed by SHA-256 of the token, over timestamp + "\n" + body.
    let sign = |timestamp: u64, body: &str| {
        let key = Sha256::digest(b"gateway-token-e2e");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{timestamp}\n{body}").as_bytes());
        hex(&mac.finalize().into_bytes())
    };
    let post = |timestamp: u64, signature: String, body: String| {
        app.client
            .post(app.url("/webhooks/telegram-gateway"))
            .header("Content-Type", "application/json")
            .header("X-Request-Timestamp", timestamp.to_string())
            .header("X-Request-Signature", signature)
            .body(body)
            .send()
    };

    let unsigned = app
        .client
        .post(app.url("/webhooks/telegram-gateway"))
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    problem(unsigned, 401, "invalid_signature").await;
    let old = unix_now() - 3600;
    problem(
        post(old, sign(old, &body), body.clone()).await.unwrap(),
        401,
        "invalid_signature",
    )
    .await;
    let now = unix_now();
    problem(
        post(now, sign(now, "{}"), body.clone()).await.unwrap(),
        401,
        "invalid_signature",
    )
    .await;
    assert_eq!(status_of(&app, &id).await["status"], "queued");

    // A report of code verification only: authentic, acknowledged with exactly 200 (any
    // other answer is repeated up to 10 times), and nothing changes.
    let verification_only = json!({"request_id": "7d3c1f2a9b", "phone_number": "+5511966191717",
        "request_cost": 0.01, "verification_status": {"status": "code_valid", "updated_at": now}})
    .to_string();
    let answer = post(now, sign(now, &verification_only), verification_only)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(status_of(&app, &id).await["status"], "queued");

    // https://core.telegram.org/gateway/api#report-delivery: exactly 200, not 204.
    assert_eq!(
        post(now, sign(now, &body), body).await.unwrap().status(),
        200
    );
    assert_eq!(status_of(&app, &id).await["status"], "delivered");
}

#[tokio::test]
async fn unknown_ids_and_unconfigured_webhooks_are_404_and_reading_needs_access() {
    let app = TestApp::builder()
        .env(&[("AUTH_API_KEYS", "reader-key")])
        .real_providers()
        .spawn()
        .await;

    let unknown = app
        .client
        .get(app.url("/v1/messages/01JD5X3QK8V7N2M4R6T8W0Y2Z4"))
        .header("X-API-Key", "reader-key")
        .send()
        .await
        .unwrap();
    problem(unknown, 404, "message_not_found").await;
    let anonymous = get_record(&app, "01JD5X3QK8V7N2M4R6T8W0Y2Z4").await;
    problem(anonymous, 401, "unauthorized").await;
    let webhook = app
        .client
        .post(app.url("/webhooks/twilio"))
        .body("x")
        .send()
        .await
        .unwrap();
    problem(webhook, 404, "webhook_not_configured").await;
    let unknown_webhook = app
        .client
        .post(app.url("/webhooks/pigeon"))
        .body("x")
        .send()
        .await
        .unwrap();
    problem(unknown_webhook, 404, "webhook_not_configured").await;
}

#[tokio::test]
async fn records_past_the_memory_budget_go_oldest_first() {
    // 1 MiB in all: half of it, 512 KiB, for records. A send's record weighs a few
    // hundred bytes, so 2,000 sends are several times what fits.
    let app = TestApp::builder()
        .env(&[("MEMORY_STORE_MIB", "1")])
        .spawn()
        .await;
    let first = send(&app).await["id"].as_str().unwrap().to_owned();
    assert_eq!(status_of(&app, &first).await["id"], first.as_str());
    for _ in 0..40 {
        let batch = (0..50).map(|_| send(&app));
        futures_util::future::join_all(batch).await;
    }
    let last = send(&app).await["id"].as_str().unwrap().to_owned();
    assert_eq!(status_of(&app, &last).await["id"], last.as_str());
    problem(get_record(&app, &first).await, 404, "message_not_found").await;
}

/// Vonage SMS API: a long message goes as parts, each with its own message-id and
/// delivery receipt. A receipt for any part finds the record, whose status is over all
/// parts: delivered only once every part is. A reply in which only some parts were
/// accepted is still an acceptance (200, no failover: the user would get two codes).
#[tokio::test]
async fn vonage_multipart_receipts_update_the_record_over_all_parts() {
    let vonage = MockServer::start().await;
    mount_vonage(
        &vonage,
        ResponseTemplate::new(200).set_body_json(json!({
            "message-count": "3",
            "messages": [
                {"to": "5511966191717", "message-id": "0A00000000P1", "status": "0"},
                {"to": "5511966191717", "message-id": "0A00000000P2", "status": "0"},
                {"to": "5511966191717", "status": "1", "error-text": "Throttled"}
            ]
        })),
    )
    .await;
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let mut vars = provider_vars(&twilio.uri(), Some(&vonage.uri()));
    vars.retain(|(k, _)| k != "PROVIDERS");
    let app = TestApp::builder()
        .env(&vars)
        .env(&[
            ("PROVIDERS", "vonage,twilio"),
            ("VONAGE_SIGNATURE_SECRET", "vonage-signature-secret"),
            ("VONAGE_SIGNATURE_METHOD", "sha256"),
        ])
        .real_providers()
        .spawn()
        .await;
    let sent = send(&app).await;
    assert_eq!(sent["provider"], "vonage");
    assert_eq!(sent["provider_message_id"], "0A00000000P1");
    assert_eq!(crate::fakes::hits(&twilio).await, 0, "no second code");
    let id = sent["id"].as_str().unwrap().to_owned();

    let receipt = |part: &str| {
        vonage_signed(&[
            ("messageId", part.into()),
            ("msisdn", "5511966191717".into()),
            ("status", "delivered".into()),
            ("err-code", "0".into()),
            ("nonce", format!("nonce-{part}")),
            ("timestamp", unix_now().to_string()),
        ])
    };
    let post_form = |params: Vec<(String, String)>| {
        app.client
            .post(app.url("/webhooks/vonage"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded_like(&params))
            .send()
    };
    assert_eq!(
        post_form(receipt("0A00000000P2")).await.unwrap().status(),
        200
    );
    let record = status_of(&app, &id).await;
    assert_eq!(record["status"], "queued", "part 1 is not delivered yet");
    assert_eq!(
        record["parts"][1],
        json!({"id": "0A00000000P2", "status": "delivered"})
    );
    assert_eq!(
        post_form(receipt("0A00000000P1")).await.unwrap().status(),
        200
    );
    assert_eq!(status_of(&app, &id).await["status"], "delivered");
}
