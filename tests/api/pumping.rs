//! SMS-pumping guards over HTTP: `RATE_LIMIT_PER_PREFIX` (blocks of consecutive numbers)
//! and `RATE_LIMIT_PER_COUNTRY` (destination regions), counted with the other limits,
//! named in the 429, given back for sends that never left, shared through Redis.

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::fakes::{hits, mount_twilio, provider_vars, twilio_accepted, twilio_error, twilio_path};
use crate::helpers::{problem, TestApp};
use crate::redis_server::RedisServer;
use crate::replicas::replica;

/// A Brazilian mobile number in the block `+5511966<block>…`: `n` is its last three
/// digits.
fn br(block: u32, n: u32) -> String {
    format!("+5511966{block}{n:03}")
}

async fn send(app: &TestApp, mobile: &str) -> reqwest::Response {
    let body = json!({"mobile": mobile, "totp": "Code 482910"}).to_string();
    app.post_raw("/v1/messages", body).await
}

/// Sends to `mobile` and expects it accepted.
async fn accepted(app: &TestApp, mobile: &str) {
    let response = send(app, mobile).await;
    assert_eq!(response.status(), 200, "{mobile}");
}

/// Sends to `mobile`, expects a 429 naming `limit`, and returns its `Retry-After`.
async fn refused_by(app: &TestApp, mobile: &str, limit: &str) -> u64 {
    let response = send(app, mobile).await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{mobile}: no Retry-After"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = problem(response, 429, "rate_limited").await;
    assert_eq!(body["limit"], limit, "{mobile}: {body}");
    assert!(
        body["detail"].as_str().unwrap().contains(limit),
        "{mobile}: {body}"
    );
    retry_after
}

#[tokio::test]
async fn a_block_of_consecutive_numbers_stops_at_its_budget() {
    let app = TestApp::builder()
        .env(&[("RATE_LIMIT_PER_PREFIX", "3/1h")])
        .spawn()
        .await;

    // Three numbers of one block of a thousand (the last three digits dropped).
    for n in [1, 2, 999] {
        accepted(&app, &br(191, n)).await;
    }
    let retry_after = refused_by(&app, &br(191, 500), "prefix").await;
    // One more every 20 minutes.
    assert!((1..=1200).contains(&retry_after), "{retry_after}");
    // The next block has its own budget.
    accepted(&app, &br(192, 1)).await;
    assert_eq!(app.recorder().received().len(), 4);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otp_relay_refusals_total{reason="rate_limit_prefix"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_block_size_is_set_in_trailing_digits() {
    let app = TestApp::builder()
        .env(&[
            ("RATE_LIMIT_PER_PREFIX", "1/1h"),
            ("RATE_LIMIT_PREFIX_DIGITS", "1"),
        ])
        .spawn()
        .await;

    accepted(&app, &br(191, 1)).await;
    refused_by(&app, &br(191, 9), "prefix").await;
    // `…010` is in the next block of ten.
    accepted(&app, &br(191, 10)).await;
}

#[tokio::test]
async fn a_wave_to_one_country_stops_at_its_budget() {
    let app = TestApp::builder()
        .env(&[("RATE_LIMIT_PER_COUNTRY", "BR=2/1h,*=1/1h")])
        .spawn()
        .await;

    // Brazil's budget, over numbers of different blocks.
    accepted(&app, &br(191, 1)).await;
    accepted(&app, &br(292, 1)).await;
    let retry_after = refused_by(&app, &br(393, 1), "country").await;
    assert!((1..=1800).contains(&retry_after), "{retry_after}");
    // Each other region has a budget of its own under `*`: the US and Canada, though
    // they share +1, are counted apart.
    accepted(&app, "+14155552671").await;
    refused_by(&app, "+14155552672", "country").await;
    accepted(&app, "+12042345678").await;
    refused_by(&app, "+12042345679", "country").await;
    accepted(&app, "+351912345678").await;
    assert_eq!(app.recorder().received().len(), 5);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"otp_relay_refusals_total{reason="rate_limit_country"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_a_star_regions_not_named_are_unlimited() {
    let app = TestApp::builder()
        .env(&[("RATE_LIMIT_PER_COUNTRY", "BR=1/1h")])
        .spawn()
        .await;

    accepted(&app, &br(191, 1)).await;
    refused_by(&app, &br(292, 1), "country").await;
    for n in 1..=5 {
        accepted(&app, &format!("+1415555267{n}")).await;
    }
}

#[tokio::test]
async fn every_429_names_its_limit() {
    for (var, limit) in [
        ("RATE_LIMIT_PER_NUMBER", "number"),
        ("RATE_LIMIT_PER_PREFIX", "prefix"),
        ("RATE_LIMIT_PER_CLIENT", "client"),
        ("RATE_LIMIT_PER_COUNTRY", "country"),
        ("RATE_LIMIT_GLOBAL", "global"),
    ] {
        let rate = if limit == "country" { "*=1/1h" } else { "1/1h" };
        let app = TestApp::builder().env(&[(var, rate)]).spawn().await;
        accepted(&app, &br(191, 1)).await;
        refused_by(&app, &br(191, 1), limit).await;
    }
}

#[tokio::test]
async fn a_send_refused_by_one_limit_counts_against_none() {
    let app = TestApp::builder()
        .env(&[
            ("RATE_LIMIT_PER_PREFIX", "1/1h"),
            ("RATE_LIMIT_PER_COUNTRY", "BR=2/1h"),
        ])
        .spawn()
        .await;

    accepted(&app, &br(191, 1)).await;
    // Refused by its block: Brazil's budget is not spent on it...
    refused_by(&app, &br(191, 2), "prefix").await;
    refused_by(&app, &br(191, 3), "prefix").await;
    // ...so one more send to Brazil fits, and only one.
    accepted(&app, &br(292, 1)).await;
    refused_by(&app, &br(393, 1), "country").await;
    // Refused by Brazil's budget: that block's allowance is still whole.
    refused_by(&app, &br(393, 2), "country").await;
}

#[tokio::test]
async fn sends_that_never_left_give_the_block_and_the_country_their_allowance_back() {
    let twilio = MockServer::start().await;
    // The provider throttles the first four sends (nothing sent), then accepts.
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(twilio_error(429, 20429, "Too Many Requests"))
        .up_to_n_times(4)
        .mount(&twilio)
        .await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let mut vars = provider_vars(&twilio.uri(), None);
    vars.extend(
        [
            ("RATE_LIMIT_PER_PREFIX", "2/1h"),
            ("RATE_LIMIT_PER_COUNTRY", "BR=3/1h"),
            ("RETRY_MAX", "0"),
            ("CIRCUIT_FAILURES", "100"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = TestApp::builder().env(&vars).real_providers().spawn().await;

    // More than the block's and Brazil's budgets, none of it sent.
    for mobile in [br(191, 1), br(191, 2), br(191, 3), br(292, 1)] {
        problem(send(&app, &mobile).await, 503, "no_provider_available").await;
    }
    assert_eq!(hits(&twilio).await, 4);

    // Both budgets are whole again, and still count what is sent.
    accepted(&app, &br(191, 4)).await;
    accepted(&app, &br(191, 5)).await;
    refused_by(&app, &br(191, 6), "prefix").await;
    accepted(&app, &br(292, 2)).await;
    refused_by(&app, &br(393, 1), "country").await;
    assert_eq!(hits(&twilio).await, 7);
}

#[tokio::test]
async fn replicas_sharing_redis_share_the_block_and_country_budgets() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let vars = [
        ("RATE_LIMIT_PER_PREFIX", "3/1h"),
        ("RATE_LIMIT_PER_COUNTRY", "BR=5/1h,*=1/1h"),
    ];
    let a = replica(&twilio, &redis.url(), &vars).await;
    let b = replica(&twilio, &redis.url(), &vars).await;

    // One block, through both replicas in turn: three in all.
    for n in 1..=3 {
        accepted(if n % 2 == 0 { &a } else { &b }, &br(191, n)).await;
    }
    refused_by(&a, &br(191, 4), "prefix").await;
    refused_by(&b, &br(191, 5), "prefix").await;
    // Brazil: five in all.
    accepted(&a, &br(292, 1)).await;
    accepted(&b, &br(393, 1)).await;
    refused_by(&a, &br(494, 1), "country").await;
    refused_by(&b, &br(595, 1), "country").await;
    // One region under `*`.
    accepted(&b, "+14155552671").await;
    refused_by(&a, "+14155552672", "country").await;
    assert_eq!(hits(&twilio).await, 6);

    // The counters live in Redis, under the rate limits' hash tag, and name no number.
    let keys: Vec<String> = redis.query(redis::cmd("KEYS").arg("*")).await;
    let rate_keys: Vec<&String> = keys.iter().filter(|k| k.contains("rate:")).collect();
    assert!(
        rate_keys.iter().any(|k| k.contains("rate:prefix:")),
        "{keys:?}"
    );
    assert!(
        rate_keys.iter().any(|k| k.ends_with("rate:country:BR")),
        "{keys:?}"
    );
    assert!(
        rate_keys.iter().any(|k| k.ends_with("rate:country:US")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| !k.contains("5511966") && !k.contains("4155552")),
        "{keys:?}"
    );
}
