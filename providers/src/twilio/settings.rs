//! Twilio settings: the `TWILIO_*` variables, read and checked once at startup.

use crate::Channel;
use crate::Env;
use crate::SettingError;
use secrecy::SecretString;

pub(super) const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
pub(super) const ACCOUNT_SID_EXAMPLE: &str = "AC0123456789abcdef0123456789abcdef";
pub(super) const AUTH_TOKEN_EXAMPLE: &str = "0123456789abcdef0123456789abcdef";
pub(super) const FROM_EXAMPLE: &str = "+14155552671";
pub(super) const SERVICE_SID_EXAMPLE: &str = "MG0123456789abcdef0123456789abcdef";
pub(super) const CONTENT_SID_EXAMPLE: &str = "HX0123456789abcdef0123456789abcdef";
pub(super) const CHANNEL_EXAMPLE: &str = "sms,whatsapp";

/// Twilio's bounds for `ValidityPeriod`, in seconds.
pub(super) const VALIDITY_SECONDS: std::ops::RangeInclusive<u64> = 1..=36_000;

/// Who the message comes from: exactly one of the two ways Twilio accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioSender {
    /// `TWILIO_FROM`: a Twilio number in E.164, a short code or an alphanumeric sender
    /// ID, stored without any `whatsapp:` prefix (it is added per message).
    From(String),
    /// `TWILIO_MESSAGING_SERVICE_SID` (`MG...`): Twilio picks the sender from the pool.
    MessagingService(String),
}

/// Twilio's settings. `Debug` shows the auth token as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct TwilioSettings {
    /// `TWILIO_ACCOUNT_SID`, `AC` and 32 hex digits.
    pub account_sid: String,
    /// `TWILIO_AUTH_TOKEN`.
    pub auth_token: SecretString,
    pub sender: TwilioSender,
    /// `TWILIO_CHANNEL`: the channels this provider serves, out of SMS and WhatsApp.
    pub channels: Vec<Channel>,
    /// `TWILIO_CONTENT_SID` (`HX...`): the WhatsApp template that carries the code.
    pub content_sid: Option<String>,
    /// `TWILIO_BASE_URL`, without a trailing slash.
    pub base_url: String,
}

impl TwilioSettings {
    /// Reads and validates the `TWILIO_*` variables.
    pub fn from_env(env: &Env<'_>) -> Result<TwilioSettings, SettingError> {
        let account_sid = env.required("TWILIO_ACCOUNT_SID", ACCOUNT_SID_EXAMPLE)?;
        let auth_token = env.secret("TWILIO_AUTH_TOKEN", AUTH_TOKEN_EXAMPLE)?;
        let sender = match (
            env.get("TWILIO_FROM"),
            env.get("TWILIO_MESSAGING_SERVICE_SID"),
        ) {
            (Some(_), Some(_)) => {
                return Err(SettingError::new(
                    "TWILIO_MESSAGING_SERVICE_SID",
                    "is set together with TWILIO_FROM; set only one of the two",
                    SERVICE_SID_EXAMPLE,
                ))
            }
            (None, None) => {
                return Err(SettingError::new(
                    "TWILIO_FROM",
                    "is required unless TWILIO_MESSAGING_SERVICE_SID is set",
                    FROM_EXAMPLE,
                ))
            }
            (Some(from), None) => TwilioSender::From(strip_whatsapp(from).to_owned()),
            (None, Some(service)) => TwilioSender::MessagingService(service.to_owned()),
        };
        let settings = TwilioSettings {
            account_sid: account_sid.to_owned(),
            auth_token,
            sender,
            channels: env.channels(
                "TWILIO_CHANNEL",
                Channel::Sms,
                &[Channel::Sms, Channel::Whatsapp],
                CHANNEL_EXAMPLE,
            )?,
            content_sid: env.get("TWILIO_CONTENT_SID").map(str::to_owned),
            base_url: env.base_url("TWILIO_BASE_URL", DEFAULT_BASE_URL)?,
        };
        settings.validate()?;
        if settings.channels.contains(&Channel::Whatsapp) && settings.content_sid.is_none() {
            return Err(SettingError::new(
                "TWILIO_CONTENT_SID",
                "is required when TWILIO_CHANNEL includes whatsapp: outside the 24 h window \
                 WhatsApp drops free text, so codes go in an approved authentication template",
                CONTENT_SID_EXAMPLE,
            ));
        }
        Ok(settings)
    }

    /// Checks what `from_env` reads and what tests may build directly: the SIDs end up
    /// in URL paths and form fields, so their shape is enforced.
    pub(super) fn validate(&self) -> Result<(), SettingError> {
        check_sid(
            "TWILIO_ACCOUNT_SID",
            &self.account_sid,
            "AC",
            ACCOUNT_SID_EXAMPLE,
        )?;
        let whatsapp = self.channels.contains(&Channel::Whatsapp);
        match &self.sender {
            TwilioSender::From(from) => check_from(from, whatsapp)?,
            TwilioSender::MessagingService(sid) => check_sid(
                "TWILIO_MESSAGING_SERVICE_SID",
                sid,
                "MG",
                SERVICE_SID_EXAMPLE,
            )?,
        }
        if self.channels.is_empty() || self.channels.contains(&Channel::Telegram) {
            return Err(SettingError::new(
                "TWILIO_CHANNEL",
                "must list sms, whatsapp or both",
                CHANNEL_EXAMPLE,
            ));
        }
        if let Some(content_sid) = &self.content_sid {
            check_sid("TWILIO_CONTENT_SID", content_sid, "HX", CONTENT_SID_EXAMPLE)?;
            // The template is only used on WhatsApp; silently ignoring it would hide a
            // misconfiguration.
            if !whatsapp {
                return Err(SettingError::new(
                    "TWILIO_CONTENT_SID",
                    "is a WhatsApp template, but TWILIO_CHANNEL does not include whatsapp",
                    CONTENT_SID_EXAMPLE,
                ));
            }
        }
        Ok(())
    }
}

/// A Twilio SID: two letters and 32 hex digits.
pub(super) fn check_sid(
    var: &'static str,
    sid: &str,
    prefix: &str,
    example: &'static str,
) -> Result<(), SettingError> {
    let hex = sid.strip_prefix(prefix).unwrap_or_default();
    if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(SettingError::new(
            var,
            format!("must be {prefix} followed by 32 hex digits"),
            example,
        ))
    }
}

/// A sender Twilio accepts: `+` and 7 to 15 digits, a short code (up to 8 digits), or
/// an alphanumeric sender ID (1 to 11 letters, digits and spaces, at least one letter).
/// WhatsApp senders are always numbers.
pub(super) fn check_from(from: &str, whatsapp: bool) -> Result<(), SettingError> {
    let is_digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let is_sender_id = from.len() <= 11
        && from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
        && from.chars().any(|c| c.is_ascii_alphabetic());
    let problem = match from.strip_prefix('+') {
        Some(digits) if is_digits(digits) && (7..=15).contains(&digits.len()) => return Ok(()),
        Some(_) => "is not a phone number in E.164 form",
        None if whatsapp => {
            "must be a phone number in E.164 form (with +) when TWILIO_CHANNEL includes whatsapp"
        }
        None if is_digits(from) && from.len() <= 8 => return Ok(()),
        None if is_digits(from) => "looks like a phone number without its leading +",
        None if is_sender_id => return Ok(()),
        None => "is neither an E.164 number, a short code nor an alphanumeric sender ID (up to 11 letters, digits and spaces)",
    };
    Err(SettingError::new("TWILIO_FROM", problem, FROM_EXAMPLE))
}

/// `whatsapp:+1415...` and `+1415...` name the same sender; the prefix is added per
/// message, so the setting may be written either way.
pub(super) fn strip_whatsapp(address: &str) -> &str {
    match address.get(..9) {
        Some(prefix) if prefix.eq_ignore_ascii_case("whatsapp:") => address[9..].trim(),
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_numbers_short_codes_or_sender_ids() {
        for ok in [
            "+14155552671",
            "+5511966191717",
            "12345",
            "MyBrand",
            "My Brand 1",
        ] {
            assert_eq!(check_from(ok, false), Ok(()), "{ok}");
        }
        for bad in [
            "14155552671",
            "+1415-555",
            "+",
            "TooLongSenderName",
            "Brand!",
        ] {
            assert_eq!(
                check_from(bad, false).unwrap_err().var,
                "TWILIO_FROM",
                "{bad}"
            );
        }
        // WhatsApp senders are numbers only.
        assert_eq!(check_from("+14155552671", true), Ok(()));
        assert!(check_from("12345", true).is_err());
        assert!(check_from("MyBrand", true).is_err());
    }

    #[test]
    fn whatsapp_prefix_is_optional_in_the_sender() {
        assert_eq!(strip_whatsapp("whatsapp:+14155238886"), "+14155238886");
        assert_eq!(strip_whatsapp("WhatsApp: +14155238886"), "+14155238886");
        assert_eq!(strip_whatsapp("+14155238886"), "+14155238886");
        assert_eq!(strip_whatsapp("MyBrand"), "MyBrand");
    }
}
