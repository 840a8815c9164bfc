//! The Twilio adapter against a local mock of the Messages and Accounts APIs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{basic_auth, context, form, header, message, refused_url, PT_BR_TEXT};
use otp_relay_providers::twilio::{TwilioProvider, TwilioSender, TwilioSettings};
use otp_relay_providers::{
    Channel, DeliveryStatus, Env, MessageProvider, ProbeOutcome, ProviderError,
};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "tw-auth-token-never-shown";
const FROM: &str = "+14155552671";
const SERVICE_SID: &str = "MGfedcba9876543210fedcba9876543210";
const CONTENT_SID: &str = "HX00112233445566778899aabbccddeeff";
const MESSAGE_SID: &str = "SM0123456789abcdef0123456789abcdef";
const PUBLIC_URL: &str = "https://relay.example.com";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
const ACCOUNT_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef.json";

fn settings(base_url: &str) -> TwilioSettings {
    TwilioSettings {
        account_sid: ACCOUNT_SID.to_owned(),
        auth_token: SecretString::from(AUTH_TOKEN),
        sender: TwilioSender::From(FROM.to_owned()),
        channels: vec![Channel::Sms, Channel::Whatsapp],
        content_sid: None,
        base_url: base_url.to_owned(),
    }
}

fn provider(settings: TwilioSettings) -> TwilioProvider {
    TwilioProvider::new(settings, &context(Some(PUBLIC_URL))).unwrap()
}

/// The Message resource Twilio answers a create with.
fn created(status: &str) -> serde_json::Value {
    json!({
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": PT_BR_TEXT,
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_sent": null,
        "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": FROM,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": MESSAGE_SID,
        "status": status,
        "subresource_uris": {"media": "/2010-04-01/Accounts/AC.../Messages/SM.../Media.json"},
        "to": "+5511966191717",
        "uri": "/2010-04-01/Accounts/AC.../Messages/SM....json"
    })
}

async fn mock_messages(reply: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(reply)
        .mount(&server)
        .await;
    server
}

/// The form of the one request the mock received.
async fn only_form(server: &MockServer) -> Vec<(String, String)> {
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "exactly one request");
    form(&requests[0])
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sends an SMS against a mock answering `reply`; exactly one request must arrive.
async fn sms_error(reply: ResponseTemplate) -> ProviderError {
    let server = mock_messages(reply).await;
    let error = provider(settings(&server.uri()))
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Sms))
        .await
        .unwrap_err();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    error
}

fn twilio_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status
    }))
}

// ---- the request on the wire ----

#[tokio::test]
async fn sms_request_is_exact_and_the_receipt_keeps_sid_and_status() {
    let server = mock_messages(ResponseTemplate::new(201).set_body_json(created("queued"))).await;

    let receipt = provider(settings(&server.uri()))
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Sms))
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), MESSAGES_PATH);
    assert_eq!(request.url.query(), None);
    assert_eq!(
        basic_auth(request),
        (ACCOUNT_SID.to_owned(), AUTH_TOKEN.to_owned())
    );
    assert_eq!(
        header(request, "content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        form(request),
        pairs(&[
            ("To", "+5511966191717"),
            ("From", FROM),
            ("Body", PT_BR_TEXT),
            (
                "StatusCallback",
                "https://relay.example.com/webhooks/twilio"
            ),
            ("ValidityPeriod", "300"),
        ])
    );
    // The accents travel as percent-encoded UTF-8, not Latin-1.
    let raw = String::from_utf8(request.body.clone()).unwrap();
    assert!(
        raw.contains("Body=Seu+c%C3%B3digo+SMS+%C3%A9+123456+e+v%C3%A1lido+por+5+minutos."),
        "{raw}"
    );

    assert_eq!(receipt.provider, "twilio");
    assert_eq!(receipt.provider_message_id.as_deref(), Some(MESSAGE_SID));
    assert_eq!(receipt.status, DeliveryStatus::Queued);
    assert_eq!(receipt.raw_status.as_deref(), Some("queued"));
}

#[tokio::test]
async fn messaging_service_replaces_from_and_no_public_url_means_no_callback() {
    let server = mock_messages(ResponseTemplate::new(201).set_body_json(created("accepted"))).await;
    let settings = TwilioSettings {
        sender: TwilioSender::MessagingService(SERVICE_SID.to_owned()),
        ..settings(&server.uri())
    };
    let provider = TwilioProvider::new(settings, &context(None)).unwrap();

    let receipt = provider
        .send(&message("Your code is 123456", None, Channel::Sms))
        .await
        .unwrap();

    assert_eq!(
        only_form(&server).await,
        pairs(&[
            ("To", "+5511966191717"),
            ("MessagingServiceSid", SERVICE_SID),
            ("Body", "Your code is 123456"),
            ("ValidityPeriod", "300"),
        ])
    );
    assert_eq!(receipt.status, DeliveryStatus::Queued);
    assert_eq!(receipt.raw_status.as_deref(), Some("accepted"));
}

#[tokio::test]
async fn whatsapp_session_message_prefixes_to_and_from() {
    let server = mock_messages(ResponseTemplate::new(201).set_body_json(created("queued"))).await;

    provider(settings(&server.uri()))
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Whatsapp))
        .await
        .unwrap();

    assert_eq!(
        only_form(&server).await,
        pairs(&[
            ("To", "whatsapp:+5511966191717"),
            ("From", "whatsapp:+14155552671"),
            ("Body", PT_BR_TEXT),
            (
                "StatusCallback",
                "https://relay.example.com/webhooks/twilio"
            ),
            ("ValidityPeriod", "300"),
        ])
    );
}

#[tokio::test]
async fn whatsapp_template_sends_content_sid_and_the_code_instead_of_body() {
    let server = mock_messages(ResponseTemplate::new(201).set_body_json(created("queued"))).await;
    let settings = TwilioSettings {
        content_sid: Some(CONTENT_SID.to_owned()),
        ..settings(&server.uri())
    };

    provider(settings)
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Whatsapp))
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        basic_auth(&requests[0]),
        (ACCOUNT_SID.to_owned(), AUTH_TOKEN.to_owned())
    );
    assert_eq!(
        form(&requests[0]),
        pairs(&[
            ("To", "whatsapp:+5511966191717"),
            ("From", "whatsapp:+14155552671"),
            ("ContentSid", CONTENT_SID),
            ("ContentVariables", r#"{"1":"123456"}"#),
            (
                "StatusCallback",
                "https://relay.example.com/webhooks/twilio"
            ),
            ("ValidityPeriod", "300"),
        ])
    );
}

#[tokio::test]
async fn sms_ignores_the_whatsapp_template() {
    let server = mock_messages(ResponseTemplate::new(201).set_body_json(created("queued"))).await;
    let settings = TwilioSettings {
        content_sid: Some(CONTENT_SID.to_owned()),
        ..settings(&server.uri())
    };

    provider(settings)
        .send(&message(PT_BR_TEXT, Some("123456"), Channel::Sms))
        .await
        .unwrap();

    let fields = only_form(&server).await;
    assert!(fields.contains(&("Body".to_owned(), PT_BR_TEXT.to_owned())));
    assert!(!fields.iter().any(|(key, _)| key.starts_with("Content")));
}

#[tokio::test]
async fn whatsapp_template_without_a_code_fails_before_sending() {
    let server = mock_messages(ResponseTemplate::new(201).set_body_json(created("queued"))).await;
    let settings = TwilioSettings {
        content_sid: Some(CONTENT_SID.to_owned()),
        ..settings(&server.uri())
    };

    let error = provider(settings)
        .send(&message("Welcome aboard", None, Channel::Whatsapp))
        .await
        .unwrap_err();

    assert_eq!(error, ProviderError::CodeRequired);
    assert_eq!(error.code(), "code_required");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn validity_period_is_the_ttl_clamped_into_twilios_range() {
    let server = mock_messages(ResponseTemplate::new(201).set_body_json(created("queued"))).await;
    let provider = provider(settings(&server.uri()));

    for ttl in [Duration::ZERO, Duration::from_secs(90_000)] {
        let mut message = message(PT_BR_TEXT, None, Channel::Sms);
        message.ttl = ttl;
        provider.send(&message).await.unwrap();
    }

    let periods: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| {
            form(request)
                .into_iter()
                .find(|(key, _)| key == "ValidityPeriod")
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(periods, ["1", "36000"]);
}

#[tokio::test]
async fn a_channel_not_configured_is_refused_without_a_request() {
    let server = mock_messages(ResponseTemplate::new(201).set_body_json(created("queued"))).await;
    let provider = provider(TwilioSettings {
        channels: vec![Channel::Sms],
        ..settings(&server.uri())
    });

    assert_eq!(provider.channels(), [Channel::Sms]);
    let error = provider
        .send(&message(PT_BR_TEXT, None, Channel::Whatsapp))
        .await
        .unwrap_err();

    assert_eq!(error.code(), "rejected");
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_message_that_failed_at_once_is_an_error_not_a_receipt() {
    let mut failed = created("failed");
    failed["error_code"] = json!(63016);
    failed["error_message"] =
        json!("Failed to send freeform message because you are outside the allowed window.");
    let error = sms_error(ResponseTemplate::new(201).set_body_json(failed)).await;
    assert_eq!(
        error,
        ProviderError::Misconfigured {
            code: "63016".into(),
            detail:
                "63016: Failed to send freeform message because you are outside the allowed window."
                    .into()
        }
    );
    assert_eq!(error.code(), "provider_misconfigured");
    assert!(error.is_permanent() && error.another_provider_may_succeed());

    // Without a code it is still a failure: the caller must not hear "sent".
    let error = sms_error(ResponseTemplate::new(201).set_body_json(created("undelivered"))).await;
    assert_eq!(
        error,
        ProviderError::Rejected {
            detail: "the message is undelivered".into()
        }
    );
}

// ---- Twilio's errors ----

#[tokio::test]
async fn invalid_to_number_is_a_permanent_invalid_recipient_with_the_number_scrubbed() {
    let error = sms_error(twilio_error(
        400,
        21211,
        "Invalid 'To' Phone Number: +5511966191717",
    ))
    .await;

    assert_eq!(
        error,
        ProviderError::InvalidRecipient {
            detail: "21211: Invalid 'To' Phone Number: +****".into()
        }
    );
    assert_eq!(error.code(), "invalid_recipient");
    assert!(error.is_permanent());
}

#[tokio::test]
async fn a_landline_is_an_invalid_recipient() {
    let error = sms_error(twilio_error(
        400,
        21614,
        "'To' number is not a valid mobile number",
    ))
    .await;
    assert_eq!(
        error,
        ProviderError::InvalidRecipient {
            detail: "21614: 'To' number is not a valid mobile number".into()
        }
    );
}

#[tokio::test]
async fn a_region_without_permission_is_region_not_enabled() {
    let error = sms_error(twilio_error(
        400,
        21408,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: +5511966191717.",
    ))
    .await;
    assert_eq!(error.code(), "region_not_enabled");
    assert_eq!(
        error,
        ProviderError::RegionNotEnabled {
            detail: "21408: Permission to send an SMS has not been enabled for the region indicated by the 'To' number: +****.".into()
        }
    );
    assert!(error.is_permanent() && error.another_provider_may_succeed());
}

#[tokio::test]
async fn an_unsubscribed_recipient_opted_out() {
    let error = sms_error(twilio_error(
        400,
        21610,
        "Attempt to send to unsubscribed recipient",
    ))
    .await;
    assert_eq!(
        error,
        ProviderError::RecipientOptedOut {
            detail: "21610: Attempt to send to unsubscribed recipient".into()
        }
    );
    assert_eq!(error.code(), "recipient_opted_out");
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized() {
    // Twilio's real 401 body carries both `message` and `detail`.
    let error = sms_error(ResponseTemplate::new(401).set_body_json(json!({
        "code": 20003,
        "detail": "Your AccountSid or AuthToken was incorrect.",
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401
    })))
    .await;
    assert_eq!(
        error,
        ProviderError::Unauthorized {
            detail: "20003: Authenticate: Your AccountSid or AuthToken was incorrect.".into()
        }
    );
    assert_eq!(error.code(), "unauthorized");
    assert!(error.is_permanent());
}

#[tokio::test]
async fn a_bare_401_is_unauthorized() {
    let error = sms_error(ResponseTemplate::new(401)).await;
    assert_eq!(
        error,
        ProviderError::Unauthorized {
            detail: "HTTP 401".into()
        }
    );
}

#[tokio::test]
async fn another_4xx_is_a_permanent_rejection_keeping_twilios_code() {
    let error = sms_error(twilio_error(
        400,
        21617,
        "The concatenated message body exceeds the 1600 character limit.",
    ))
    .await;
    assert_eq!(
        error,
        ProviderError::Rejected {
            detail: "21617: The concatenated message body exceeds the **** character limit.".into()
        }
    );
    assert!(error.is_permanent() && !error.another_provider_may_succeed());
}

/// <https://www.twilio.com/docs/errors/21609>, /21606, /21659, /21212, /21655, /63016:
/// the callback URL, sender or template we configured. Every message fails alike until an
/// operator fixes it, and another provider does not share the problem.
#[tokio::test]
async fn our_configuration_errors_are_misconfigured_and_fail_over() {
    for (code, text) in [
        (21609, "Invalid StatusCallback"),
        (21606, "The 'From' phone number provided is not a valid message-capable Twilio phone number for this destination."),
        (21659, "Source is not a Twilio number"),
        (21212, "Invalid From Number"),
        (21655, "The ContentSid is Invalid"),
        (63016, "Failed to send freeform message because you are outside the allowed window."),
    ] {
        let error = sms_error(twilio_error(400, code, text)).await;
        assert_eq!(
            error,
            ProviderError::Misconfigured {
                code: code.to_string(),
                detail: format!("{code}: {text}")
            }
        );
        assert_eq!(error.code(), "provider_misconfigured");
        assert!(error.is_permanent() && !error.is_safe_to_retry());
        assert!(error.another_provider_may_succeed(), "{code}");
        assert!(!error.is_recipient_problem(), "{code}");
    }
}

/// <https://www.twilio.com/docs/errors/63038> (daily limit), /30454 (trial limit), /20005
/// and /10001 (suspended, not active: also where an empty balance ends), /21660 and /63007
/// (sender of another account, no WhatsApp sender): the account cannot send.
#[tokio::test]
async fn account_errors_are_account_unusable() {
    for (code, text) in [
        (20005, "Account not active"),
        (10001, "Account is not active"),
        (30454, "Account exceeded the messages limit"),
        (63038, "Account exceeded the daily messages limit"),
        (21660, "Mismatch between the 'From' number and the account"),
        (
            63007,
            "Twilio could not find a Channel with the specified From address",
        ),
    ] {
        let error = sms_error(twilio_error(400, code, text)).await;
        assert_eq!(
            error,
            ProviderError::AccountUnusable {
                detail: format!("{code}: {text}")
            }
        );
        assert_eq!(error.code(), "account_unusable");
        assert!(error.is_permanent() && !error.is_safe_to_retry());
        assert!(error.another_provider_may_succeed(), "{code}");
        assert!(!error.is_recipient_problem(), "{code}");
    }
}

/// <https://www.twilio.com/docs/errors/21611>: the sender's queue is full and the message
/// was not created: throttling, safe to retry and to fail over.
#[tokio::test]
async fn a_full_sender_queue_is_rate_limited() {
    let error = sms_error(twilio_error(
        400,
        21611,
        "This 'From' number has exceeded the maximum number of queued messages",
    ))
    .await;
    assert_eq!(error.code(), "rate_limited");
    assert!(error.is_transient() && error.never_reached_provider());
}

/// 21635 (landline, from Twilio's July 2024 split of 21614) and 21268 (premium rate) are
/// about the number: 422, no failover. 21612 (To and From cannot be connected from this
/// account) is not: another provider may reach the number.
#[tokio::test]
async fn the_number_is_the_callers_problem_but_an_unreachable_pairing_fails_over() {
    for (code, text) in [
        (21635, "'To' number cannot be a landline"),
        (21268, "Premium rate numbers are not allowed"),
    ] {
        let error = sms_error(twilio_error(400, code, text)).await;
        assert_eq!(error.code(), "invalid_recipient", "{code}");
        assert!(
            error.is_recipient_problem() && !error.another_provider_may_succeed(),
            "{code}"
        );
    }
    let error = sms_error(twilio_error(
        400,
        21612,
        "The 'To' phone number is not currently reachable using the 'From' phone number via SMS.",
    ))
    .await;
    assert_eq!(error.code(), "region_not_enabled");
    assert!(error.another_provider_may_succeed() && !error.is_recipient_problem());
}

#[tokio::test]
async fn rfc9457_errors_are_read_too() {
    let body = json!({
        "type": "https://www.twilio.com/docs/errors/21211",
        "title": "Invalid 'To' Phone Number",
        "status": 400,
        "code": 21211,
        "detail": "The number +5511966191717 is not valid.",
        "instance": "/2010-04-01/Accounts/AC.../Messages.json"
    });
    let error = sms_error(
        ResponseTemplate::new(400)
            .set_body_raw(body.to_string().into_bytes(), "application/problem+json"),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::InvalidRecipient {
            detail: "21211: Invalid 'To' Phone Number: The number +**** is not valid.".into()
        }
    );
}

#[tokio::test]
async fn throttling_is_rate_limited_with_retry_after_and_safe_to_retry() {
    let error =
        sms_error(twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "7"))
            .await;
    assert_eq!(
        error,
        ProviderError::RateLimited {
            detail: "20429: Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
    assert_eq!(error.code(), "rate_limited");
    assert!(error.is_transient() && error.is_safe_to_retry());
}

#[tokio::test]
async fn code_20429_is_rate_limited_whatever_the_http_status() {
    let body = json!({
        "type": "https://www.twilio.com/docs/errors/20429",
        "title": "Too Many Requests",
        "status": 400,
        "code": 20429
    });
    let error = sms_error(
        ResponseTemplate::new(400)
            .set_body_raw(body.to_string().into_bytes(), "application/problem+json"),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::RateLimited {
            detail: "20429: Too Many Requests".into(),
            retry_after: None,
        }
    );
}

#[tokio::test]
async fn a_server_error_is_unavailable_with_unknown_outcome() {
    let error = sms_error(twilio_error(500, 20500, "Internal Server Error")).await;
    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "20500: Internal Server Error".into()
        }
    );
    assert_eq!(error.code(), "unavailable");
    assert!(error.is_transient() && !error.is_safe_to_retry());
}

#[tokio::test]
async fn a_proxy_page_on_503_is_unavailable() {
    let error = sms_error(
        ResponseTemplate::new(503).set_body_raw("<html>Service Unavailable</html>", "text/html"),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "HTTP 503".into()
        }
    );
}

#[tokio::test]
async fn a_4xx_that_is_not_twilio_json_is_a_protocol_error() {
    let error = sms_error(
        ResponseTemplate::new(404).set_body_raw("<html>Not Found 123456</html>", "text/html"),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Protocol {
            status: 404,
            detail: "<html>Not Found ****</html>".into()
        }
    );
    assert_eq!(error.code(), "protocol");
}

/// A 2xx is Twilio's acceptance, whatever its body: failing over would send a second
/// code. The receipt has no id (delivery reports cannot be matched) and is `queued`.
#[tokio::test]
async fn a_created_reply_without_a_readable_sid_is_still_an_acceptance() {
    for reply in [
        ResponseTemplate::new(201)
            .set_body_raw(r#"{"status":"queued","code":"123456"}"#, "application/json"),
        ResponseTemplate::new(201).set_body_raw("OK", "text/plain"),
        ResponseTemplate::new(200),
    ] {
        let server = mock_messages(reply).await;
        let receipt = provider(settings(&server.uri()))
            .send(&message(PT_BR_TEXT, Some("123456"), Channel::Sms))
            .await
            .unwrap();
        assert_eq!(receipt.provider, "twilio");
        assert_eq!(receipt.provider_message_id, None);
        assert_eq!(receipt.status, DeliveryStatus::Queued);
    }
}

// ---- transport ----

#[tokio::test]
async fn no_answer_in_time_is_a_timeout() {
    let error = sms_error(
        ResponseTemplate::new(201)
            .set_body_json(created("queued"))
            .set_delay(common::SLOWER_THAN_TIMEOUT),
    )
    .await;
    assert_eq!(error, ProviderError::Timeout);
    assert_eq!(error.code(), "timeout");
    assert!(error.is_transient() && !error.is_safe_to_retry());
}

#[tokio::test]
async fn a_refused_connection_is_connect_failed_and_safe_to_retry() {
    let error = provider(settings(&refused_url()))
        .send(&message(PT_BR_TEXT, None, Channel::Sms))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Connect { .. }), "{error:?}");
    assert_eq!(error.code(), "connect_failed");
    assert!(error.is_safe_to_retry());
}

// ---- probe ----

fn account(status: &str) -> serde_json::Value {
    json!({
        "auth_token": AUTH_TOKEN,
        "date_created": "Thu, 30 Jul 2015 20:00:00 +0000",
        "date_updated": "Thu, 30 Jul 2015 20:00:00 +0000",
        "friendly_name": "ops@example.com",
        "owner_account_sid": ACCOUNT_SID,
        "sid": ACCOUNT_SID,
        "status": status,
        "subresource_uris": {},
        "type": "Full",
        "uri": ACCOUNT_PATH
    })
}

async fn probe_with(reply: ResponseTemplate) -> (Result<ProbeOutcome, ProviderError>, MockServer) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(ACCOUNT_PATH))
        .respond_with(reply)
        .expect(1)
        .mount(&server)
        .await;
    let outcome = provider(settings(&server.uri())).probe().await;
    (outcome, server)
}

#[tokio::test]
async fn probe_fetches_the_account_and_reports_its_status_without_secrets() {
    let (outcome, server) =
        probe_with(ResponseTemplate::new(200).set_body_json(account("active"))).await;

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method.as_str(), "GET");
    assert_eq!(
        basic_auth(&requests[0]),
        (ACCOUNT_SID.to_owned(), AUTH_TOKEN.to_owned())
    );
    assert!(requests[0].body.is_empty());
    assert_eq!(
        outcome,
        Ok(ProbeOutcome::Verified(
            "Twilio account is active (Full account)".into()
        ))
    );
}

#[tokio::test]
async fn probe_of_a_suspended_account_fails_as_account_unusable() {
    let (outcome, _server) =
        probe_with(ResponseTemplate::new(200).set_body_json(account("suspended"))).await;
    assert_eq!(
        outcome,
        Err(ProviderError::AccountUnusable {
            detail: "the Twilio account is suspended".into()
        })
    );
}

#[tokio::test]
async fn probe_with_wrong_credentials_is_unauthorized() {
    let (outcome, _server) = probe_with(twilio_error(401, 20003, "Authenticate")).await;
    assert_eq!(outcome.unwrap_err().code(), "unauthorized");
}

#[tokio::test]
async fn probe_never_echoes_an_odd_account_reply_which_holds_the_token() {
    let (outcome, _server) = probe_with(
        ResponseTemplate::new(200).set_body_json(json!({"auth_token": AUTH_TOKEN, "state": "?"})),
    )
    .await;
    let error = outcome.unwrap_err();
    assert!(
        matches!(error, ProviderError::Protocol { status: 200, .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains(AUTH_TOKEN), "{error}");
}

// ---- settings ----

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn minimal() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_FROM", FROM),
    ]
}

fn read(pairs: &[(&str, &str)]) -> Result<TwilioSettings, otp_relay_providers::SettingError> {
    TwilioSettings::from_env(&Env::new(&vars(pairs)))
}

/// The variable named by the error for `pairs`.
fn failing_var(pairs: &[(&str, &str)]) -> &'static str {
    read(pairs).unwrap_err().var
}

#[test]
fn from_env_reads_every_variable() {
    let settings = read(&[
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_MESSAGING_SERVICE_SID", SERVICE_SID),
        ("TWILIO_CHANNEL", "whatsapp, sms"),
        ("TWILIO_CONTENT_SID", CONTENT_SID),
        ("TWILIO_BASE_URL", "http://127.0.0.1:8080/"),
    ])
    .unwrap();

    assert_eq!(settings.account_sid, ACCOUNT_SID);
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&settings.auth_token),
        AUTH_TOKEN
    );
    assert_eq!(
        settings.sender,
        TwilioSender::MessagingService(SERVICE_SID.into())
    );
    assert_eq!(settings.channels, [Channel::Whatsapp, Channel::Sms]);
    assert_eq!(settings.content_sid.as_deref(), Some(CONTENT_SID));
    assert_eq!(settings.base_url, "http://127.0.0.1:8080");
}

#[test]
fn from_env_defaults_to_sms_on_api_twilio_com() {
    let settings = read(&minimal()).unwrap();
    assert_eq!(settings.sender, TwilioSender::From(FROM.into()));
    assert_eq!(settings.channels, [Channel::Sms]);
    assert_eq!(settings.content_sid, None);
    assert_eq!(settings.base_url, "https://api.twilio.com");
}

#[test]
fn from_env_accepts_a_whatsapp_prefixed_sender() {
    let mut pairs = minimal();
    pairs[2] = ("TWILIO_FROM", "whatsapp:+14155238886");
    pairs.push(("TWILIO_CHANNEL", "whatsapp"));
    pairs.push(("TWILIO_CONTENT_SID", CONTENT_SID));
    let settings = read(&pairs).unwrap();
    assert_eq!(settings.sender, TwilioSender::From("+14155238886".into()));
}

#[test]
fn from_env_names_each_missing_variable() {
    for missing in ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM"] {
        let pairs: Vec<_> = minimal()
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let error = read(&pairs).unwrap_err();
        assert_eq!(error.var, missing);
        assert!(error.to_string().contains("for example"), "{error}");
    }
    let mut blank = minimal();
    blank[1] = ("TWILIO_AUTH_TOKEN", "  ");
    assert_eq!(failing_var(&blank), "TWILIO_AUTH_TOKEN");
}

#[test]
fn from_env_refuses_both_senders() {
    let mut pairs = minimal();
    pairs.push(("TWILIO_MESSAGING_SERVICE_SID", SERVICE_SID));
    let error = read(&pairs).unwrap_err();
    assert_eq!(error.var, "TWILIO_MESSAGING_SERVICE_SID");
    assert!(error.problem.contains("TWILIO_FROM"), "{error}");
}

#[test]
fn from_env_refuses_malformed_values() {
    let cases: [(&str, &str); 8] = [
        ("TWILIO_ACCOUNT_SID", "SK0123456789abcdef0123456789abcdef"),
        ("TWILIO_ACCOUNT_SID", "AC0123/../x"),
        ("TWILIO_FROM", "14155552671"),
        ("TWILIO_CHANNEL", "telegram"),
        ("TWILIO_CHANNEL", "pigeon"),
        ("TWILIO_CONTENT_SID", "HXnot-a-sid"),
        ("TWILIO_BASE_URL", "ftp://api.twilio.com"),
        ("TWILIO_BASE_URL", "not a url"),
    ];
    for (var, value) in cases {
        let mut pairs: Vec<_> = minimal().into_iter().filter(|(k, _)| *k != var).collect();
        pairs.push((var, value));
        if var == "TWILIO_CONTENT_SID" {
            pairs.push(("TWILIO_CHANNEL", "whatsapp"));
        }
        assert_eq!(failing_var(&pairs), var, "{var}={value}");
    }

    let mut service = minimal();
    service.retain(|(k, _)| *k != "TWILIO_FROM");
    service.push(("TWILIO_MESSAGING_SERVICE_SID", "MG123"));
    assert_eq!(failing_var(&service), "TWILIO_MESSAGING_SERVICE_SID");
}

#[test]
fn from_env_refuses_contradictions() {
    // A template with no WhatsApp channel would be silently ignored.
    let mut template = minimal();
    template.push(("TWILIO_CONTENT_SID", CONTENT_SID));
    assert_eq!(failing_var(&template), "TWILIO_CONTENT_SID");

    // WhatsApp senders are phone numbers, not sender IDs.
    let mut sender_id = minimal();
    sender_id[2] = ("TWILIO_FROM", "MyBrand");
    assert!(read(&sender_id).is_ok(), "a sender ID is fine for SMS");
    sender_id.push(("TWILIO_CHANNEL", "sms,whatsapp"));
    sender_id.push(("TWILIO_CONTENT_SID", CONTENT_SID));
    assert_eq!(failing_var(&sender_id), "TWILIO_FROM");
}

/// Outside the 24 h window WhatsApp takes only templates: free text would be accepted
/// (201) and dropped later, so the login would say "sent" and the user get nothing.
#[test]
fn whatsapp_without_a_template_is_refused_at_startup() {
    let mut pairs = minimal();
    pairs.push(("TWILIO_CHANNEL", "sms,whatsapp"));
    let error = read(&pairs).unwrap_err();
    assert_eq!(error.var, "TWILIO_CONTENT_SID");
    assert!(error.problem.contains("template"), "{error}");
    pairs.push(("TWILIO_CONTENT_SID", CONTENT_SID));
    assert!(read(&pairs).is_ok());
}

#[test]
fn new_refuses_settings_that_would_bend_the_url() {
    let settings = TwilioSettings {
        account_sid: "AC0123456789abcdef0123456789abcd/x".into(),
        ..settings("http://127.0.0.1:1")
    };
    let error = TwilioProvider::new(settings, &context(None)).unwrap_err();
    assert_eq!(error.var, "TWILIO_ACCOUNT_SID");
}

#[test]
fn debug_and_errors_never_show_the_token() {
    let settings = read(&minimal()).unwrap();
    let printed = format!("{settings:?}");
    assert!(!printed.contains(AUTH_TOKEN), "{printed}");
    assert!(printed.contains(ACCOUNT_SID), "{printed}");

    let provider = TwilioProvider::new(settings, &context(None)).unwrap();
    let printed = format!("{provider:?}");
    assert!(!printed.contains(AUTH_TOKEN), "{printed}");

    let mut pairs = minimal();
    pairs.push(("TWILIO_MESSAGING_SERVICE_SID", SERVICE_SID));
    let error = read(&pairs).unwrap_err().to_string();
    assert!(!error.contains(AUTH_TOKEN), "{error}");
}
