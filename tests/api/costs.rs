//! What each message cost and what is left on the accounts: the record's `cost`, the
//! money metrics, SendPulse's campaign polling and Twilio's price lookup, each against
//! a mock of the provider's documented wire format.

use std::time::Duration;

use otp_relay::followup::FollowupSettings;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fakes::{hits, mount_twilio, provider_vars, twilio_accepted, TWILIO_SID};
use crate::helpers::{run_binary, TestApp};
use crate::receipts::{
    post_vonage_status, status_of, twilio_callback, twilio_signature, vonage_status_token,
};

const PUBLIC: &str = "https://otp.example.com";
pub const CAMPAIGN_PATH: &str = "/sms/campaigns/info/2623085";
const SID: &str = "SM0123456789abcdef0123456789abcdef";

/// Follow-ups at test speed: polls 10 ms apart, doubling up to 40 ms.
fn fast() -> FollowupSettings {
    FollowupSettings {
        first_poll: Duration::from_millis(10),
        max_poll_interval: Duration::from_millis(40),
        price_delay: Duration::ZERO,
        balance_every: None,
        ..FollowupSettings::default()
    }
}

/// Waits for the app's lookups to finish, within a bound.
async fn settled(app: &TestApp) {
    tokio::time::timeout(Duration::from_secs(20), app.followups.settled())
        .await
        .expect("the follow-ups finish");
}

/// Asserts that `app`'s `/metrics` holds each of `expected`.
async fn metrics_show(app: &TestApp, expected: &[&str]) {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    let text = response.text().await.unwrap();
    for line in expected {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

async fn send(app: &TestApp, body: Value) -> Value {
    let response = app.post_json("/v1/messages", &body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// An app sending through SendPulse at `server`, with `followup` timing.
async fn sendpulse_app(server: &MockServer, followup: FollowupSettings) -> TestApp {
    TestApp::builder()
        .env(&[
            ("PROVIDERS", "sendpulse"),
            ("AUTH_DISABLED", "true"),
            ("SENDPULSE_CLIENT_ID", "sp-id"),
            ("SENDPULSE_CLIENT_SECRET", "sp-secret"),
            ("SENDPULSE_SENDER", "OtpRelay"),
            ("SENDPULSE_BASE_URL", &server.uri()),
        ])
        .real_providers()
        .followups(followup)
        .spawn()
        .await
}

/// A SendPulse that issues tokens and accepts SMS as campaign 2623085.
pub async fn sendpulse() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/sms/send"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"result": true, "campaign_id": 2623085, "counters": {"exceptions": 0, "sends": 1}}),
        ))
        .mount(&server)
        .await;
    server
}

/// The campaign's info (sendpulse_sms.yml `getSmsCampaignInfo`, fields as the SDKs
/// read them) with its one phone in `status`.
pub fn campaign(status: i64, explain: &str, currency: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "result": true,
        "data": {
            "id": 2623085, "currency": currency, "company_price": 0.0821,
            "send_date": "2026-11-30 02:00:00", "date_created": "2026-11-30 02:00:00",
            "sender_name": "OtpRelay",
            "task_phones_info": [{"phone": 5511966191717u64, "status": status,
                                  "status_explain": explain, "country_code": "BR",
                                  "money_spent": 0.0821}]
        }
    }))
}

/// How often the campaign was polled.
async fn campaign_polls(server: &MockServer) -> usize {
    let requests = server.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.url.path() == CAMPAIGN_PATH)
        .count()
}

#[tokio::test]
async fn sendpulse_sms_is_polled_until_delivered_and_priced() {
    let server = sendpulse().await;
    // On its way at the first poll, delivered at the second.
    Mock::given(method("GET"))
        .and(path(CAMPAIGN_PATH))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(campaign(1, "Sent", "UAH"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(CAMPAIGN_PATH))
        .respond_with(campaign(2, "Delivered", "UAH"))
        .mount(&server)
        .await;
    let app = sendpulse_app(&server, fast()).await;

    let sent = send(
        &app,
        json!({"mobile": "+5511966191717", "totp": "Code 123456"}),
    )
    .await;
    assert_eq!(sent["status"], "queued");
    settled(&app).await;

    let record = status_of(&app, sent["id"].as_str().unwrap()).await;
    assert_eq!(record["status"], "delivered", "{record}");
    assert_eq!(record["provider_status"], "Delivered");
    assert_eq!(
        record["cost"],
        json!({"amount": "0.0821", "currency": "UAH"})
    );
    let polls = campaign_polls(&server).await;
    assert_eq!(polls, 2, "no poll after the final status");
    // Only this test spends hryvnias.
    metrics_show(
        &app,
        &[r#"otp_relay_cost_total{provider="sendpulse",currency="UAH"} 0.0821"#],
    )
    .await;
}

#[tokio::test]
async fn sendpulse_polling_backs_off_and_stops_at_the_messages_ttl() {
    let server = sendpulse().await;
    Mock::given(method("GET"))
        .and(path(CAMPAIGN_PATH))
        .respond_with(campaign(1, "Sent", "UAH"))
        .mount(&server)
        .await;
    let app = sendpulse_app(&server, fast()).await;

    let sent = send(
        &app,
        json!({"mobile": "+5511966191717", "totp": "Code 123456", "ttl": 1}),
    )
    .await;
    settled(&app).await;

    let record = status_of(&app, sent["id"].as_str().unwrap()).await;
    assert_eq!(record["status"], "queued", "{record}");
    assert!(
        record.get("cost").is_none(),
        "no price before a final status"
    );
    let polls = campaign_polls(&server).await;
    // Polls 10, 20, 40, 40, ... ms apart within the 1 s ttl: at most 1 + 1000 / 40 + 2.
    assert!((2..=28).contains(&polls), "{polls} polls");
}

#[tokio::test]
async fn a_full_followup_queue_drops_and_counts_and_the_record_stays_queued() {
    let server = sendpulse().await;
    let followup = FollowupSettings {
        // Nothing comes due during the test: the one place stays taken.
        first_poll: Duration::from_secs(3600),
        queue: 1,
        ..fast()
    };
    let app = sendpulse_app(&server, followup).await;

    send(
        &app,
        json!({"mobile": "+5511966191717", "totp": "Code 123456"}),
    )
    .await;
    let second = send(
        &app,
        json!({"mobile": "+5511966191718", "totp": "Code 123457"}),
    )
    .await;

    assert_eq!(
        status_of(&app, second["id"].as_str().unwrap()).await["status"],
        "queued"
    );
    metrics_show(
        &app,
        &[r#"otp_relay_followups_total{provider="sendpulse",outcome="dropped"}"#],
    )
    .await;
    assert!(crate::helpers::captured_logs().contains("follow-up queue full"));
}

/// A Twilio that accepts sends and answers the Message resource priced `price` (a
/// negative charge) in `currency`, a currency no other test uses.
async fn twilio_priced(price: &str, currency: &str) -> MockServer {
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Messages/{SID}.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": SID, "account_sid": TWILIO_SID, "status": "delivered",
            "error_code": null, "price": price, "price_unit": currency
        })))
        .mount(&twilio)
        .await;
    twilio
}

/// Reports the message delivered to `app`'s Twilio webhook, signed.
async fn report_delivered(app: &TestApp) {
    let url = format!("{PUBLIC}/webhooks/twilio");
    let delivered = [
        ("MessageSid", SID),
        ("MessageStatus", "delivered"),
        ("AccountSid", TWILIO_SID),
    ];
    let signature = twilio_signature(&url, &delivered);
    let response = twilio_callback(app, &delivered, Some(signature)).await;
    assert_eq!(response.status(), 200);
}

/// Asserts that `app` shows the message delivered and priced `cost` (amount, currency),
/// and that `metrics_app` counted it once: `total` in that currency.
async fn twilio_priced_once(
    app: &TestApp,
    metrics_app: &TestApp,
    id: &str,
    (amount, currency): (&str, &str),
    total: &str,
) {
    let record = status_of(app, id).await;
    assert_eq!(record["status"], "delivered");
    assert_eq!(
        record["cost"],
        json!({"amount": amount, "currency": currency})
    );
    let line =
        format!(r#"otp_relay_cost_total{{provider="twilio",currency="{currency}"}} {total}"#);
    metrics_show(metrics_app, &[&line]).await;
}

#[tokio::test]
async fn twilio_price_is_looked_up_once_after_a_final_status() {
    let twilio = twilio_priced("-0.04210", "CHF").await;
    let app = TestApp::builder()
        .env(&provider_vars(&twilio.uri(), None))
        .env(&[("PUBLIC_BASE_URL", PUBLIC)])
        .real_providers()
        .followups(fast())
        .spawn()
        .await;

    let sent = send(
        &app,
        json!({"mobile": "+5511966191717", "totp": "Code 123456"}),
    )
    .await;
    let id = sent["id"].as_str().unwrap();
    // Twilio repeats a callback it thinks was lost: the price is still asked once.
    report_delivered(&app).await;
    report_delivered(&app).await;
    settled(&app).await;

    // Counted once, whatever repeated.
    twilio_priced_once(&app, &app, id, ("0.04210", "CHF"), "0.0421").await;
    assert_eq!(hits(&twilio).await, 2, "one send and one lookup");
}

/// Starts an app whose one provider (configured by `vars`, its base URL in `base_var`)
/// answers `reply` at `route`, and sends a code through it: the app, the mock and the
/// message's record.
async fn send_through(
    vars: &[(&str, &str)],
    base_var: &str,
    route: &str,
    reply: ResponseTemplate,
) -> (TestApp, MockServer, Value) {
    let provider = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(reply)
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .env(vars)
        .env(&[("AUTH_DISABLED", "true"), (base_var, &provider.uri())])
        .real_providers()
        .followups(fast())
        .spawn()
        .await;
    let sent = send(
        &app,
        json!({"mobile": "+5511966191717", "totp": "Code 123456"}),
    )
    .await;
    let record = status_of(&app, sent["id"].as_str().unwrap()).await;
    (app, provider, record)
}

#[tokio::test]
async fn vonage_sms_parts_are_summed_into_the_cost_and_the_balance_shown() {
    let reply = ResponseTemplate::new(200).set_body_json(json!({
        "message-count": "2",
        "messages": [
            {"to": "5511966191717", "message-id": "0A0000001234", "status": "0",
             "remaining-balance": "7.96670000", "message-price": "0.03330000", "network": "72405"},
            {"to": "5511966191717", "message-id": "0A0000001235", "status": "0",
             "remaining-balance": "7.93340000", "message-price": "0.03330000", "network": "72405"}
        ]
    }));
    let vars = [
        ("PROVIDERS", "vonage"),
        ("VONAGE_API_KEY", "fake-key"),
        ("VONAGE_API_SECRET", "fake-secret"),
        ("VONAGE_FROM", "AcmeOTP"),
    ];
    let (app, _vonage, record) =
        send_through(&vars, "VONAGE_SMS_BASE_URL", "/sms/json", reply).await;

    // Summed digit-exact, in the account's euros; nothing to follow up.
    assert_eq!(
        record["cost"],
        json!({"amount": "0.06660000", "currency": "EUR"})
    );
    settled(&app).await;
    metrics_show(
        &app,
        &[
            r#"otp_relay_provider_balance{provider="vonage",currency="EUR"}"#,
            r#"otp_relay_cost_total{provider="vonage",currency="EUR"}"#,
        ],
    )
    .await;
}

/// Twilio's Balance resource, answering a currency no other test uses.
async fn twilio_with_balance(balance: &str, currency: &str) -> MockServer {
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Balance.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "account_sid": TWILIO_SID, "balance": balance, "currency": currency
        })))
        .mount(&twilio)
        .await;
    twilio
}

#[tokio::test]
async fn balances_are_read_in_the_background_and_shown_as_a_gauge() {
    let twilio = twilio_with_balance("42.42", "NZD").await;
    let vars = provider_vars(&twilio.uri(), None);
    let followup = FollowupSettings {
        balance_first: Duration::ZERO,
        balance_every: Some(Duration::from_secs(3600)),
        ..fast()
    };
    let app = TestApp::builder()
        .env(&vars)
        .real_providers()
        .followups(followup)
        .spawn()
        .await;

    settled(&app).await;

    metrics_show(
        &app,
        &[r#"otp_relay_provider_balance{provider="twilio",currency="NZD"} 42.42"#],
    )
    .await;
    assert_eq!(hits(&twilio).await, 1, "one read per period");
}

#[tokio::test]
async fn check_prints_each_accounts_balance() {
    let twilio = twilio_with_balance("17.05", "USD").await;
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{TWILIO_SID}.json")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": TWILIO_SID, "status": "active", "type": "Full"
        })))
        .mount(&twilio)
        .await;

    let output = run_binary(&["check"], &provider_vars(&twilio.uri(), None)).await;

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok   twilio: balance 17.05 USD"),
        "{stdout}"
    );
}

#[tokio::test]
async fn replicas_sharing_redis_look_a_price_up_once() {
    let Some(redis) = crate::redis_server::RedisServer::start().await else {
        return;
    };
    let twilio = twilio_priced("-0.0512", "SEK").await;
    let vars = provider_vars(&twilio.uri(), None);
    let redis_url = redis.url();
    let shared = [("PUBLIC_BASE_URL", PUBLIC), ("REDIS_URL", &redis_url)];
    // Both replicas hear of the final status before either looks the price up.
    let followup = FollowupSettings {
        price_delay: Duration::from_millis(300),
        ..fast()
    };
    let first = TestApp::builder()
        .env(&vars)
        .env(&shared)
        .real_providers()
        .followups(followup.clone())
        .spawn()
        .await;
    let second = TestApp::builder()
        .env(&vars)
        .env(&shared)
        .real_providers()
        .followups(followup)
        .spawn()
        .await;

    let sent = send(
        &first,
        json!({"mobile": "+5511966191717", "totp": "Code 123456"}),
    )
    .await;
    for replica in [&first, &second] {
        report_delivered(replica).await;
    }
    settled(&first).await;
    settled(&second).await;

    let lookups = twilio.received_requests().await.unwrap();
    let lookups = lookups
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(lookups, 1, "one replica claimed the lookup");
    let id = sent["id"].as_str().unwrap();
    twilio_priced_once(&second, &first, id, ("0.0512", "SEK"), "0.0512").await;
}

#[tokio::test]
async fn telegram_gateway_cost_is_in_unnamed_credits_and_its_balance_shown() {
    let reply = ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "result": {"request_id": "7d3c1f2a9b", "phone_number": "+5511966191717",
                   "request_cost": 0.01, "remaining_balance": 12.5}
    }));
    let vars = [
        ("PROVIDERS", "telegram"),
        ("DEFAULT_CHANNEL", "telegram"),
        ("TELEGRAM_GATEWAY_TOKEN", "gateway-token-costs"),
    ];
    let (app, _gateway, record) = send_through(
        &vars,
        "TELEGRAM_GATEWAY_BASE_URL",
        "/sendVerificationMessage",
        reply,
    )
    .await;

    // RequestStatus.request_cost is in the Gateway's credits: no currency is named.
    assert_eq!(record["cost"], json!({"amount": "0.01", "currency": null}));
    metrics_show(
        &app,
        &[r#"otp_relay_provider_balance{provider="telegram",currency="unknown"} 12.5"#],
    )
    .await;
}

#[tokio::test]
async fn vonage_messages_status_webhooks_price_the_record_once() {
    let vonage = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(json!({"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"})),
        )
        .mount(&vonage)
        .await;
    let vars = [
        ("PROVIDERS", "vonage"),
        ("AUTH_DISABLED", "true"),
        ("VONAGE_API", "messages"),
        ("VONAGE_API_KEY", "fake-key"),
        ("VONAGE_API_SECRET", "fake-secret"),
        ("VONAGE_FROM", "14155550100"),
        ("VONAGE_SIGNATURE_SECRET", "vonage-signature-secret"),
        ("VONAGE_MESSAGES_BASE_URL", &vonage.uri()),
    ];
    let app = TestApp::builder()
        .env(&vars)
        .real_providers()
        .followups(fast())
        .spawn()
        .await;
    let sent = send(
        &app,
        json!({"mobile": "+5511966191717", "totp": "Code 123456"}),
    )
    .await;
    let id = sent["id"].as_str().unwrap();

    // A status webhook (vonage_messages_v1.yml, "messageStatusUsage"), signed as Vonage
    // does: an HS256 JWT whose payload_hash is the body's SHA-256.
    let report = |status: &str, price: &str| {
        let body = json!({"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab",
                          "status": status, "to": "5511966191717", "channel": "sms",
                          "timestamp": "2026-11-30T00:00:00Z",
                          "usage": {"currency": "EUR", "price": price}})
        .to_string();
        let token = vonage_status_token(&body, &format!("jti-{status}"));
        let app = &app;
        async move { post_vonage_status(app, body, &token).await }
    };
    assert_eq!(report("submitted", "0.0333").await.status(), 200);
    // A later report stating another price changes nothing about it.
    assert_eq!(report("delivered", "0.0400").await.status(), 200);

    let record = status_of(&app, id).await;
    assert_eq!(record["status"], "delivered");
    assert_eq!(
        record["cost"],
        json!({"amount": "0.0333", "currency": "EUR"})
    );
}
