//! SendPulse adapter against a local mock of the SendPulse API.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{context, header, json, message, refused_url, PT_BR_TEXT, SLOWER_THAN_TIMEOUT};
use otp_relay_providers::sendpulse::{
    SendpulseProvider, SendpulseSettings, SendpulseWhatsapp, DEFAULT_BASE_URL, TOKEN_REFRESH_MARGIN,
};
use otp_relay_providers::{
    Channel, DeliveryStatus, Env, MessageProvider, OutboundMessage, ProbeOutcome, ProviderError,
    Receipt, SettingError,
};
use secrecy::SecretString;
use serde_json::json as body;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const CLIENT_ID: &str = "sp-client-id";
const CLIENT_SECRET: &str = "sp-secret-Zk-qTzWv";
const BOT_ID: &str = "64a1f0c2b3d4e5f6a7b8c9d0";
const TOKEN_PATH: &str = "/oauth/access_token";
const SMS_PATH: &str = "/sms/send";
const WHATSAPP_PATH: &str = "/whatsapp/contacts/sendTemplateByPhone";

fn settings(base_url: &str) -> SendpulseSettings {
    SendpulseSettings {
        client_id: CLIENT_ID.to_owned(),
        client_secret: SecretString::from(CLIENT_SECRET),
        channels: vec![Channel::Sms, Channel::Whatsapp],
        sender: Some("OtpRelay".to_owned()),
        whatsapp: Some(SendpulseWhatsapp {
            bot_id: BOT_ID.to_owned(),
            template: "otp_code".to_owned(),
            language: "pt_BR".to_owned(),
        }),
        base_url: base_url.to_owned(),
    }
}

fn provider(base_url: &str) -> SendpulseProvider {
    SendpulseProvider::new(settings(base_url), &context(None)).unwrap()
}

fn sms() -> OutboundMessage {
    message(PT_BR_TEXT, Some("123456"), Channel::Sms)
}

fn whatsapp() -> OutboundMessage {
    message(PT_BR_TEXT, Some("123456"), Channel::Whatsapp)
}

fn token(value: &str, expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        body!({"access_token": value, "token_type": "Bearer", "expires_in": expires_in}),
    )
}

fn sms_accepted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        body!({"result": true, "campaign_id": 2623085, "counters": {"exceptions": 0, "sends": 1}}),
    )
}

/// A token endpoint that answers `reply` (once when `times` is given).
async fn mount_token(server: &MockServer, reply: ResponseTemplate, times: Option<u64>) {
    let mock = Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(reply);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

async fn mount(server: &MockServer, at: &str, reply: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(at))
        .respond_with(reply)
        .mount(server)
        .await;
}

async fn requests_to(server: &MockServer, at: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == at)
        .collect()
}

fn bearers(requests: &[Request]) -> Vec<&str> {
    requests
        .iter()
        .map(|r| header(r, "authorization"))
        .collect()
}

/// Sends `message` to a SendPulse whose token endpoint works and whose send endpoint
/// at `at` answers `reply`.
async fn send_against(
    at: &str,
    reply: ResponseTemplate,
    message: OutboundMessage,
) -> (Result<Receipt, ProviderError>, MockServer) {
    let server = MockServer::start().await;
    mount_token(&server, token("tok-1", 3600), None).await;
    mount(&server, at, reply).await;
    let result = provider(&server.uri()).send(&message).await;
    (result, server)
}

async fn sms_error(reply: ResponseTemplate) -> ProviderError {
    let (result, server) = send_against(SMS_PATH, reply, sms()).await;
    assert_eq!(requests_to(&server, SMS_PATH).await.len(), 1, "one attempt");
    result.unwrap_err()
}

async fn whatsapp_error(reply: ResponseTemplate) -> ProviderError {
    let (result, server) = send_against(WHATSAPP_PATH, reply, whatsapp()).await;
    assert_eq!(
        requests_to(&server, WHATSAPP_PATH).await.len(),
        1,
        "one attempt"
    );
    result.unwrap_err()
}

// --- the exact requests ---------------------------------------------------------------

#[tokio::test]
async fn sms_fetches_a_token_then_posts_the_exact_campaign() {
    let (result, server) = send_against(SMS_PATH, sms_accepted(), sms()).await;

    assert_eq!(
        result.unwrap(),
        Receipt::new(
            "sendpulse",
            Some("2623085".into()),
            DeliveryStatus::Queued,
            None,
        )
    );

    let tokens = requests_to(&server, TOKEN_PATH).await;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].method.as_str(), "POST");
    assert_eq!(header(&tokens[0], "content-type"), "application/json");
    assert!(tokens[0].headers.get("authorization").is_none());
    assert_eq!(
        json(&tokens[0]),
        body!({"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    );

    let sends = requests_to(&server, SMS_PATH).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].method.as_str(), "POST");
    assert_eq!(header(&sends[0], "authorization"), "Bearer tok-1");
    assert_eq!(header(&sends[0], "content-type"), "application/json");
    assert_eq!(
        json(&sends[0]),
        body!({"sender": "OtpRelay", "phones": ["5511966191717"], "body": PT_BR_TEXT})
    );
    let raw = std::str::from_utf8(&sends[0].body).expect("UTF-8 body");
    assert!(raw.contains("Seu código SMS é 123456 e válido"), "{raw}");
}

#[tokio::test]
async fn whatsapp_posts_the_authentication_template_with_the_code_in_body_and_button() {
    let reply = ResponseTemplate::new(200).set_body_json(body!({
        "success": true,
        "data": {"id": "65f1c2d3e4f5a6b7c8d9e0f1", "contact_id": "65f1c2d3e4f5a6b7c8d9e0aa",
                 "bot_id": BOT_ID, "campaign_id": null, "direction": 2, "status": 1,
                 "is_paid": false, "created_at": "2024-03-13T10:00:00.000Z"}
    }));
    let (result, server) = send_against(WHATSAPP_PATH, reply, whatsapp()).await;

    assert_eq!(
        result.unwrap(),
        Receipt::new(
            "sendpulse",
            Some("65f1c2d3e4f5a6b7c8d9e0f1".into()),
            DeliveryStatus::Queued,
            Some("new".into()),
        )
    );
    let sends = requests_to(&server, WHATSAPP_PATH).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].method.as_str(), "POST");
    assert_eq!(header(&sends[0], "authorization"), "Bearer tok-1");
    assert_eq!(header(&sends[0], "content-type"), "application/json");
    assert_eq!(
        json(&sends[0]),
        body!({
            "bot_id": BOT_ID,
            "phone": "5511966191717",
            "template": {
                "name": "otp_code",
                "language": {"code": "pt_BR"},
                // An authentication template: the code in the body and as the URL
                // parameter of the copy-code button (numeric index, per the
                // sendTemplateByPhone schema of SendPulse's WhatsApp API).
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": "123456"}]},
                    {"type": "button", "sub_type": "url", "index": 0,
                     "parameters": [{"type": "text", "text": "123456"}]}
                ]
            }
        })
    );
    assert!(requests_to(&server, SMS_PATH).await.is_empty());
}

#[tokio::test]
async fn whatsapp_without_a_code_is_refused_before_any_request() {
    let server = MockServer::start().await;
    let result = provider(&server.uri())
        .send(&message(PT_BR_TEXT, None, Channel::Whatsapp))
        .await;
    assert_eq!(result.unwrap_err(), ProviderError::CodeRequired);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_channel_not_configured_is_rejected_before_any_request() {
    let server = MockServer::start().await;
    let mut only_sms = settings(&server.uri());
    only_sms.channels = vec![Channel::Sms];
    let provider = SendpulseProvider::new(only_sms, &context(None)).unwrap();
    assert_eq!(provider.name(), "sendpulse");
    assert_eq!(provider.channels(), &[Channel::Sms]);
    assert!(!provider.serves(Channel::Whatsapp));

    let error = provider.send(&whatsapp()).await.unwrap_err();
    assert_eq!(error.code(), "rejected");
    assert!(server.received_requests().await.unwrap().is_empty());
}

// --- the token cache ------------------------------------------------------------------

#[tokio::test]
async fn a_cached_token_serves_later_sends() {
    let server = MockServer::start().await;
    mount_token(&server, token("tok-1", 3600), None).await;
    mount(&server, SMS_PATH, sms_accepted()).await;
    let provider = provider(&server.uri());

    provider.send(&sms()).await.unwrap();
    provider.send(&sms()).await.unwrap();

    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 1);
    let sends = requests_to(&server, SMS_PATH).await;
    assert_eq!(bearers(&sends), ["Bearer tok-1", "Bearer tok-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_with_an_empty_cache_fetch_the_token_once() {
    let server = MockServer::start().await;
    // A slow token endpoint keeps every send waiting on the same fetch.
    mount_token(
        &server,
        token("tok-1", 3600).set_delay(Duration::from_millis(150)),
        None,
    )
    .await;
    mount(&server, SMS_PATH, sms_accepted()).await;
    let provider = Arc::new(provider(&server.uri()));

    let sends: Vec<_> = (0..8)
        .map(|_| {
            let provider = Arc::clone(&provider);
            tokio::spawn(async move { provider.send(&sms()).await })
        })
        .collect();
    for send in sends {
        send.await.unwrap().unwrap();
    }

    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 1);
    let sends = requests_to(&server, SMS_PATH).await;
    assert_eq!(sends.len(), 8);
    assert!(bearers(&sends).iter().all(|b| *b == "Bearer tok-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_share_one_failed_token_fetch() {
    let server = MockServer::start().await;
    mount_token(
        &server,
        ResponseTemplate::new(401)
            .set_body_json(body!({"error": "invalid_client", "error_description": "Client authentication failed"}))
            .set_delay(Duration::from_millis(150)),
        None,
    )
    .await;
    let provider = Arc::new(provider(&server.uri()));

    let sends: Vec<_> = (0..4)
        .map(|_| {
            let provider = Arc::clone(&provider);
            tokio::spawn(async move { provider.send(&sms()).await })
        })
        .collect();
    for send in sends {
        assert_eq!(send.await.unwrap().unwrap_err().code(), "unauthorized");
    }
    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 1);
    assert!(requests_to(&server, SMS_PATH).await.is_empty());
}

#[tokio::test]
async fn an_expired_token_is_refreshed() {
    let server = MockServer::start().await;
    // A lifetime within the refresh margin counts as expired as soon as it is used.
    mount_token(
        &server,
        token("tok-1", TOKEN_REFRESH_MARGIN.as_secs()),
        Some(1),
    )
    .await;
    mount_token(&server, token("tok-2", 3600), None).await;
    mount(&server, SMS_PATH, sms_accepted()).await;
    let provider = provider(&server.uri());

    provider.send(&sms()).await.unwrap();
    provider.send(&sms()).await.unwrap();

    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
    let sends = requests_to(&server, SMS_PATH).await;
    assert_eq!(bearers(&sends), ["Bearer tok-1", "Bearer tok-2"]);
}

#[tokio::test]
async fn a_401_triggers_exactly_one_refresh_and_one_retry() {
    let server = MockServer::start().await;
    mount_token(&server, token("tok-1", 3600), Some(1)).await;
    mount_token(&server, token("tok-2", 3600), None).await;
    Mock::given(method("POST"))
        .and(path(SMS_PATH))
        .and(wiremock::matchers::header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(body!({
            "error": "access_denied",
            "error_description": "The resource owner or authorization server denied the request.",
        })))
        .mount(&server)
        .await;
    mount(&server, SMS_PATH, sms_accepted()).await;
    let provider = provider(&server.uri());

    let receipt = provider.send(&sms()).await.unwrap();
    assert_eq!(receipt.provider_message_id.as_deref(), Some("2623085"));
    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
    let sends = requests_to(&server, SMS_PATH).await;
    assert_eq!(bearers(&sends), ["Bearer tok-1", "Bearer tok-2"]);
    assert_eq!(json(&sends[0]), json(&sends[1]), "the same message retried");

    // The refreshed token is the cached one from now on.
    provider.send(&sms()).await.unwrap();
    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
}

#[tokio::test]
async fn a_second_401_is_unauthorized_without_further_attempts() {
    let server = MockServer::start().await;
    mount_token(&server, token("tok-1", 3600), Some(1)).await;
    mount_token(&server, token("tok-2", 3600), None).await;
    mount(
        &server,
        SMS_PATH,
        ResponseTemplate::new(401).set_body_json(body!({
            "error": "access_denied",
            "error_description": "The resource owner or authorization server denied the request.",
        })),
    )
    .await;

    let error = provider(&server.uri()).send(&sms()).await.unwrap_err();

    assert_eq!(
        error,
        ProviderError::Unauthorized {
            detail: "access_denied: The resource owner or authorization server denied the request."
                .into()
        }
    );
    assert!(error.is_permanent());
    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
    assert_eq!(requests_to(&server, SMS_PATH).await.len(), 2);
}

// --- token endpoint failures ----------------------------------------------------------

#[tokio::test]
async fn refused_credentials_are_unauthorized_and_nothing_is_sent() {
    let server = MockServer::start().await;
    mount_token(
        &server,
        ResponseTemplate::new(401).set_body_json(body!({
            "error": "invalid_client",
            "error_description": "Client authentication failed",
            "message": "Client authentication failed",
        })),
        None,
    )
    .await;

    let error = provider(&server.uri()).send(&sms()).await.unwrap_err();

    assert_eq!(
        error,
        ProviderError::Unauthorized {
            detail: "access token refused: invalid_client: Client authentication failed".into()
        }
    );
    assert_eq!(error.code(), "unauthorized");
    assert!(error.is_permanent());
    assert!(requests_to(&server, SMS_PATH).await.is_empty());
}

#[tokio::test]
async fn a_token_error_that_echoes_the_secret_does_not_pass_it_on() {
    let server = MockServer::start().await;
    mount_token(
        &server,
        ResponseTemplate::new(400).set_body_json(body!({
            "error": "invalid_request",
            "message": format!("client_secret {CLIENT_SECRET} has a bad format"),
        })),
        None,
    )
    .await;

    let error = provider(&server.uri()).send(&sms()).await.unwrap_err();

    let ProviderError::Unauthorized { detail } = &error else {
        panic!("{error:?}")
    };
    assert!(!detail.contains(CLIENT_SECRET), "{detail}");
    assert!(
        detail.contains("client_secret [redacted] has a bad format"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_malformed_token_reply_is_a_protocol_error_that_hides_the_token() {
    let server = MockServer::start().await;
    mount_token(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(body!({"access_token": "tok-leak", "token_type": "Bearer"})),
        None,
    )
    .await;

    let error = provider(&server.uri()).send(&sms()).await.unwrap_err();

    let ProviderError::Protocol { status, detail } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(*status, 200);
    assert!(!detail.contains("tok-leak"), "{detail}");
    assert!(requests_to(&server, SMS_PATH).await.is_empty());
}

/// No token means no send: a 5xx from the token endpoint provably sent nothing, so it
/// is `connect_failed` (safe to retry, gives the caller's allowance back), not the
/// unknown outcome a 5xx from the send endpoint would be.
#[tokio::test]
async fn a_failing_token_endpoint_is_transient_and_sent_nothing() {
    let server = MockServer::start().await;
    mount_token(
        &server,
        ResponseTemplate::new(503).set_body_string("<html>Service Unavailable</html>"),
        None,
    )
    .await;

    let error = provider(&server.uri()).send(&sms()).await.unwrap_err();

    assert_eq!(
        error,
        ProviderError::Connect {
            detail: "no access token, nothing sent: HTTP 503".into()
        }
    );
    assert!(error.is_transient() && error.is_safe_to_retry() && error.never_reached_provider());
    assert!(requests_to(&server, SMS_PATH).await.is_empty());
}

#[tokio::test]
async fn a_slow_token_endpoint_times_out_having_sent_nothing() {
    let server = MockServer::start().await;
    mount_token(
        &server,
        token("tok-1", 3600).set_delay(SLOWER_THAN_TIMEOUT),
        None,
    )
    .await;

    let error = provider(&server.uri()).send(&sms()).await.unwrap_err();

    assert_eq!(error.code(), "connect_failed");
    assert!(error.never_reached_provider());
    assert!(requests_to(&server, SMS_PATH).await.is_empty());
}

// --- SMS replies ----------------------------------------------------------------------

#[tokio::test]
async fn sms_refusal_with_error_code_is_rejected() {
    let error = sms_error(
        ResponseTemplate::new(400)
            .set_body_json(body!({"error_code": 422, "message": "Campaign body is empty"})),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Rejected {
            detail: "error_code 422: Campaign body is empty".into()
        }
    );
    assert!(error.is_permanent());
}

#[tokio::test]
async fn sms_refusals_for_balance_or_sender_are_account_unusable() {
    let error =
        sms_error(ResponseTemplate::new(400).set_body_json(
            body!({"error_code": 422, "message": "Not enough funds on the balance"}),
        ))
        .await;
    assert_eq!(
        error,
        ProviderError::AccountUnusable {
            detail: "error_code 422: Not enough funds on the balance".into()
        }
    );
    assert_eq!(error.code(), "account_unusable");
    assert!(error.is_permanent() && error.another_provider_may_succeed());

    let error = sms_error(ResponseTemplate::new(200).set_body_json(
        body!({"result": false, "error_code": 3, "message": "Sender is not active"}),
    ))
    .await;
    assert_eq!(
        error,
        ProviderError::AccountUnusable {
            detail: "error_code 3: Sender is not active".into()
        }
    );
}

#[tokio::test]
async fn sms_refusal_of_the_number_is_an_invalid_recipient_with_the_number_masked() {
    let error = sms_error(
        ResponseTemplate::new(400)
            .set_body_json(body!({"error_code": 422, "message": "Phone 5511966191717 is invalid"})),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::InvalidRecipient {
            detail: "error_code 422: Phone **** is invalid".into()
        }
    );
}

#[tokio::test]
async fn sms_to_a_blacklisted_number_is_opted_out() {
    let error = sms_error(
        ResponseTemplate::new(400)
            .set_body_json(body!({"error_code": 422, "message": "The phone is in the black list"})),
    )
    .await;
    assert_eq!(error.code(), "recipient_opted_out");
}

#[tokio::test]
async fn sms_oauth_style_error_is_rejected() {
    let error = sms_error(ResponseTemplate::new(400).set_body_json(
        body!({"error": "invalid_request", "error_description": "The body field is required"}),
    ))
    .await;
    assert_eq!(
        error,
        ProviderError::Rejected {
            detail: "invalid_request: The body field is required".into()
        }
    );
}

#[tokio::test]
async fn sms_result_false_is_rejected() {
    let error = sms_error(ResponseTemplate::new(200).set_body_json(
        body!({"result": false, "error_code": 3, "message": "Campaign was not created"}),
    ))
    .await;
    assert_eq!(
        error,
        ProviderError::Rejected {
            detail: "error_code 3: Campaign was not created".into()
        }
    );
}

#[tokio::test]
async fn sms_campaign_that_sends_nothing_is_rejected() {
    let error = sms_error(ResponseTemplate::new(200).set_body_json(
        body!({"result": true, "campaign_id": 2623086, "counters": {"exceptions": 1, "sends": 0}}),
    ))
    .await;
    assert_eq!(error.code(), "rejected");
}

#[tokio::test]
async fn sms_forbidden_is_unauthorized() {
    let error = sms_error(ResponseTemplate::new(403).set_body_json(
        body!({"error_code": 403, "message": "Access to the SMS service is not allowed"}),
    ))
    .await;
    assert_eq!(
        error,
        ProviderError::Unauthorized {
            detail: "error_code 403: Access to the SMS service is not allowed".into()
        }
    );
}

#[tokio::test]
async fn sms_throttled_is_rate_limited_and_safe_to_retry() {
    let error = sms_error(
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "7")
            .set_body_json(body!({"error_code": 429, "message": "Too many requests"})),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::RateLimited {
            detail: "error_code 429: Too many requests".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
    assert!(error.is_transient() && error.is_safe_to_retry());
}

#[tokio::test]
async fn sms_server_error_is_unavailable_with_unknown_outcome() {
    let error = sms_error(
        ResponseTemplate::new(500)
            .set_body_json(body!({"error_code": 500, "message": "Internal server error"})),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "error_code 500: Internal server error".into()
        }
    );
    assert!(error.is_transient() && !error.is_safe_to_retry());
}

#[tokio::test]
async fn sms_2xx_without_result_false_is_an_acceptance_even_unreadable() {
    // A 2xx is SendPulse's acceptance unless it says `"result": false`: failing it over
    // would send a second code.
    for reply in [
        ResponseTemplate::new(200)
            .set_body_string("<html>Whoops, looks like something went wrong.</html>"),
        ResponseTemplate::new(200).set_body_json(body!({"result": true})),
        ResponseTemplate::new(200).set_body_json(body!({"campaign_id": 7})),
    ] {
        let (result, _server) = send_against(SMS_PATH, reply, sms()).await;
        assert_eq!(
            result.unwrap(),
            Receipt::new("sendpulse", None, DeliveryStatus::Queued, None)
        );
    }
}

#[tokio::test]
async fn sms_reply_of_the_wrong_shape_is_a_protocol_error() {
    let error = sms_error(ResponseTemplate::new(404).set_body_string("Not Found")).await;
    assert_eq!(
        error,
        ProviderError::Protocol {
            status: 404,
            detail: "Not Found".into()
        }
    );
}

#[tokio::test]
async fn sms_slower_than_the_timeout_times_out() {
    let error = sms_error(sms_accepted().set_delay(SLOWER_THAN_TIMEOUT)).await;
    assert_eq!(error, ProviderError::Timeout);
    assert!(error.is_transient() && !error.is_safe_to_retry());
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let error = provider(&refused_url()).send(&sms()).await.unwrap_err();
    assert_eq!(error.code(), "connect_failed");
    assert!(matches!(error, ProviderError::Connect { .. }));
    assert!(error.is_safe_to_retry());
}

// --- WhatsApp replies -----------------------------------------------------------------

#[tokio::test]
async fn whatsapp_invalid_phone_is_an_invalid_recipient() {
    let error = whatsapp_error(ResponseTemplate::new(422).set_body_json(body!({
        "success": false,
        "errors": {"phone": ["The phone format is invalid."]},
    })))
    .await;
    assert_eq!(
        error,
        ProviderError::InvalidRecipient {
            detail: r#"{"phone":["The phone format is invalid."]}"#.into()
        }
    );
}

#[tokio::test]
async fn whatsapp_success_false_for_a_missing_template_is_account_unusable() {
    let error = whatsapp_error(
        ResponseTemplate::new(200)
            .set_body_json(body!({"success": false, "message": "Template not found"})),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::AccountUnusable {
            detail: "Template not found".into()
        }
    );
}

#[tokio::test]
async fn whatsapp_message_rejected_at_once_is_rejected() {
    let error = whatsapp_error(ResponseTemplate::new(200).set_body_json(
        body!({"success": true, "data": {"id": "65f1c2d3e4f5a6b7c8d9e0f1", "status": 6}}),
    ))
    .await;
    assert_eq!(error.code(), "rejected");
}

#[tokio::test]
async fn whatsapp_2xx_without_success_false_is_an_acceptance_even_without_an_id() {
    for reply in [
        ResponseTemplate::new(200).set_body_json(body!({"success": true, "data": {}})),
        ResponseTemplate::new(200).set_body_string("OK"),
    ] {
        let (result, _server) = send_against(WHATSAPP_PATH, reply, whatsapp()).await;
        assert_eq!(
            result.unwrap(),
            Receipt::new("sendpulse", None, DeliveryStatus::Queued, None)
        );
    }
}

#[tokio::test]
async fn whatsapp_throttled_and_server_errors_are_transient() {
    let error = whatsapp_error(ResponseTemplate::new(429)).await;
    assert_eq!(
        error,
        ProviderError::RateLimited {
            detail: "HTTP 429".into(),
            retry_after: None
        }
    );
    let error = whatsapp_error(ResponseTemplate::new(502)).await;
    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "HTTP 502".into()
        }
    );
}

// --- probe ----------------------------------------------------------------------------

#[tokio::test]
async fn probe_fetches_a_token_and_sends_nothing() {
    let server = MockServer::start().await;
    mount_token(&server, token("tok-1", 3600), None).await;
    let provider = provider(&server.uri());

    assert!(matches!(
        provider.probe().await.unwrap(),
        ProbeOutcome::Verified(_)
    ));
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.path(), TOKEN_PATH);
}

#[tokio::test]
async fn probe_with_refused_credentials_is_unauthorized() {
    let server = MockServer::start().await;
    mount_token(
        &server,
        ResponseTemplate::new(401).set_body_json(body!({"error": "invalid_client"})),
        None,
    )
    .await;
    let error = provider(&server.uri()).probe().await.unwrap_err();
    assert_eq!(error.code(), "unauthorized");
}

// --- settings -------------------------------------------------------------------------

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_env(pairs: &[(&str, &str)]) -> Result<SendpulseSettings, SettingError> {
    SendpulseSettings::from_env(&Env::new(&vars(pairs)))
}

const CREDENTIALS: [(&str, &str); 2] = [
    ("SENDPULSE_CLIENT_ID", CLIENT_ID),
    ("SENDPULSE_CLIENT_SECRET", CLIENT_SECRET),
];

fn with_credentials(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    CREDENTIALS.iter().chain(extra).copied().collect()
}

#[test]
fn from_env_defaults_to_sms_on_the_public_api() {
    let settings = from_env(&with_credentials(&[("SENDPULSE_SENDER", "OtpRelay")])).unwrap();
    assert_eq!(settings.client_id, CLIENT_ID);
    assert_eq!(settings.channels, vec![Channel::Sms]);
    assert_eq!(settings.sender.as_deref(), Some("OtpRelay"));
    assert_eq!(settings.whatsapp, None);
    assert_eq!(settings.base_url, DEFAULT_BASE_URL);
}

#[test]
fn from_env_reads_whatsapp_template_and_language() {
    let settings = from_env(&with_credentials(&[
        ("SENDPULSE_CHANNEL", "sms, whatsapp"),
        ("SENDPULSE_SENDER", "OtpRelay"),
        ("SENDPULSE_WHATSAPP_BOT_ID", BOT_ID),
        ("SENDPULSE_WHATSAPP_TEMPLATE", "otp_code:pt_BR"),
        ("SENDPULSE_BASE_URL", "http://127.0.0.1:9999/"),
    ]))
    .unwrap();
    assert_eq!(settings.channels, vec![Channel::Sms, Channel::Whatsapp]);
    assert_eq!(
        settings.whatsapp,
        Some(SendpulseWhatsapp {
            bot_id: BOT_ID.into(),
            template: "otp_code".into(),
            language: "pt_BR".into(),
        })
    );
    assert_eq!(settings.base_url, "http://127.0.0.1:9999");

    let whatsapp_only = from_env(&with_credentials(&[
        ("SENDPULSE_CHANNEL", "whatsapp"),
        ("SENDPULSE_WHATSAPP_BOT_ID", BOT_ID),
        ("SENDPULSE_WHATSAPP_TEMPLATE", "otp_code"),
    ]))
    .unwrap();
    assert_eq!(whatsapp_only.sender, None);
    assert_eq!(whatsapp_only.whatsapp.unwrap().language, "en");
}

#[test]
fn from_env_names_each_missing_variable() {
    let complete = [
        ("SENDPULSE_CLIENT_ID", CLIENT_ID),
        ("SENDPULSE_CLIENT_SECRET", CLIENT_SECRET),
        ("SENDPULSE_CHANNEL", "sms,whatsapp"),
        ("SENDPULSE_SENDER", "OtpRelay"),
        ("SENDPULSE_WHATSAPP_BOT_ID", BOT_ID),
        ("SENDPULSE_WHATSAPP_TEMPLATE", "otp_code"),
    ];
    assert!(from_env(&complete).is_ok());
    for missing in [
        "SENDPULSE_CLIENT_ID",
        "SENDPULSE_CLIENT_SECRET",
        "SENDPULSE_SENDER",
        "SENDPULSE_WHATSAPP_BOT_ID",
        "SENDPULSE_WHATSAPP_TEMPLATE",
    ] {
        let pairs: Vec<_> = complete
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let error = from_env(&pairs).unwrap_err();
        assert_eq!(error.var, missing);
        assert_eq!(error.problem, "is required");
    }
}

#[test]
fn from_env_refuses_variables_for_a_channel_not_served() {
    let error = from_env(&with_credentials(&[
        ("SENDPULSE_SENDER", "OtpRelay"),
        ("SENDPULSE_WHATSAPP_BOT_ID", BOT_ID),
    ]))
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "SENDPULSE_CHANNEL: does not include whatsapp, yet SENDPULSE_WHATSAPP_BOT_ID is set \
         (add whatsapp here or unset SENDPULSE_WHATSAPP_BOT_ID); for example SENDPULSE_CHANNEL=sms,whatsapp"
    );

    let error = from_env(&with_credentials(&[
        ("SENDPULSE_CHANNEL", "whatsapp"),
        ("SENDPULSE_SENDER", "OtpRelay"),
        ("SENDPULSE_WHATSAPP_BOT_ID", BOT_ID),
        ("SENDPULSE_WHATSAPP_TEMPLATE", "otp_code"),
    ]))
    .unwrap_err();
    assert_eq!(error.var, "SENDPULSE_CHANNEL");
    assert!(
        error.problem.contains("SENDPULSE_SENDER"),
        "{}",
        error.problem
    );
}

#[test]
fn from_env_refuses_invalid_values() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("SENDPULSE_CHANNEL", "telegram")], "SENDPULSE_CHANNEL"),
        (
            &[("SENDPULSE_SENDER", "MuchTooLongSender")],
            "SENDPULSE_SENDER",
        ),
        (
            &[
                ("SENDPULSE_CHANNEL", "whatsapp"),
                ("SENDPULSE_WHATSAPP_BOT_ID", BOT_ID),
                ("SENDPULSE_WHATSAPP_TEMPLATE", "OTP Code"),
            ],
            "SENDPULSE_WHATSAPP_TEMPLATE",
        ),
        (
            &[
                ("SENDPULSE_SENDER", "OtpRelay"),
                ("SENDPULSE_BASE_URL", "ftp://example.test"),
            ],
            "SENDPULSE_BASE_URL",
        ),
    ];
    for (extra, var) in cases {
        let error = from_env(&with_credentials(extra)).unwrap_err();
        assert_eq!(error.var, var, "{error}");
    }
}

#[test]
fn new_refuses_settings_missing_what_a_channel_needs() {
    let base = "http://127.0.0.1:9";
    let mut no_sender = settings(base);
    no_sender.sender = None;
    let mut no_whatsapp = settings(base);
    no_whatsapp.whatsapp = None;
    let mut telegram = settings(base);
    telegram.channels = vec![Channel::Telegram];
    let mut none = settings(base);
    none.channels = vec![];

    for (settings, var) in [
        (no_sender, "SENDPULSE_SENDER"),
        (no_whatsapp, "SENDPULSE_WHATSAPP_BOT_ID"),
        (telegram, "SENDPULSE_CHANNEL"),
        (none, "SENDPULSE_CHANNEL"),
    ] {
        let error = SendpulseProvider::new(settings, &context(None))
            .err()
            .unwrap();
        assert_eq!(error.var, var);
    }
}

#[test]
fn debug_never_shows_the_secret() {
    let settings = from_env(&with_credentials(&[("SENDPULSE_SENDER", "OtpRelay")])).unwrap();
    let printed = format!("{settings:?}");
    assert!(!printed.contains(CLIENT_SECRET), "{printed}");
    assert!(printed.contains(CLIENT_ID), "{printed}");
}
