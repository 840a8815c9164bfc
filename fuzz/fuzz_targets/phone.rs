//! Phone normalization: whatever a caller puts in `mobile`, read with or without a
//! default region.
//!
//! Input: one selector byte (the default region), then the text.
//!
//! Checked besides "no panic": a parsed number is `+` and 1 to 15 digits; normalizing
//! the E.164 output again returns it unchanged, with or without a region, and so does
//! reading the bare digits (the form Vonage and SendPulse are sent); the masked form
//! shows no more digits than `mask_digits` documents.

#![no_main]

use libfuzzer_sys::fuzz_target;
use otp_relay_providers::phone::mask_digits;
use otp_relay_providers::{Phone, Region};

const REGIONS: [Option<&str>; 8] = [
    None,
    Some("BR"),
    Some("US"),
    Some("GB"),
    Some("DE"),
    Some("IN"),
    Some("AR"),
    Some("IT"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let region: Option<Region> =
        REGIONS[usize::from(selector) % REGIONS.len()].map(|r| r.parse().expect("known region"));

    // Masking takes any text without panicking.
    let _ = mask_digits(input);

    let Ok(phone) = Phone::parse(input, region) else {
        return;
    };
    let e164 = phone.e164().to_owned();
    let digits = &e164[1..];
    assert!(e164.starts_with('+'), "{e164:?}");
    assert!((1..=15).contains(&digits.len()), "{e164:?}");
    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{e164:?}");
    assert_eq!(phone.digits(), digits);

    for again in [
        Phone::parse(&e164, None),
        Phone::parse(&e164, region),
        Phone::parse(digits, None),
    ] {
        let again = again.unwrap_or_else(|e| panic!("{e164:?} does not parse again: {e}"));
        assert_eq!(again.e164(), e164);
    }

    let masked = phone.masked();
    let shown = masked.bytes().filter(|b| b.is_ascii_digit()).count();
    // At most five leading digits, never more than half of those before the last two,
    // and the last two.
    let documented = (digits.len().saturating_sub(2) / 2).min(5) + 2;
    assert!(shown <= documented, "{masked:?} for {} digits", digits.len());
    assert!(masked.contains("*****"), "{masked:?}");
    assert_eq!(format!("{phone:?}"), masked);
    let _ = (phone.line_kind(), phone.region(), phone.country_code());
});
