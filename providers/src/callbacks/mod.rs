//! Provider callbacks: proving that a delivery report (or a bot update) really comes
//! from the provider, then reading it into one vocabulary.
//!
//! Each provider that takes callbacks offers a [`Webhook`] (its `webhook` module holds its
//! documented scheme as pure functions). The server routes a request to the webhook by
//! name, hands over the method, headers, query and raw body as received and the public
//! URL it gave the provider, and gets back a [`Callback`] (a status update, a bot update
//! or nothing to do) or a [`CallbackError`] that says which HTTP answer fits. The server
//! never reads a provider's wire format; the providers never know the server's routes.
//!
//! | webhook | scheme | replay window |
//! |---|---|---|
//! | Twilio | `X-Twilio-Signature`: base64 HMAC-SHA1 of URL + sorted params, auth token | none in the scheme |
//! | Vonage SMS API | `sig` param: MD5 hash or HMAC-MD5/SHA1/SHA256/SHA512 of sorted params | signed `timestamp` |
//! | Vonage Messages API | `Authorization: Bearer` JWT HS256, `payload_hash` = SHA-256 of body | `iat` |
//! | Telegram Gateway | `X-Request-Signature`: hex HMAC-SHA256, key SHA-256(token) | `X-Request-Timestamp` |
//! | Telegram Bot API | `X-Telegram-Bot-Api-Secret-Token` equals the configured secret | none in the scheme |
//!
//! Rules shared by every scheme:
//! - A signed time must lie within [`MAX_CLOCK_SKEW`] (5 minutes) of `now`, either
//!   side, so a captured callback cannot be replayed later. Where the scheme signs no
//!   time (Twilio, the bot), a replay can only repeat a status Twilio really sent: final
//!   statuses are never replaced ([`crate::DeliveryStatus::is_final`]).
//! - The signature is checked before the body is read, and compared in constant time.
//!   Hex signatures are accepted in either case (Vonage sends upper case, the SDKs
//!   produce lower case).
//! - Errors never carry a secret, a signature or a phone number, and never echo the body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::digest::KeyInit;
use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::telegram::webhook::BotUpdate;
use crate::DeliveryStatus;

/// How far a signed timestamp may be from `now`, in the past or the future. Five minutes
/// is what the Vonage SDKs allow; it absorbs clock skew and provider retries in flight.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A provider's word on one message we sent, after its signature was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// The provider's name, as [`crate::MessageProvider::name`] returns it.
    pub provider: &'static str,
    /// The provider's id for the message: the `provider_message_id` of the [`crate::Receipt`].
    pub provider_message_id: String,
    pub status: DeliveryStatus,
    /// The provider's own word for the status, kept for operators.
    pub raw_status: String,
    /// The provider's error code, when it reported one (never "no error" codes like `0`).
    pub error_code: Option<String>,
    /// What the message cost, when the report says.
    pub cost: Option<crate::Money>,
}

/// Why a callback was refused. None of the variants carries a secret or a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// The header or parameter that carries the signature is absent or empty.
    #[error("the callback is not signed")]
    MissingSignature,
    /// The signature does not match the request, or is not in the scheme's format.
    #[error("the callback's signature does not match")]
    BadSignature,
    /// The signed time is missing, unreadable or more than 5 minutes from now.
    #[error("the callback's signed time is missing or more than 5 minutes from now")]
    Stale,
    /// The callback is authentic (or cannot even be checked) but not in the documented shape.
    #[error("malformed callback: {0}")]
    Malformed(String),
    /// The provider never calls this webhook with this method.
    #[error("the webhook does not take this method")]
    MethodNotAllowed,
}

impl CallbackError {
    /// The caller could not prove it is the provider: answer 401. `Malformed` is 400,
    /// `MethodNotAllowed` 405.
    pub fn is_auth_failure(&self) -> bool {
        !matches!(
            self,
            CallbackError::Malformed(_) | CallbackError::MethodNotAllowed
        )
    }
}

/// One callback request as the server received it.
pub struct CallbackRequest<'a> {
    /// The HTTP method, upper case (`POST`, `GET`).
    pub method: &'a str,
    /// The public URL the provider was given for this webhook (see
    /// [`crate::CallbackUrls`]), which some schemes sign; `None` when the server has none.
    pub url: Option<&'a str>,
    /// The query string, without `?`.
    pub query: &'a [u8],
    pub headers: &'a reqwest::header::HeaderMap,
    /// The body, exactly as received.
    pub body: &'a [u8],
    /// The time signed timestamps are checked against.
    pub now: SystemTime,
}

impl CallbackRequest<'_> {
    /// A header's value, when it is present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Refuses every method but `POST`, which is how most providers call.
    pub(crate) fn expect_post(&self) -> Result<(), CallbackError> {
        if self.method.eq_ignore_ascii_case("POST") {
            Ok(())
        } else {
            Err(CallbackError::MethodNotAllowed)
        }
    }
}

/// What an authentic callback says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// A provider's word on a message we sent.
    Status(StatusUpdate),
    /// A Telegram bot user's action (linking or unlinking their chat).
    Bot(BotUpdate),
    /// Nothing for the server to do (for example a Gateway report about code
    /// verification only); the reason is for the debug log.
    Nothing(&'static str),
}

/// A provider's callback endpoint: verifies a request with the provider's own scheme and
/// reads it. Built by [`crate::registry::build_all`] for each configured webhook.
pub trait Webhook: Send + Sync {
    /// The webhook's name, unique among providers; the server serves it under a path
    /// of its choosing that ends with this name.
    fn name(&self) -> &'static str;

    /// Verifies and reads one request.
    fn receive(&self, request: &CallbackRequest<'_>) -> Result<Callback, CallbackError>;
}

/// Reads an `application/x-www-form-urlencoded` body (or query string) the way the
/// WHATWG URL standard does, which is what the providers' SDKs and web frameworks see:
/// `+` is a space, `%XX` a byte, a stray `%` stays literal, bytes are decoded as UTF-8
/// (invalid sequences become U+FFFD). Pairs keep their order and repetitions.
pub fn form_params(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            (form_decode(name), form_decode(value))
        })
        .collect()
}

fn form_decode(raw: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < raw.len() {
        match raw[at] {
            b'+' => bytes.push(b' '),
            b'%' => match raw.get(at + 1..at + 3).and_then(hex_byte) {
                Some(byte) => {
                    bytes.push(byte);
                    at += 2;
                }
                None => bytes.push(b'%'),
            },
            other => bytes.push(other),
        }
        at += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Two hex digits (either case) as a byte.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    match pair {
        [high, low] => Some((digit(*high)? * 16 + digit(*low)?) as u8),
        _ => None,
    }
}

/// Hex text (either case) as bytes; `None` unless it is whole bytes of hex digits.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks(2).map(hex_byte).collect()
}

/// The credential a request presented, or [`CallbackError::MissingSignature`] when the
/// header or parameter is absent or blank. The value is returned untrimmed: some schemes
/// sign it as sent.
pub(crate) fn presented(value: Option<&str>) -> Result<&str, CallbackError> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or(CallbackError::MissingSignature)
}

/// Equality that takes the same time wherever the first difference is, so a forger
/// cannot find a valid MAC byte by byte. (Only the lengths, which are public, may leak.)
pub(crate) fn same(expected: &[u8], presented: &[u8]) -> bool {
    expected.ct_eq(presented).into()
}

/// Checks a hex-encoded MAC against the expected bytes.
pub(crate) fn verify_hex(expected: &[u8], presented: &str) -> Result<(), CallbackError> {
    match decode_hex(presented) {
        Some(bytes) if same(expected, &bytes) => Ok(()),
        _ => Err(CallbackError::BadSignature),
    }
}

/// The HMAC of the concatenated `parts` under `key`, with the MAC type `M`
/// (`Hmac<Sha256>` and so on).
pub(crate) fn hmac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `now` in whole seconds since the Unix epoch (0 before it).
pub(crate) fn unix_seconds(now: SystemTime) -> i64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
    })
}

/// Accepts a signed Unix time within [`MAX_CLOCK_SKEW`] of `now`; a missing one is
/// [`CallbackError::Stale`] too, since freshness cannot be shown without it.
pub(crate) fn check_fresh(signed_at: Option<i64>, now: SystemTime) -> Result<(), CallbackError> {
    match signed_at {
        Some(at) if unix_seconds(now).abs_diff(at) <= MAX_CLOCK_SKEW.as_secs() => Ok(()),
        _ => Err(CallbackError::Stale),
    }
}

/// Unix seconds written as decimal text.
pub(crate) fn parse_unix(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// The first non-empty value of the parameter `name`.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, value)| key == name && !value.is_empty())
        .map(|(_, value)| value.as_str())
}

/// The parameter `name` of an authentic callback, which the provider documents as always there.
pub(crate) fn required<'a>(
    params: &'a [(String, String)],
    name: &str,
) -> Result<&'a str, CallbackError> {
    param(params, name).ok_or_else(|| CallbackError::Malformed(format!("no {name}")))
}

/// A body that is not the JSON the provider documents. serde's message is not used: it
/// may quote the body, and so a number.
pub(crate) fn json_error(expected: &str, error: &serde_json::Error) -> CallbackError {
    CallbackError::Malformed(format!(
        "the body is not {expected} (line {}, column {})",
        error.line(),
        error.column()
    ))
}

/// Owned parameter pairs, for the tests of each scheme.
#[cfg(test)]
pub(crate) fn test_params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_params_decode_like_whatwg() {
        assert_eq!(
            form_params(b"To=%2B1800&Body=a+b%20c&&flag&bad=%zz%4"),
            [
                ("To".to_owned(), "+1800".to_owned()),
                ("Body".to_owned(), "a b c".to_owned()),
                ("flag".to_owned(), String::new()),
                ("bad".to_owned(), "%zz%4".to_owned()),
            ]
        );
        assert_eq!(form_params(b"x=%C3%A9"), [("x".to_owned(), "é".to_owned())]);
    }

    #[test]
    fn hex_decodes_either_case_and_only_whole_bytes() {
        assert_eq!(decode_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn freshness_allows_five_minutes_either_side() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(check_fresh(Some(1_000_300), now).is_ok());
        assert!(check_fresh(Some(999_700), now).is_ok());
        assert_eq!(check_fresh(Some(1_000_301), now), Err(CallbackError::Stale));
        assert_eq!(check_fresh(Some(999_699), now), Err(CallbackError::Stale));
        assert_eq!(check_fresh(None, now), Err(CallbackError::Stale));
    }

    #[test]
    fn only_malformed_is_not_an_auth_failure() {
        assert!(CallbackError::MissingSignature.is_auth_failure());
        assert!(CallbackError::BadSignature.is_auth_failure());
        assert!(CallbackError::Stale.is_auth_failure());
        assert!(!CallbackError::Malformed("x".into()).is_auth_failure());
        assert!(!CallbackError::MethodNotAllowed.is_auth_failure());
    }
}
