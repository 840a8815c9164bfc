//! The Telegram adapter against mock Gateway and Bot API servers.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{MESSAGE_ID, PT_BR_TEXT, SLOWER_THAN_TIMEOUT};
use otp_relay_providers::{
    http, Channel, ChatDirectory, DeliveryStatus, Env, MemoryChatDirectory, MessageProvider,
    OutboundMessage, Phone, ProbeOutcome, ProviderContext, ProviderError, TelegramMode,
    TelegramProvider, TelegramSettings,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const GATEWAY_TOKEN: &str = "gwTok_9f8e7d6c5b4a-XYZ";
const BOT_TOKEN: &str = "123456789:AAHbotSecretPart_x-yz";
/// The part of the bot token that must never leak (the bot id before it is public).
const BOT_SECRET: &str = "AAHbotSecretPart_x-yz";
const WEBHOOK_SECRET: &str = "hookSecret_1-2";
const CHAT_ID: i64 = 424242;

fn settings(mode: TelegramMode, base: &str) -> TelegramSettings {
    TelegramSettings {
        mode,
        gateway_token: Some(SecretString::from(GATEWAY_TOKEN)),
        gateway_base_url: base.to_owned(),
        bot_token: Some(SecretString::from(BOT_TOKEN)),
        bot_base_url: base.to_owned(),
        webhook_secret: Some(SecretString::from(WEBHOOK_SECRET)),
        sender_username: None,
        link_ttl: otp_relay_providers::telegram::DEFAULT_LINK_TTL,
    }
}

fn gateway(base: &str, public_base_url: Option<&str>) -> TelegramProvider {
    TelegramProvider::new(
        settings(TelegramMode::Gateway, base),
        &common::context(public_base_url),
    )
    .unwrap()
}

fn bot(base: &str) -> TelegramProvider {
    let chats = Arc::new(MemoryChatDirectory::new(10));
    assert!(chats.register(&recipient(), CHAT_ID));
    TelegramProvider::new(
        settings(TelegramMode::Bot, base),
        &common::context_with_chats(None, chats),
    )
    .unwrap()
}

fn recipient() -> Phone {
    Phone::parse("+5511966191717", None).unwrap()
}

fn code_message() -> OutboundMessage {
    common::message(PT_BR_TEXT, Some("123456"), Channel::Telegram)
}

fn bot_path(method_name: &str) -> String {
    format!("/bot{BOT_TOKEN}/{method_name}")
}

fn gateway_ok(delivery_status: Option<&str>) -> Value {
    let mut result = json!({
        "request_id": "7d3c1f2a9b",
        "phone_number": "+5511966191717",
        "request_cost": 0.01,
        "remaining_balance": 9.99,
        "payload": MESSAGE_ID
    });
    if let Some(status) = delivery_status {
        result["delivery_status"] = json!({"status": status, "updated_at": 1732752000});
    }
    json!({"ok": true, "result": result})
}

fn gateway_error(error: &str) -> Value {
    json!({"ok": false, "error": error})
}

fn bot_error(code: u16, description: &str) -> Value {
    json!({"ok": false, "error_code": code, "description": description})
}

/// What the Gateway's `response` to one send turns into; exactly one request is made.
async fn gateway_failure(response: ResponseTemplate) -> ProviderError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sendVerificationMessage"))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    gateway(&server.uri(), None)
        .send(&code_message())
        .await
        .unwrap_err()
}

/// What the Bot API's `response` to one send turns into; exactly one request is made.
async fn bot_failure(response: ResponseTemplate) -> ProviderError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(bot_path("sendMessage")))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    bot(&server.uri()).send(&code_message()).await.unwrap_err()
}

fn assert_token_hidden(error: &ProviderError) {
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(BOT_SECRET), "{shown}");
        assert!(!shown.contains(GATEWAY_TOKEN), "{shown}");
    }
}

// --- Gateway mode ----------------------------------------------------------------

#[tokio::test]
async fn gateway_request_carries_the_code_not_the_text() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sendVerificationMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(gateway_ok(Some("sent"))))
        .expect(1)
        .mount(&server)
        .await;

    let receipt = gateway(&server.uri(), Some("https://otp.example.com"))
        .send(&code_message())
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/sendVerificationMessage");
    assert_eq!(request.url.query(), None);
    assert_eq!(
        common::header(request, "authorization"),
        format!("Bearer {GATEWAY_TOKEN}")
    );
    assert_eq!(common::header(request, "content-type"), "application/json");
    assert_eq!(
        common::json(request),
        json!({
            "phone_number": "+5511966191717",
            "code": "123456",
            "ttl": 300,
            "payload": MESSAGE_ID,
            "callback_url": "https://otp.example.com/webhooks/telegram-gateway"
        })
    );
    let mut expected = otp_relay_providers::Receipt::new(
        "telegram",
        Some("7d3c1f2a9b".into()),
        DeliveryStatus::Sent,
        Some("sent".into()),
    );
    // request_cost and remaining_balance, as Telegram wrote them, in the Gateway's
    // credits: no currency is named.
    expected.cost = otp_relay_providers::Money::parse("0.01", None);
    expected.balance = otp_relay_providers::Money::parse("9.99", None);
    assert_eq!(receipt, expected);
}

/// <https://core.telegram.org/gateway/api#sendverificationmessage>: `sender_username`
/// names a verified channel of ours that sends the code; `callback_url` must be https,
/// so an http public URL is left out rather than have every send refused.
#[tokio::test]
async fn gateway_sends_the_sender_username_and_no_http_callback_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sendVerificationMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(gateway_ok(None)))
        .expect(1)
        .mount(&server)
        .await;
    let mut settings = settings(TelegramMode::Gateway, &server.uri());
    settings.sender_username = Some("acme_codes".into());
    let provider =
        TelegramProvider::new(settings, &common::context(Some("http://otp.example.com"))).unwrap();

    provider.send(&code_message()).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        common::json(&requests[0]),
        json!({
            "phone_number": "+5511966191717",
            "code": "123456",
            "ttl": 300,
            "payload": MESSAGE_ID,
            "sender_username": "acme_codes"
        })
    );
}

#[tokio::test]
async fn gateway_omits_the_callback_without_a_public_url_and_clamps_the_ttl() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sendVerificationMessage"))
        .respond_with(ResponseTemplate::new(200).set_body_json(gateway_ok(None)))
        .expect(2)
        .mount(&server)
        .await;
    let provider = gateway(&server.uri(), None);

    for ttl in [Duration::from_secs(5), Duration::from_secs(7200)] {
        let mut message = code_message();
        message.ttl = ttl;
        provider.send(&message).await.unwrap();
    }

    let requests = server.received_requests().await.unwrap();
    let bodies: Vec<Value> = requests.iter().map(common::json).collect();
    assert_eq!(bodies[0]["ttl"], 30);
    assert_eq!(bodies[1]["ttl"], 3600);
    for body in &bodies {
        assert!(body.get("callback_url").is_none(), "{body}");
    }
}

#[tokio::test]
async fn gateway_delivery_statuses_are_mapped() {
    let server = MockServer::start().await;
    let provider = gateway(&server.uri(), None);
    let cases = [
        (None, DeliveryStatus::Queued),
        (Some("sent"), DeliveryStatus::Sent),
        (Some("delivered"), DeliveryStatus::Delivered),
        (Some("read"), DeliveryStatus::Delivered),
        (Some("expired"), DeliveryStatus::Undelivered),
        (Some("revoked"), DeliveryStatus::Failed),
    ];
    for (raw, expected) in cases {
        server.reset().await;
        Mock::given(method("POST"))
            .and(path("/sendVerificationMessage"))
            .respond_with(ResponseTemplate::new(200).set_body_json(gateway_ok(raw)))
            .expect(1)
            .mount(&server)
            .await;
        let receipt = provider.send(&code_message()).await.unwrap();
        assert_eq!(receipt.status, expected, "{raw:?}");
        assert_eq!(receipt.raw_status.as_deref(), raw);
        assert_eq!(receipt.provider_message_id.as_deref(), Some("7d3c1f2a9b"));
    }
}

#[tokio::test]
async fn gateway_refuses_a_message_without_a_usable_code_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(gateway_ok(Some("sent"))))
        .expect(0)
        .mount(&server)
        .await;
    let provider = gateway(&server.uri(), None);

    for code in [
        None,
        Some("123"),
        Some("123456789"),
        Some("12a456"),
        Some("１２３４"),
    ] {
        let message = common::message(PT_BR_TEXT, code, Channel::Telegram);
        let error = provider.send(&message).await.unwrap_err();
        assert_eq!(error, ProviderError::CodeRequired, "{code:?}");
        assert_eq!(error.code(), "code_required");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn gateway_invalid_token_is_unauthorized() {
    let error = gateway_failure(
        ResponseTemplate::new(401).set_body_json(gateway_error("ACCESS_TOKEN_INVALID")),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Unauthorized {
            detail: "ACCESS_TOKEN_INVALID".into()
        }
    );
    assert_eq!(error.code(), "unauthorized");
    assert!(error.is_permanent());
}

#[tokio::test]
async fn gateway_invalid_phone_number_is_a_permanent_recipient_error() {
    let error = gateway_failure(
        ResponseTemplate::new(400).set_body_json(gateway_error("PHONE_NUMBER_INVALID")),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::InvalidRecipient {
            detail: "PHONE_NUMBER_INVALID".into()
        }
    );
    assert_eq!(error.code(), "invalid_recipient");
    assert!(error.is_permanent() && !error.another_provider_may_succeed());
}

#[tokio::test]
async fn gateway_number_without_telegram_lets_another_provider_try() {
    let error = gateway_failure(
        ResponseTemplate::new(400).set_body_json(gateway_error("PHONE_NUMBER_NOT_FOUND")),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::RecipientNotRegistered {
            detail: "PHONE_NUMBER_NOT_FOUND".into()
        }
    );
    assert_eq!(error.code(), "recipient_not_registered");
    assert!(error.is_permanent() && error.another_provider_may_succeed());
}

#[tokio::test]
async fn gateway_flood_wait_is_rate_limited_with_its_delay() {
    let error =
        gateway_failure(ResponseTemplate::new(429).set_body_json(gateway_error("FLOOD_WAIT_17")))
            .await;
    assert_eq!(
        error,
        ProviderError::RateLimited {
            detail: "FLOOD_WAIT_17".into(),
            retry_after: Some(Duration::from_secs(17)),
        }
    );
    assert_eq!(error.code(), "rate_limited");
    assert!(error.is_transient() && error.is_safe_to_retry());
}

#[tokio::test]
async fn gateway_flood_wait_without_seconds_falls_back_to_retry_after() {
    let error = gateway_failure(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "9")
            .set_body_json(gateway_error("FLOOD_WAIT")),
    )
    .await;
    assert_eq!(error.retry_after(), Some(Duration::from_secs(9)));
    assert_eq!(error.code(), "rate_limited");
}

#[tokio::test]
async fn gateway_timeout_error_is_transient_with_unknown_outcome() {
    let error =
        gateway_failure(ResponseTemplate::new(200).set_body_json(gateway_error("TIMEOUT"))).await;
    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "TIMEOUT".into()
        }
    );
    assert!(error.is_transient() && !error.is_safe_to_retry());
}

#[tokio::test]
async fn gateway_empty_balance_or_bad_sender_is_account_unusable() {
    let error = gateway_failure(
        ResponseTemplate::new(400).set_body_json(gateway_error("BALANCE_NOT_ENOUGH")),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::AccountUnusable {
            detail: "BALANCE_NOT_ENOUGH".into()
        }
    );
    assert_eq!(error.code(), "account_unusable");
    assert!(error.is_permanent() && error.another_provider_may_succeed());
}

/// Errors about what we send (callback URL, ttl, payload) or the sender we named: our
/// configuration, the same for every message; another provider may deliver.
#[tokio::test]
async fn gateway_errors_about_our_request_are_misconfigured() {
    for name in [
        "CALLBACK_URL_INVALID",
        "TTL_INVALID",
        "PAYLOAD_INVALID",
        "SENDER_NOT_VERIFIED",
        "SENDER_USERNAME_INVALID",
    ] {
        let error =
            gateway_failure(ResponseTemplate::new(400).set_body_json(gateway_error(name))).await;
        assert_eq!(
            error,
            ProviderError::Misconfigured {
                code: name.into(),
                detail: name.into()
            }
        );
        assert!(error.another_provider_may_succeed() && !error.is_transient());
    }
}

#[tokio::test]
async fn gateway_other_errors_are_rejections_and_code_errors_need_a_code() {
    let error =
        gateway_failure(ResponseTemplate::new(400).set_body_json(gateway_error("MESSAGE_UNKNOWN")))
            .await;
    assert_eq!(
        error,
        ProviderError::Rejected {
            detail: "MESSAGE_UNKNOWN".into()
        }
    );
    assert_eq!(error.code(), "rejected");

    let error =
        gateway_failure(ResponseTemplate::new(400).set_body_json(gateway_error("CODE_INVALID")))
            .await;
    assert_eq!(error, ProviderError::CodeRequired);
}

#[tokio::test]
async fn gateway_server_error_page_is_unavailable() {
    let error = gateway_failure(
        ResponseTemplate::new(502).set_body_raw("<html>502 Bad Gateway</html>", "text/html"),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "502 Bad Gateway".into()
        }
    );
    assert!(error.is_transient() && !error.is_safe_to_retry());
}

/// A 2xx without Telegram's `"ok": false` is an acceptance: failing it over would send a
/// second code. Without a readable request_id the receipt has no id and is `queued`.
#[tokio::test]
async fn gateway_2xx_without_ok_false_is_an_acceptance_even_unreadable() {
    for reply in [
        ResponseTemplate::new(200)
            .set_body_json(json!({"ok": true, "result": {"phone_number": "+5511966191717"}})),
        ResponseTemplate::new(200).set_body_raw("<html>hi</html>", "text/html"),
        ResponseTemplate::new(200),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/sendVerificationMessage"))
            .respond_with(reply)
            .expect(1)
            .mount(&server)
            .await;
        let receipt = gateway(&server.uri(), None)
            .send(&code_message())
            .await
            .unwrap();
        assert_eq!(
            receipt,
            otp_relay_providers::Receipt::new("telegram", None, DeliveryStatus::Queued, None)
        );
    }
    // `"ok": false` on a 200 is a refusal.
    let error = gateway_failure(
        ResponseTemplate::new(200).set_body_json(gateway_error("PHONE_NUMBER_INVALID")),
    )
    .await;
    assert_eq!(error.code(), "invalid_recipient");
}

#[tokio::test]
async fn gateway_slow_reply_times_out() {
    let error = gateway_failure(
        ResponseTemplate::new(200)
            .set_body_json(gateway_ok(Some("sent")))
            .set_delay(SLOWER_THAN_TIMEOUT),
    )
    .await;
    assert_eq!(error, ProviderError::Timeout);
    assert_eq!(error.code(), "timeout");
}

#[tokio::test]
async fn gateway_refused_connection_is_connect_failed() {
    let error = gateway(&common::refused_url(), None)
        .send(&code_message())
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Connect { .. }), "{error:?}");
    assert_eq!(error.code(), "connect_failed");
    assert!(error.is_safe_to_retry());
}

#[tokio::test]
async fn gateway_probe_is_not_supported_and_sends_nothing() {
    let server = MockServer::start().await;
    let outcome = gateway(&server.uri(), None).probe().await.unwrap();
    assert_eq!(outcome, ProbeOutcome::NotSupported);
    assert!(server.received_requests().await.unwrap().is_empty());
}

// --- Bot mode --------------------------------------------------------------------

#[tokio::test]
async fn bot_request_sends_the_utf8_text_to_the_linked_chat() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(bot_path("sendMessage")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "result": {"message_id": 77, "date": 1732752000, "chat": {"id": CHAT_ID, "type": "private"}, "text": PT_BR_TEXT}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let receipt = bot(&server.uri()).send(&code_message()).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), bot_path("sendMessage"));
    assert_eq!(request.url.query(), None);
    assert!(request.headers.get("authorization").is_none());
    assert_eq!(common::header(request, "content-type"), "application/json");
    assert_eq!(
        common::json(request),
        json!({"chat_id": CHAT_ID, "text": PT_BR_TEXT})
    );
    let utf8 = "código".as_bytes();
    assert!(
        request.body.windows(utf8.len()).any(|w| w == utf8),
        "text must travel as UTF-8"
    );
    assert_eq!(receipt.provider, "telegram");
    assert_eq!(receipt.provider_message_id.as_deref(), Some("424242:77"));
    assert_eq!(receipt.status, DeliveryStatus::Sent);
    assert_eq!(receipt.raw_status, None);
}

#[tokio::test]
async fn bot_unlinked_number_is_not_registered_and_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let provider = TelegramProvider::new(
        settings(TelegramMode::Bot, &server.uri()),
        &common::context(None),
    )
    .unwrap();

    let error = provider.send(&code_message()).await.unwrap_err();

    assert!(
        matches!(error, ProviderError::RecipientNotRegistered { .. }),
        "{error:?}"
    );
    assert_eq!(error.code(), "recipient_not_registered");
    assert!(error.is_permanent() && error.another_provider_may_succeed());
    assert!(server.received_requests().await.unwrap().is_empty());
}

struct BrokenDirectory;

#[async_trait]
impl ChatDirectory for BrokenDirectory {
    async fn chat_for(&self, _phone: &Phone) -> Result<Option<i64>, ProviderError> {
        Err(ProviderError::Unavailable {
            detail: "store unreachable".into(),
        })
    }

    async fn renew(&self, _phone: &Phone, _chat_id: i64) -> Result<(), ProviderError> {
        unreachable!("nothing was sent")
    }

    async fn forget(&self, _phone: &Phone, _chat_id: i64) -> Result<(), ProviderError> {
        unreachable!("nothing was sent")
    }
}

#[tokio::test]
async fn bot_directory_outage_is_passed_on_and_sends_nothing() {
    let server = MockServer::start().await;
    let context = ProviderContext {
        client: http::client(common::CLIENT_TIMEOUT),
        callback_urls: std::sync::Arc::new(otp_relay_providers::NoCallbacks),
        chats: Arc::new(BrokenDirectory),
    };
    let provider =
        TelegramProvider::new(settings(TelegramMode::Bot, &server.uri()), &context).unwrap();

    let error = provider.send(&code_message()).await.unwrap_err();

    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "store unreachable".into()
        }
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn bot_flood_control_is_rate_limited_with_retry_after() {
    let mut body = bot_error(429, "Too Many Requests: retry after 5");
    body["parameters"] = json!({"retry_after": 5});
    let error = bot_failure(ResponseTemplate::new(429).set_body_json(body)).await;
    assert_eq!(
        error,
        ProviderError::RateLimited {
            detail: "429: Too Many Requests: retry after 5".into(),
            retry_after: Some(Duration::from_secs(5)),
        }
    );
    assert!(error.is_transient() && error.is_safe_to_retry());
}

/// A user who blocked the bot cannot be reached on this channel: the link goes, and the
/// error lets the dispatcher fall back to SMS (it was 422 for ever before).
#[tokio::test]
async fn bot_blocked_by_the_user_unlinks_the_chat_and_is_not_registered() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(bot_path("sendMessage")))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(bot_error(403, "Forbidden: bot was blocked by the user")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let chats = Arc::new(MemoryChatDirectory::new(10));
    assert!(chats.register(&recipient(), CHAT_ID));
    let provider = TelegramProvider::new(
        settings(TelegramMode::Bot, &server.uri()),
        &common::context_with_chats(None, Arc::clone(&chats)),
    )
    .unwrap();

    let error = provider.send(&code_message()).await.unwrap_err();

    assert_eq!(error.code(), "recipient_not_registered");
    assert!(error.another_provider_may_succeed());
    assert_eq!(chats.chat_for(&recipient()).await.unwrap(), None);
    // Sending again asks Telegram nothing: the number is not linked any more.
    let again = provider.send(&code_message()).await.unwrap_err();
    assert_eq!(again.code(), "recipient_not_registered");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bot_chat_not_found_or_deactivated_user_is_not_registered() {
    for (code, description) in [
        (400, "Bad Request: chat not found"),
        (403, "Forbidden: user is deactivated"),
        (
            403,
            "Forbidden: bot can't initiate conversation with a user",
        ),
    ] {
        let error =
            bot_failure(ResponseTemplate::new(code).set_body_json(bot_error(code, description)))
                .await;
        assert_eq!(
            error,
            ProviderError::RecipientNotRegistered {
                detail: format!("{code}: {description}")
            }
        );
        assert!(error.is_permanent() && error.another_provider_may_succeed());
    }
}

#[tokio::test]
async fn bot_other_bad_requests_are_rejected() {
    let error = bot_failure(
        ResponseTemplate::new(400)
            .set_body_json(bot_error(400, "Bad Request: message text is empty")),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Rejected {
            detail: "400: Bad Request: message text is empty".into()
        }
    );
}

#[tokio::test]
async fn bot_refused_token_is_unauthorized() {
    let error =
        bot_failure(ResponseTemplate::new(401).set_body_json(bot_error(401, "Unauthorized"))).await;
    assert_eq!(
        error,
        ProviderError::Unauthorized {
            detail: "401: Unauthorized".into()
        }
    );
    assert_eq!(error.code(), "unauthorized");
}

#[tokio::test]
async fn bot_server_errors_are_unavailable() {
    let error = bot_failure(
        ResponseTemplate::new(500).set_body_json(bot_error(500, "Internal Server Error")),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "500: Internal Server Error".into()
        }
    );

    let error = bot_failure(
        ResponseTemplate::new(502).set_body_raw("<html>Bad Gateway</html>", "text/html"),
    )
    .await;
    assert_eq!(
        error,
        ProviderError::Unavailable {
            detail: "502 Bad Gateway".into()
        }
    );
    assert!(error.is_transient() && !error.is_safe_to_retry());
}

/// A 2xx without `"ok": false` is an acceptance, read or not: no failover, no second code.
#[tokio::test]
async fn bot_2xx_without_ok_false_is_an_acceptance_even_unreadable() {
    for reply in [
        ResponseTemplate::new(200).set_body_json(json!({"ok": true, "result": {"date": 1}})),
        ResponseTemplate::new(200).set_body_raw("not json", "text/plain"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(bot_path("sendMessage")))
            .respond_with(reply)
            .expect(1)
            .mount(&server)
            .await;
        let receipt = bot(&server.uri()).send(&code_message()).await.unwrap();
        assert_eq!(
            receipt,
            otp_relay_providers::Receipt::new("telegram", None, DeliveryStatus::Queued, None)
        );
    }
    let error = bot_failure(
        ResponseTemplate::new(200)
            .set_body_json(bot_error(400, "Bad Request: message text is empty")),
    )
    .await;
    assert_eq!(error.code(), "rejected");
}

#[tokio::test]
async fn bot_protocol_error_never_shows_the_token_echoed_by_a_proxy() {
    let page = format!("<pre>Cannot POST /bot{BOT_TOKEN}/sendMessage</pre>");
    let error = bot_failure(ResponseTemplate::new(404).set_body_raw(page, "text/html")).await;
    match &error {
        ProviderError::Protocol { status, detail } => {
            assert_eq!(*status, 404);
            assert!(detail.contains("/bot****:<token>/sendMessage"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_token_hidden(&error);
}

#[tokio::test]
async fn bot_slow_reply_times_out_without_showing_the_url() {
    let error = bot_failure(
        ResponseTemplate::new(200)
            .set_body_json(json!({"ok": true, "result": {"message_id": 1}}))
            .set_delay(SLOWER_THAN_TIMEOUT),
    )
    .await;
    assert_eq!(error, ProviderError::Timeout);
    assert_token_hidden(&error);
}

#[tokio::test]
async fn bot_refused_connection_is_connect_failed_without_showing_the_url() {
    let error = bot(&common::refused_url())
        .send(&code_message())
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Connect { .. }), "{error:?}");
    assert_eq!(error.code(), "connect_failed");
    assert_token_hidden(&error);
}

#[tokio::test]
async fn bot_probe_calls_get_me() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(bot_path("getMe")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "result": {"id": 123456789, "is_bot": true, "first_name": "OTP Relay", "username": "otp_relay_bot"}
        })))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = bot(&server.uri()).probe().await.unwrap();

    assert_eq!(
        outcome,
        ProbeOutcome::Verified("getMe: bot @otp_relay_bot".into())
    );
}

#[tokio::test]
async fn bot_probe_with_a_revoked_token_is_unauthorized() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(bot_path("getMe")))
        .respond_with(ResponseTemplate::new(401).set_body_json(bot_error(401, "Unauthorized")))
        .expect(1)
        .mount(&server)
        .await;

    let error = bot(&server.uri()).probe().await.unwrap_err();

    assert_eq!(error.code(), "unauthorized");
}

// --- Identity and settings ---------------------------------------------------------

#[test]
fn serves_only_the_telegram_channel() {
    let provider = gateway("https://gatewayapi.telegram.org", None);
    assert_eq!(provider.name(), "telegram");
    assert_eq!(provider.channels(), &[Channel::Telegram]);
    assert!(!provider.serves(Channel::Sms));
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_env(pairs: &[(&str, &str)]) -> Result<TelegramSettings, otp_relay_providers::SettingError> {
    let map = vars(pairs);
    TelegramSettings::from_env(&Env::new(&map))
}

#[test]
fn from_env_defaults_to_the_gateway() {
    let settings = from_env(&[("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN)]).unwrap();
    assert_eq!(settings.mode, TelegramMode::Gateway);
    assert_eq!(
        settings.gateway_token.as_ref().unwrap().expose_secret(),
        GATEWAY_TOKEN
    );
    assert_eq!(settings.gateway_base_url, "https://gatewayapi.telegram.org");
    assert_eq!(settings.bot_base_url, "https://api.telegram.org");
    assert!(settings.bot_token.is_none() && settings.webhook_secret.is_none());
    assert!(settings.unused_variables().is_empty());
}

#[test]
fn from_env_reads_the_sender_username_and_the_link_ttl() {
    let settings = from_env(&[
        ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
        ("TELEGRAM_GATEWAY_SENDER_USERNAME", "@acme_codes"),
        ("TELEGRAM_LINK_TTL", "90d"),
    ])
    .unwrap();
    assert_eq!(settings.sender_username.as_deref(), Some("acme_codes"));
    assert_eq!(settings.link_ttl, Duration::from_secs(90 * 86_400));
    let defaults = from_env(&[("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN)]).unwrap();
    assert_eq!(defaults.sender_username, None);
    assert_eq!(defaults.link_ttl, Duration::from_secs(180 * 86_400));

    for (var, bad) in [
        ("TELEGRAM_GATEWAY_SENDER_USERNAME", "ab"),
        ("TELEGRAM_GATEWAY_SENDER_USERNAME", "acme codes"),
        ("TELEGRAM_LINK_TTL", "soon"),
        ("TELEGRAM_LINK_TTL", "30s"),
        ("TELEGRAM_LINK_TTL", "5y"),
    ] {
        let error = from_env(&[("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN), (var, bad)]).unwrap_err();
        assert_eq!(error.var, var, "{bad}");
    }
}

#[test]
fn from_env_reads_bot_mode() {
    let settings = from_env(&[
        ("TELEGRAM_MODE", "Bot"),
        ("TELEGRAM_BOT_TOKEN", BOT_TOKEN),
        ("TELEGRAM_BOT_BASE_URL", "http://127.0.0.1:8081/"),
        ("TELEGRAM_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ])
    .unwrap();
    assert_eq!(settings.mode, TelegramMode::Bot);
    assert_eq!(
        settings.bot_token.as_ref().unwrap().expose_secret(),
        BOT_TOKEN
    );
    assert_eq!(settings.bot_base_url, "http://127.0.0.1:8081");
    assert_eq!(
        settings.webhook_secret.as_ref().unwrap().expose_secret(),
        WEBHOOK_SECRET
    );
    assert!(settings.gateway_token.is_none());
}

#[test]
fn from_env_requires_the_token_of_the_mode() {
    let error = from_env(&[]).unwrap_err();
    assert_eq!(error.var, "TELEGRAM_GATEWAY_TOKEN");
    assert!(error.problem.contains("required"), "{error}");

    // A bot token alone does not switch the mode; the error says how to.
    let error = from_env(&[("TELEGRAM_BOT_TOKEN", BOT_TOKEN)]).unwrap_err();
    assert_eq!(error.var, "TELEGRAM_GATEWAY_TOKEN");
    assert!(error.problem.contains("TELEGRAM_MODE=bot"), "{error}");

    let error = from_env(&[
        ("TELEGRAM_MODE", "bot"),
        ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
    ])
    .unwrap_err();
    assert_eq!(error.var, "TELEGRAM_BOT_TOKEN");
}

#[test]
fn from_env_rejects_bad_values_without_quoting_secrets() {
    let error = from_env(&[
        ("TELEGRAM_MODE", "sms"),
        ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
    ])
    .unwrap_err();
    assert_eq!(error.var, "TELEGRAM_MODE");

    let error = from_env(&[
        ("TELEGRAM_MODE", "bot"),
        ("TELEGRAM_BOT_TOKEN", "123456789:leakMe/../x"),
    ])
    .unwrap_err();
    assert_eq!(error.var, "TELEGRAM_BOT_TOKEN");
    assert!(!error.to_string().contains("leakMe"), "{error}");

    let error = from_env(&[("TELEGRAM_GATEWAY_TOKEN", "two words")]).unwrap_err();
    assert_eq!(error.var, "TELEGRAM_GATEWAY_TOKEN");
    assert!(!error.to_string().contains("two words"), "{error}");

    let error = from_env(&[
        ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
        ("TELEGRAM_WEBHOOK_SECRET", "not allowed!"),
    ])
    .unwrap_err();
    assert_eq!(error.var, "TELEGRAM_WEBHOOK_SECRET");
    assert!(!error.to_string().contains("not allowed!"), "{error}");

    let error = from_env(&[
        ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
        ("TELEGRAM_GATEWAY_BASE_URL", "ftp://gateway"),
    ])
    .unwrap_err();
    assert_eq!(error.var, "TELEGRAM_GATEWAY_BASE_URL");
}

#[test]
fn the_other_modes_variables_are_reported_unused() {
    let gateway = from_env(&[
        ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
        ("TELEGRAM_BOT_TOKEN", BOT_TOKEN),
        ("TELEGRAM_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ])
    .unwrap();
    assert_eq!(
        gateway.unused_variables(),
        ["TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET"]
    );

    let bot = from_env(&[
        ("TELEGRAM_MODE", "bot"),
        ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
        ("TELEGRAM_BOT_TOKEN", BOT_TOKEN),
    ])
    .unwrap();
    assert_eq!(bot.unused_variables(), ["TELEGRAM_GATEWAY_TOKEN"]);
}

#[test]
fn new_checks_settings_built_by_hand() {
    let mut missing = settings(TelegramMode::Bot, "https://api.telegram.org");
    missing.bot_token = None;
    let error = TelegramProvider::new(missing, &common::context(None)).unwrap_err();
    assert_eq!(error.var, "TELEGRAM_BOT_TOKEN");

    // An empty token would send `Bearer ` and make every text "contain" the token.
    let mut empty = settings(TelegramMode::Gateway, "https://gatewayapi.telegram.org");
    empty.gateway_token = Some(SecretString::from(""));
    let error = TelegramProvider::new(empty, &common::context(None)).unwrap_err();
    assert_eq!(error.var, "TELEGRAM_GATEWAY_TOKEN");

    let long_base = format!("https://{}.example.com", "a".repeat(240));
    let error = TelegramProvider::new(
        settings(TelegramMode::Gateway, "https://gatewayapi.telegram.org"),
        &common::context(Some(&long_base)),
    )
    .unwrap_err();
    assert_eq!(error.var, "PUBLIC_BASE_URL");
}

#[test]
fn debug_never_shows_a_secret() {
    let settings = settings(TelegramMode::Bot, "https://api.telegram.org");
    let provider = TelegramProvider::new(settings.clone(), &common::context(None)).unwrap();
    for printed in [format!("{settings:?}"), format!("{provider:?}")] {
        for secret in [GATEWAY_TOKEN, BOT_SECRET, WEBHOOK_SECRET] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("https://api.telegram.org"), "{printed}");
    }
}
