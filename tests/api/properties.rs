//! Property tests of body decoding: the ISO-8859-1 fallback exists for the QIAM
//! extension's Latin-1 bytes and must never change a body that is valid UTF-8.

use otp_relay::api::body::{decode_text, parse_json};
use otp_relay::api::send::SendRequest;
use otp_relay::send::normalize;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::json;

use crate::helpers::test_config;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any valid UTF-8 is read as itself (a leading byte order mark aside).
    #[test]
    fn valid_utf8_is_never_changed(text in any::<String>(), bom in any::<bool>()) {
        let mut bytes = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        bytes.extend_from_slice(text.as_bytes());
        prop_assert_eq!(decode_text(&bytes), text.as_str());
    }

    /// A body that is not UTF-8 is read one character per byte, and ASCII stays ASCII.
    #[test]
    fn other_bytes_are_read_one_character_per_byte(
        bytes in prop::collection::vec(any::<u8>(), 0..200)
            .prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err()),
    ) {
        let text = decode_text(&bytes);
        prop_assert_eq!(text.chars().count(), bytes.len());
        for (byte, c) in bytes.iter().zip(text.chars()) {
            if byte.is_ascii() {
                prop_assert_eq!(c, char::from(*byte));
            }
        }
    }

    /// Latin-1 text sent as UTF-8 or as ISO-8859-1 bytes (what the extension writes)
    /// becomes the same message.
    #[test]
    fn utf8_and_latin1_bodies_of_one_text_agree(text in "[ -~\u{a0}-\u{ff}]{1,120}") {
        prop_assume!(!text.trim().is_empty());
        let body = json!({"mobile": "+5511966191717", "totp": text}).to_string();
        let latin1: Vec<u8> = body.chars().map(|c| u8::try_from(u32::from(c)).unwrap()).collect();
        // Latin-1 bytes that happen to form UTF-8 ("Ã©") are read as UTF-8: no reader can
        // tell them apart.
        prop_assume!(body.is_ascii() || std::str::from_utf8(&latin1).is_err());
        let config = test_config(&[]);
        let read = |bytes: &[u8]| {
            let request: SendRequest = parse_json(&decode_text(bytes)).unwrap();
            normalize::message(&config, request.into()).map(|m| m.text).ok()
        };
        let from_utf8 = read(body.as_bytes());
        prop_assert_eq!(from_utf8.as_deref(), Some(text.trim()));
        prop_assert_eq!(read(&latin1), from_utf8);
    }
}
