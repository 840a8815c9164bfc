//! Vonage delivery callbacks, from either API: the `vonage` webhook.
//!
//! **SMS API delivery receipts** arrive as a form, a query string or a flat JSON object
//! (`messageId`, `status`, `err-code`, `msisdn`, …). With signed webhooks enabled they
//! also carry `timestamp` (Unix seconds), `nonce` and `sig` ("Signing messages" in
//! Vonage's docs, and the SDKs' `check_signature`/`verifyRequestSignature`):
//! - every parameter but `sig`, sorted by name, each written `&name=value` with `&` and
//!   `=` in values replaced by `_`;
//! - `md5hash` (the dashboard's default, "MD5 hash"): MD5 of that text followed directly
//!   by the signature secret; `md5`, `sha1`, `sha256`, `sha512`: HMAC of the text keyed by
//!   the secret, with the algorithm chosen in the dashboard;
//! - `sig` is the digest in hex; Vonage writes HMACs in upper case, the SDKs write lower
//!   case, so case does not matter.
//! - The Java SDK leaves parameters with blank values out of the text; the others do
//!   not. Both forms are accepted, so a receipt with an empty field still verifies.
//! - `timestamp` must be within 5 minutes of now.
//!
//! **Messages API status webhooks** are JSON (`message_uuid`, `status`, `error`) with
//! `Authorization: Bearer <JWT>` ("Signed webhooks" in Vonage's docs):
//! - the JWT is HS256, keyed by the signature secret whatever signature method the
//!   dashboard names; its claims hold `iat`, `jti`, `iss`, `api_key`, `application_id`
//!   and `payload_hash`, the hex SHA-256 of the body as sent;
//! - here `payload_hash` must match the body (Vonage calls it optional; without it the
//!   token would authenticate any body), and `iat` must be within 5 minutes of now.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use hmac::Hmac;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use super::NAME;
use crate::callbacks::{
    check_fresh, decode_hex, form_params, hmac, json_error, param, parse_unix, presented, required,
    same, unix_seconds, Callback, CallbackError, CallbackRequest, StatusUpdate, Webhook,
};
use crate::DeliveryStatus;

/// The webhook's name: the last segment of its path.
pub const WEBHOOK: &str = "vonage";

/// Both APIs' callbacks, told apart by their signature: the Messages API signs with a JWT
/// in `Authorization`, the SMS API with a `sig` parameter.
pub struct VonageWebhook {
    secret: SecretString,
    method: SignatureMethod,
}

impl VonageWebhook {
    /// `secret` is the account's signature secret, `method` the dashboard's signature
    /// method for SMS API receipts.
    pub fn new(secret: SecretString, method: SignatureMethod) -> Self {
        VonageWebhook { secret, method }
    }
}

impl Webhook for VonageWebhook {
    fn name(&self) -> &'static str {
        WEBHOOK
    }

    fn receive(&self, request: &CallbackRequest<'_>) -> Result<Callback, CallbackError> {
        let update = if request.method.eq_ignore_ascii_case("GET") {
            // The SMS API sends receipts as a GET when the dashboard says so.
            let params = form_params(request.query);
            verify_sms_receipt(&self.secret, self.method, &params, request.now)?
        } else if !request.method.eq_ignore_ascii_case("POST") {
            return Err(CallbackError::MethodNotAllowed);
        } else if request.header("authorization").is_some() {
            verify_messages_status(
                &self.secret,
                request.header("authorization"),
                request.body,
                request.now,
            )?
        } else {
            let is_json = request
                .header("content-type")
                .is_some_and(|v| v.starts_with("application/json"));
            let mut params = if is_json {
                json_params(request.body)?
            } else {
                form_params(request.body)
            };
            if params.is_empty() {
                params = form_params(request.query);
            }
            verify_sms_receipt(&self.secret, self.method, &params, request.now)?
        };
        Ok(Callback::Status(update))
    }
}

/// How SMS API webhooks are signed: the dashboard's "signature method".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureMethod {
    /// "MD5 hash", the default: MD5 of the sorted parameters followed by the secret.
    #[default]
    Md5Hash,
    /// "MD5 HMAC".
    Md5,
    /// "SHA1 HMAC".
    Sha1,
    /// "SHA-256 HMAC".
    Sha256,
    /// "SHA-512 HMAC".
    Sha512,
}

impl SignatureMethod {
    /// The name the Vonage SDKs use: `md5hash`, `md5`, `sha1`, `sha256`, `sha512`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMethod::Md5Hash => "md5hash",
            SignatureMethod::Md5 => "md5",
            SignatureMethod::Sha1 => "sha1",
            SignatureMethod::Sha256 => "sha256",
            SignatureMethod::Sha512 => "sha512",
        }
    }

    /// The digest of the signed `text` under `secret`.
    fn digest(self, secret: &[u8], text: &str) -> Vec<u8> {
        let text = text.as_bytes();
        match self {
            SignatureMethod::Md5Hash => Md5::new()
                .chain_update(text)
                .chain_update(secret)
                .finalize()
                .to_vec(),
            SignatureMethod::Md5 => hmac::<Hmac<Md5>>(secret, &[text]),
            SignatureMethod::Sha1 => hmac::<Hmac<Sha1>>(secret, &[text]),
            SignatureMethod::Sha256 => hmac::<Hmac<Sha256>>(secret, &[text]),
            SignatureMethod::Sha512 => hmac::<Hmac<Sha512>>(secret, &[text]),
        }
    }
}

impl fmt::Display for SignatureMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is none of the signature methods Vonage offers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signature method; expected one of md5hash, md5, sha1, sha256, sha512")]
pub struct UnknownSignatureMethod;

impl FromStr for SignatureMethod {
    type Err = UnknownSignatureMethod;

    /// Takes the SDK names (`md5hash`, `md5`, `sha256`, …), the Node SDK's (`MD5HASH`,
    /// `SHA256HMAC`, …) and the dashboard's (`MD5 hash`, `SHA-256 HMAC`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .collect::<String>()
            .to_ascii_lowercase();
        let algorithm = name
            .strip_suffix("hmac")
            .or_else(|| name.strip_prefix("hmac"))
            .unwrap_or(&name);
        match algorithm {
            "md5hash" if algorithm == name => Ok(SignatureMethod::Md5Hash),
            "md5" => Ok(SignatureMethod::Md5),
            "sha1" => Ok(SignatureMethod::Sha1),
            "sha256" => Ok(SignatureMethod::Sha256),
            "sha512" => Ok(SignatureMethod::Sha512),
            _ => Err(UnknownSignatureMethod),
        }
    }
}

/// The parameters of a delivery receipt sent as a flat JSON object, for
/// [`verify_sms_receipt`]. Numbers and booleans are taken as written, `null` as empty.
pub fn json_params(body: &[u8]) -> Result<Vec<(String, String)>, CallbackError> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(CallbackError::Malformed(
                "the body is not a JSON object".into(),
            ))
        }
        Err(error) => return Err(json_error("a JSON object", &error)),
    };
    object
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) => text,
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                Value::Null => String::new(),
                // The name is not quoted: it is the sender's text.
                Value::Array(_) | Value::Object(_) => {
                    return Err(CallbackError::Malformed(
                        "the JSON object is not flat".into(),
                    ))
                }
            };
            Ok((name, value))
        })
        .collect()
}

/// Verifies and reads an SMS API delivery receipt.
///
/// `params` are all the receipt's parameters, `sig` included, from the form body, the
/// query string or a flat JSON object ([`json_params`]); a repeated name is malformed.
pub fn verify_sms_receipt(
    secret: &SecretString,
    method: SignatureMethod,
    params: &[(String, String)],
    now: SystemTime,
) -> Result<StatusUpdate, CallbackError> {
    let sig = presented(param(params, "sig"))?;
    let presented = decode_hex(sig).ok_or(CallbackError::BadSignature)?;
    if has_repeated_names(params) {
        return Err(CallbackError::Malformed("a parameter is repeated".into()));
    }
    let secret = secret.expose_secret().as_bytes();
    let signed = signed_texts(params)
        .iter()
        .any(|text| same(&method.digest(secret, text), &presented));
    if !signed {
        return Err(CallbackError::BadSignature);
    }
    check_fresh(param(params, "timestamp").and_then(parse_unix), now)?;
    receipt(params)
}

fn has_repeated_names(params: &[(String, String)]) -> bool {
    let mut names: Vec<&str> = params.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    names.windows(2).any(|pair| pair[0] == pair[1])
}

/// The texts a sender may have signed: all parameters, and (when some value is blank)
/// the non-blank ones only, as the Java SDK signs.
fn signed_texts(params: &[(String, String)]) -> Vec<String> {
    let with_blanks = signed_text(params, false);
    if params.iter().any(|(_, value)| value.trim().is_empty()) {
        vec![with_blanks, signed_text(params, true)]
    } else {
        vec![with_blanks]
    }
}

/// `&name=value` for every parameter but `sig`, sorted by name, `&` and `=` in values
/// replaced by `_` (they would make the text ambiguous).
fn signed_text(params: &[(String, String)], skip_blank: bool) -> String {
    let mut fields: Vec<&(String, String)> = params
        .iter()
        .filter(|(name, value)| name != "sig" && !(skip_blank && value.trim().is_empty()))
        .collect();
    fields.sort_unstable();
    fields
        .iter()
        .map(|(name, value)| format!("&{name}={}", value.replace(['&', '='], "_")))
        .collect()
}

fn receipt(params: &[(String, String)]) -> Result<StatusUpdate, CallbackError> {
    let raw_status = required(params, "status")?;
    Ok(StatusUpdate {
        provider: NAME,
        provider_message_id: required(params, "messageId")?.to_owned(),
        status: receipt_status(raw_status),
        raw_status: raw_status.to_owned(),
        // 0 is "delivered", not an error.
        error_code: param(params, "err-code")
            .filter(|code| *code != "0")
            .map(str::to_owned),
        // Each part's receipt prices that part; the send's answer gave the sum.
        cost: None,
    })
}

/// A delivery receipt `status` in our vocabulary.
fn receipt_status(raw: &str) -> DeliveryStatus {
    match raw {
        "delivered" => DeliveryStatus::Delivered,
        // The carrier or handset could not take it (in time): the send itself worked.
        "expired" | "failed" => DeliveryStatus::Undelivered,
        // Refused by Vonage or the carrier before any delivery attempt.
        "rejected" => DeliveryStatus::Failed,
        // "accepted" and "buffered" by the carrier, "unknown", or a status added later:
        // the message left Vonage and its fate is open.
        _ => DeliveryStatus::Sent,
    }
}

/// Verifies and reads a Messages API status webhook. `authorization` is the
/// `Authorization` header, `body` the raw JSON body.
pub fn verify_messages_status(
    secret: &SecretString,
    authorization: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<StatusUpdate, CallbackError> {
    let token = bearer_token(presented(authorization)?).ok_or(CallbackError::BadSignature)?;
    let claims = webhook_claims(secret, token)?;
    // Without the hash the token would vouch for any body sent with it.
    let payload_hash = claims
        .payload_hash
        .as_deref()
        .and_then(decode_hex)
        .ok_or(CallbackError::BadSignature)?;
    if !same(&Sha256::digest(body), &payload_hash) {
        return Err(CallbackError::BadSignature);
    }
    check_fresh(claims.iat.map(|iat| iat as i64), now)?;
    if claims
        .exp
        .is_some_and(|exp| (exp as i64) < unix_seconds(now))
    {
        return Err(CallbackError::Stale);
    }
    message_status(body)
}

/// The token of a `Bearer` authorization (the scheme name is case-insensitive).
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[derive(Deserialize)]
struct WebhookClaims {
    // Numbers, integral or not, as JWT allows.
    iat: Option<f64>,
    exp: Option<f64>,
    payload_hash: Option<String>,
}

/// The claims of a token signed HS256 with `secret`. jsonwebtoken compares the MAC in
/// constant time and refuses any other algorithm (`none` included); time is checked by
/// the caller against the `now` it was given, not the system clock.
fn webhook_claims(secret: &SecretString, token: &str) -> Result<WebhookClaims, CallbackError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(secret.expose_secret().as_bytes());
    jsonwebtoken::decode::<WebhookClaims>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|_| CallbackError::BadSignature)
}

#[derive(Deserialize)]
struct MessageStatus {
    message_uuid: String,
    status: String,
    error: Option<MessageError>,
    usage: Option<Usage>,
}

/// What the message cost: `{"currency":"EUR","price":"0.0333"}` ("messageStatusUsage" in
/// the Messages API spec).
#[derive(Deserialize)]
struct Usage {
    currency: Option<String>,
    price: Option<Box<serde_json::value::RawValue>>,
}

impl Usage {
    fn cost(&self) -> Option<crate::Money> {
        let price = crate::money::decimal_text(self.price.as_deref()?)?;
        crate::Money::parse(&price, self.currency.as_deref())
    }
}

#[derive(Deserialize)]
struct MessageError {
    /// The code, e.g. `"1000"`.
    title: Option<String>,
    /// A URL ending in `#<code>`.
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl MessageError {
    /// The code: the `title`, or else the fragment of the `type` URL.
    fn code(self) -> Option<String> {
        let MessageError { title, kind } = self;
        title
            .filter(|title| !title.is_empty())
            .or_else(|| Some(kind?.rsplit_once('#')?.1.to_owned()))
            .filter(|code| !code.is_empty())
    }
}

fn message_status(body: &[u8]) -> Result<StatusUpdate, CallbackError> {
    let message: MessageStatus =
        serde_json::from_slice(body).map_err(|e| json_error("a message status object", &e))?;
    if message.message_uuid.is_empty() {
        return Err(CallbackError::Malformed("no message_uuid".into()));
    }
    Ok(StatusUpdate {
        provider: NAME,
        status: message_delivery_status(&message.status),
        provider_message_id: message.message_uuid,
        raw_status: message.status,
        error_code: message.error.and_then(MessageError::code),
        cost: message.usage.as_ref().and_then(Usage::cost),
    })
}

/// A Messages API `status` in our vocabulary.
fn message_delivery_status(raw: &str) -> DeliveryStatus {
    match raw {
        "delivered" | "read" => DeliveryStatus::Delivered,
        "undeliverable" => DeliveryStatus::Undelivered,
        "rejected" => DeliveryStatus::Failed,
        // "submitted" to the carrier, or a status added later: the message left Vonage.
        _ => DeliveryStatus::Sent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callbacks::test_params as params;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hex_signature(method: SignatureMethod, secret: &str, pairs: &[(&str, &str)]) -> String {
        hex(&method.digest(secret.as_bytes(), &signed_text(&params(pairs), false)))
    }

    /// Vonage Java SDK, `RequestSigningTest`: `&a=alphabet&b=bananas&timestamp=2100`, secret `abcde`.
    #[test]
    fn vonage_java_sdk_vectors() {
        let pairs = [("a", "alphabet"), ("b", "bananas"), ("timestamp", "2100")];
        assert_eq!(
            hex_signature(SignatureMethod::Md5Hash, "abcde", &pairs),
            "7d43241108912b32cc315b48ce681acf"
        );
        assert_eq!(
            hex_signature(SignatureMethod::Sha256, "abcde", &pairs),
            "8d1b0428276b6a070578225914c3502cc0687a454dfbbbb370c76a14234cb546"
        );
        // Its verifier leaves blank values out: `b` is empty here, and the signature is
        // the one over `&a=alphabet&timestamp=2100`.
        let blank = params(&[("a", "alphabet"), ("b", ""), ("timestamp", "2100")]);
        let texts = signed_texts(&blank);
        assert_eq!(texts[1], "&a=alphabet&timestamp=2100");
        let md5 = hex(&SignatureMethod::Md5Hash.digest(b"abcde", &texts[1]));
        assert_eq!(md5, "a3368bf718ba104dcb392d8877e8eb2b");
    }

    /// Vonage Python SDK, `http_client/tests/test_auth.py` (HMAC, and `&`/`=` in values)
    /// and the 2.x `test_signature` (MD5 hash).
    #[test]
    fn vonage_python_sdk_vectors() {
        let pairs = [
            ("param1", "value1"),
            ("param2", "value2"),
            ("timestamp", "1234567890"),
        ];
        assert_eq!(
            hex_signature(SignatureMethod::Md5, "signature_secret", &pairs),
            "724c2bf6ca423c36e20631b11d1c5753"
        );
        assert_eq!(
            hex_signature(SignatureMethod::Sha256, "signature_secret", &pairs),
            "280c4320703dbc98bfa22db676655ed2acfbfe8792b062ff7622e67f1183c287"
        );
        let special = [
            ("param1", "value&1"),
            ("param2", "value=2"),
            ("timestamp", "1234567890"),
        ];
        assert_eq!(
            hex_signature(SignatureMethod::Md5, "signature_secret", &special),
            "2bbf0abafb2c55e5af6231513896a2ac"
        );
        let old = [("a", "1"), ("b", "2"), ("timestamp", "1461605396")];
        assert_eq!(
            hex_signature(SignatureMethod::Md5Hash, "secret", &old),
            "6af838ef94998832dbfc29020b564830"
        );
    }

    #[test]
    fn signature_methods_parse_under_every_vonage_name() {
        for (text, method) in [
            ("md5hash", SignatureMethod::Md5Hash),
            ("MD5 hash", SignatureMethod::Md5Hash),
            ("MD5HASH", SignatureMethod::Md5Hash),
            ("md5", SignatureMethod::Md5),
            ("MD5HMAC", SignatureMethod::Md5),
            ("sha1", SignatureMethod::Sha1),
            ("SHA1 HMAC", SignatureMethod::Sha1),
            ("sha256", SignatureMethod::Sha256),
            ("SHA-256 HMAC", SignatureMethod::Sha256),
            ("hmac-sha256", SignatureMethod::Sha256),
            ("sha512hmac", SignatureMethod::Sha512),
        ] {
            assert_eq!(text.parse::<SignatureMethod>(), Ok(method), "{text}");
            assert_eq!(method.as_str().parse::<SignatureMethod>(), Ok(method));
        }
        for bad in ["", "md5hashhmac", "sha384", "hmac"] {
            assert_eq!(
                bad.parse::<SignatureMethod>(),
                Err(UnknownSignatureMethod),
                "{bad}"
            );
        }
    }

    #[test]
    fn statuses_map_to_delivery_statuses() {
        for (raw, expected) in [
            ("delivered", DeliveryStatus::Delivered),
            ("expired", DeliveryStatus::Undelivered),
            ("failed", DeliveryStatus::Undelivered),
            ("rejected", DeliveryStatus::Failed),
            ("accepted", DeliveryStatus::Sent),
            ("buffered", DeliveryStatus::Sent),
            ("unknown", DeliveryStatus::Sent),
        ] {
            assert_eq!(receipt_status(raw), expected, "{raw}");
        }
        for (raw, expected) in [
            ("submitted", DeliveryStatus::Sent),
            ("delivered", DeliveryStatus::Delivered),
            ("read", DeliveryStatus::Delivered),
            ("rejected", DeliveryStatus::Failed),
            ("undeliverable", DeliveryStatus::Undelivered),
        ] {
            assert_eq!(message_delivery_status(raw), expected, "{raw}");
        }
    }
}
