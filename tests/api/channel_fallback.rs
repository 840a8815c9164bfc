//! Delivery-aware channel fallback: a Telegram Gateway message with no delivery report
//! in time, or a failure report, gets one SMS with the same code (through a Twilio
//! fake); a delivery report cancels it. In one process on memory, and on replicas
//! sharing a real `redis-server`, one of them a real process killed after the send or
//! during the fallback SMS.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use otp_relay::followup::FollowupSettings;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::fakes::{mount_vonage, provider_vars, twilio_path, vonage_accepted, TWILIO_SID};
use crate::helpers::{serve_binary, TestApp};
use crate::providers::form_field;
use crate::receipts::{twilio_callback, twilio_signature};
use crate::redis_server::RedisServer;

const PUBLIC: &str = "https://otp.example.com";
const GATEWAY_TOKEN: &str = "fallback-gateway-token";
const MOBILE: &str = "+5511966191717";

/// The Telegram Gateway: every request gets its own `request_id`, built from the
/// message id it carries as `payload`.
struct Gateway;

impl Respond for Gateway {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let id = body["payload"].as_str().unwrap();
        ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "result": {"request_id": format!("req-{id}"), "phone_number": MOBILE, "request_cost": 0.01}
        }))
    }
}

/// Twilio: each message queued with its own SID.
struct Twilio(AtomicUsize);

impl Respond for Twilio {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        ResponseTemplate::new(201).set_body_json(json!({
            "sid": format!("SM{n:032x}"), "status": "queued", "to": MOBILE,
            "account_sid": TWILIO_SID
        }))
    }
}

/// The fakes: the Gateway and Twilio.
struct Fakes {
    gateway: MockServer,
    twilio: MockServer,
}

impl Fakes {
    async fn start() -> Fakes {
        let gateway = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/sendVerificationMessage"))
            .respond_with(Gateway)
            .mount(&gateway)
            .await;
        let twilio = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(twilio_path()))
            .respond_with(Twilio(AtomicUsize::new(0)))
            .mount(&twilio)
            .await;
        Fakes { gateway, twilio }
    }

    /// Telegram first (the default channel), Twilio for SMS, fallback after `after`.
    fn vars(&self, after: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        self.vars_with_sms(&self.twilio.uri(), after, extra)
    }

    /// As [`Fakes::vars`], with the Twilio at `twilio` for SMS.
    fn vars_with_sms(
        &self,
        twilio: &str,
        after: &str,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut vars = provider_vars(twilio, None);
        vars.retain(|(k, _)| k != "PROVIDERS");
        let owned = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        vars.extend(owned(&[
            ("PROVIDERS", "telegram,twilio"),
            ("DEFAULT_CHANNEL", "telegram"),
            ("TELEGRAM_GATEWAY_TOKEN", GATEWAY_TOKEN),
            ("TELEGRAM_GATEWAY_BASE_URL", &self.gateway.uri()),
            ("PUBLIC_BASE_URL", PUBLIC),
            ("CHANNEL_FALLBACK", "sms"),
            ("CHANNEL_FALLBACK_AFTER", after),
        ]));
        vars.extend(owned(extra));
        vars
    }

    async fn app(&self, after: &str, extra: &[(&str, &str)]) -> TestApp {
        TestApp::builder()
            .env(&self.vars(after, extra))
            .real_providers()
            .spawn()
            .await
    }

    /// The texts of the SMS Twilio received.
    async fn sms(&self) -> Vec<String> {
        let requests = self.twilio.received_requests().await.unwrap_or_default();
        requests.iter().map(|r| form_field(r, "Body")).collect()
    }
}

/// Sends `code` on the default channel; the message id.
async fn send(app: &TestApp, code: &str) -> String {
    send_to(&app.client, &app.address, code).await
}

/// Sends `code` to the server at `address`; the message id.
async fn send_to(client: &reqwest::Client, address: &str, code: &str) -> String {
    let response = client
        .post(format!("{address}/api/sms"))
        .json(&json!({"mobile": MOBILE, "totp": format!("Your code is {code}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["channel"], "telegram");
    body["id"].as_str().unwrap().to_owned()
}

async fn record(app: &TestApp, id: &str) -> Value {
    crate::receipts::status_of(app, id).await
}

/// Polls `check` every 20 ms until it yields a value, for at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The record of `id` once it shows its fallback leg.
async fn fallback_leg(app: &TestApp, id: &str) -> Value {
    eventually("the fallback leg", || async {
        let record = record(app, id).await;
        (!record["fallback"].is_null()).then_some(record)
    })
    .await
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Posts a signed Gateway delivery report of `status` for message `id`.
async fn gateway_report(app: &TestApp, id: &str, status: &str) {
    let now = unix_now();
    let body = json!({"request_id": format!("req-{id}"), "phone_number": MOBILE,
        "request_cost": 0.01, "delivery_status": {"status": status, "updated_at": now}})
    .to_string();
    let key = Sha256::digest(GATEWAY_TOKEN.as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{now}\n{body}").as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = app
        .client
        .post(app.url("/webhooks/telegram-gateway"))
        .header("Content-Type", "application/json")
        .header("X-Request-Timestamp", now.to_string())
        .header("X-Request-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn no_delivery_report_in_time_sends_the_code_once_more_by_sms() {
    let fakes = Fakes::start().await;
    let app = fakes.app("300ms", &[]).await;

    let id = send(&app, "482913").await;

    let record = fallback_leg(&app, &id).await;
    assert_eq!(fakes.sms().await, ["Your code is 482913"]);
    // The first leg stays as it was; the second is shown beside it.
    assert_eq!(record["channel"], "telegram");
    assert_eq!(record["provider"], "telegram");
    assert_eq!(record["status"], "queued");
    let leg = &record["fallback"];
    assert_eq!(leg["reason"], "timeout");
    assert_eq!(leg["channel"], "sms");
    assert_eq!(leg["provider"], "twilio");
    assert_eq!(leg["status"], "queued");
    let sid = leg["provider_message_id"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("SM"), "{sid}");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otp_relay_channel_fallbacks_total{reason="timeout",outcome="sent"}"#),
        "{metrics}"
    );

    // The SMS's own delivery report finds the record and moves its leg only.
    let params = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", TWILIO_SID),
    ];
    let signature = twilio_signature(&format!("{PUBLIC}/webhooks/twilio"), &params);
    assert_eq!(
        twilio_callback(&app, &params, Some(signature))
            .await
            .status(),
        200
    );
    let record = self::record(&app, &id).await;
    assert_eq!(record["fallback"]["status"], "delivered");
    assert_eq!(record["status"], "queued");
}

#[tokio::test]
async fn a_failure_report_sends_the_sms_at_once() {
    let fakes = Fakes::start().await;
    // Due in an hour: only the report can make it go now.
    let app = fakes.app("1h", &[]).await;
    let id = send(&app, "735102").await;

    gateway_report(&app, &id, "expired").await;

    let record = fallback_leg(&app, &id).await;
    assert_eq!(record["fallback"]["reason"], "failed");
    assert_eq!(record["status"], "undelivered");
    assert_eq!(fakes.sms().await, ["Your code is 735102"]);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otp_relay_channel_fallbacks_total{reason="failed",outcome="sent"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_fallback_sms_takes_the_destinations_route() {
    let fakes = Fakes::start().await;
    let vonage = MockServer::start().await;
    mount_vonage(&vonage, vonage_accepted()).await;
    // Twilio comes first in PROVIDERS; the route for Brazil names Vonage for SMS.
    let vonage_vars: Vec<(String, String)> =
        provider_vars(&fakes.twilio.uri(), Some(&vonage.uri()))
            .into_iter()
            .filter(|(k, _)| k.starts_with("VONAGE"))
            .collect();
    let app = TestApp::builder()
        .env(&fakes.vars("1h", &[]))
        .env(&vonage_vars)
        .env(&[
            ("PROVIDERS", "telegram,twilio,vonage"),
            ("ROUTES", "BR=telegram,vonage"),
        ])
        .real_providers()
        .spawn()
        .await;
    let id = send(&app, "604218").await;

    gateway_report(&app, &id, "expired").await;

    let record = fallback_leg(&app, &id).await;
    assert_eq!(record["route"], "BR");
    assert_eq!(record["fallback"]["provider"], "vonage");
    // Vonage's answer states the price: the leg has it at once.
    assert_eq!(
        record["fallback"]["cost"],
        json!({"amount": "0.03", "currency": "EUR"})
    );
    assert_eq!(fakes.sms().await, Vec::<String>::new(), "not Twilio");
    let sent = vonage.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(form_field(&sent[0], "text"), "Your code is 604218");
}

#[tokio::test]
async fn the_fallback_sms_is_priced_and_its_price_counted_once() {
    let fakes = Fakes::start().await;
    // The first SMS Twilio queues (see `Twilio`), priced in a currency no other test uses.
    let sid = format!("SM{:032x}", 0);
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Messages/{sid}.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": sid, "account_sid": TWILIO_SID, "status": "delivered",
            "error_code": null, "price": "-0.05170", "price_unit": "DKK"
        })))
        .mount(&fakes.twilio)
        .await;
    let app = TestApp::builder()
        .env(&fakes.vars("1h", &[]))
        .real_providers()
        .followups(FollowupSettings {
            price_delay: Duration::ZERO,
            balance_every: None,
            ..FollowupSettings::default()
        })
        .spawn()
        .await;
    let id = send(&app, "310775").await;
    gateway_report(&app, &id, "expired").await;
    let leg = fallback_leg(&app, &id).await["fallback"].clone();
    assert_eq!(leg["provider_message_id"], sid.as_str());
    assert!(leg["cost"].is_null(), "Twilio's answer states no price");

    // The SMS's final report, repeated as Twilio does, has its price looked up once.
    let params = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", TWILIO_SID),
    ];
    let signature = twilio_signature(&format!("{PUBLIC}/webhooks/twilio"), &params);
    for _ in 0..2 {
        let response = twilio_callback(&app, &params, Some(signature.clone())).await;
        assert_eq!(response.status(), 200);
    }
    tokio::time::timeout(Duration::from_secs(20), app.followups.settled())
        .await
        .expect("the price lookup ends");

    let record = self::record(&app, &id).await;
    assert_eq!(
        record["fallback"]["cost"],
        json!({"amount": "0.05170", "currency": "DKK"})
    );
    // The first leg keeps its own price: the Gateway's request_cost.
    assert_eq!(record["cost"]["amount"], "0.01");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otp_relay_cost_total{provider="twilio",currency="DKK"} 0.0517"#),
        "{metrics}"
    );
    let lookups = fakes
        .twilio
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(lookups, 1);
}

#[tokio::test]
async fn a_fallback_sms_through_sendpulse_is_polled_to_its_final_status() {
    let fakes = Fakes::start().await;
    // SendPulse sends no SMS callbacks: its campaign is polled, as for any send.
    let sendpulse = crate::costs::sendpulse().await;
    Mock::given(method("GET"))
        .and(path(crate::costs::CAMPAIGN_PATH))
        .respond_with(crate::costs::campaign(2, "Delivered", "PLN"))
        .mount(&sendpulse)
        .await;
    let app = TestApp::builder()
        .env(&fakes.vars("1h", &[]))
        .env(&[
            ("PROVIDERS", "telegram,sendpulse"),
            ("SENDPULSE_CLIENT_ID", "sp-id"),
            ("SENDPULSE_CLIENT_SECRET", "sp-secret"),
            ("SENDPULSE_SENDER", "OtpRelay"),
            ("SENDPULSE_BASE_URL", &sendpulse.uri()),
        ])
        .real_providers()
        .followups(FollowupSettings {
            first_poll: Duration::from_millis(10),
            max_poll_interval: Duration::from_millis(40),
            balance_every: None,
            ..FollowupSettings::default()
        })
        .spawn()
        .await;
    let id = send(&app, "552907").await;
    gateway_report(&app, &id, "expired").await;
    assert_eq!(
        fallback_leg(&app, &id).await["fallback"]["provider"],
        "sendpulse"
    );

    let leg = eventually("the SMS leg delivered", || async {
        let leg = record(&app, &id).await["fallback"].clone();
        (leg["status"] == "delivered").then_some(leg)
    })
    .await;
    assert_eq!(leg["cost"], json!({"amount": "0.0821", "currency": "PLN"}));
}

#[tokio::test]
async fn a_delivery_report_cancels_the_fallback() {
    let fakes = Fakes::start().await;
    let app = fakes.app("400ms", &[]).await;
    let delivered = send(&app, "111111").await;
    gateway_report(&app, &delivered, "read").await;
    assert_eq!(record(&app, &delivered).await["status"], "delivered");

    // Two later messages with no report: each gets its SMS. The worker sends one batch
    // before it takes the next, so once the last of them shows its leg, the first
    // message's fallback (due before either) would have been sent if it were pending.
    let second = send(&app, "222222").await;
    fallback_leg(&app, &second).await;
    let third = send(&app, "333333").await;
    fallback_leg(&app, &third).await;

    assert_eq!(
        fakes.sms().await,
        ["Your code is 222222", "Your code is 333333"]
    );
    assert!(record(&app, &delivered).await["fallback"].is_null());
}

#[tokio::test]
async fn replicas_sharing_redis_send_each_fallback_exactly_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let fakes = Fakes::start().await;
    let shared = [
        ("REDIS_URL", redis.url()),
        ("REDIS_TIMEOUT", "2500ms".into()),
    ];
    let shared: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = fakes.app("300ms", &shared).await;
    let b = fakes.app("300ms", &shared).await;

    // A delivery report on the other replica drops the pending fallback from Redis,
    // payload (the number and the code) included.
    let delivered = send(&a, "555555").await;
    let due = "otp-relay:fallback:due";
    let score = |id: &str| redis::cmd("ZSCORE").arg(due).arg(id).clone();
    assert!(redis
        .query::<Option<f64>>(&score(&delivered))
        .await
        .is_some());
    gateway_report(&b, &delivered, "delivered").await;
    assert_eq!(redis.query::<Option<f64>>(&score(&delivered)).await, None);
    let payload = redis::cmd("EXISTS")
        .arg(format!("otp-relay:fallback:msg:{delivered}"))
        .clone();
    assert_eq!(redis.query::<i64>(&payload).await, 0);

    let mut ids = Vec::new();
    for n in 0..12 {
        let app = if n % 2 == 0 { &a } else { &b };
        ids.push(send(app, &format!("90{n:04}")).await);
    }
    for id in &ids {
        fallback_leg(&a, id).await;
    }
    // One more, due after all of them: once it went, any second copy would have too.
    let last = send(&b, "999999").await;
    fallback_leg(&a, &last).await;

    let mut sms = fakes.sms().await;
    sms.sort();
    let mut expected: Vec<String> = (0..12)
        .map(|n| format!("Your code is 90{n:04}"))
        .chain(["Your code is 999999".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(sms, expected, "each code exactly once");
}

#[tokio::test]
async fn a_replica_killed_after_the_send_leaves_its_fallback_to_another() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let fakes = Fakes::start().await;
    let url = redis.url();
    let extra = [("REDIS_URL", url.as_str()), ("REDIS_TIMEOUT", "2500ms")];
    let vars = fakes.vars("1s", &extra);
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut process, port) = serve_binary(&pairs).await;
    let other = fakes.app("1s", &extra).await;

    let address = format!("http://127.0.0.1:{port}");
    let id = send_to(&reqwest::Client::new(), &address, "640217").await;
    process.kill().await.unwrap();

    let record = fallback_leg(&other, &id).await;
    assert_eq!(record["fallback"]["provider"], "twilio");
    assert_eq!(fakes.sms().await, ["Your code is 640217"]);
}

/// Replicas that send fallbacks within a 2 s `REQUEST_DEADLINE`: a taken fallback's
/// lease is 4 s.
const SHORT_DEADLINE: [(&str, &str); 3] = [
    ("REQUEST_DEADLINE", "2s"),
    ("PROVIDER_TIMEOUT", "2s"),
    ("REDIS_TIMEOUT", "500ms"),
];

#[tokio::test]
async fn a_replica_killed_during_the_fallback_sms_leaves_it_to_another_after_its_lease() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let fakes = Fakes::start().await;
    // The dying replica's Twilio takes the SMS and never answers.
    let stalled = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(600)))
        .mount(&stalled)
        .await;
    let url = redis.url();
    let mut extra = vec![("REDIS_URL", url.as_str())];
    extra.extend(SHORT_DEADLINE);
    let vars = fakes.vars_with_sms(&stalled.uri(), "300ms", &extra);
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (mut process, port) = serve_binary(&pairs).await;

    let address = format!("http://127.0.0.1:{port}");
    let id = send_to(&reqwest::Client::new(), &address, "318204").await;
    eventually("the dying replica's SMS", || async {
        let requests = stalled.received_requests().await.unwrap_or_default();
        (!requests.is_empty()).then_some(())
    })
    .await;
    process.kill().await.unwrap();

    // Started only now, so that the fallback was the dead replica's to send.
    let other = fakes.app("300ms", &extra).await;
    let record = fallback_leg(&other, &id).await;
    assert_eq!(record["fallback"]["reason"], "timeout");
    assert_eq!(record["fallback"]["status"], "queued");
    assert_eq!(fakes.sms().await, ["Your code is 318204"]);
    // Finished: nothing of it is left in Redis.
    let payload = format!("otp-relay:fallback:msg:{id}");
    eventually("the finished fallback's payload gone", || async {
        let exists = redis::cmd("EXISTS").arg(&payload).clone();
        (redis.query::<i64>(&exists).await == 0).then_some(())
    })
    .await;
    let leased = redis::cmd("ZCARD").arg("otp-relay:fallback:leased").clone();
    assert_eq!(redis.query::<i64>(&leased).await, 0);
}

#[tokio::test]
async fn a_fallback_taken_again_after_its_leg_was_saved_is_not_sent_again() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let fakes = Fakes::start().await;
    let url = redis.url();
    let mut extra = vec![("REDIS_URL", url.as_str())];
    extra.extend(SHORT_DEADLINE);
    let app = fakes.app("300ms", &extra).await;
    let id = send(&app, "502113").await;
    fallback_leg(&app, &id).await;
    let payload_key = format!("otp-relay:fallback:msg:{id}");
    let payload_gone = || async {
        let exists = redis::cmd("EXISTS").arg(&payload_key).clone();
        (redis.query::<i64>(&exists).await == 0).then_some(())
    };
    eventually("the finished fallback's payload gone", payload_gone).await;

    // As a replica leaves it that saved the leg and stopped before finishing: leased,
    // the lease run out, the payload still there.
    let expires_at = (unix_now() + 3600) * 1000;
    let payload = json!({"to": MOBILE, "text": "Your code is 502113", "code": null,
        "expires_at": expires_at})
    .to_string();
    let leave = redis::cmd("EVAL")
        .arg(
            "redis.call('SET', KEYS[2], ARGV[2], 'PX', 3600000) \
             redis.call('ZADD', KEYS[1], 0, ARGV[1]) return 1",
        )
        .arg(2)
        .arg("otp-relay:fallback:leased")
        .arg(&payload_key)
        .arg(format!("t:{id}"))
        .arg(payload)
        .clone();
    assert_eq!(redis.query::<i64>(&leave).await, 1);

    // Taken again and finished without a second SMS.
    eventually("the retaken fallback finished", payload_gone).await;
    assert_eq!(fakes.sms().await, ["Your code is 502113"]);
}
