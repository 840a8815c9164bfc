//! The Vonage adapter against mock SMS and Messages APIs.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    basic_auth, context, form, header, json, message, refused_url, MESSAGE_ID, PT_BR_TEXT,
    SLOWER_THAN_TIMEOUT,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use otp_relay_providers::vonage::{VonageApi, WhatsappTemplate};
use otp_relay_providers::{
    Channel, DeliveryStatus, Env, MessageProvider, Money, ProbeOutcome, ProviderError, Receipt,
    VonageProvider, VonageSettings,
};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "abcd1234";
const SECRET: &str = "Sup3rS3cretValue";
const APP_ID: &str = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab";
const FROM: &str = "14155550100";
const MESSAGE_UUID: &str = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab";
const PRIVATE_PEM: &str = include_str!("fixtures/vonage_test_private.pem");
const PUBLIC_PEM: &str = include_str!("fixtures/vonage_test_public.pem");
const PUBLIC_URL: &str = "https://relay.example.com";

fn sms_settings(base_url: &str) -> VonageSettings {
    VonageSettings {
        api: VonageApi::Sms,
        api_key: Some(KEY.into()),
        api_secret: Some(SecretString::from(SECRET)),
        from: "OTPRelay".into(),
        channels: vec![Channel::Sms],
        application_id: None,
        private_key: None,
        signature_secret: None,
        signature_method: Default::default(),
        whatsapp_template: None,
        sms_base_url: base_url.into(),
        messages_base_url: "http://unused.invalid".into(),
    }
}

/// Messages API settings with a JWT application (`jwt`) or key and secret.
fn messages_settings(base_url: &str, jwt: bool) -> VonageSettings {
    VonageSettings {
        api: VonageApi::Messages,
        api_key: (!jwt).then(|| KEY.into()),
        api_secret: (!jwt).then(|| SecretString::from(SECRET)),
        from: FROM.into(),
        channels: vec![Channel::Sms, Channel::Whatsapp],
        application_id: jwt.then(|| APP_ID.into()),
        private_key: jwt.then(|| SecretString::from(PRIVATE_PEM)),
        signature_secret: None,
        signature_method: Default::default(),
        whatsapp_template: None,
        sms_base_url: "http://unused.invalid".into(),
        messages_base_url: base_url.into(),
    }
}

fn sms_accepted(parts: &[(&str, &str)]) -> ResponseTemplate {
    let messages: Vec<_> = parts
        .iter()
        .map(|(id, status)| {
            json!({"to": "5511966191717", "message-id": id, "status": status,
                   "remaining-balance": "3.14159265", "message-price": "0.03330000",
                   "network": "72405", "client-ref": MESSAGE_ID})
        })
        .collect();
    ResponseTemplate::new(200)
        .set_body_json(json!({"message-count": parts.len().to_string(), "messages": messages}))
}

fn sms_failed(status: &str, error_text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "message-count": "1",
        "messages": [{"status": status, "error-text": error_text}]
    }))
}

fn problem(status: u16, code: &str, title: &str, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(
        json!({
            "type": format!("https://developer.vonage.com/api-errors/messages#{code}"),
            "title": title,
            "detail": detail,
            "instance": "bf0ca0bf927b3b52e3cb03217e1a1ddf"
        })
        .to_string(),
        "application/problem+json",
    )
}

fn accepted() -> ResponseTemplate {
    ResponseTemplate::new(202).set_body_json(json!({"message_uuid": MESSAGE_UUID}))
}

async fn only_request(server: &MockServer) -> Request {
    let mut requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "exactly one request");
    requests.remove(0)
}

fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn queued(id: &str, raw: &str) -> Receipt {
    Receipt::new(
        "vonage",
        Some(id.into()),
        DeliveryStatus::Queued,
        Some(raw.into()),
    )
}

/// An SMS API receipt: priced by the sum of its parts, with the balance after the last
/// (`message-price` and `remaining-balance` in vonage_sms.yml, in the account's EUR).
fn priced(id: &str, cost: &str) -> Receipt {
    Receipt {
        cost: Money::parse(cost, Some("EUR")),
        balance: Money::parse("3.14159265", Some("EUR")),
        ..queued(id, "0")
    }
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    application_id: String,
    iat: u64,
    jti: String,
    exp: u64,
}

/// Verifies the RS256 signature with the fixture public key and returns the claims.
fn jwt_claims(request: &Request) -> Claims {
    let token = header(request, "authorization")
        .strip_prefix("Bearer ")
        .expect("Bearer authorization");
    let key = DecodingKey::from_rsa_pem(PUBLIC_PEM.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).expect("valid JWT");
    assert_eq!(data.header.alg, Algorithm::RS256);
    data.claims
}

// ---- SMS API ---------------------------------------------------------------------------

#[tokio::test]
async fn sms_api_posts_the_exact_form_and_marks_pt_br_unicode() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(sms_accepted(&[("0A0000000123ABCD1", "0")]))
        .expect(1)
        .mount(&server)
        .await;
    let provider =
        VonageProvider::new(sms_settings(&server.uri()), &context(Some(PUBLIC_URL))).unwrap();

    let receipt = provider
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Sms))
        .await
        .unwrap();

    assert_eq!(receipt, priced("0A0000000123ABCD1", "0.03330000"));
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/sms/json");
    assert_eq!(request.url.query(), None, "credentials stay out of the URL");
    assert_eq!(
        header(&request, "content-type"),
        "application/x-www-form-urlencoded"
    );
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(
        form(&request),
        pairs(&[
            ("api_key", KEY),
            ("api_secret", SECRET),
            ("from", "OTPRelay"),
            ("to", "5511966191717"),
            ("text", PT_BR_TEXT),
            ("type", "unicode"),
            ("ttl", "300000"),
            ("client-ref", MESSAGE_ID),
            ("callback", "https://relay.example.com/webhooks/vonage"),
        ])
    );
    // UTF-8 on the wire, percent-encoded: ó = C3 B3, é = C3 A9, á = C3 A1.
    let raw = String::from_utf8(request.body.clone()).unwrap();
    assert!(
        raw.contains("text=Seu+c%C3%B3digo+SMS+%C3%A9+123456+e+v%C3%A1lido+por+5+minutos."),
        "{raw}"
    );
}

#[tokio::test]
async fn sms_api_sends_gsm_text_without_type_and_no_callback_without_public_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .respond_with(sms_accepted(&[("0A0000000123ABCD2", "0")]))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();
    // Extension-table characters ({ } €) and basic ones (é) are still GSM-7.
    let text = "Your code {123456} é 5€";

    provider
        .send(&message(text, Some("123456"), Channel::Sms))
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(
        form(&request),
        pairs(&[
            ("api_key", KEY),
            ("api_secret", SECRET),
            ("from", "OTPRelay"),
            ("to", "5511966191717"),
            ("text", text),
            ("ttl", "300000"),
            ("client-ref", MESSAGE_ID),
        ])
    );
}

#[tokio::test]
async fn sms_api_multipart_success_keeps_every_part_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sms_accepted(&[("PART-1", "0"), ("PART-2", "0")]))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    let receipt = provider
        .send(&message("long text", None, Channel::Sms))
        .await
        .unwrap();

    // Each part gets its own delivery receipt: every id is kept to match them. Two parts
    // at 0.03330000 EUR: the message cost their exact sum.
    let mut expected = priced("PART-1", "0.06660000");
    expected.part_ids = vec!["PART-2".into()];
    assert_eq!(receipt, expected);
}

#[tokio::test]
async fn sms_api_http_200_error_statuses_map_to_precise_errors() {
    let cases: &[(&str, &str, &str)] = &[
        ("2", "Missing to param", "rejected"),
        ("3", "Invalid to address", "rejected"),
        ("4", "Bad Credentials", "unauthorized"),
        ("6", "Unroutable message - rejected", "invalid_recipient"),
        ("7", "Number barred", "recipient_opted_out"),
        ("8", "Partner Account Barred", "account_unusable"),
        ("9", "Partner quota exceeded", "account_unusable"),
        ("11", "Account not enabled for HTTP", "account_unusable"),
        ("14", "Invalid Signature", "unauthorized"),
        // Our configuration: the sender id, the callback URL we sent.
        (
            "15",
            "Illegal Sender Address - rejected",
            "provider_misconfigured",
        ),
        ("23", "Invalid Callback Url", "provider_misconfigured"),
        (
            "29",
            "Non White-listed Destination - rejected",
            "account_unusable",
        ),
        ("33", "Number de-activated", "invalid_recipient"),
        ("99", "Something new", "rejected"),
        ("5", "Internal Error", "unavailable"),
    ];
    for (status, text, code) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(sms_failed(status, text))
            .expect(1)
            .mount(&server)
            .await;
        let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

        let error = provider
            .send(&message("Your code is 123456", None, Channel::Sms))
            .await
            .unwrap_err();

        assert_eq!(error.code(), *code, "status {status}");
        assert_eq!(
            error.is_transient(),
            *status == "5",
            "only status 5 (of these) is transient: {status}"
        );
        assert!(
            error
                .to_string()
                .contains(&format!("status {status}: {text}")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn sms_api_throttled_status_is_rate_limited_and_safe_to_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sms_failed(
            "1",
            "Throughput Rate Exceeded - please wait [ 30 ] and retry",
        ))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();

    assert_eq!(
        error,
        ProviderError::RateLimited {
            detail: "status 1: Throughput Rate Exceeded - please wait [ 30 ] and retry".into(),
            retry_after: None,
        }
    );
    assert!(error.is_safe_to_retry());
}

#[tokio::test]
async fn sms_api_internal_error_is_transient_but_not_safe_to_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sms_failed("5", "Internal Error"))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();

    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "status 5: Internal Error".into()
        }
    );
    assert!(error.is_transient() && !error.is_safe_to_retry());
}

#[tokio::test]
async fn sms_api_reply_with_some_parts_accepted_is_an_acceptance() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "message-count": "2",
            "messages": [
                {"message-id": "PART-1", "status": "0"},
                {"status": "1", "error-text": "Throttled"}
            ]
        })))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    // Part 1 went out: the message is with Vonage, and failing over would send the
    // code twice.
    let receipt = provider
        .send(&message("long text", None, Channel::Sms))
        .await
        .unwrap();

    assert_eq!(receipt, queued("PART-1", "0"));
}

#[tokio::test]
async fn sms_api_error_text_is_scrubbed_of_numbers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sms_failed("6", "Invalid number 5511966191717"))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();

    assert_eq!(
        error,
        ProviderError::InvalidRecipient {
            detail: "status 6: Invalid number ****".into()
        }
    );
}

/// The SMS API answers 200 to failures too, but always as readable JSON with a non-zero
/// part status: a 200 without any failed part is Vonage's acceptance, read or not.
#[tokio::test]
async fn sms_api_unreadable_200_is_an_acceptance_without_id() {
    let replies = [
        ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"),
        ResponseTemplate::new(200).set_body_json(json!({"message-count": "0", "messages": []})),
        ResponseTemplate::new(200)
            .set_body_json(json!({"message-count": "1", "messages": [{"status": "0"}]})),
        // A 2xx other than 200 (a proxy's 202) is an answer too, never a failover.
        ResponseTemplate::new(202).set_body_string(""),
    ];
    for reply in replies {
        accepted_without_id(reply, sms_settings).await;
    }
}

/// Sends an SMS to a Vonage answering `reply`: it must be an acceptance without an id.
async fn accepted_without_id(reply: ResponseTemplate, settings: impl Fn(&str) -> VonageSettings) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(reply)
        .mount(&server)
        .await;
    let provider = VonageProvider::new(settings(&server.uri()), &context(None)).unwrap();

    let receipt = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap();

    assert_eq!(receipt.provider_message_id, None);
    assert_eq!(receipt.status, DeliveryStatus::Queued);
}

#[tokio::test]
async fn sms_api_malformed_replies_are_protocol_errors() {
    let replies = [ResponseTemplate::new(404).set_body_string("Not Found")];
    for (reply, status) in replies.into_iter().zip([404]) {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(reply)
            .mount(&server)
            .await;
        let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

        let error = provider
            .send(&message("Your code is 123456", None, Channel::Sms))
            .await
            .unwrap_err();

        assert!(
            matches!(error, ProviderError::Protocol { status: s, .. } if s == status),
            "{error:?}"
        );
        assert_eq!(error.code(), "protocol");
    }
}

#[tokio::test]
async fn sms_api_reply_echoing_the_form_does_not_pass_the_secret_on() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string(format!(
            "<html>Bad request: api_key={KEY}&api_secret={SECRET}&from=OTPRelay</html>"
        )))
        .expect(1)
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();

    assert_eq!(
        error,
        ProviderError::Protocol {
            status: 400,
            detail:
                "<html>Bad request: api_key=abcd****&api_secret=[redacted]&from=OTPRelay</html>"
                    .into(),
        }
    );
    assert!(!format!("{error} {error:?}").contains(SECRET));
}

#[tokio::test]
async fn sms_api_http_429_and_5xx_are_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "7")
                .set_body_string("Too Many Requests"),
        )
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();
    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "rate_limited");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("<html>Bad gateway</html>"))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();
    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ProviderError::Unavailable { detail } if detail.starts_with("HTTP 503")),
        "{error:?}"
    );
}

#[tokio::test]
async fn sms_api_timeout_is_reported_as_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sms_accepted(&[("ID", "0")]).set_delay(SLOWER_THAN_TIMEOUT))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();

    assert_eq!(error, ProviderError::Timeout);
    assert_eq!(error.code(), "timeout");
}

#[tokio::test]
async fn sms_api_connection_refused_is_connect() {
    let provider = VonageProvider::new(sms_settings(&refused_url()), &context(None)).unwrap();

    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();

    assert!(matches!(error, ProviderError::Connect { .. }), "{error:?}");
    assert_eq!(error.code(), "connect_failed");
    assert!(error.is_safe_to_retry());
}

#[tokio::test]
async fn sms_api_refuses_a_channel_it_does_not_serve_without_sending() {
    let server = MockServer::start().await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();
    assert_eq!(provider.name(), "vonage");
    assert_eq!(provider.channels(), &[Channel::Sms]);

    let error = provider
        .send(&message("Your code is 123456", None, Channel::Whatsapp))
        .await
        .unwrap_err();

    assert_eq!(error.code(), "rejected");
    assert!(server.received_requests().await.unwrap().is_empty());
}

// ---- Messages API ----------------------------------------------------------------------

#[tokio::test]
async fn messages_api_sms_posts_exact_json_with_a_signed_jwt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(accepted())
        .expect(1)
        .mount(&server)
        .await;
    let provider = VonageProvider::new(
        messages_settings(&server.uri(), true),
        &context(Some(PUBLIC_URL)),
    )
    .unwrap();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let receipt = provider
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Sms))
        .await
        .unwrap();

    assert_eq!(receipt, queued(MESSAGE_UUID, "accepted"));
    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/v1/messages");
    assert_eq!(header(&request, "content-type"), "application/json");
    let claims = jwt_claims(&request);
    assert_eq!(claims.application_id, APP_ID);
    assert!(
        claims.iat >= before && claims.iat <= before + 5,
        "{claims:?}"
    );
    assert_eq!(claims.exp, claims.iat + 900);
    assert_eq!(claims.jti.len(), 26, "a ULID: {claims:?}");
    assert_eq!(
        json(&request),
        json!({
            "message_type": "text",
            "channel": "sms",
            "to": "5511966191717",
            "from": FROM,
            "text": PT_BR_TEXT,
            "client_ref": MESSAGE_ID,
            "ttl": 300
        })
    );
    // Raw UTF-8 in the JSON, not \u escapes and not Latin-1.
    let raw = String::from_utf8(request.body.clone()).expect("UTF-8 body");
    assert!(raw.contains("\"text\":\"Seu código SMS é 123456 e válido por 5 minutos.\""));
}

#[tokio::test]
async fn messages_api_whatsapp_free_text_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(accepted())
        .expect(1)
        .mount(&server)
        .await;
    let provider =
        VonageProvider::new(messages_settings(&server.uri(), false), &context(None)).unwrap();

    let receipt = provider
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Whatsapp))
        .await
        .unwrap();

    assert_eq!(receipt, queued(MESSAGE_UUID, "accepted"));
    let request = only_request(&server).await;
    assert_eq!(basic_auth(&request), (KEY.to_owned(), SECRET.to_owned()));
    assert_eq!(header(&request, "content-type"), "application/json");
    assert_eq!(
        json(&request),
        json!({
            "message_type": "text",
            "channel": "whatsapp",
            "to": "5511966191717",
            "from": FROM,
            "text": PT_BR_TEXT,
            "client_ref": MESSAGE_ID
        })
    );
}

#[tokio::test]
async fn messages_api_whatsapp_template_carries_the_code() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(accepted())
        .expect(1)
        .mount(&server)
        .await;
    let mut settings = messages_settings(&server.uri(), true);
    settings.whatsapp_template = Some(WhatsappTemplate {
        name: "otp_code".into(),
        locale: "pt_BR".into(),
    });
    let provider = VonageProvider::new(settings, &context(None)).unwrap();

    provider
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Whatsapp))
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(jwt_claims(&request).application_id, APP_ID);
    // https://developer.vonage.com/en/messages/code-snippets/whatsapp/send-authentication-template:
    // an authentication template has a button, so it goes as a custom message, with the
    // code in the body and as the copy-code button's URL parameter.
    assert_eq!(
        json(&request),
        json!({
            "message_type": "custom",
            "channel": "whatsapp",
            "to": "5511966191717",
            "from": FROM,
            "custom": {
                "type": "template",
                "template": {
                    "name": "otp_code",
                    "language": {"policy": "deterministic", "code": "pt_BR"},
                    "components": [
                        {"type": "body", "parameters": [{"type": "text", "text": "123456"}]},
                        {"type": "button", "sub_type": "url", "index": "0",
                         "parameters": [{"type": "text", "text": "123456"}]}
                    ]
                }
            },
            "client_ref": MESSAGE_ID
        })
    );
}

#[tokio::test]
async fn messages_api_whatsapp_template_without_code_sends_nothing() {
    let server = MockServer::start().await;
    let mut settings = messages_settings(&server.uri(), true);
    settings.whatsapp_template = Some(WhatsappTemplate {
        name: "otp_code".into(),
        locale: "en".into(),
    });
    let provider = VonageProvider::new(settings, &context(None)).unwrap();

    let error = provider
        .send(&message("Hello there", None, Channel::Whatsapp))
        .await
        .unwrap_err();

    assert_eq!(error, ProviderError::CodeRequired);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn messages_api_jwt_is_reused_until_near_expiry_then_renewed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(accepted())
        .expect(4)
        .mount(&server)
        .await;
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let elapsed = Arc::new(AtomicU64::new(0));
    let clock_elapsed = Arc::clone(&elapsed);
    let provider = VonageProvider::with_clock(
        messages_settings(&server.uri(), true),
        &context(None),
        Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(start + clock_elapsed.load(Ordering::SeqCst))
        }),
    )
    .unwrap();
    let sms = message("Your code is 123456", None, Channel::Sms);

    // At 0 s, 5 min and 13 min 59 s (61 s left of 900): the same token.
    for at in [0, 300, 839] {
        elapsed.store(at, Ordering::SeqCst);
        provider.send(&sms).await.unwrap();
    }
    // At 14 min 1 s (59 s left): renewed.
    elapsed.store(841, Ordering::SeqCst);
    provider.send(&sms).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    let tokens: Vec<&str> = requests
        .iter()
        .map(|r| header(r, "authorization"))
        .collect();
    assert_eq!(tokens[0], tokens[1]);
    assert_eq!(tokens[0], tokens[2]);
    assert_ne!(tokens[2], tokens[3]);
    let (first, renewed) = (jwt_claims(&requests[0]), jwt_claims(&requests[3]));
    assert_eq!(first.iat, start);
    assert_eq!(renewed.iat, start + 841);
    assert_eq!(renewed.exp, start + 841 + 900);
    assert_ne!(first.jti, renewed.jti);
}

#[tokio::test]
async fn messages_api_problem_replies_map_to_precise_errors() {
    let cases: &[(u16, &str, &str, &str)] = &[
        (422, "1170", "Invalid recipient", "invalid_recipient"),
        (422, "1430", "Invalid recipient", "invalid_recipient"),
        // The catalogue: x-errors of the Messages API spec.
        (422, "1420", "Invalid sender", "provider_misconfigured"),
        (
            422,
            "1120",
            "Illegal Sender Address - rejected",
            "provider_misconfigured",
        ),
        (422, "1022", "Invalid template", "provider_misconfigured"),
        (422, "1480", "Entity Filter", "provider_misconfigured"),
        (403, "1070", "Provider quota exceeded", "account_unusable"),
        (
            422,
            "1460",
            "Daily message limit exceeded",
            "account_unusable",
        ),
        (
            422,
            "1474",
            "Fraud Defender country block",
            "region_not_enabled",
        ),
        (
            422,
            "1340",
            "Outside of the allowed window",
            "provider_misconfigured",
        ),
        (
            422,
            "1300",
            "Not part of the provider network",
            "recipient_not_registered",
        ),
        (422, "1150", "Invalid params", "rejected"),
        (
            401,
            "unathorized",
            "Invalid credentials supplied",
            "unauthorized",
        ),
        (402, "low-balance", "Low balance", "account_unusable"),
        (403, "forbidden", "Forbidden", "unauthorized"),
        (500, "1030", "Internal error", "unavailable"),
        // A 4xx other than 429 is never transient, whatever the code: it must not trip
        // the circuit.
        (
            422,
            "1180",
            "Destination temporarily unavailable",
            "rejected",
        ),
        (422, "1220", "Handset Busy", "rejected"),
        (422, "1230", "Temporary network failure", "rejected"),
        (422, "1331", "Provider error", "rejected"),
        (400, "1000", "Throttled", "rejected"),
    ];
    for (status, code, title, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(problem(*status, code, title, "See the docs."))
            .expect(1)
            .mount(&server)
            .await;
        let provider =
            VonageProvider::new(messages_settings(&server.uri(), true), &context(None)).unwrap();

        let error = provider
            .send(&message("Your code is 123456", None, Channel::Sms))
            .await
            .unwrap_err();

        assert_eq!(error.code(), *expected, "{status} {code}");
        assert!(!error.is_safe_to_retry(), "{status} {code}");
        assert!(
            error
                .to_string()
                .ends_with(&format!("HTTP {status} {code}: {title}: See the docs.")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn messages_api_throttling_is_rate_limited_with_retry_after() {
    for code in ["throttled", "1000"] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                problem(
                    429,
                    code,
                    "Rate Limit Hit",
                    "Please wait, then retry your request",
                )
                .insert_header("Retry-After", "3"),
            )
            .mount(&server)
            .await;
        let provider =
            VonageProvider::new(messages_settings(&server.uri(), false), &context(None)).unwrap();

        let error = provider
            .send(&message("Your code is 123456", None, Channel::Sms))
            .await
            .unwrap_err();

        assert_eq!(
            error,
            ProviderError::RateLimited {
                detail: format!(
                    "HTTP 429 {code}: Rate Limit Hit: Please wait, then retry your request"
                ),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
        assert!(error.is_safe_to_retry());
    }
}

#[tokio::test]
async fn messages_api_problem_texts_and_parameters_are_scrubbed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "type": "https://developer.vonage.com/api-errors/messages#1150",
            "title": "Invalid params",
            "detail": "The value of one or more parameters is invalid.",
            "instance": "bf0ca0bf927b3b52e3cb03217e1a1ddf",
            "invalid_parameters": [{"name": "to", "reason": "5511966191717 is not a number"}]
        })))
        .mount(&server)
        .await;
    let provider =
        VonageProvider::new(messages_settings(&server.uri(), true), &context(None)).unwrap();

    let error = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap_err();

    assert_eq!(
        error,
        ProviderError::Rejected {
            detail: "HTTP 422 1150: Invalid params: The value of one or more parameters is \
                     invalid.; to: **** is not a number"
                .into()
        }
    );
}

/// A 2xx is Vonage's acceptance even without a readable `message_uuid`: failing it over
/// would send a second code.
#[tokio::test]
async fn messages_api_2xx_without_a_readable_uuid_is_an_acceptance() {
    for reply in [
        ResponseTemplate::new(202).set_body_json(json!({"id": "x"})),
        ResponseTemplate::new(202).set_body_string("accepted"),
    ] {
        accepted_without_id(reply, |uri| messages_settings(uri, true)).await;
    }
}

#[tokio::test]
async fn messages_api_malformed_replies_are_protocol_errors() {
    let replies = [(
        ResponseTemplate::new(400).set_body_string("<html>Bad Request</html>"),
        400,
    )];
    for (reply, status) in replies {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(reply)
            .mount(&server)
            .await;
        let provider =
            VonageProvider::new(messages_settings(&server.uri(), true), &context(None)).unwrap();

        let error = provider
            .send(&message("Your code is 123456", None, Channel::Sms))
            .await
            .unwrap_err();

        assert!(
            matches!(error, ProviderError::Protocol { status: s, .. } if s == status),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn messages_api_timeout_and_refused_connection() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(accepted().set_delay(SLOWER_THAN_TIMEOUT))
        .mount(&server)
        .await;
    let provider =
        VonageProvider::new(messages_settings(&server.uri(), true), &context(None)).unwrap();
    let sms = message("Your code is 123456", None, Channel::Sms);
    assert_eq!(
        provider.send(&sms).await.unwrap_err(),
        ProviderError::Timeout
    );

    let provider =
        VonageProvider::new(messages_settings(&refused_url(), true), &context(None)).unwrap();
    let error = provider.send(&sms).await.unwrap_err();
    assert_eq!(error.code(), "connect_failed");
}

// ---- Probe -----------------------------------------------------------------------------

#[tokio::test]
async fn probe_reads_the_balance_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/account/get-balance"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"value": 10.28, "autoReload": false})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    let outcome = provider.probe().await.unwrap();

    assert_eq!(
        outcome,
        ProbeOutcome::Verified("account balance 10.28 EUR".into())
    );
    let request = only_request(&server).await;
    assert_eq!(basic_auth(&request), (KEY.to_owned(), SECRET.to_owned()));
    assert_eq!(request.url.query(), None);
}

#[tokio::test]
async fn probe_reports_refused_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/account/get-balance"))
        .respond_with(ResponseTemplate::new(401).set_body_string(""))
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    assert_eq!(provider.probe().await.unwrap_err().code(), "unauthorized");
}

#[tokio::test]
async fn probe_is_not_supported_with_only_an_application() {
    let provider =
        VonageProvider::new(messages_settings(&refused_url(), true), &context(None)).unwrap();

    assert_eq!(provider.probe().await.unwrap(), ProbeOutcome::NotSupported);
}

/// The balance as Vonage wrote it (a JSON number, kept as text), in the account's EUR
/// ("Get your current account balance", developer.vonage.com/account/code-snippets).
#[tokio::test]
async fn balance_reads_get_balance_with_basic_auth_in_euros() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/account/get-balance"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"value": 10.28000000, "autoReload": false})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let provider = VonageProvider::new(sms_settings(&server.uri()), &context(None)).unwrap();

    let balance = provider.balance().await.unwrap();

    assert_eq!(balance, Money::parse("10.28", Some("EUR")));
    let request = only_request(&server).await;
    assert_eq!(basic_auth(&request), (KEY.to_owned(), SECRET.to_owned()));
}

#[tokio::test]
async fn balance_needs_the_key_pair() {
    let provider =
        VonageProvider::new(messages_settings(&refused_url(), true), &context(None)).unwrap();
    assert_eq!(provider.balance().await.unwrap(), None);
}

// ---- Settings --------------------------------------------------------------------------

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_vars(pairs: &[(&str, &str)]) -> Result<VonageSettings, otp_relay_providers::SettingError> {
    let map = vars(pairs);
    VonageSettings::from_env(&Env::new(&map))
}

fn fixture_key_path() -> String {
    format!(
        "{}/tests/fixtures/vonage_test_private.pem",
        env!("CARGO_MANIFEST_DIR")
    )
}

const SMS_VARS: &[(&str, &str)] = &[
    ("VONAGE_API_KEY", KEY),
    ("VONAGE_API_SECRET", SECRET),
    ("VONAGE_FROM", "OTPRelay"),
];

#[test]
fn from_env_reads_the_sms_api_with_defaults() {
    let settings = from_vars(SMS_VARS).unwrap();

    assert_eq!(settings.api, VonageApi::Sms);
    assert_eq!(settings.api_key.as_deref(), Some(KEY));
    assert_eq!(settings.from, "OTPRelay");
    assert_eq!(settings.channels, vec![Channel::Sms]);
    assert_eq!(settings.sms_base_url, "https://rest.nexmo.com");
    assert_eq!(settings.messages_base_url, "https://api.nexmo.com");
    assert!(settings.application_id.is_none() && settings.private_key.is_none());
    assert!(settings.whatsapp_template.is_none() && settings.signature_secret.is_none());
    assert_eq!(settings.signature_method.as_str(), "md5hash");
    VonageProvider::new(settings, &context(None)).unwrap();
}

#[test]
fn from_env_reads_the_messages_api_with_an_application_key_file() {
    let path = fixture_key_path();
    let settings = from_vars(&[
        ("VONAGE_API", "Messages"),
        ("VONAGE_FROM", "+14155550100"),
        ("VONAGE_CHANNEL", "sms,whatsapp"),
        ("VONAGE_APPLICATION_ID", APP_ID),
        ("VONAGE_PRIVATE_KEY", &path),
        ("VONAGE_SIGNATURE_SECRET", "sigsecret"),
        ("VONAGE_SIGNATURE_METHOD", "sha256"),
        ("VONAGE_WHATSAPP_TEMPLATE", "otp_code:pt_BR"),
        ("VONAGE_MESSAGES_BASE_URL", "http://127.0.0.1:9/"),
    ])
    .unwrap();

    assert_eq!(settings.api, VonageApi::Messages);
    assert_eq!(settings.from, FROM, "the + is dropped");
    assert_eq!(settings.channels, vec![Channel::Sms, Channel::Whatsapp]);
    assert_eq!(settings.application_id.as_deref(), Some(APP_ID));
    assert!(settings.private_key.is_some() && settings.signature_secret.is_some());
    assert_eq!(settings.signature_method.as_str(), "sha256");
    assert!(settings.api_key.is_none());
    assert_eq!(
        settings.whatsapp_template,
        Some(WhatsappTemplate {
            name: "otp_code".into(),
            locale: "pt_BR".into()
        })
    );
    assert_eq!(settings.messages_base_url, "http://127.0.0.1:9");
    VonageProvider::new(settings, &context(None)).unwrap();
}

#[test]
fn from_env_takes_the_pem_text_itself_even_on_one_line() {
    for pem in [
        PRIVATE_PEM.to_owned(),
        PRIVATE_PEM.trim().replace('\n', "\\n"),
    ] {
        let settings = from_vars(&[
            ("VONAGE_API", "messages"),
            ("VONAGE_FROM", FROM),
            ("VONAGE_APPLICATION_ID", APP_ID),
            ("VONAGE_PRIVATE_KEY", &pem),
            ("VONAGE_WHATSAPP_TEMPLATE", "otp_code"),
            ("VONAGE_CHANNEL", "whatsapp"),
        ])
        .unwrap();
        assert_eq!(
            settings.whatsapp_template.unwrap().locale,
            "en_US",
            "default locale"
        );
    }
}

#[test]
fn from_env_messages_api_falls_back_to_key_and_secret() {
    let settings = from_vars(&[
        ("VONAGE_API", "messages"),
        ("VONAGE_API_KEY", KEY),
        ("VONAGE_API_SECRET", SECRET),
        ("VONAGE_FROM", FROM),
    ])
    .unwrap();
    assert!(settings.application_id.is_none());
    assert_eq!(settings.api_key.as_deref(), Some(KEY));
}

#[test]
fn from_env_names_each_missing_variable() {
    let without = |var: &str| -> Vec<(&str, &str)> {
        SMS_VARS
            .iter()
            .copied()
            .filter(|(k, _)| *k != var)
            .collect()
    };
    for var in ["VONAGE_API_KEY", "VONAGE_API_SECRET", "VONAGE_FROM"] {
        let error = from_vars(&without(var)).unwrap_err();
        assert_eq!(error.var, var);
        assert_eq!(error.problem, "is required");
    }

    let messages = |extra: &[(&'static str, &'static str)]| {
        let mut all = vec![("VONAGE_API", "messages"), ("VONAGE_FROM", FROM)];
        all.extend_from_slice(extra);
        from_vars(&all).unwrap_err()
    };
    let error = messages(&[]);
    assert_eq!(error.var, "VONAGE_API_KEY");
    assert!(error.problem.contains("VONAGE_APPLICATION_ID"), "{error}");
    assert_eq!(
        messages(&[("VONAGE_API_KEY", KEY)]).var,
        "VONAGE_API_SECRET"
    );
    assert_eq!(
        messages(&[("VONAGE_APPLICATION_ID", APP_ID)]).var,
        "VONAGE_PRIVATE_KEY"
    );
    assert_eq!(
        messages(&[("VONAGE_PRIVATE_KEY", PRIVATE_PEM)]).var,
        "VONAGE_APPLICATION_ID"
    );
}

#[test]
fn from_env_refuses_contradictions_and_bad_values() {
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = SMS_VARS.to_vec();
        all.extend_from_slice(extra);
        from_vars(&all).unwrap_err()
    };
    let error = with(&[("VONAGE_CHANNEL", "whatsapp")]);
    assert_eq!(error.var, "VONAGE_CHANNEL");
    assert!(error.problem.contains("VONAGE_API=messages"), "{error}");
    assert_eq!(
        with(&[("VONAGE_CHANNEL", "telegram")]).var,
        "VONAGE_CHANNEL"
    );
    assert_eq!(with(&[("VONAGE_API", "rest")]).var, "VONAGE_API");
    assert_eq!(
        with(&[("VONAGE_WHATSAPP_TEMPLATE", "otp_code")]).var,
        "VONAGE_WHATSAPP_TEMPLATE"
    );
    assert_eq!(
        with(&[("VONAGE_SMS_BASE_URL", "ftp://x")]).var,
        "VONAGE_SMS_BASE_URL"
    );
    // The SMS API does not use an application; a lone key half is still an error.
    let error = from_vars(&[("VONAGE_API_KEY", KEY), ("VONAGE_FROM", "OTPRelay")]).unwrap_err();
    assert_eq!(error.var, "VONAGE_API_SECRET");

    let messages = |extra: &[(&'static str, &'static str)]| {
        let mut all = vec![
            ("VONAGE_API", "messages"),
            ("VONAGE_APPLICATION_ID", APP_ID),
            ("VONAGE_PRIVATE_KEY", PRIVATE_PEM),
        ];
        all.extend_from_slice(extra);
        from_vars(&all).unwrap_err()
    };
    // WhatsApp sends from a number, not an alphanumeric sender id.
    let error = messages(&[("VONAGE_FROM", "OTPRelay"), ("VONAGE_CHANNEL", "whatsapp")]);
    assert_eq!(error.var, "VONAGE_FROM");
    let error = messages(&[("VONAGE_FROM", FROM), ("VONAGE_WHATSAPP_TEMPLATE", "x:")]);
    assert_eq!(error.var, "VONAGE_WHATSAPP_TEMPLATE");
    // WhatsApp without a template: free text is accepted and then dropped outside the
    // 24 h window, so it is refused at startup.
    let error = messages(&[("VONAGE_FROM", FROM), ("VONAGE_CHANNEL", "sms,whatsapp")]);
    assert_eq!(error.var, "VONAGE_WHATSAPP_TEMPLATE");
    assert!(error.problem.contains("template"), "{error}");
    // Half a key pair next to an application is still a contradiction.
    let error = messages(&[("VONAGE_FROM", FROM), ("VONAGE_API_SECRET", SECRET)]);
    assert_eq!(error.var, "VONAGE_API_KEY");
}

#[test]
fn from_env_validates_the_private_key_without_echoing_it() {
    let not_rsa =
        "-----BEGIN PRIVATE KEY-----\nTm90QVJlYWxLZXlCdXRTZWNyZXQ=\n-----END PRIVATE KEY-----\n";
    for value in [not_rsa, "/nonexistent/vonage_private.key", PUBLIC_PEM] {
        let error = from_vars(&[
            ("VONAGE_API", "messages"),
            ("VONAGE_FROM", FROM),
            ("VONAGE_APPLICATION_ID", APP_ID),
            ("VONAGE_PRIVATE_KEY", value),
        ])
        .unwrap_err();
        assert_eq!(error.var, "VONAGE_PRIVATE_KEY", "{error}");
        assert!(!error.to_string().contains("Tm90QVJl"), "{error}");
    }
}

#[test]
fn debug_shows_no_secret() {
    let mut settings = messages_settings("http://127.0.0.1:9", true);
    settings.api_key = Some(KEY.into());
    settings.api_secret = Some(SecretString::from(SECRET));
    settings.signature_secret = Some(SecretString::from("SignatureSecretValue"));

    let printed = format!("{settings:?}");

    assert!(!printed.contains(SECRET), "{printed}");
    assert!(!printed.contains("SignatureSecretValue"), "{printed}");
    let key_body = PRIVATE_PEM.lines().nth(1).unwrap();
    assert!(!printed.contains(key_body), "{printed}");
    assert!(!printed.contains("BEGIN"), "{printed}");
    assert!(
        printed.contains(APP_ID),
        "non-secret fields stay readable: {printed}"
    );
}
