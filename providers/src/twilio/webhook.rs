//! Twilio status callbacks: the `twilio` webhook.
//!
//! Twilio POSTs a form (`MessageSid`, `MessageStatus`, `ErrorCode`, and more that may be
//! added at any time) to the `StatusCallback` URL given at send time, and signs it:
//!
//! `X-Twilio-Signature = base64(HMAC-SHA1(auth token, URL + name1 + value1 + name2 + …))`
//!
//! - The URL is the full URL Twilio called, query string included, as it was given to
//!   Twilio: the public URL the server gave, not what a proxy forwards.
//! - Every POST parameter is signed, the ones we do not read too. Names are sorted
//!   (byte order); a repeated name contributes each of its values, sorted, each preceded
//!   by the name (as twilio-python's `RequestValidator` does). Values are the decoded
//!   form values.
//! - Twilio is inconsistent about the port: its SDKs accept the signature over the URL
//!   without any port and over the URL with the port (the scheme's default when none is
//!   written). So do we.
//! - The scheme signs no time: there is no replay window to check.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::Hmac;
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;

use crate::callbacks::{
    form_params, hmac, param, presented, required, same, Callback, CallbackError, CallbackRequest,
    StatusUpdate, Webhook,
};
use crate::twilio::delivery_status;

/// The webhook's name: the last segment of its path.
pub const WEBHOOK: &str = "twilio";

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Verifies and reads a Twilio status callback.
///
/// `url` is the public URL Twilio called (the one given as `StatusCallback`),
/// `form_body` the raw `application/x-www-form-urlencoded` body and `signature` the
/// `X-Twilio-Signature` header.
pub fn verify_status(
    auth_token: &SecretString,
    url: &str,
    form_body: &[u8],
    signature: Option<&str>,
) -> Result<StatusUpdate, CallbackError> {
    let presented = BASE64
        .decode(presented(signature)?.trim())
        .map_err(|_| CallbackError::BadSignature)?;
    let params = form_params(form_body);
    let key = auth_token.expose_secret().as_bytes();
    let signed = url_variants(url)
        .iter()
        .any(|url| same(&sign(key, url, &params), &presented));
    if !signed {
        return Err(CallbackError::BadSignature);
    }
    status_update(&params)
}

/// Twilio's signature over `url` and `params`.
fn sign(key: &[u8], url: &str, params: &[(String, String)]) -> Vec<u8> {
    // Sorting whole pairs sorts by name, then the values of a repeated name.
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * sorted.len());
    parts.push(url.as_bytes());
    for (name, value) in sorted {
        parts.push(name.as_bytes());
        parts.push(value.as_bytes());
    }
    hmac::<Hmac<Sha1>>(key, &parts)
}

/// `url` without any port, and with its port (the scheme's default if none is written).
/// A URL of another shape is returned as is, twice.
fn url_variants(url: &str) -> [String; 2] {
    let Some((scheme, rest)) = url.split_once("://") else {
        return [url.to_owned(), url.to_owned()];
    };
    let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, host_port) = authority.split_at(authority.rfind('@').map_or(0, |at| at + 1));
    let (host, port) = split_port(host_port);
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => Some("443"),
        "http" => Some("80"),
        _ => None,
    };
    let with_port = match port.or(default_port) {
        Some(port) => format!("{scheme}://{userinfo}{host}:{port}{path}"),
        None => url.to_owned(),
    };
    [format!("{scheme}://{userinfo}{host}{path}"), with_port]
}

/// `host:port` split at the port; the colons of a bracketed IPv6 address are not one.
fn split_port(host_port: &str) -> (&str, Option<&str>) {
    match host_port.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.is_empty() =>
        {
            (host, Some(port))
        }
        _ => (host_port, None),
    }
}

/// Twilio's status callbacks, signed with the account's auth token over the public URL.
pub struct TwilioWebhook {
    auth_token: SecretString,
}

impl TwilioWebhook {
    pub fn new(auth_token: SecretString) -> Self {
        TwilioWebhook { auth_token }
    }
}

impl Webhook for TwilioWebhook {
    fn name(&self) -> &'static str {
        WEBHOOK
    }

    fn receive(&self, request: &CallbackRequest<'_>) -> Result<Callback, CallbackError> {
        request.expect_post()?;
        // Built only with a public URL (see the registry); without one nothing verifies.
        let url = request.url.ok_or(CallbackError::BadSignature)?;
        verify_status(
            &self.auth_token,
            url,
            request.body,
            request.header(SIGNATURE_HEADER),
        )
        .map(Callback::Status)
    }
}

fn status_update(params: &[(String, String)]) -> Result<StatusUpdate, CallbackError> {
    let raw_status = required(params, "MessageStatus")?;
    Ok(StatusUpdate {
        provider: "twilio",
        provider_message_id: required(params, "MessageSid")?.to_owned(),
        status: delivery_status(raw_status),
        raw_status: raw_status.to_owned(),
        error_code: param(params, "ErrorCode").map(str::to_owned),
        // Twilio's callbacks carry no price (see `twilio::money`).
        cost: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::test_params as params;

    fn base64_signature(token: &str, url: &str, pairs: &[(&str, &str)]) -> String {
        BASE64.encode(sign(token.as_bytes(), url, &params(pairs)))
    }

    /// The worked example of Twilio's "Webhooks security" guide
    /// (<https://www.twilio.com/docs/usage/webhooks/webhooks-security>), byte for byte.
    #[test]
    fn twilio_documented_example() {
        let pairs = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ];
        assert_eq!(
            base64_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &pairs
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    /// twilio-python's `test_request_validator.py`: a repeated name signs each value,
    /// sorted; and the port variants its validator accepts.
    #[test]
    fn twilio_python_sdk_vectors() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let repeated = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
        ];
        assert_eq!(
            base64_signature("12345", url, &repeated),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );

        let call = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ];
        assert_eq!(
            base64_signature("12345", url, &call),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        let [_, with_port] = url_variants(url);
        assert_eq!(
            base64_signature("12345", &with_port, &call),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
    }

    #[test]
    fn url_variants_drop_and_add_the_port() {
        assert_eq!(
            url_variants("https://otp.example.com/webhooks/twilio"),
            [
                "https://otp.example.com/webhooks/twilio",
                "https://otp.example.com:443/webhooks/twilio"
            ]
        );
        assert_eq!(
            url_variants("http://u:p@[::1]:8080/x?y=1"),
            ["http://u:p@[::1]/x?y=1", "http://u:p@[::1]:8080/x?y=1"]
        );
        assert_eq!(
            url_variants("http://[::1]/x"),
            ["http://[::1]/x", "http://[::1]:80/x"]
        );
        assert_eq!(url_variants("not a url"), ["not a url", "not a url"]);
    }
}
