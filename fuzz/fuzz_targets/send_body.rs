//! Request bodies as callers send them: bytes decoded (UTF-8, else Windows-1252), read in
//! one of the dialects (native JSON, authentik, keycloak-mfa-plugins as JSON or as a
//! form), and turned into a message ready to dispatch.
//!
//! Input: one selector byte (dialect and configuration), then the body.
//!
//! Checked besides "no panic": valid UTF-8 is never altered by the Latin-1 fallback; a
//! fallback reading has one character per byte (a byte order mark aside); an accepted message has an E.164
//! number, a text of 1 to 1600 characters and a code of 4 to 10 digits; an error's
//! text never quotes a code or number from the body.

#![no_main]

use std::sync::OnceLock;

use actix_web::test::TestRequest;
use actix_web::HttpRequest;
use libfuzzer_sys::fuzz_target;
use otp_relay::api::body::{decode_text, parse_json};
use otp_relay::api::compat::{authentik_dialect, mfa_plugins_dialect};
use otp_relay::api::send::SendRequest;
use otp_relay::send::normalize;
use otp_relay::config::Config;

fn configs() -> &'static [Config; 2] {
    static CONFIGS: OnceLock<[Config; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let plain = Config::from_vars(Vec::<(String, String)>::new()).expect("defaults are valid");
        let brazil = Config::from_vars(
            [
                ("DEFAULT_REGION", "BR"),
                ("MESSAGE_TEMPLATE_PT_BR", "Seu código é {code}"),
                ("DEFAULT_CHANNEL", "whatsapp"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .expect("the BR configuration is valid");
        [plain, brazil]
    })
}

thread_local! {
    static JSON: HttpRequest = TestRequest::default()
        .insert_header(("content-type", "application/json"))
        .to_http_request();
    static FORM: HttpRequest = TestRequest::default()
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .to_http_request();
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let text = decode_text(body);
    match std::str::from_utf8(body) {
        Ok(utf8) => assert_eq!(text, utf8.strip_prefix('\u{feff}').unwrap_or(utf8)),
        // A UTF-8 byte order mark is dropped even before a Latin-1 reading.
        Err(_) => assert_eq!(
            text.chars().count(),
            body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body).len()
        ),
    }

    let request = match selector % 4 {
        0 => parse_json::<SendRequest>(&text),
        1 => JSON.with(|req| authentik_dialect(req, &text)),
        2 => JSON.with(|req| mfa_plugins_dialect(req, &text)),
        _ => FORM.with(|req| mfa_plugins_dialect(req, &text)),
    };
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            assert_not_quoted(&error.to_string(), &text);
            return;
        }
    };
    let config = &configs()[usize::from(selector >> 2) % 2];
    match normalize::message(config, request.into()) {
        Ok(message) => {
            let e164 = message.to.e164();
            assert!(e164.starts_with('+'), "{e164:?}");
            assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{e164:?}");
            assert!(!message.text.trim().is_empty());
            assert!(message.text.chars().count() <= 1600);
            if let Some(code) = &message.code {
                assert!((4..=10).contains(&code.len()), "{code:?}");
                assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
            }
        }
        Err(error) => assert_not_quoted(&error.to_string(), &text),
    }
});

/// Errors name the problem, never the caller's text: no run of six or more digits (a
/// code, a number) from the body shows in them, and their size does not grow with the
/// body. (Fixed texts hold at most five-digit numbers: limits, lines and columns.)
fn assert_not_quoted(shown: &str, body: &str) {
    assert!(shown.len() <= 256, "an error of {} bytes: {shown}", shown.len());
    for run in body
        .split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() >= 6)
    {
        assert!(!shown.contains(run), "the error quotes {run}: {shown}");
    }
}
