//! Every provider reply parser: whatever a provider (or a proxy in front of it) answers,
//! the adapter returns a receipt or an error and does not panic.
//!
//! Input: a selector byte (which parser), two bytes of HTTP status, one byte of
//! `Retry-After`, then the body.
//!
//! Checked besides "no panic": an error's text never carries the credential the request
//! was sent with (the adapters mask echoed secrets), and stays bounded whatever the body's
//! size, since it ends up in answers and logs.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use otp_relay_providers::http::{Reply, MAX_REPLY_DETAIL};
use otp_relay_providers::{sendpulse, telegram, twilio, vonage, ProviderError};
use reqwest::StatusCode;

// Letters only: the scrubbing of digit runs must not be what hides them.
const VONAGE_SECRET: &str = "VonageFuzzSecret";
const SENDPULSE_SECRET: &str = "SendpulseFuzzSecret";
const GATEWAY_TOKEN: &str = "GatewayFuzzTokenAbc";
const BOT_TOKEN: &str = "123456:BotFuzzSecretXyz";
const BOT_SECRET: &str = "BotFuzzSecretXyz";

fuzz_target!(|data: &[u8]| {
    let [selector, high, low, retry, body @ ..] = data else {
        return;
    };
    let status = StatusCode::from_u16(100 + u16::from_be_bytes([*high, *low]) % 500)
        .expect("100..600 is a status");
    let reply = || Reply {
        status,
        retry_after: (*retry != 0).then(|| Duration::from_secs(u64::from(*retry))),
        body: body.to_vec(),
    };
    match selector % 15 {
        0 => check(twilio::read_send_reply(reply()), None),
        1 => check(twilio::read_probe_reply(reply()), None),
        2 => check(
            vonage::read_sms_api_reply(reply(), VONAGE_SECRET),
            Some(VONAGE_SECRET),
        ),
        3 => check(vonage::read_messages_api_reply(reply()), None),
        4 => check(vonage::read_balance_reply(reply()), None),
        5 => check(
            sendpulse::read_token_reply(reply(), SENDPULSE_SECRET).map(|(_, lifetime)| lifetime),
            Some(SENDPULSE_SECRET),
        ),
        6 => check(sendpulse::read_sms(&reply()), None),
        7 => check(sendpulse::read_whatsapp(&reply()), None),
        8 => check(
            telegram::read_gateway_reply(&reply(), GATEWAY_TOKEN),
            Some(GATEWAY_TOKEN),
        ),
        9 => check(
            telegram::read_bot_reply::<serde_json::Value>(&reply(), BOT_TOKEN),
            Some(BOT_SECRET),
        ),
        10 => check(twilio::read_message_reply(reply()), None),
        11 => check(twilio::read_balance_reply(reply()), None),
        12 => check(vonage::read_account_balance(reply()), None),
        13 => check(sendpulse::read_campaign_reply(&reply(), "2623085"), None),
        _ => check(sendpulse::read_balance_reply(&reply()), None),
    }
});

fn check<T>(result: Result<T, ProviderError>, secret: Option<&str>) {
    let Err(error) = result else {
        return;
    };
    let shown = error.to_string();
    let debug = format!("{error:?}");
    if let Some(secret) = secret {
        assert!(!shown.contains(secret), "the error shows the secret: {shown}");
        assert!(!debug.contains(secret), "the error shows the secret: {debug}");
    }
    assert!(
        shown.len() <= 2 * MAX_REPLY_DETAIL + 128,
        "an error of {} bytes",
        shown.len()
    );
    let _ = (error.code(), error.is_transient());
}
