//! Secret hygiene: the send, failure, webhook and configuration-check paths run with
//! distinctive fake credentials, codes, texts and numbers; no log line (every level, the
//! whole test binary's capture), no answer body or header and no output of the
//! `check` command may contain any of them, except numbers in masked form.
//!
//! `a_leaking_log_line_is_caught` proves the check can fail: a provider that logs its
//! token makes the same assertion panic.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use otp_relay_providers::{
    Channel, DeliveryStatus, MessageProvider, OutboundMessage, ProviderError, Receipt,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{captured_logs_without_timestamps, run_binary, TestApp};

const TWILIO_SID: &str = "AC5f1e2d3c4b5a69788796a5b4c3d2e1f0";
const TWILIO_TOKEN: &str = "hygTwilioTokenQvXkLp";
const VONAGE_KEY: &str = "hygvonkey";
const VONAGE_SECRET: &str = "hygVonageSecretMnTb";
const VONAGE_SIGNATURE_SECRET: &str = "hygVonageSigSecretPfLd";
const GATEWAY_TOKEN: &str = "hygGatewayTokenKeYh";
const SENDPULSE_SECRET: &str = "hygSendpulseSecretWqZc";
const API_KEY: &str = "hygApiKeyZrWqTt";
const PUBLIC: &str = "https://hygiene.example.com";

const SENT_NUMBER: &str = "+55 31 98765-0419";
const FAILED_NUMBER: &str = "+55 41 99876-3152";
const SENT_CODE: &str = "73915846";
const FAILED_CODE: &str = "60428317";
const WORDS: &str = "Hygiene passphrase quokka";

/// What must never appear anywhere.
const SECRETS: &[&str] = &[
    TWILIO_TOKEN,
    VONAGE_SECRET,
    VONAGE_SIGNATURE_SECRET,
    GATEWAY_TOKEN,
    SENDPULSE_SECRET,
    API_KEY,
    SENT_CODE,
    FAILED_CODE,
    WORDS,
    "quokka",
    // The numbers in every unmasked form: E.164 digits and national numbers.
    "5531987650419",
    "31987650419",
    "5541998763152",
    "41998763152",
];

/// Panics naming each secret found in `text`.
fn assert_no_leaks(what: &str, text: &str, secrets: &[&str]) {
    let found: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|secret| text.contains(secret))
        .collect();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| found.iter().any(|secret| line.contains(secret)))
        .take(5)
        .collect();
    assert!(found.is_empty(), "{what} contain {found:?}: {lines:#?}");
}

/// Every answer seen: status, headers and body, as text.
#[derive(Default)]
struct Answers(Vec<String>);

impl Answers {
    async fn keep(&mut self, response: reqwest::Response) -> (u16, serde_json::Value) {
        let status = response.status().as_u16();
        let mut text = format!("{status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = response.text().await.unwrap();
        text.push_str(&body);
        self.0.push(text);
        (status, serde_json::from_str(&body).unwrap_or_default())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn twilio_signature(url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn form(params: &[(&str, &str)]) -> String {
    reqwest::Url::parse_with_params("http://x/", params)
        .unwrap()
        .query()
        .unwrap_or_default()
        .to_owned()
}

fn vars(twilio: &str, vonage: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("PROVIDERS", "twilio,vonage,telegram"),
        ("AUTH_API_KEYS", API_KEY),
        ("PUBLIC_BASE_URL", PUBLIC),
        ("TWILIO_ACCOUNT_SID", TWILIO_SID),
        ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN),
        ("TWILIO_FROM", "+14155550100"),
        ("TWILIO_BASE_URL", twilio),
        ("VONAGE_API_KEY", VONAGE_KEY),
        ("VONAGE_API_SECRET", VONAGE_SECRET),
        ("VONAGE_FROM", "AcmeOTP"),
        ("VONAGE_SMS_BASE_URL", vonage),
        ("VONAGE_SIGNATURE_SECRET", VONAGE_SIGNATURE_SECRET),
        ("VONAGE_SIGNATURE_METHOD", "sha256"),
        ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
        ("TELEGRAM_GATEWAY_BASE_URL", vonage),
    ];
    vars.extend_from_slice(extra);
    vars.into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_an_answer_or_the_check_output() {
    let mut answers = Answers::default();

    // A successful send through Twilio, whose reply echoes the number and the text.
    let twilio_ok = MockServer::start().await;
    let sid = "SM5f1e2d3c4b5a69788796a5b4c3d2e1f0";
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": sid, "status": "queued", "to": "+5531987650419",
            "body": format!("{WORDS} {SENT_CODE}"), "account_sid": TWILIO_SID
        })))
        .mount(&twilio_ok)
        .await;
    let unused = MockServer::start().await;
    let app = TestApp::builder()
        .env(&vars(&twilio_ok.uri(), &unused.uri(), &[]))
        .real_providers()
        .spawn()
        .await;
    let response = app
        .client
        .post(app.url("/api/sms"))
        .bearer_auth(API_KEY)
        .header("Content-Type", "application/json")
        .body(json!({"mobile": SENT_NUMBER, "totp": format!("{WORDS} {SENT_CODE}")}).to_string())
        .send()
        .await
        .unwrap();
    let (status, sent) = answers.keep(response).await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["id"].as_str().unwrap().to_owned();
    let record = app
        .client
        .get(app.url(&format!("/v1/messages/{id}")))
        .header("X-API-Key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(answers.keep(record).await.0, 200);

    // Webhooks: a Twilio report naming the number, signed and forged; a Vonage receipt;
    // a Telegram Gateway report.
    let url = format!("{PUBLIC}/webhooks/twilio");
    let report = [
        ("MessageSid", sid),
        ("MessageStatus", "delivered"),
        ("To", "+5531987650419"),
        ("AccountSid", TWILIO_SID),
    ];
    for signature in [twilio_signature(&url, &report), "Zm9yZ2Vk".to_owned()] {
        let response = app
            .client
            .post(app.url("/webhooks/twilio"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", signature)
            .body(form(&report))
            .send()
            .await
            .unwrap();
        answers.keep(response).await;
    }
    let timestamp = unix_now().to_string();
    let mut receipt = vec![
        ("messageId", "0A00000HYG01"),
        ("msisdn", "5531987650419"),
        ("status", "delivered"),
        ("err-code", "0"),
        ("timestamp", timestamp.as_str()),
    ];
    receipt.sort();
    let signed: String = receipt.iter().map(|(k, v)| format!("&{k}={v}")).collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(VONAGE_SIGNATURE_SECRET.as_bytes()).unwrap();
    mac.update(signed.as_bytes());
    let sig = hex(&mac.finalize().into_bytes());
    receipt.push(("sig", &sig));
    let response = app
        .client
        .post(app.url("/webhooks/vonage"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form(&receipt))
        .send()
        .await
        .unwrap();
    assert_eq!(answers.keep(response).await.0, 200);
    let report = json!({"request_id": "hyg-request", "phone_number": "+5531987650419",
                        "delivery_status": {"status": "delivered", "updated_at": unix_now()}})
    .to_string();
    let key = Sha256::digest(GATEWAY_TOKEN.as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{timestamp}\n{report}").as_bytes());
    let response = app
        .client
        .post(app.url("/webhooks/telegram-gateway"))
        .header("Content-Type", "application/json")
        .header("X-Request-Timestamp", &timestamp)
        .header("X-Request-Signature", hex(&mac.finalize().into_bytes()))
        .body(report)
        .send()
        .await
        .unwrap();
    assert_eq!(answers.keep(response).await.0, 200);

    // A failing send: Twilio's 500 page and Vonage's refusal echo the number, the text
    // and the credentials the request carried.
    let twilio_down = MockServer::start().await;
    let echo = format!("{FAILED_NUMBER} 5541998763152 {WORDS} {FAILED_CODE} {TWILIO_TOKEN}");
    Mock::given(method("POST"))
        .and(path_regex(r"/Messages\.json$"))
        .respond_with(ResponseTemplate::new(500).set_body_string(format!("upstream error: {echo}")))
        .mount(&twilio_down)
        .await;
    let vonage_refusing = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "message-count": "1",
            "messages": [{"status": "4", "to": "5541998763152",
                          "error-text": format!("Bad Credentials api_secret={VONAGE_SECRET} text={WORDS} {FAILED_CODE}")}]
        })))
        .mount(&vonage_refusing)
        .await;
    let failing = TestApp::builder()
        .env(&vars(&twilio_down.uri(), &vonage_refusing.uri(), &[]))
        .real_providers()
        .spawn()
        .await;
    let response = failing
        .client
        .post(failing.url("/v1/messages"))
        .header("Authorization", format!("Bearer {API_KEY}"))
        .header("Content-Type", "application/json")
        .body(
            json!({"mobile": FAILED_NUMBER, "message": format!("{WORDS} {FAILED_CODE}")})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let (status, failed) = answers.keep(response).await;
    assert!(status >= 500, "{status} {failed}");
    // A wrong key, and a right key sent where a wrong one is expected, are refused
    // without being echoed.
    let response = failing
        .client
        .post(failing.url("/api/sms"))
        .bearer_auth(format!("{API_KEY}x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answers.keep(response).await.0, 401);

    // The configuration check, at trace level, with probes whose replies hold secrets;
    // and a configuration it refuses.
    let probes = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{TWILIO_SID}.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": TWILIO_SID, "status": "active", "type": "Full", "auth_token": TWILIO_TOKEN
        })))
        .mount(&probes)
        .await;
    Mock::given(method("GET"))
        .and(path("/account/get-balance"))
        .respond_with(
            ResponseTemplate::new(401).set_body_string(format!("bad secret {VONAGE_SECRET}")),
        )
        .mount(&probes)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/access_token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client", "message": format!("client_secret {SENDPULSE_SECRET} refused")
        })))
        .mount(&probes)
        .await;
    let mut check_vars = vars(
        &probes.uri(),
        &probes.uri(),
        &[
            ("RUST_LOG", "trace"),
            ("LOG_FORMAT", "json"),
            ("SENDPULSE_CLIENT_ID", "hygiene-client"),
            ("SENDPULSE_CLIENT_SECRET", SENDPULSE_SECRET),
            ("SENDPULSE_SENDER", "Acme"),
        ],
    );
    check_vars.push(("SENDPULSE_BASE_URL".into(), probes.uri()));
    check_vars.retain(|(k, _)| k != "PROVIDERS");
    check_vars.push((
        "PROVIDERS".into(),
        "twilio,vonage,sendpulse,telegram".into(),
    ));
    let checked = run_binary(&["check"], &check_vars).await;
    assert_eq!(checked.status.code(), Some(1), "{}", output(&checked));
    let mut refused_vars = check_vars.clone();
    refused_vars.push(("TWILIO_ACCOUNT_SID".into(), "not-a-sid".into()));
    let refused = run_binary(&["check"], &refused_vars).await;
    assert_eq!(refused.status.code(), Some(2), "{}", output(&refused));

    let logs = captured_logs_without_timestamps();
    // The events were captured, so the absence of secrets below means something.
    for expected in [
        id.as_str(),
        "+55319*****19",
        "+55419*****52",
        "delivery report",
    ] {
        assert!(logs.contains(expected), "{expected} should be logged");
    }
    assert!(
        output(&checked).contains("ok   twilio"),
        "{}",
        output(&checked)
    );
    assert_no_leaks("the log lines", &logs, SECRETS);
    for answer in &answers.0 {
        assert_no_leaks("the answers", answer, SECRETS);
    }
    assert_no_leaks("the check output", &output(&checked), SECRETS);
    assert_no_leaks("the refused check output", &output(&refused), SECRETS);
}

fn output(output: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---- The check can fail ---------------------------------------------------------------

const LEAKED_TOKEN: &str = "hygLeakedCanaryTokenBv";

/// A provider that logs its credential, as careless code would.
struct LeakyProvider;

#[async_trait]
impl MessageProvider for LeakyProvider {
    fn name(&self) -> &'static str {
        "leaky"
    }

    fn channels(&self) -> &[Channel] {
        &Channel::ALL
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        tracing::trace!(token = LEAKED_TOKEN, "calling the provider");
        Ok(Receipt::new(
            "leaky",
            Some(message.id.clone()),
            DeliveryStatus::Queued,
            None,
        ))
    }
}

#[tokio::test]
async fn a_leaking_log_line_is_caught() {
    let app = TestApp::builder()
        .providers(vec![Arc::new(LeakyProvider)])
        .spawn()
        .await;
    let response = app
        .post_json(
            "/api/sms",
            &json!({"mobile": "+5511966191717", "totp": "Code 5170"}),
        )
        .await;
    assert_eq!(response.status(), 200);

    let logs = captured_logs_without_timestamps();
    let caught = std::panic::catch_unwind(|| {
        assert_no_leaks("the log lines", &logs, &[LEAKED_TOKEN]);
    });
    assert!(caught.is_err(), "the leaked token went unnoticed");
}
