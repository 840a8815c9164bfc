//! Mock providers on loopback, speaking Twilio's and Vonage's SMS wire formats, and the
//! configuration that points otp-relay at them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";

pub fn twilio_path() -> String {
    format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
}

/// Twilio's 201 for a queued message.
pub fn twilio_accepted() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "sid": "SM0123456789abcdef0123456789abcdef", "status": "queued",
        "to": "+5511966191717", "account_sid": TWILIO_SID
    }))
}

/// Twilio's error reply.
pub fn twilio_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code, "message": message, "status": status,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}")
    }))
}

/// Vonage SMS API success (always HTTP 200).
pub fn vonage_accepted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "message-count": "1",
        "messages": [{"to": "5511966191717", "message-id": "0A0000001234", "status": "0",
                      "remaining-balance": "3.1", "message-price": "0.03", "network": "72405"}]
    }))
}

pub fn vonage_error_500() -> ResponseTemplate {
    ResponseTemplate::new(500).set_body_string("internal error")
}

pub async fn mount_twilio(server: &MockServer, reply: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(reply)
        .mount(server)
        .await;
}

pub async fn mount_vonage(server: &MockServer, reply: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(reply)
        .mount(server)
        .await;
}

/// Variables for Twilio at `twilio` (primary) and, when given, Vonage at `vonage`.
pub fn provider_vars(twilio: &str, vonage: Option<&str>) -> Vec<(String, String)> {
    let mut vars = vec![
        (
            "PROVIDERS",
            if vonage.is_some() {
                "twilio,vonage"
            } else {
                "twilio"
            }
            .to_owned(),
        ),
        ("AUTH_DISABLED", "true".to_owned()),
        ("TWILIO_ACCOUNT_SID", TWILIO_SID.to_owned()),
        ("TWILIO_AUTH_TOKEN", "fake-token".to_owned()),
        ("TWILIO_FROM", "+14155550100".to_owned()),
        ("TWILIO_BASE_URL", twilio.to_owned()),
    ];
    if let Some(vonage) = vonage {
        vars.extend([
            ("VONAGE_API_KEY", "fake-key".to_owned()),
            ("VONAGE_API_SECRET", "fake-secret".to_owned()),
            ("VONAGE_FROM", "AcmeOTP".to_owned()),
            ("VONAGE_SMS_BASE_URL", vonage.to_owned()),
        ]);
    }
    vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// How many requests a mock server received.
pub async fn hits(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

/// Answers with `accept` or `refuse` in a fixed pseudo-random half/half pattern, and
/// counts the acceptances.
pub struct Coin {
    accept: ResponseTemplate,
    refuse: ResponseTemplate,
    calls: AtomicUsize,
    pub accepted: Arc<AtomicUsize>,
}

impl Coin {
    pub fn new(accept: ResponseTemplate, refuse: ResponseTemplate) -> (Coin, Arc<AtomicUsize>) {
        let accepted = Arc::new(AtomicUsize::new(0));
        let coin = Coin {
            accept,
            refuse,
            calls: AtomicUsize::new(0),
            accepted: Arc::clone(&accepted),
        };
        (coin, accepted)
    }
}

impl Respond for Coin {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) as u64;
        // A multiplicative hash: well mixed, repeatable, no dependency.
        let heads = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63) == 1;
        if heads {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            self.accept.clone()
        } else {
            self.refuse.clone()
        }
    }
}

/// A delay longer than the tests' provider timeout.
pub const SLOW: Duration = Duration::from_secs(6);
