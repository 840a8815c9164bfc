//! Telegram bot registration: /start, sharing one's own contact, sending to the linked
//! chat, refusing someone else's contact, /stop.

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fakes::{mount_twilio, twilio_accepted, TWILIO_SID};
use crate::helpers::{problem, TestApp};

const TOKEN: &str = "123456789:AAH-e2e_bot_token";
const SECRET: &str = "webhook-secret_e2e";
const CHAT: i64 = 424242;

fn update(message: Value) -> String {
    let mut message = message;
    let base = json!({
        "message_id": 7, "date": 1732752000,
        "chat": {"id": CHAT, "type": "private", "first_name": "Ana"},
        "from": {"id": CHAT, "is_bot": false, "first_name": "Ana"}
    });
    for (k, v) in base.as_object().unwrap() {
        message
            .as_object_mut()
            .unwrap()
            .entry(k.clone())
            .or_insert(v.clone());
    }
    json!({"update_id": 1, "message": message}).to_string()
}

async fn webhook(app: &TestApp, secret: Option<&str>, body: String) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/webhooks/telegram-bot"))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(secret) = secret {
        request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
    }
    request.send().await.unwrap()
}

/// The bodies of the bot's sendMessage calls so far.
async fn sent(bot: &MockServer) -> Vec<Value> {
    bot.received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

async fn send_telegram(app: &TestApp, mobile: &str) -> reqwest::Response {
    app.post_json(
        "/v1/messages",
        &json!({"mobile": mobile, "message": "Your code is 555123", "channel": "telegram"}),
    )
    .await
}

#[tokio::test]
async fn users_link_their_own_number_and_unlink_it() {
    let bot = MockServer::start().await;
    mount_bot_accepting(&bot).await;
    let twilio = MockServer::start().await;
    let app = bot_and_sms(&bot, &twilio, &[]).await;

    // Without or with a wrong secret nothing happens.
    problem(
        webhook(&app, None, update(json!({"text": "/start"}))).await,
        401,
        "invalid_signature",
    )
    .await;
    problem(
        webhook(&app, Some("wrong"), update(json!({"text": "/start"}))).await,
        401,
        "invalid_signature",
    )
    .await;
    assert!(sent(&bot).await.is_empty());

    // /start asks for the contact with a request_contact keyboard.
    assert_eq!(
        webhook(&app, Some(SECRET), update(json!({"text": "/start"})))
            .await
            .status(),
        200
    );
    let asked = &sent(&bot).await[0];
    assert_eq!(asked["chat_id"], CHAT);
    assert_eq!(
        asked["reply_markup"]["keyboard"][0][0]["request_contact"],
        true
    );

    // Someone else's contact is refused and links nothing: a send to that number
    // falls back to SMS.
    let foreign = update(
        json!({"contact": {"phone_number": "+14155552671", "first_name": "Bob", "user_id": 777}}),
    );
    assert_eq!(webhook(&app, Some(SECRET), foreign).await.status(), 200);
    assert_eq!(
        sent(&bot).await.last().unwrap()["chat_id"],
        CHAT,
        "the refusal went to the sender"
    );
    let before = sent(&bot).await.len();
    let fallback: Value = send_telegram(&app, "+14155552671")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fallback["channel"], "sms");
    assert_eq!(sent(&bot).await.len(), before);

    // One's own contact links the number; a send reaches that chat.
    link_own_number(&app).await;
    let response = send_telegram(&app, "+5511966191717").await;
    assert_eq!(response.status(), 200);
    let delivered = sent(&bot).await;
    let message = delivered.last().unwrap();
    assert_eq!(message["chat_id"], CHAT);
    assert_eq!(message["text"], "Your code is 555123");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["channel"], "telegram");
    assert_eq!(body["provider"], "telegram");

    // /stop unlinks: the next send fails over to SMS, nothing reaches the bot.
    assert_eq!(
        webhook(&app, Some(SECRET), update(json!({"text": "/stop"})))
            .await
            .status(),
        200
    );
    let before = sent(&bot).await.len();
    fell_back_to_sms(&app).await;
    assert_eq!(sent(&bot).await.len(), before);
    assert_eq!(crate::fakes::hits(&twilio).await, 2);
}

#[tokio::test]
async fn without_an_sms_provider_an_unlinked_number_is_refused() {
    let bot = MockServer::start().await;
    let app = TestApp::builder()
        .env(&[
            ("PROVIDERS", "telegram"),
            ("AUTH_DISABLED", "true"),
            ("TELEGRAM_MODE", "bot"),
            ("TELEGRAM_BOT_TOKEN", TOKEN),
            ("TELEGRAM_BOT_BASE_URL", &bot.uri()),
        ])
        .real_providers()
        .spawn()
        .await;

    problem(
        send_telegram(&app, "+5511966191717").await,
        422,
        "recipient_not_registered",
    )
    .await;
    assert!(sent(&bot).await.is_empty());
}

/// A bot, a Twilio for the SMS fallback, and an app using both (and `extra`).
async fn bot_and_sms(bot: &MockServer, twilio: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    mount_twilio(twilio, twilio_accepted()).await;
    let twilio_url = twilio.uri();
    let bot_url = bot.uri();
    let vars = [
        ("PROVIDERS", "telegram,twilio"),
        ("AUTH_DISABLED", "true"),
        ("TWILIO_ACCOUNT_SID", TWILIO_SID),
        ("TWILIO_AUTH_TOKEN", "fake-token"),
        ("TWILIO_FROM", "+14155550100"),
        ("TWILIO_BASE_URL", &twilio_url),
        ("TELEGRAM_MODE", "bot"),
        ("TELEGRAM_BOT_TOKEN", TOKEN),
        ("TELEGRAM_BOT_BASE_URL", &bot_url),
        ("TELEGRAM_WEBHOOK_SECRET", SECRET),
    ];
    TestApp::builder()
        .env(&vars)
        .env(extra)
        .real_providers()
        .spawn()
        .await
}

/// The bot accepts every sendMessage.
async fn mount_bot_accepting(bot: &MockServer) {
    Mock::given(method("POST"))
        .and(path(format!("/bot{TOKEN}/sendMessage")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "result": {"message_id": 99, "date": 1732752000, "chat": {"id": CHAT, "type": "private"}}
        })))
        .mount(bot)
        .await;
}

/// A Telegram send to the fixture number went by SMS after Telegram said the number is
/// not registered.
async fn fell_back_to_sms(app: &TestApp) {
    let answer: Value = send_telegram(app, "+5511966191717")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["channel"], "sms");
    assert_eq!(answer["provider"], "twilio");
    assert_eq!(
        answer["attempts"],
        json!([
            {"provider": "telegram", "outcome": "failed", "code": "recipient_not_registered"},
            {"provider": "twilio", "outcome": "sent", "code": null}
        ])
    );
}

async fn link_own_number(app: &TestApp) {
    let own = update(
        json!({"contact": {"phone_number": "5511966191717", "first_name": "Ana", "user_id": CHAT}}),
    );
    assert_eq!(webhook(app, Some(SECRET), own).await.status(), 200);
}

/// Bot API 403 "Forbidden: bot was blocked by the user": the user is not reachable on
/// Telegram (it was a 422 on every login before). The chat is unlinked and the code
/// goes by SMS, now and on later logins, without asking Telegram again.
#[tokio::test]
async fn a_user_who_blocked_the_bot_is_unlinked_and_gets_the_code_by_sms() {
    let bot = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/bot{TOKEN}/sendMessage")))
        .and(wiremock::matchers::body_partial_json(
            json!({"text": "Your code is 555123"}),
        ))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({
            "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"
        })))
        .mount(&bot)
        .await;
    mount_bot_accepting(&bot).await;
    let twilio = MockServer::start().await;
    let app = bot_and_sms(&bot, &twilio, &[]).await;
    link_own_number(&app).await;
    let replies = sent(&bot).await.len();

    fell_back_to_sms(&app).await;
    assert_eq!(sent(&bot).await.len(), replies + 1);

    fell_back_to_sms(&app).await;
    assert_eq!(sent(&bot).await.len(), replies + 1, "the link is gone");
    assert_eq!(crate::fakes::hits(&twilio).await, 2);
}

/// Links live TELEGRAM_LINK_TTL (in Redis, so every replica sees the same expiry) and
/// each delivery starts that time again: a recycled number stops reaching the old owner.
#[tokio::test]
async fn links_expire_after_the_link_ttl_and_each_delivery_renews_them() {
    let Some(linked) = linked_on_redis(&[("TELEGRAM_LINK_TTL", "2h")]).await else {
        return;
    };
    // The servers stay up with what is left of `linked` until the test ends.
    let LinkedOnRedis {
        app,
        mut redis_connection,
        ..
    } = linked;
    let keys = chat_keys(&mut redis_connection).await;
    assert_eq!(
        keys.len(),
        2,
        "the number's link and the chat's owner: {keys:?}"
    );
    for (key, ttl) in keys
        .iter()
        .zip(each(&mut redis_connection, "TTL", &keys, None).await)
    {
        assert!((7000..=7200).contains(&ttl), "{key}: {ttl}");
    }
    // As if most of the time had passed.
    each(&mut redis_connection, "EXPIRE", &keys, Some(60)).await;

    let delivered: Value = send_telegram(&app, "+5511966191717")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(delivered["channel"], "telegram");
    for (key, ttl) in keys
        .iter()
        .zip(each(&mut redis_connection, "TTL", &keys, None).await)
    {
        assert!((7000..=7200).contains(&ttl), "renewed: {key}: {ttl}");
    }

    // Gone (as after the TTL): the number is no longer linked, the code goes by SMS.
    each(&mut redis_connection, "DEL", &keys, None).await;
    let later: Value = send_telegram(&app, "+5511966191717")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(later["channel"], "sms");
}

/// `/stop` deletes the link and its owner entry rather than leaving a blank behind.
#[tokio::test]
async fn stop_deletes_the_link() {
    let Some(linked) = linked_on_redis(&[]).await else {
        return;
    };
    // The servers stay up with what is left of `linked` until the test ends.
    let LinkedOnRedis {
        app,
        mut redis_connection,
        ..
    } = linked;
    assert_eq!(chat_keys(&mut redis_connection).await.len(), 2);

    let stop = webhook(&app, Some(SECRET), update(json!({"text": "/stop"}))).await;
    assert_eq!(stop.status(), 200);

    assert_eq!(chat_keys(&mut redis_connection).await, Vec::<String>::new());
    fell_back_to_sms(&app).await;
}

/// A bot-and-SMS app sharing a Redis of its own, with the test user's number linked.
struct LinkedOnRedis {
    app: TestApp,
    redis_connection: redis::aio::MultiplexedConnection,
    _redis: crate::redis_server::RedisServer,
    _bot: MockServer,
    _twilio: MockServer,
}

/// `None` (after saying so) where `redis-server` is not installed.
async fn linked_on_redis(extra: &[(&str, &str)]) -> Option<LinkedOnRedis> {
    let redis = crate::redis_server::RedisServer::start().await?;
    let bot = MockServer::start().await;
    mount_bot_accepting(&bot).await;
    let twilio = MockServer::start().await;
    let redis_url = redis.url();
    let mut vars = vec![("REDIS_URL", redis_url.as_str())];
    vars.extend_from_slice(extra);
    let app = bot_and_sms(&bot, &twilio, &vars).await;
    link_own_number(&app).await;
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let redis_connection = client.get_multiplexed_async_connection().await.unwrap();
    Some(LinkedOnRedis {
        app,
        redis_connection,
        _redis: redis,
        _bot: bot,
        _twilio: twilio,
    })
}

/// The keys of Telegram links and their owners.
async fn chat_keys(connection: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("*chat*")
        .query_async(connection)
        .await
        .unwrap()
}

/// Runs `command key [argument]` for each of `keys`; the integer replies.
async fn each(
    connection: &mut redis::aio::MultiplexedConnection,
    command: &str,
    keys: &[String],
    argument: Option<i64>,
) -> Vec<i64> {
    let mut replies = Vec::new();
    for key in keys {
        let mut cmd = redis::cmd(command);
        cmd.arg(key);
        if let Some(argument) = argument {
            cmd.arg(argument);
        }
        replies.push(cmd.query_async(connection).await.unwrap());
    }
    replies
}
