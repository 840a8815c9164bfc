//! Every webhook's signature check and parser: Twilio status callbacks, Vonage SMS API
//! receipts (form or JSON, every signature method), Vonage Messages API statuses (JWT),
//! Telegram Gateway reports and Telegram bot updates.
//!
//! Input: a selector byte (which webhook; its high bit says whether this harness signs
//! the request properly, so the parsers behind the checks are reached too), a byte that
//! picks the Vonage signature method, then a header line and the body.
//!
//! Checked besides "no panic": an unsigned (or wrongly signed) callback is never
//! accepted; errors never carry a secret, nor a code or number from the body; a bot update's `Debug` never
//! shows the shared phone number.

#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use md5::Md5;
use otp_relay_providers::callbacks::{form_params, CallbackError};
use otp_relay_providers::telegram::webhook::{verify_bot_update, verify_gateway_status, BotUpdate};
use otp_relay_providers::twilio::webhook as twilio;
use otp_relay_providers::vonage::webhook::{
    json_params, verify_messages_status, verify_sms_receipt, SignatureMethod,
};
use secrecy::SecretString;
use sha2::{Digest, Sha256, Sha512};

const TWILIO_TOKEN: &str = "TwilioFuzzAuthToken";
const TWILIO_URL: &str = "https://otp.example.com/webhooks/twilio";
const VONAGE_SECRET: &str = "VonageFuzzSignatureSecret";
const GATEWAY_TOKEN: &str = "GatewayFuzzToken";
const BOT_SECRET: &str = "BotFuzzWebhookSecret";
const SECRETS: [&str; 4] = [TWILIO_TOKEN, VONAGE_SECRET, GATEWAY_TOKEN, BOT_SECRET];

const METHODS: [SignatureMethod; 5] = [
    SignatureMethod::Md5Hash,
    SignatureMethod::Md5,
    SignatureMethod::Sha1,
    SignatureMethod::Sha256,
    SignatureMethod::Sha512,
];

fuzz_target!(|data: &[u8]| {
    let [selector, variant, rest @ ..] = data else {
        return;
    };
    let signed = selector & 0x80 != 0;
    let (header, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&[][..], rest),
    };
    let header = String::from_utf8_lossy(header).into_owned();
    let now = SystemTime::now();
    let unix = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let secret = |s: &str| SecretString::from(s.to_owned());

    let which = (selector & 0x7f) % 6;
    let result: Result<(), CallbackError> = match which {
        0 => {
            let signature = if signed { twilio_signature(body) } else { header };
            twilio::verify_status(&secret(TWILIO_TOKEN), TWILIO_URL, body, Some(&signature))
                .map(drop)
        }
        1 | 2 => {
            let params = if which == 1 {
                Ok(form_params(body))
            } else {
                json_params(body)
            };
            let method = METHODS[usize::from(*variant) % METHODS.len()];
            params.and_then(|mut params| {
                if signed {
                    params.retain(|(name, _)| name != "sig" && name != "timestamp");
                    params.push(("timestamp".into(), unix.to_string()));
                    let sig = hex(&vonage_digest(method, &vonage_signed_text(&params)));
                    params.push(("sig".into(), sig));
                }
                verify_sms_receipt(&secret(VONAGE_SECRET), method, &params, now)
            })
            .map(drop)
        }
        3 => {
            let authorization = if signed {
                format!("Bearer {}", vonage_jwt(body, unix, *variant))
            } else {
                header
            };
            verify_messages_status(&secret(VONAGE_SECRET), Some(&authorization), body, now)
                .map(drop)
        }
        4 => {
            let (timestamp, signature) = if signed {
                let timestamp = unix.to_string();
                let key = Sha256::digest(GATEWAY_TOKEN.as_bytes());
                let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                mac.update(timestamp.as_bytes());
                mac.update(b"\n");
                mac.update(body);
                (timestamp, hex(&mac.finalize().into_bytes()))
            } else {
                let (timestamp, signature) = header.split_once(' ').unwrap_or((&header, ""));
                (timestamp.to_owned(), signature.to_owned())
            };
            verify_gateway_status(
                &secret(GATEWAY_TOKEN),
                Some(&timestamp),
                Some(&signature),
                body,
                now,
            )
            .map(drop)
        }
        _ => {
            let presented = if signed { BOT_SECRET.to_owned() } else { header };
            let result = verify_bot_update(&secret(BOT_SECRET), Some(&presented), body);
            if let Ok(update) = &result {
                let shown = format!("{update:?}");
                if let BotUpdate::SharedContact { phone, .. } = update {
                    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
                    if digits.len() >= 8 {
                        assert!(!shown.contains(&digits), "Debug shows the number: {shown}");
                    }
                }
            }
            result.map(drop)
        }
    };
    check(result, signed, body);
});

fn check(result: Result<(), CallbackError>, signed: bool, body: &[u8]) {
    match result {
        Ok(_) => assert!(signed, "a callback this harness did not sign was accepted"),
        Err(error) => {
            let shown = error.to_string();
            for secret in SECRETS {
                assert!(!shown.contains(secret), "the error shows a secret: {shown}");
            }
            // No code or number from the body (a run of six or more digits; fixed
            // texts hold shorter numbers), and no size that grows with the body.
            assert!(shown.len() <= 256, "an error of {} bytes: {shown}", shown.len());
            let body = String::from_utf8_lossy(body);
            for run in body
                .split(|c: char| !c.is_ascii_digit())
                .filter(|run| run.len() >= 6)
            {
                assert!(!shown.contains(run), "the error quotes {run}: {shown}");
            }
            let _ = error.is_auth_failure();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Twilio's scheme: base64 HMAC-SHA1 of the URL and the sorted parameters.
fn twilio_signature(body: &[u8]) -> String {
    let mut params = form_params(body);
    params.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(TWILIO_TOKEN.as_bytes()).unwrap();
    mac.update(TWILIO_URL.as_bytes());
    for (name, value) in &params {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Vonage's signed text: `&name=value` of every parameter but `sig`, sorted, with `&`
/// and `=` in values replaced by `_`.
fn vonage_signed_text(params: &[(String, String)]) -> String {
    let mut fields: Vec<&(String, String)> =
        params.iter().filter(|(name, _)| name != "sig").collect();
    fields.sort();
    fields
        .iter()
        .map(|(name, value)| format!("&{name}={}", value.replace(['&', '='], "_")))
        .collect()
}

fn vonage_digest(method: SignatureMethod, text: &str) -> Vec<u8> {
    let key = VONAGE_SECRET.as_bytes();
    let text = text.as_bytes();
    fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], text: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).unwrap();
        mac.update(text);
        mac.finalize().into_bytes().to_vec()
    }
    match method {
        SignatureMethod::Md5Hash => {
            let mut hash = Md5::new();
            hash.update(text);
            hash.update(key);
            hash.finalize().to_vec()
        }
        SignatureMethod::Md5 => mac::<Hmac<Md5>>(key, text),
        SignatureMethod::Sha1 => mac::<Hmac<sha1::Sha1>>(key, text),
        SignatureMethod::Sha256 => mac::<Hmac<Sha256>>(key, text),
        SignatureMethod::Sha512 => mac::<Hmac<Sha512>>(key, text),
    }
}

/// A Messages API webhook token: HS256, `iat` now, the body's SHA-256 as `payload_hash`
/// (and, on odd variants, an `exp`).
fn vonage_jwt(body: &[u8], unix: u64, variant: u8) -> String {
    let mut claims = serde_json::json!({
        "iat": unix,
        "jti": "fuzz",
        "payload_hash": hex(&Sha256::digest(body)),
    });
    if variant % 2 == 1 {
        claims["exp"] = (unix + 900).into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(VONAGE_SECRET.as_bytes()),
    )
    .unwrap()
}
