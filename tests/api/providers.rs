//! End to end through each real adapter: the QIAM pt_BR body, sent as Latin-1 bytes,
//! reaches a mock of the provider as the right request, and the answer has one shape.

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::TestApp;

const PT_BR_TEXT: &str = "Seu codigo SMS é 482913 e válido por 5 minutos.";

/// What the QIAM extension writes for the pt_BR message: Latin-1 bytes.
fn qiam_latin1_body() -> Vec<u8> {
    let mut body =
        b"{\n  \"mobile\": \"+55 11 96619-1717\",\n  \"totp\": \"Seu codigo SMS ".to_vec();
    body.extend_from_slice(b"\xe9 482913 e v\xe1lido por 5 minutos.\",\n  \"used\": false\n}");
    body
}

async fn send_qiam(app: &TestApp) -> Value {
    let response = app.post_raw("/api/sms", qiam_latin1_body()).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn only_request(server: &MockServer) -> Request {
    let mut requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests.len(),
        1,
        "exactly one request reaches the provider"
    );
    requests.remove(0)
}

pub fn form_field(request: &Request, name: &str) -> String {
    url_decoded(&request.body)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} field"))
}

fn url_decoded(body: &[u8]) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn twilio_end_to_end() {
    let sid = "AC0123456789abcdef0123456789abcdef";
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{sid}/Messages.json")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "SM0123456789abcdef0123456789abcdef", "status": "queued",
            "to": "+5511966191717", "account_sid": sid
        })))
        .mount(&server)
        .await;
    let app = TestApp::builder()
        .env(&[
            ("PROVIDERS", "twilio"),
            ("AUTH_DISABLED", "true"),
            ("TWILIO_ACCOUNT_SID", sid),
            ("TWILIO_AUTH_TOKEN", "e2e-token"),
            ("TWILIO_FROM", "+14155550100"),
            ("TWILIO_BASE_URL", &server.uri()),
        ])
        .real_providers()
        .spawn()
        .await;

    let body = send_qiam(&app).await;

    assert_eq!(body["provider"], "twilio");
    assert_eq!(body["status"], "queued");
    assert_eq!(
        body["provider_message_id"],
        "SM0123456789abcdef0123456789abcdef"
    );
    let request = only_request(&server).await;
    assert_eq!(form_field(&request, "To"), "+5511966191717");
    assert_eq!(form_field(&request, "Body"), PT_BR_TEXT);
}

#[tokio::test]
async fn vonage_end_to_end() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "message-count": "1",
            "messages": [{"to": "5511966191717", "message-id": "0A0000001234", "status": "0",
                          "remaining-balance": "3.1", "message-price": "0.03", "network": "72405"}]
        })))
        .mount(&server)
        .await;
    let app = TestApp::builder()
        .env(&[
            ("PROVIDERS", "vonage"),
            ("AUTH_DISABLED", "true"),
            ("VONAGE_API_KEY", "e2e-key"),
            ("VONAGE_API_SECRET", "e2e-secret"),
            ("VONAGE_FROM", "AcmeOTP"),
            ("VONAGE_SMS_BASE_URL", &server.uri()),
        ])
        .real_providers()
        .spawn()
        .await;

    let body = send_qiam(&app).await;

    assert_eq!(body["provider"], "vonage");
    assert_eq!(body["provider_message_id"], "0A0000001234");
    let request = only_request(&server).await;
    assert_eq!(form_field(&request, "to"), "5511966191717");
    assert_eq!(form_field(&request, "text"), PT_BR_TEXT);
    assert_eq!(
        form_field(&request, "client-ref"),
        body["id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn sendpulse_end_to_end() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "e2e-access-token", "token_type": "Bearer", "expires_in": 3600
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/sms/send"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "result": true, "campaign_id": 2623085, "counters": {"exceptions": 0, "sends": 1}
        })))
        .mount(&server)
        .await;
    let app = TestApp::builder()
        .env(&[
            ("PROVIDERS", "sendpulse"),
            ("AUTH_DISABLED", "true"),
            ("SENDPULSE_CLIENT_ID", "e2e-id"),
            ("SENDPULSE_CLIENT_SECRET", "e2e-secret"),
            ("SENDPULSE_SENDER", "Acme"),
            ("SENDPULSE_BASE_URL", &server.uri()),
        ])
        .real_providers()
        .spawn()
        .await;

    let body = send_qiam(&app).await;

    assert_eq!(body["provider"], "sendpulse");
    assert_eq!(body["provider_message_id"], "2623085");
    let requests = server.received_requests().await.unwrap();
    let sends: Vec<&Request> = requests
        .iter()
        .filter(|r| r.url.path() == "/sms/send")
        .collect();
    assert_eq!(sends.len(), 1);
    let sent: Value = serde_json::from_slice(&sends[0].body).unwrap();
    assert_eq!(sent["phones"], json!(["5511966191717"]));
    assert_eq!(sent["body"], PT_BR_TEXT);
}

#[tokio::test]
async fn telegram_gateway_end_to_end() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sendVerificationMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "result": {"request_id": "7d3c1f2a9b", "phone_number": "+5511966191717",
                       "request_cost": 0.01, "delivery_status": {"status": "sent", "updated_at": 1732752000}}
        })))
        .mount(&server)
        .await;
    let app = TestApp::builder()
        .env(&[
            ("PROVIDERS", "telegram"),
            ("DEFAULT_CHANNEL", "telegram"),
            ("AUTH_DISABLED", "true"),
            ("TELEGRAM_GATEWAY_TOKEN", "e2e-gateway-token"),
            ("TELEGRAM_GATEWAY_BASE_URL", &server.uri()),
        ])
        .real_providers()
        .spawn()
        .await;

    let body = send_qiam(&app).await;

    assert_eq!(body["provider"], "telegram");
    assert_eq!(body["channel"], "telegram");
    assert_eq!(body["status"], "sent");
    assert_eq!(body["provider_message_id"], "7d3c1f2a9b");
    let request = only_request(&server).await;
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(sent["phone_number"], "+5511966191717");
    assert_eq!(sent["code"], "482913");
    assert_eq!(sent["payload"], body["id"]);
}
