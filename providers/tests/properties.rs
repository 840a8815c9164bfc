//! Property tests: phone normalization, each provider's number format, masking and the
//! GSM-7 detection, each over at least 1,000 generated cases.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use otp_relay_providers::phone::mask_digits;
use otp_relay_providers::text::is_gsm7;
use otp_relay_providers::{
    Channel, Env, MessageProvider, OutboundMessage, Phone, Region, SendpulseProvider,
    SendpulseSettings, TelegramProvider, TelegramSettings, TwilioProvider, TwilioSettings,
    VonageProvider, VonageSettings,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const CASES: u32 = 1_000;

/// Regions whose numbering plans differ in length, prefixes and national forms.
const REGIONS: &[&str] = &[
    "BR", "US", "CA", "GB", "DE", "FR", "IT", "ES", "PT", "NL", "BE", "CH", "AT", "SE", "NO", "PL",
    "IN", "CN", "JP", "KR", "AU", "NZ", "MX", "AR", "CL", "CO", "ZA", "NG", "EG", "RU", "UA", "TR",
    "IL", "AE", "SG", "ID", "PH", "VN",
];

fn region(id: &str) -> Region {
    id.parse().expect("known region")
}

/// The national number of the numbering plan's example mobile number for `id`.
fn example_mobile(id: &str) -> String {
    phonenumber::metadata::DATABASE
        .by_id(id)
        .and_then(|meta| meta.descriptors().mobile())
        .and_then(|mobile| mobile.example())
        .unwrap_or_else(|| panic!("{id} has an example mobile number"))
        .to_owned()
}

/// A valid number: a region's example mobile number with its last digits replaced, kept
/// only when the numbering plan says it is valid. Returns the region and the number.
fn valid_number() -> impl Strategy<Value = (&'static str, Phone)> {
    (
        prop::sample::select(REGIONS),
        1..=4usize,
        prop::collection::vec(0..10u8, 4),
    )
        .prop_filter_map("not a valid number", |(id, replaced, digits)| {
            let mut national = example_mobile(id);
            let keep = national.len().saturating_sub(replaced);
            national.truncate(keep);
            national.extend(digits[..replaced].iter().map(|d| char::from(b'0' + d)));
            let phone = Phone::parse(&national, Some(region(id))).ok()?;
            Some((id, phone))
        })
}

/// The ways callers write one number: E.164, spaced and dashed, `00` prefix, bare
/// country code and digits.
fn written_forms(phone: &Phone) -> Vec<String> {
    let e164 = phone.e164();
    let digits = phone.digits();
    let (cc, rest) = digits.split_at(phone.country_code().to_string().len());
    let (a, b) = rest.split_at(rest.len() / 2);
    vec![
        e164.to_owned(),
        format!("+{cc} {a}-{b}"),
        format!(" +{cc} ({a}) {b} "),
        format!("+{cc}.{a}.{b}"),
        format!("00{digits}"),
        digits.to_owned(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Normalizing an E.164 output returns it unchanged, with or without a default
    /// region, and every way of writing the number normalizes to it.
    #[test]
    fn normalization_is_idempotent((id, phone) in valid_number(), other in prop::sample::select(REGIONS)) {
        let e164 = phone.e164();
        prop_assert!(e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()));
        for default_region in [None, Some(region(id)), Some(region(other))] {
            let again = Phone::parse(e164, default_region).unwrap();
            prop_assert_eq!(again.e164(), e164);
        }
        for form in written_forms(&phone) {
            let read = Phone::parse(&form, None);
            prop_assert_eq!(read.as_ref().map(Phone::e164).ok(), Some(e164), "{:?}", form);
        }
    }

    /// Whatever text parses, its E.164 output parses again to itself.
    #[test]
    fn any_parsed_input_normalizes_to_a_fixed_point(
        input in "[+0]?[0-9 ()./-]{0,18}",
        default_region in prop::option::of(prop::sample::select(REGIONS)),
    ) {
        if let Ok(phone) = Phone::parse(&input, default_region.map(region)) {
            let again = Phone::parse(phone.e164(), None).unwrap();
            prop_assert_eq!(again.e164(), phone.e164());
            let from_digits = Phone::parse(phone.digits(), None).unwrap();
            prop_assert_eq!(from_digits.e164(), phone.e164());
        }
    }

    /// The masked form shows at most the digits `mask_digits` documents, all from the
    /// ends, and nothing of the middle: numbers that differ only there look the same.
    #[test]
    fn masking_reveals_only_the_documented_digits(
        digits in "[0-9]{0,20}",
        replacement in "[0-9]{20}",
    ) {
        let masked = mask_digits(&digits);
        let inner = masked.strip_prefix('+').expect("starts with +");
        let (head, tail) = inner.split_once("*****").expect("five stars");
        let n = digits.len();
        prop_assert!(head.len() <= 5 && head.len() <= n.saturating_sub(2) / 2, "{}", masked);
        prop_assert!(tail.len() <= 2 && (n >= 6 || tail.is_empty()), "{}", masked);
        prop_assert!(digits.starts_with(head) && digits.ends_with(tail), "{}", masked);
        prop_assert!(head.len() + tail.len() < n || n == 0, "{}", masked);
        // Same ends, any middle: the same mask.
        let middle = n - head.len() - tail.len();
        let other = format!("{head}{}{tail}", &replacement[..middle]);
        prop_assert_eq!(mask_digits(&other), masked);
    }

    /// A valid number's mask holds neither its national number nor its full digits.
    #[test]
    fn masked_numbers_hide_the_subscriber((_id, phone) in valid_number()) {
        let masked = phone.masked();
        prop_assert!(!masked.contains(phone.digits()));
        prop_assert_eq!(format!("{phone:?}"), masked.clone());
        let shown = masked.bytes().filter(u8::is_ascii_digit).count();
        prop_assert!(shown <= 7 && shown < phone.digits().len());
    }

    /// The GSM-7 detection agrees with the GSM 03.38 tables written out below, on text
    /// mixing table characters, near misses and arbitrary Unicode.
    #[test]
    fn gsm7_detection_agrees_with_the_table(text in gsm_text()) {
        let expected = text.chars().all(|c| reference_gsm7().contains(&c));
        prop_assert_eq!(is_gsm7(&text), expected, "{:?}", text);
    }
}

// ---- GSM 03.38 -------------------------------------------------------------------------

/// GSM 03.38 (3GPP TS 23.038 §6.2.1), written from the standard's table as Unicode code
/// points, independently of the adapter's table: the default alphabet (less 0x1B, the
/// escape) and the extension table's characters.
fn reference_gsm7() -> &'static HashSet<char> {
    static TABLE: OnceLock<HashSet<char>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let basic: &[u32] = &[
            // 0x00-0x0F: @ £ $ ¥ è é ù ì ò Ç LF Ø ø CR Å å
            0x40, 0xA3, 0x24, 0xA5, 0xE8, 0xE9, 0xF9, 0xEC, 0xF2, 0xC7, 0x0A, 0xD8, 0xF8, 0x0D,
            0xC5, 0xE5, //
            // 0x10-0x1F: Δ _ Φ Γ Λ Ω Π Ψ Σ Θ Ξ (escape) Æ æ ß É
            0x394, 0x5F, 0x3A6, 0x393, 0x39B, 0x3A9, 0x3A0, 0x3A8, 0x3A3, 0x398, 0x39E, 0xC6, 0xE6,
            0xDF, 0xC9, //
            // 0x20-0x2F: space ! " # ¤ % & ' ( ) * + , - . /
            0x20, 0x21, 0x22, 0x23, 0xA4, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D,
            0x2E, 0x2F, //
            // 0x40: ¡; 0x5B-0x5F: Ä Ö Ñ Ü §; 0x60: ¿; 0x7B-0x7F: ä ö ñ ü à
            0xA1, 0xC4, 0xD6, 0xD1, 0xDC, 0xA7, 0xBF, 0xE4, 0xF6, 0xF1, 0xFC, 0xE0,
        ];
        // 0x30-0x3F are ASCII 0-9 : ; < = > ?, and the letters are ASCII.
        let ascii = (0x30..=0x3F).chain(0x41..=0x5A).chain(0x61..=0x7A);
        // Extension table: form feed ^ { } \ [ ~ ] | €
        let extension: &[u32] = &[0x0C, 0x5E, 0x7B, 0x7D, 0x5C, 0x5B, 0x7E, 0x5D, 0x7C, 0x20AC];
        let table: HashSet<char> = basic
            .iter()
            .copied()
            .chain(ascii)
            .chain(extension.iter().copied())
            .map(|c| char::from_u32(c).unwrap())
            .collect();
        assert_eq!(table.len(), 127 + 10, "127 characters and 10 extensions");
        table
    })
}

/// Characters people expect in GSM-7 that are not there.
const NEAR_MISSES: &[char] = &[
    'ç', 'á', 'í', 'ó', 'ú', 'ã', 'õ', 'â', 'ê', 'ô', 'À', 'È', 'Ê', 'Ó', '`', '\t', '\u{1b}',
    '\u{0}', '\u{7f}', '\u{a0}', '’', '“', '—', '…', '₹', '🙂', 'Ç', 'ß', 'ẞ', 'σ', 'π',
];

fn gsm_text() -> impl Strategy<Value = String> {
    let table: Vec<char> = {
        let mut chars: Vec<char> = reference_gsm7().iter().copied().collect();
        chars.sort_unstable();
        chars
    };
    let one = prop_oneof![
        6 => prop::sample::select(table),
        2 => prop::sample::select(NEAR_MISSES),
        1 => any::<char>(),
    ];
    prop::collection::vec(one, 0..40).prop_map(|chars| chars.into_iter().collect())
}

#[test]
fn gsm7_detection_agrees_with_the_table_on_every_character() {
    let table = reference_gsm7();
    let disagreements: Vec<char> = (0..=0x10FFFF)
        .filter_map(char::from_u32)
        .filter(|c| is_gsm7(c.encode_utf8(&mut [0; 4])) != table.contains(c))
        .collect();
    assert!(disagreements.is_empty(), "{disagreements:?}");
}

// ---- Provider number formats -----------------------------------------------------------

/// One mock server standing for every provider, and an adapter for each format.
struct Providers {
    runtime: tokio::runtime::Runtime,
    /// The latest request the mock received.
    last: Arc<Mutex<Option<Request>>>,
    adapters: Vec<(&'static str, Arc<dyn MessageProvider>)>,
}

/// Answers with `reply` and keeps the request (the server records none itself, so the
/// thousands of cases cost no growing log).
struct Capture {
    reply: ResponseTemplate,
    last: Arc<Mutex<Option<Request>>>,
}

impl Respond for Capture {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        *self.last.lock().unwrap() = Some(request.clone());
        self.reply.clone()
    }
}

fn providers() -> &'static Providers {
    static PROVIDERS: OnceLock<Providers> = OnceLock::new();
    PROVIDERS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let last = Arc::new(Mutex::new(None));
        let server = runtime.block_on(async {
            let server = MockServer::builder()
                .disable_request_recording()
                .start()
                .await;
            let ok = |body: serde_json::Value, status: u16| {
                ResponseTemplate::new(status).set_body_json(body)
            };
            for (verb, route, reply) in [
                (
                    "POST",
                    r"^/2010-04-01/Accounts/.*/Messages\.json$",
                    ok(serde_json::json!({"sid": "SM1", "status": "queued"}), 201),
                ),
                (
                    "POST",
                    r"^/sms/json$",
                    ok(
                        serde_json::json!({"messages": [{"status": "0", "message-id": "v1"}]}),
                        200,
                    ),
                ),
                (
                    "POST",
                    r"^/v1/messages$",
                    ok(serde_json::json!({"message_uuid": "u1"}), 202),
                ),
                (
                    "POST",
                    r"^/oauth/access_token$",
                    ok(
                        serde_json::json!({"access_token": "t", "expires_in": 3600}),
                        200,
                    ),
                ),
                (
                    "POST",
                    r"^/sms/send$",
                    ok(serde_json::json!({"result": true, "campaign_id": 1}), 200),
                ),
                (
                    "POST",
                    r"^/sendVerificationMessage$",
                    ok(
                        serde_json::json!({"ok": true, "result": {"request_id": "r1"}}),
                        200,
                    ),
                ),
            ] {
                Mock::given(method(verb))
                    .and(path_regex(route))
                    .respond_with(Capture {
                        reply,
                        last: Arc::clone(&last),
                    })
                    .mount(&server)
                    .await;
            }
            server
        });
        let base = server.uri();
        // A generous client timeout: this property is about numbers, not a busy machine.
        let mut context = common::context(None);
        context.client = otp_relay_providers::http::client(Duration::from_secs(30));
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let twilio = env(&[
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_FROM", "+14155550100"),
            ("TWILIO_CHANNEL", "sms,whatsapp"),
            ("TWILIO_CONTENT_SID", "HX0123456789abcdef0123456789abcdef"),
            ("TWILIO_BASE_URL", &base),
        ]);
        let vonage_sms = env(&[
            ("VONAGE_API_KEY", "key"),
            ("VONAGE_API_SECRET", "secret"),
            ("VONAGE_FROM", "AcmeOTP"),
            ("VONAGE_SMS_BASE_URL", &base),
        ]);
        let vonage_messages = env(&[
            ("VONAGE_API", "messages"),
            ("VONAGE_API_KEY", "key"),
            ("VONAGE_API_SECRET", "secret"),
            ("VONAGE_FROM", "14155550100"),
            ("VONAGE_CHANNEL", "sms,whatsapp"),
            ("VONAGE_WHATSAPP_TEMPLATE", "otp_code"),
            ("VONAGE_MESSAGES_BASE_URL", &base),
        ]);
        let sendpulse = env(&[
            ("SENDPULSE_CLIENT_ID", "id"),
            ("SENDPULSE_CLIENT_SECRET", "secret"),
            ("SENDPULSE_SENDER", "Acme"),
            ("SENDPULSE_BASE_URL", &base),
        ]);
        let telegram = env(&[
            ("TELEGRAM_GATEWAY_TOKEN", "gateway-token"),
            ("TELEGRAM_GATEWAY_BASE_URL", &base),
        ]);
        let adapters: Vec<(&'static str, Arc<dyn MessageProvider>)> = vec![
            (
                "twilio",
                Arc::new(
                    TwilioProvider::new(
                        TwilioSettings::from_env(&Env::new(&twilio)).unwrap(),
                        &context,
                    )
                    .unwrap(),
                ),
            ),
            (
                "vonage-sms",
                Arc::new(
                    VonageProvider::new(
                        VonageSettings::from_env(&Env::new(&vonage_sms)).unwrap(),
                        &context,
                    )
                    .unwrap(),
                ),
            ),
            (
                "vonage-messages",
                Arc::new(
                    VonageProvider::new(
                        VonageSettings::from_env(&Env::new(&vonage_messages)).unwrap(),
                        &context,
                    )
                    .unwrap(),
                ),
            ),
            (
                "sendpulse",
                Arc::new(
                    SendpulseProvider::new(
                        SendpulseSettings::from_env(&Env::new(&sendpulse)).unwrap(),
                        &context,
                    )
                    .unwrap(),
                ),
            ),
            (
                "telegram",
                Arc::new(
                    TelegramProvider::new(
                        TelegramSettings::from_env(&Env::new(&telegram)).unwrap(),
                        &context,
                    )
                    .unwrap(),
                ),
            ),
        ];
        // The server runs as long as the test binary: it is never dropped.
        std::mem::forget(server);
        Providers {
            runtime,
            last,
            adapters,
        }
    })
}

/// The destination as the provider received it in the latest request, which went to
/// `route`.
fn destination(last: &Mutex<Option<Request>>, route: &str) -> Result<String, String> {
    let request = last.lock().unwrap().take().ok_or("no request")?;
    if !request.url.path().ends_with(route) {
        return Err(format!("the request went to {}", request.url.path()));
    }
    let form = || common::form_map(&request);
    let json = || common::json(&request);
    Ok(match route {
        "Messages.json" => form()["To"].clone(),
        "/sms/json" => form()["to"].clone(),
        "/v1/messages" => json()["to"].as_str().unwrap().to_owned(),
        "/sms/send" => json()["phones"][0].as_str().unwrap().to_owned(),
        "/sendVerificationMessage" => json()["phone_number"].as_str().unwrap().to_owned(),
        other => unreachable!("{other}"),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Any valid number, as each provider receives it (Twilio `To` in E.164 or
    /// `whatsapp:`-prefixed, Vonage and SendPulse digits without `+`, Telegram E.164),
    /// reads back as the same number.
    #[test]
    fn every_provider_format_round_trips((_id, phone) in valid_number()) {
        let providers = providers();
        let e164 = phone.e164().to_owned();
        let sends = [
            ("twilio", Channel::Sms, "Messages.json"),
            ("twilio", Channel::Whatsapp, "Messages.json"),
            ("vonage-sms", Channel::Sms, "/sms/json"),
            ("vonage-messages", Channel::Sms, "/v1/messages"),
            ("vonage-messages", Channel::Whatsapp, "/v1/messages"),
            ("sendpulse", Channel::Sms, "/sms/send"),
            ("telegram", Channel::Telegram, "/sendVerificationMessage"),
        ];
        for (name, channel, route) in sends {
            let adapter = &providers.adapters.iter().find(|(n, _)| *n == name).unwrap().1;
            let message = OutboundMessage {
                id: common::MESSAGE_ID.to_owned(),
                to: phone.clone(),
                channel,
                text: "Your code is 482913".to_owned(),
                code: Some("482913".to_owned()),
                ttl: Duration::from_secs(300),
            };
            let received = providers
                .runtime
                .block_on(adapter.send(&message))
                .map_err(|e| e.to_string())
                .and_then(|_| destination(&providers.last, route));
            let received = received.map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
            let written = match (name, channel) {
                ("twilio", Channel::Whatsapp) => received.strip_prefix("whatsapp:").unwrap_or_default(),
                _ => received.as_str(),
            };
            let read = Phone::parse(written, None)
                .map_err(|e| TestCaseError::fail(format!("{name} {channel}: {received:?}: {e}")))?;
            prop_assert_eq!(read.e164(), e164.as_str(), "{} {}: {:?}", name, channel, received);
        }
    }
}
