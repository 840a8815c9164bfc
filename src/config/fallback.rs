//! Delivery-aware channel fallback: `CHANNEL_FALLBACK`, `CHANNEL_FALLBACK_AFTER`.

use otp_relay_providers::{Channel, Env};

use super::var::{millis, DurationBounds, Var, HOUR, MS};
use super::ConfigError;
use crate::channel_fallback::FallbackSettings;

/// `CHANNEL_FALLBACK_AFTER`: under a second for tests and impatient deployments, at
/// most an hour (a code is rarely worth more).
const AFTER_BOUNDS: DurationBounds = millis(100 * MS, HOUR);

pub(super) fn parse_fallback(env: &Env<'_>) -> Result<FallbackSettings, ConfigError> {
    let channel =
        Var::new(env, "CHANNEL_FALLBACK", "sms").parse_with("off", |value| {
            match value.to_ascii_lowercase().as_str() {
                "off" | "none" => Ok(None),
                "sms" => Ok(Some(Channel::Sms)),
                _ => Err("expected sms or off".to_owned()),
            }
        })?;
    let after = Var::new(env, "CHANNEL_FALLBACK_AFTER", "20s").duration("20s", AFTER_BOUNDS)?;
    Ok(FallbackSettings {
        channel,
        after,
        ..FallbackSettings::default()
    })
}
