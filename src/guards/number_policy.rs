//! Where and to what kind of line otp-relay sends: `ALLOWED_COUNTRIES`,
//! `BLOCKED_COUNTRIES`, `ALLOW_NON_MOBILE`.
//!
//! SMS pumping fraud sends codes to numbers the fraudster earns from (premium-rate and
//! shared-cost lines, or countries with high termination fees): refusing them here
//! costs nothing and stops it before a provider bills anything.

use otp_relay_providers::phone::LineKind;
use otp_relay_providers::Phone;

use super::Limits;

/// Why a number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumberRefused {
    #[error("messages to this country are not allowed")]
    CountryNotAllowed,
    #[error("this number is not a mobile line")]
    UnsupportedNumberType,
}

/// Checks the number's country and line type against the policy.
pub fn check(phone: &Phone, limits: &Limits) -> Result<(), NumberRefused> {
    let region = phone.region();
    if !limits.allowed_countries.is_empty()
        && !region.is_some_and(|r| limits.allowed_countries.contains(&r))
    {
        return Err(NumberRefused::CountryNotAllowed);
    }
    if region.is_some_and(|r| limits.blocked_countries.contains(&r)) {
        return Err(NumberRefused::CountryNotAllowed);
    }
    // Checked for every channel: a Telegram or WhatsApp send may fall back to SMS.
    match phone.line_kind() {
        LineKind::Mobile | LineKind::FixedOrMobile => Ok(()),
        // Never worth a code: these lines pay whoever owns them.
        LineKind::PremiumRate | LineKind::SharedCost => Err(NumberRefused::UnsupportedNumberType),
        LineKind::Fixed | LineKind::Other if limits.allow_non_mobile => Ok(()),
        LineKind::Fixed | LineKind::Other => Err(NumberRefused::UnsupportedNumberType),
    }
}
