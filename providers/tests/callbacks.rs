//! Provider callbacks: every signature is computed here from the provider's documented
//! algorithm (not with the crate's own helpers), then the callback is verified and read.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use md5::{Digest, Md5};
use otp_relay_providers::callbacks::{form_params, CallbackError, StatusUpdate};
use otp_relay_providers::telegram::webhook::{self as tg, BotUpdate};
use otp_relay_providers::twilio::webhook as twilio;
use otp_relay_providers::vonage::webhook::{self as vonage, SignatureMethod};
use otp_relay_providers::{
    DeliveryStatus, ProviderError, TelegramMode, TelegramProvider, TelegramSettings,
};
use secrecy::SecretString;
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The time every test runs at (2024-11-28T00:00:00Z).
const NOW: u64 = 1_732_752_000;
const PHONE: &str = "5511966191717";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Neither the text nor the debug form of an error may show a secret or the number.
fn assert_discreet(error: &CallbackError, secrets: &[&str]) {
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(PHONE), "{shown}");
        for secret in secrets {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}

// --- Twilio ------------------------------------------------------------------------

const TWILIO_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const TWILIO_URL: &str = "https://otp.example.com/webhooks/twilio";

/// Twilio's documented signature: base64 HMAC-SHA1, keyed by the auth token, of the URL
/// followed by each parameter name and value, names in sorted order.
fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(&name);
        data.push_str(&value);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

fn twilio_callback(status: &str, error_code: &str) -> Vec<(String, String)> {
    pairs(&[
        ("SmsSid", "SM0123456789abcdef0123456789abcdef"),
        ("SmsStatus", status),
        ("MessageStatus", status),
        ("To", "+5511966191717"),
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("From", "+14155552671"),
        ("ApiVersion", "2010-04-01"),
        ("ErrorCode", error_code),
    ])
}

fn form(params: &[(String, String)]) -> Vec<u8> {
    serde_urlencoded::to_string(params).unwrap().into_bytes()
}

fn verify_twilio(body: &[u8], signature: Option<&str>) -> Result<StatusUpdate, CallbackError> {
    twilio::verify_status(&secret(TWILIO_TOKEN), TWILIO_URL, body, signature)
}

#[test]
fn twilio_signed_callback_is_accepted_and_mapped() {
    let params = twilio_callback("undelivered", "30003");
    let signature = twilio_signature(TWILIO_TOKEN, TWILIO_URL, &params);

    let update = verify_twilio(&form(&params), Some(&signature)).unwrap();

    assert_eq!(
        update,
        StatusUpdate {
            provider: "twilio",
            provider_message_id: "SM0123456789abcdef0123456789abcdef".into(),
            status: DeliveryStatus::Undelivered,
            raw_status: "undelivered".into(),
            error_code: Some("30003".into()),
            cost: None,
        }
    );
}

#[test]
fn twilio_empty_error_code_is_no_error_and_statuses_reuse_the_send_mapping() {
    for (raw, expected) in [
        ("queued", DeliveryStatus::Queued),
        ("sent", DeliveryStatus::Sent),
        ("delivered", DeliveryStatus::Delivered),
        ("failed", DeliveryStatus::Failed),
    ] {
        let params = twilio_callback(raw, "");
        let signature = twilio_signature(TWILIO_TOKEN, TWILIO_URL, &params);
        let update = verify_twilio(&form(&params), Some(&signature)).unwrap();
        assert_eq!(update.status, expected, "{raw}");
        assert_eq!(update.error_code, None);
    }
}

#[test]
fn twilio_signature_with_the_default_port_is_accepted_as_twilios_sdks_do() {
    let params = twilio_callback("delivered", "");
    let signature = twilio_signature(
        TWILIO_TOKEN,
        "https://otp.example.com:443/webhooks/twilio",
        &params,
    );
    assert!(verify_twilio(&form(&params), Some(&signature)).is_ok());
}

/// The worked example of Twilio's "Webhooks security" guide, sent as a form: the
/// signature is accepted, and the body (a voice call, not a message status) is then
/// refused as malformed, not as forged.
#[test]
fn twilio_documented_example_is_accepted_as_signed() {
    let body = b"To=%2B18005551212&CallSid=CA1234567890ABCDE&Digits=1234\
                 &From=%2B12349013030&Caller=%2B12349013030";
    let result = twilio::verify_status(
        &secret("12345"),
        "https://mycompany.com/myapp.php?foo=1&bar=2",
        body,
        Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
    );
    assert_eq!(
        result,
        Err(CallbackError::Malformed("no MessageStatus".into()))
    );
}

#[test]
fn twilio_refuses_wrong_missing_and_altered_signatures() {
    let params = twilio_callback("delivered", "");
    let body = form(&params);
    let good = twilio_signature(TWILIO_TOKEN, TWILIO_URL, &params);

    let other_token = twilio_signature("ffffffffffffffffffffffffffffffff", TWILIO_URL, &params);
    let other_url = twilio_signature(
        TWILIO_TOKEN,
        "https://evil.example/webhooks/twilio",
        &params,
    );
    for signature in [
        other_token.as_str(),
        other_url.as_str(),
        "not base64!",
        "AAAA",
    ] {
        let error = verify_twilio(&body, Some(signature)).unwrap_err();
        assert_eq!(error, CallbackError::BadSignature, "{signature}");
        assert!(error.is_auth_failure());
    }
    for missing in [None, Some(""), Some("  ")] {
        assert_eq!(
            verify_twilio(&body, missing),
            Err(CallbackError::MissingSignature)
        );
    }

    // Signed as "failed", then turned into "delivered" on the way.
    let signed = twilio_callback("failed", "30008");
    let signature = twilio_signature(TWILIO_TOKEN, TWILIO_URL, &signed);
    assert_eq!(
        verify_twilio(&body, Some(&signature)),
        Err(CallbackError::BadSignature)
    );
    // An extra parameter is signed too.
    let mut extra = body.clone();
    extra.extend_from_slice(b"&Injected=1");
    assert_eq!(
        verify_twilio(&extra, Some(&good)),
        Err(CallbackError::BadSignature)
    );
}

#[test]
fn twilio_signed_callback_without_the_documented_fields_is_malformed() {
    let params = pairs(&[("MessageStatus", "delivered"), ("To", "+5511966191717")]);
    let signature = twilio_signature(TWILIO_TOKEN, TWILIO_URL, &params);
    let error = verify_twilio(&form(&params), Some(&signature)).unwrap_err();
    assert_eq!(error, CallbackError::Malformed("no MessageSid".into()));
    assert!(!error.is_auth_failure());
    assert_discreet(&error, &[TWILIO_TOKEN]);
}

// --- Vonage SMS API ----------------------------------------------------------------

const VONAGE_SECRET: &str = "vonageSignatureSecret_0123456789";

/// Vonage's "Signing messages", by hand: every parameter but `sig` sorted by name as
/// `&name=value` with `&` and `=` in values made `_`; "MD5 hash" appends the secret and
/// hashes, the HMACs key with it. HMACs are sent in upper-case hex, as Vonage does.
fn vonage_sig(method: SignatureMethod, params: &[(String, String)]) -> String {
    let mut sorted: Vec<_> = params.iter().filter(|(name, _)| name != "sig").collect();
    sorted.sort();
    let text: String = sorted
        .iter()
        .map(|(name, value)| format!("&{name}={}", value.replace(['&', '='], "_")))
        .collect();
    let key = VONAGE_SECRET.as_bytes();
    fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], text: &str) -> String {
        let mut mac = <M as Mac>::new_from_slice(key).unwrap();
        mac.update(text.as_bytes());
        hex(&mac.finalize().into_bytes()).to_uppercase()
    }
    match method {
        SignatureMethod::Md5Hash => hex(&Md5::digest(format!("{text}{VONAGE_SECRET}"))),
        SignatureMethod::Md5 => mac::<Hmac<Md5>>(key, &text),
        SignatureMethod::Sha1 => mac::<Hmac<Sha1>>(key, &text),
        SignatureMethod::Sha256 => mac::<Hmac<Sha256>>(key, &text),
        SignatureMethod::Sha512 => mac::<Hmac<Sha512>>(key, &text),
    }
}

fn receipt_params(status: &str, err_code: &str, timestamp: u64) -> Vec<(String, String)> {
    pairs(&[
        ("msisdn", PHONE),
        ("to", "AcmeInc"),
        ("network-code", "72405"),
        ("messageId", "0A0000001234567B"),
        ("price", "0.03330000"),
        ("status", status),
        ("scts", "2411280000"),
        ("err-code", err_code),
        ("api-key", "abcd1234"),
        ("client-ref", "01JD5X3QK8V7N2M4R6T8W0Y2Z4"),
        ("message-timestamp", "2024-11-28 00:00:00"),
        ("timestamp", &timestamp.to_string()),
        ("nonce", "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"),
    ])
}

fn signed(method: SignatureMethod, mut params: Vec<(String, String)>) -> Vec<(String, String)> {
    let sig = vonage_sig(method, &params);
    params.push(("sig".into(), sig));
    params
}

fn verify_receipt(
    method: SignatureMethod,
    params: &[(String, String)],
) -> Result<StatusUpdate, CallbackError> {
    vonage::verify_sms_receipt(&secret(VONAGE_SECRET), method, params, now())
}

#[test]
fn vonage_receipt_signed_with_each_method_is_accepted_and_mapped() {
    for method in [
        SignatureMethod::Md5Hash,
        SignatureMethod::Md5,
        SignatureMethod::Sha1,
        SignatureMethod::Sha256,
        SignatureMethod::Sha512,
    ] {
        let params = signed(method, receipt_params("delivered", "0", NOW));
        assert_eq!(
            verify_receipt(method, &params),
            Ok(StatusUpdate {
                provider: "vonage",
                provider_message_id: "0A0000001234567B".into(),
                status: DeliveryStatus::Delivered,
                raw_status: "delivered".into(),
                error_code: None,
                cost: None,
            }),
            "{method}"
        );
    }
}

#[test]
fn vonage_receipt_keeps_the_error_code_and_maps_failures() {
    let params = signed(SignatureMethod::Sha256, receipt_params("failed", "6", NOW));
    let update = verify_receipt(SignatureMethod::Sha256, &params).unwrap();
    assert_eq!(update.status, DeliveryStatus::Undelivered);
    assert_eq!(update.error_code.as_deref(), Some("6"));

    let params = signed(
        SignatureMethod::Sha256,
        receipt_params("rejected", "4", NOW),
    );
    let update = verify_receipt(SignatureMethod::Sha256, &params).unwrap();
    assert_eq!(update.status, DeliveryStatus::Failed);
}

#[test]
fn vonage_receipt_reads_the_same_from_a_form_and_from_json() {
    let params = signed(
        SignatureMethod::Sha512,
        receipt_params("accepted", "0", NOW),
    );

    let from_form = form_params(&form(&params));
    let object: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let from_json = vonage::json_params(&serde_json::to_vec(&object).unwrap()).unwrap();

    for params in [from_form, from_json] {
        let update = verify_receipt(SignatureMethod::Sha512, &params).unwrap();
        assert_eq!(update.status, DeliveryStatus::Sent);
        assert_eq!(update.raw_status, "accepted");
    }
}

#[test]
fn vonage_receipt_with_special_characters_and_blank_values_verifies() {
    let mut params = receipt_params("delivered", "0", NOW);
    for (name, value) in &mut params {
        if name == "client-ref" {
            *value = "a&b=c".into();
        }
    }
    params.push(("account-ref".into(), String::new()));
    // Signed over every parameter, the blank one included (the documented text) ...
    let all = signed(SignatureMethod::Md5Hash, params.clone());
    assert!(verify_receipt(SignatureMethod::Md5Hash, &all).is_ok());
    // ... and over the non-blank ones only, as Vonage's Java SDK signs.
    let mut without_blank = params.clone();
    without_blank.retain(|(_, value)| !value.is_empty());
    let sig = vonage_sig(SignatureMethod::Md5Hash, &without_blank);
    params.push(("sig".into(), sig));
    assert!(verify_receipt(SignatureMethod::Md5Hash, &params).is_ok());
}

/// Vonage Java SDK's `RequestSigningTest` vector (`a=alphabet`, `b=bananas`,
/// `timestamp=2100`, secret `abcde`, MD5 hash): the signature is accepted, and the
/// parameters (not a receipt) are then refused as malformed, not as forged.
#[test]
fn vonage_sdk_vector_is_accepted_as_signed() {
    let params = pairs(&[
        ("a", "alphabet"),
        ("b", "bananas"),
        ("timestamp", "2100"),
        ("sig", "7d43241108912b32cc315b48ce681acf"),
    ]);
    let result = vonage::verify_sms_receipt(
        &secret("abcde"),
        SignatureMethod::Md5Hash,
        &params,
        UNIX_EPOCH + Duration::from_secs(2100),
    );
    assert_eq!(result, Err(CallbackError::Malformed("no status".into())));
}

#[test]
fn vonage_receipt_refuses_wrong_missing_stale_and_altered_signatures() {
    let method = SignatureMethod::Sha256;
    let good = signed(method, receipt_params("delivered", "0", NOW));

    let wrong_method = verify_receipt(SignatureMethod::Sha512, &good);
    assert_eq!(wrong_method, Err(CallbackError::BadSignature));
    let wrong_secret =
        vonage::verify_sms_receipt(&secret("another-secret"), method, &good, now()).unwrap_err();
    assert_eq!(wrong_secret, CallbackError::BadSignature);
    assert_discreet(&wrong_secret, &[VONAGE_SECRET]);

    let mut altered = good.clone();
    altered[5].1 = "expired".into();
    assert_eq!(altered[5].0, "status");
    assert_eq!(
        verify_receipt(method, &altered),
        Err(CallbackError::BadSignature)
    );

    let mut not_hex = good.clone();
    not_hex.last_mut().unwrap().1 = "zz".into();
    assert_eq!(
        verify_receipt(method, &not_hex),
        Err(CallbackError::BadSignature)
    );

    let unsigned = receipt_params("delivered", "0", NOW);
    assert_eq!(
        verify_receipt(method, &unsigned),
        Err(CallbackError::MissingSignature)
    );
    let mut empty_sig = unsigned.clone();
    empty_sig.push(("sig".into(), String::new()));
    assert_eq!(
        verify_receipt(method, &empty_sig),
        Err(CallbackError::MissingSignature)
    );

    for replayed_at in [NOW - 301, NOW + 301] {
        let stale = signed(method, receipt_params("delivered", "0", replayed_at));
        assert_eq!(verify_receipt(method, &stale), Err(CallbackError::Stale));
    }
    for fresh_at in [NOW - 300, NOW + 300] {
        let fresh = signed(method, receipt_params("delivered", "0", fresh_at));
        assert!(verify_receipt(method, &fresh).is_ok());
    }
    let mut no_time = receipt_params("delivered", "0", NOW);
    no_time.retain(|(name, _)| name != "timestamp");
    assert_eq!(
        verify_receipt(method, &signed(method, no_time)),
        Err(CallbackError::Stale)
    );
}

#[test]
fn vonage_receipt_malformed_parameters_are_refused() {
    let method = SignatureMethod::Md5;
    let mut repeated = signed(method, receipt_params("delivered", "0", NOW));
    repeated.push(("status".into(), "failed".into()));
    assert_eq!(
        verify_receipt(method, &repeated),
        Err(CallbackError::Malformed("a parameter is repeated".into()))
    );

    let mut no_id = receipt_params("delivered", "0", NOW);
    no_id.retain(|(name, _)| name != "messageId");
    let error = verify_receipt(method, &signed(method, no_id)).unwrap_err();
    assert_eq!(error, CallbackError::Malformed("no messageId".into()));
    assert_discreet(&error, &[VONAGE_SECRET]);

    for body in [
        &b"[1, 2]"[..],
        b"{\"msisdn\": \"5511966191717\", \"x\": {}}",
        b"msisdn=5511966191717",
    ] {
        let error = vonage::json_params(body).unwrap_err();
        assert!(matches!(error, CallbackError::Malformed(_)), "{error:?}");
        assert_discreet(&error, &[]);
    }
}

// --- Vonage Messages API -----------------------------------------------------------

fn messages_body(status: &str, error: Option<Value>) -> Vec<u8> {
    let mut body = json!({
        "message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab",
        "to": PHONE,
        "from": "AcmeInc",
        "timestamp": "2024-11-28T00:00:00Z",
        "status": status,
        "channel": "sms",
        "client_ref": "01JD5X3QK8V7N2M4R6T8W0Y2Z4",
        "usage": {"currency": "EUR", "price": "0.0333"}
    });
    if let Some(error) = error {
        body["error"] = error;
    }
    serde_json::to_vec(&body).unwrap()
}

/// Vonage's signed webhook JWT: HS256 with the signature secret, `payload_hash` the hex
/// SHA-256 of the body.
fn messages_token(key: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn vonage_claims(body: &[u8], iat: u64) -> Value {
    json!({
        "iat": iat,
        "jti": "c6a1b1c0-5f1e-4f5e-9d6a-0123456789ab",
        "iss": "Vonage",
        "payload_hash": hex(&Sha256::digest(body)),
        "api_key": "abcd1234",
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn verify_messages(
    authorization: Option<&str>,
    body: &[u8],
) -> Result<StatusUpdate, CallbackError> {
    vonage::verify_messages_status(&secret(VONAGE_SECRET), authorization, body, now())
}

#[test]
fn vonage_messages_signed_webhook_is_accepted_and_mapped() {
    let body = messages_body("delivered", None);
    let token = messages_token(VONAGE_SECRET, vonage_claims(&body, NOW));

    assert_eq!(
        verify_messages(Some(&bearer(&token)), &body),
        Ok(StatusUpdate {
            provider: "vonage",
            provider_message_id: "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab".into(),
            status: DeliveryStatus::Delivered,
            raw_status: "delivered".into(),
            error_code: None,
            // `usage` ("messageStatusUsage" in vonage_messages_v1.yml), kept as written.
            cost: otp_relay_providers::Money::parse("0.0333", Some("EUR")),
        })
    );
}

#[test]
fn vonage_messages_errors_keep_their_code() {
    let error = json!({
        "type": "https://developer.vonage.com/api-errors/messages#1250",
        "title": "1250",
        "detail": "Unable to deliver to this number"
    });
    let body = messages_body("rejected", Some(error));
    let token = messages_token(VONAGE_SECRET, vonage_claims(&body, NOW));
    let update = verify_messages(Some(&bearer(&token)), &body).unwrap();
    assert_eq!(update.status, DeliveryStatus::Failed);
    assert_eq!(update.error_code.as_deref(), Some("1250"));

    let untitled = json!({"type": "https://developer.vonage.com/api-errors/messages#1330"});
    let body = messages_body("undeliverable", Some(untitled));
    let token = messages_token(VONAGE_SECRET, vonage_claims(&body, NOW));
    let update = verify_messages(Some(&format!("bearer  {token} ")), &body).unwrap();
    assert_eq!(update.status, DeliveryStatus::Undelivered);
    assert_eq!(update.error_code.as_deref(), Some("1330"));
}

#[test]
fn vonage_messages_refuses_wrong_missing_stale_and_unbound_tokens() {
    let body = messages_body("delivered", None);
    let good = messages_token(VONAGE_SECRET, vonage_claims(&body, NOW));

    // The body was changed after signing: payload_hash no longer matches.
    let altered = messages_body("read", None);
    assert_eq!(
        verify_messages(Some(&bearer(&good)), &altered),
        Err(CallbackError::BadSignature)
    );

    let other_secret = messages_token("another-secret", vonage_claims(&body, NOW));
    let mut claims = vonage_claims(&body, NOW);
    claims.as_object_mut().unwrap().remove("payload_hash");
    let unbound = messages_token(VONAGE_SECRET, claims);
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &vonage_claims(&body, NOW),
        &EncodingKey::from_secret(VONAGE_SECRET.as_bytes()),
    )
    .unwrap();
    let unsigned = {
        let part =
            |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            part(json!({"alg": "none", "typ": "JWT"})),
            part(vonage_claims(&body, NOW))
        )
    };
    for authorization in [
        bearer(&other_secret),
        bearer(&unbound),
        bearer(&hs512),
        bearer(&unsigned),
        bearer("not.a.jwt"),
        format!("Basic {}", BASE64.encode("abcd1234:secret")),
        good.clone(),
    ] {
        let error = verify_messages(Some(&authorization), &body).unwrap_err();
        assert_eq!(error, CallbackError::BadSignature, "{authorization}");
        assert_discreet(&error, &[VONAGE_SECRET]);
    }
    for missing in [None, Some("")] {
        assert_eq!(
            verify_messages(missing, &body),
            Err(CallbackError::MissingSignature)
        );
    }

    for replayed_at in [NOW - 301, NOW + 301] {
        let stale = messages_token(VONAGE_SECRET, vonage_claims(&body, replayed_at));
        assert_eq!(
            verify_messages(Some(&bearer(&stale)), &body),
            Err(CallbackError::Stale)
        );
    }
    let mut claims = vonage_claims(&body, NOW);
    claims.as_object_mut().unwrap().remove("iat");
    let timeless = messages_token(VONAGE_SECRET, claims);
    assert_eq!(
        verify_messages(Some(&bearer(&timeless)), &body),
        Err(CallbackError::Stale)
    );
    let mut claims = vonage_claims(&body, NOW);
    claims["exp"] = json!(NOW - 1);
    let expired = messages_token(VONAGE_SECRET, claims);
    assert_eq!(
        verify_messages(Some(&bearer(&expired)), &body),
        Err(CallbackError::Stale)
    );
}

#[test]
fn vonage_messages_signed_but_malformed_bodies_are_refused() {
    for body in [
        &b"not json"[..],
        b"{\"status\": \"delivered\", \"to\": \"5511966191717\"}",
        b"{\"message_uuid\": 5511966191717, \"status\": \"delivered\"}",
        b"{\"message_uuid\": \"\", \"status\": \"delivered\"}",
    ] {
        let token = messages_token(VONAGE_SECRET, vonage_claims(body, NOW));
        let error = verify_messages(Some(&bearer(&token)), body).unwrap_err();
        assert!(matches!(error, CallbackError::Malformed(_)), "{error:?}");
        assert!(!error.is_auth_failure());
        assert_discreet(&error, &[VONAGE_SECRET]);
    }
}

// --- Telegram Gateway --------------------------------------------------------------

const GATEWAY_TOKEN: &str = "AAGx-gatewayToken_0123456789";

/// The Gateway's documented signature: hex HMAC-SHA256 of `timestamp + "\n" + body`,
/// keyed by the SHA-256 digest of the API token.
fn gateway_signature(token: &str, timestamp: &str, body: &[u8]) -> String {
    let key = Sha256::digest(token.as_bytes());
    let mut data = format!("{timestamp}\n").into_bytes();
    data.extend_from_slice(body);
    hex(&hmac_sha256(&key, &data))
}

fn gateway_report(delivery: Option<&str>) -> Vec<u8> {
    let mut report = json!({
        "request_id": "7d3c1f2a9b",
        "phone_number": "+5511966191717",
        "request_cost": 0.01,
        "payload": "01JD5X3QK8V7N2M4R6T8W0Y2Z4"
    });
    if let Some(status) = delivery {
        report["delivery_status"] = json!({"status": status, "updated_at": NOW});
    }
    serde_json::to_vec(&report).unwrap()
}

fn verify_gateway(
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Option<StatusUpdate>, CallbackError> {
    tg::verify_gateway_status(&secret(GATEWAY_TOKEN), timestamp, signature, body, now())
}

#[test]
fn gateway_signed_report_is_accepted_and_mapped() {
    let body = gateway_report(Some("delivered"));
    let timestamp = NOW.to_string();
    let signature = gateway_signature(GATEWAY_TOKEN, &timestamp, &body);

    assert_eq!(
        verify_gateway(Some(&timestamp), Some(&signature), &body),
        Ok(Some(StatusUpdate {
            provider: "telegram",
            provider_message_id: "7d3c1f2a9b".into(),
            status: DeliveryStatus::Delivered,
            raw_status: "delivered".into(),
            error_code: None,
            cost: None,
        }))
    );
    // Hex case does not matter.
    let upper = signature.to_uppercase();
    assert!(verify_gateway(Some(&timestamp), Some(&upper), &body).is_ok());

    for (raw, expected) in [
        ("sent", DeliveryStatus::Sent),
        ("read", DeliveryStatus::Delivered),
        ("expired", DeliveryStatus::Undelivered),
        ("revoked", DeliveryStatus::Failed),
    ] {
        let body = gateway_report(Some(raw));
        let signature = gateway_signature(GATEWAY_TOKEN, &timestamp, &body);
        let update = verify_gateway(Some(&timestamp), Some(&signature), &body).unwrap();
        assert_eq!(update.map(|u| u.status), Some(expected), "{raw}");
    }
}

#[test]
fn gateway_refuses_wrong_missing_stale_and_altered_signatures() {
    let body = gateway_report(Some("delivered"));
    let timestamp = NOW.to_string();
    let good = gateway_signature(GATEWAY_TOKEN, &timestamp, &body);

    let other_token = gateway_signature("another-token", &timestamp, &body);
    // Keyed by the token itself rather than by its SHA-256 digest.
    let raw_key = {
        let mut data = format!("{timestamp}\n").into_bytes();
        data.extend_from_slice(&body);
        hex(&hmac_sha256(GATEWAY_TOKEN.as_bytes(), &data))
    };
    for signature in [
        other_token.as_str(),
        raw_key.as_str(),
        "nothex",
        &good[..10],
    ] {
        let error = verify_gateway(Some(&timestamp), Some(signature), &body).unwrap_err();
        assert_eq!(error, CallbackError::BadSignature, "{signature}");
        assert_discreet(&error, &[GATEWAY_TOKEN]);
    }

    // The body or the timestamp changed after signing.
    let altered = gateway_report(Some("revoked"));
    assert_eq!(
        verify_gateway(Some(&timestamp), Some(&good), &altered),
        Err(CallbackError::BadSignature)
    );
    let later = (NOW + 1).to_string();
    assert_eq!(
        verify_gateway(Some(&later), Some(&good), &body),
        Err(CallbackError::BadSignature)
    );

    for (timestamp, signature) in [
        (None, Some(good.as_str())),
        (Some(timestamp.as_str()), None),
        (Some(""), Some(good.as_str())),
    ] {
        assert_eq!(
            verify_gateway(timestamp, signature, &body),
            Err(CallbackError::MissingSignature)
        );
    }

    for replayed_at in [NOW - 301, NOW + 301] {
        let timestamp = replayed_at.to_string();
        let signature = gateway_signature(GATEWAY_TOKEN, &timestamp, &body);
        assert_eq!(
            verify_gateway(Some(&timestamp), Some(&signature), &body),
            Err(CallbackError::Stale)
        );
    }
    let signature = gateway_signature(GATEWAY_TOKEN, "yesterday", &body);
    assert_eq!(
        verify_gateway(Some("yesterday"), Some(&signature), &body),
        Err(CallbackError::Stale)
    );
}

#[test]
fn gateway_signed_but_malformed_reports_are_refused_without_echoing_them() {
    let timestamp = NOW.to_string();
    let wrong_type = br#"{"request_id": 5511966191717, "delivery_status": {"status": "sent"}}"#;
    for body in [&b"not json"[..], wrong_type] {
        let signature = gateway_signature(GATEWAY_TOKEN, &timestamp, body);
        let error = verify_gateway(Some(&timestamp), Some(&signature), body).unwrap_err();
        assert!(matches!(error, CallbackError::Malformed(_)), "{error:?}");
        assert_discreet(&error, &[GATEWAY_TOKEN]);
    }
}

/// <https://core.telegram.org/gateway/api#report-delivery>: reports also carry only a
/// `verification_status`. Authentic, but nothing about delivery: no update, and no error
/// (an error answer would make Telegram send it again, up to 10 times).
#[test]
fn gateway_signed_report_without_delivery_status_is_no_update() {
    let timestamp = NOW.to_string();
    let body = gateway_report(None);
    let signature = gateway_signature(GATEWAY_TOKEN, &timestamp, &body);
    assert_eq!(
        verify_gateway(Some(&timestamp), Some(&signature), &body),
        Ok(None)
    );
    // Still verified first.
    assert_eq!(
        verify_gateway(Some(&timestamp), Some("00"), &body),
        Err(CallbackError::BadSignature)
    );
}

// --- Telegram bot ------------------------------------------------------------------

const WEBHOOK_SECRET: &str = "hookSecret_1-2";
const BOT_TOKEN: &str = "123456789:AAHbotSecretPart_x-yz";
const USER: i64 = 424242;

fn private_message(fields: Value) -> Value {
    let mut message = json!({
        "message_id": 10,
        "date": NOW,
        "chat": {"id": USER, "type": "private", "first_name": "Ana"},
        "from": {"id": USER, "is_bot": false, "first_name": "Ana"}
    });
    message
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    message
}

fn update(kind: &str, payload: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"update_id": 1, kind: payload})).unwrap()
}

fn text(text: &str) -> Vec<u8> {
    update("message", private_message(json!({"text": text})))
}

fn contact(user_id: Option<i64>) -> Vec<u8> {
    let mut contact = json!({"phone_number": PHONE, "first_name": "Ana"});
    if let Some(id) = user_id {
        contact["user_id"] = json!(id);
    }
    update("message", private_message(json!({"contact": contact})))
}

fn read_update(body: &[u8]) -> Result<BotUpdate, CallbackError> {
    tg::verify_bot_update(&secret(WEBHOOK_SECRET), Some(WEBHOOK_SECRET), body)
}

#[test]
fn bot_commands_in_a_private_chat() {
    for start in [
        "/start",
        "/start@MyOtpBot",
        "/start@MyOtpBot link-42",
        "/start link-42",
    ] {
        assert_eq!(
            read_update(&text(start)),
            Ok(BotUpdate::Start { chat_id: USER }),
            "{start}"
        );
    }
    assert_eq!(
        read_update(&text("/stop")),
        Ok(BotUpdate::Stop { chat_id: USER })
    );
    assert_eq!(
        read_update(&text("hello")),
        Ok(BotUpdate::Other {
            chat_id: Some(USER)
        })
    );
}

#[test]
fn bot_contacts_are_own_only_when_the_sender_shared_themselves() {
    assert_eq!(
        read_update(&contact(Some(USER))),
        Ok(BotUpdate::SharedContact {
            chat_id: USER,
            phone: PHONE.into(),
            own: true,
        })
    );
    for someone_else in [Some(USER + 1), None] {
        assert_eq!(
            read_update(&contact(someone_else)),
            Ok(BotUpdate::SharedContact {
                chat_id: USER,
                phone: PHONE.into(),
                own: false,
            })
        );
    }
    let printed = format!("{:?}", read_update(&contact(Some(USER))).unwrap());
    assert!(!printed.contains(PHONE), "{printed}");
}

#[test]
fn bot_other_updates_and_group_chats_are_not_acted_on() {
    let edited = update("edited_message", private_message(json!({"text": "/start"})));
    assert_eq!(
        read_update(&edited),
        Ok(BotUpdate::Other {
            chat_id: Some(USER)
        })
    );

    let query = json!({
        "id": "99",
        "from": {"id": USER, "is_bot": false, "first_name": "Ana"},
        "message": private_message(json!({"text": "menu"})),
        "data": "x"
    });
    assert_eq!(
        read_update(&update("callback_query", query)),
        Ok(BotUpdate::Other {
            chat_id: Some(USER)
        })
    );
    assert_eq!(
        read_update(&update(
            "my_chat_member",
            json!({"chat": {"id": USER, "type": "private"}})
        )),
        Ok(BotUpdate::Other { chat_id: None })
    );

    // A group must never be linked to a number (codes would reach every member), nor
    // be answered.
    let group = |fields: Value| {
        let mut message = private_message(fields);
        message["chat"] = json!({"id": -100123, "type": "supergroup", "title": "Team"});
        update("message", message)
    };
    for body in [
        group(json!({"text": "/start"})),
        group(json!({"contact": {"phone_number": PHONE, "first_name": "Ana", "user_id": USER}})),
    ] {
        assert_eq!(read_update(&body), Ok(BotUpdate::Other { chat_id: None }));
    }
}

#[test]
fn bot_updates_need_the_webhook_secret() {
    let body = text("/start");
    for wrong in ["hookSecret_1-3", "hookSecret_1-2x", "h"] {
        assert_eq!(
            tg::verify_bot_update(&secret(WEBHOOK_SECRET), Some(wrong), &body),
            Err(CallbackError::BadSignature)
        );
    }
    for missing in [None, Some("")] {
        let error = tg::verify_bot_update(&secret(WEBHOOK_SECRET), missing, &body).unwrap_err();
        assert_eq!(error, CallbackError::MissingSignature);
        assert_discreet(&error, &[WEBHOOK_SECRET]);
    }
    for malformed in [&b"not json"[..], b"{\"message\": {\"text\": \"/start\"}}"] {
        assert!(matches!(
            read_update(malformed),
            Err(CallbackError::Malformed(_))
        ));
    }
}

#[test]
fn bot_replies_are_send_message_bodies() {
    let ask = tg::ask_for_contact(USER);
    assert_eq!(ask["chat_id"], USER);
    assert!(ask["text"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        ask["reply_markup"],
        json!({
            "keyboard": [[{"text": "Share my phone number", "request_contact": true}]],
            "one_time_keyboard": true,
            "resize_keyboard": true
        })
    );

    for reply in [tg::confirm_linked(USER), tg::confirm_unlinked(USER)] {
        assert_eq!(reply["chat_id"], USER);
        assert_eq!(reply["reply_markup"], json!({"remove_keyboard": true}));
    }
    // Someone else's contact: the button is offered again, it can only share their own.
    let refuse = tg::refuse_foreign_contact(USER);
    assert_eq!(refuse["reply_markup"], ask["reply_markup"]);
    let ignore = tg::polite_ignore(USER);
    assert_eq!(ignore["chat_id"], USER);
    assert!(ignore.get("reply_markup").is_none());
    for reply in [
        ask,
        refuse,
        ignore,
        tg::confirm_linked(USER),
        tg::confirm_unlinked(USER),
    ] {
        assert!(
            reply["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{reply}"
        );
    }
}

// --- TelegramProvider: bot replies and setWebhook ------------------------------------

fn bot(base: &str, mode: TelegramMode) -> TelegramProvider {
    let settings = TelegramSettings {
        mode,
        gateway_token: Some(secret(GATEWAY_TOKEN)),
        gateway_base_url: base.to_owned(),
        bot_token: Some(secret(BOT_TOKEN)),
        bot_base_url: base.to_owned(),
        webhook_secret: Some(secret(WEBHOOK_SECRET)),
        sender_username: None,
        link_ttl: otp_relay_providers::telegram::DEFAULT_LINK_TTL,
    };
    TelegramProvider::new(settings, &common::context(None)).unwrap()
}

async fn bot_api(method_name: &str, response: ResponseTemplate, calls: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/bot{BOT_TOKEN}/{method_name}")))
        .respond_with(response)
        .expect(calls)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn bot_send_json_posts_the_reply_to_send_message() {
    let sent = json!({"ok": true, "result": {"message_id": 11, "chat": {"id": USER}}});
    let server = bot_api(
        "sendMessage",
        ResponseTemplate::new(200).set_body_json(sent),
        1,
    )
    .await;

    let reply = tg::ask_for_contact(USER);
    bot(&server.uri(), TelegramMode::Bot)
        .bot_send_json(&reply)
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(common::json(&requests[0]), reply);
    assert_eq!(
        common::header(&requests[0], "content-type"),
        "application/json"
    );
}

#[tokio::test]
async fn bot_send_json_reads_errors_like_a_send() {
    let blocked = json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"});
    let server = bot_api(
        "sendMessage",
        ResponseTemplate::new(403).set_body_json(blocked),
        1,
    )
    .await;

    let error = bot(&server.uri(), TelegramMode::Bot)
        .bot_send_json(&tg::polite_ignore(USER))
        .await
        .unwrap_err();

    assert!(
        matches!(error, ProviderError::RecipientOptedOut { .. }),
        "{error:?}"
    );
    assert!(!format!("{error:?}").contains("AAHbotSecretPart_x-yz"));
}

#[tokio::test]
async fn bot_methods_refuse_gateway_mode_without_a_request() {
    let server = bot_api("sendMessage", ResponseTemplate::new(200), 0).await;
    let provider = bot(&server.uri(), TelegramMode::Gateway);

    let send = provider.bot_send_json(&tg::polite_ignore(USER)).await;
    let hook = provider
        .set_webhook(
            "https://otp.example.com/webhooks/telegram-bot",
            &secret(WEBHOOK_SECRET),
        )
        .await;

    for result in [send.map(|()| String::new()), hook] {
        assert!(
            matches!(result, Err(ProviderError::AccountUnusable { .. })),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn set_webhook_registers_the_url_the_secret_and_message_updates() {
    let set = json!({"ok": true, "result": true, "description": "Webhook was set"});
    let server = bot_api(
        "setWebhook",
        ResponseTemplate::new(200).set_body_json(set),
        1,
    )
    .await;

    let description = bot(&server.uri(), TelegramMode::Bot)
        .set_webhook(
            "https://otp.example.com/webhooks/telegram-bot",
            &secret(WEBHOOK_SECRET),
        )
        .await
        .unwrap();

    assert_eq!(description, "Webhook was set");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        common::json(&requests[0]),
        json!({
            "url": "https://otp.example.com/webhooks/telegram-bot",
            "secret_token": WEBHOOK_SECRET,
            "allowed_updates": ["message"]
        })
    );
}

#[tokio::test]
async fn set_webhook_reports_telegrams_refusal() {
    let refused = json!({"ok": false, "error_code": 400, "description": "Bad Request: bad webhook: HTTPS url must be provided for webhook"});
    let server = bot_api(
        "setWebhook",
        ResponseTemplate::new(400).set_body_json(refused),
        1,
    )
    .await;

    let error = bot(&server.uri(), TelegramMode::Bot)
        .set_webhook(
            "http://otp.example.com/webhooks/telegram-bot",
            &secret(WEBHOOK_SECRET),
        )
        .await
        .unwrap_err();

    assert!(matches!(error, ProviderError::Rejected { .. }), "{error:?}");
    assert!(
        error.to_string().contains("HTTPS url must be provided"),
        "{error}"
    );
}
