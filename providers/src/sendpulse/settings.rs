//! SendPulse settings: the `SENDPULSE_*` variables, read and checked once at startup.

use crate::Channel;
use crate::Env;
use crate::SettingError;
use secrecy::SecretString;

pub const DEFAULT_BASE_URL: &str = "https://api.sendpulse.com";
/// Template language used when `SENDPULSE_WHATSAPP_TEMPLATE` names none.
pub const DEFAULT_WHATSAPP_LANGUAGE: &str = "en";

pub(super) const CHANNEL_VAR: &str = "SENDPULSE_CHANNEL";
pub(super) const SENDER_VAR: &str = "SENDPULSE_SENDER";
pub(super) const BOT_ID_VAR: &str = "SENDPULSE_WHATSAPP_BOT_ID";
pub(super) const TEMPLATE_VAR: &str = "SENDPULSE_WHATSAPP_TEMPLATE";
pub(super) const CHANNEL_EXAMPLE: &str = "sms,whatsapp";
pub(super) const SENDER_EXAMPLE: &str = "OtpRelay";
pub(super) const BOT_ID_EXAMPLE: &str = "64a1f0c2b3d4e5f6a7b8c9d0";
pub(super) const TEMPLATE_EXAMPLE: &str = "otp_code:pt_BR";
pub(super) const SERVED: [Channel; 2] = [Channel::Sms, Channel::Whatsapp];

/// SendPulse settings, read from `SENDPULSE_*` variables.
#[derive(Debug, Clone)]
pub struct SendpulseSettings {
    /// `SENDPULSE_CLIENT_ID`: the API ID from Settings > API.
    pub client_id: String,
    /// `SENDPULSE_CLIENT_SECRET`: the API secret.
    pub client_secret: SecretString,
    /// `SENDPULSE_CHANNEL`: `sms`, `whatsapp` or both.
    pub channels: Vec<Channel>,
    /// `SENDPULSE_SENDER`: the SMS sender name; required when sms is served.
    pub sender: Option<String>,
    /// Required when whatsapp is served.
    pub whatsapp: Option<SendpulseWhatsapp>,
    /// `SENDPULSE_BASE_URL` without a trailing slash.
    pub base_url: String,
}

/// The WhatsApp bot and the approved template that carries the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendpulseWhatsapp {
    /// `SENDPULSE_WHATSAPP_BOT_ID`.
    pub bot_id: String,
    /// Template name, the part of `SENDPULSE_WHATSAPP_TEMPLATE` before `:`.
    pub template: String,
    /// Template language code, the part after `:` (default `en`).
    pub language: String,
}

impl SendpulseSettings {
    pub fn from_env(env: &Env<'_>) -> Result<SendpulseSettings, SettingError> {
        let client_id = env
            .required("SENDPULSE_CLIENT_ID", "a1b2c3d4e5f60718293a4b5c6d7e8f90")?
            .to_owned();
        let client_secret = env.secret(
            "SENDPULSE_CLIENT_SECRET",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        )?;
        let channels = env.channels(CHANNEL_VAR, Channel::Sms, &SERVED, CHANNEL_EXAMPLE)?;

        let sender = if channels.contains(&Channel::Sms) {
            Some(sender(env.required(SENDER_VAR, SENDER_EXAMPLE)?)?)
        } else {
            not_served(env, SENDER_VAR, Channel::Sms)?;
            None
        };
        let whatsapp = if channels.contains(&Channel::Whatsapp) {
            let bot_id = env.required(BOT_ID_VAR, BOT_ID_EXAMPLE)?.to_owned();
            let (template, language) = template(env.required(TEMPLATE_VAR, TEMPLATE_EXAMPLE)?)?;
            Some(SendpulseWhatsapp {
                bot_id,
                template,
                language,
            })
        } else {
            not_served(env, BOT_ID_VAR, Channel::Whatsapp)?;
            not_served(env, TEMPLATE_VAR, Channel::Whatsapp)?;
            None
        };

        Ok(SendpulseSettings {
            client_id,
            client_secret,
            channels,
            sender,
            whatsapp,
            base_url: env.base_url("SENDPULSE_BASE_URL", DEFAULT_BASE_URL)?,
        })
    }
}

/// A variable set for a channel that `SENDPULSE_CHANNEL` leaves out is most likely a
/// forgotten channel, so it is refused rather than silently ignored.
pub(super) fn not_served(
    env: &Env<'_>,
    var: &'static str,
    channel: Channel,
) -> Result<(), SettingError> {
    match env.get(var) {
        Some(_) => Err(SettingError::new(
            CHANNEL_VAR,
            format!(
                "does not include {channel}, yet {var} is set (add {channel} here or unset {var})"
            ),
            CHANNEL_EXAMPLE,
        )),
        None => Ok(()),
    }
}

/// An alphanumeric sender has at most 11 characters, a numeric one at most 15 digits.
pub(super) fn sender(value: &str) -> Result<String, SettingError> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let fits = if numeric {
        digits.len() <= 15
    } else {
        value.chars().count() <= 11
    };
    if fits {
        Ok(value.to_owned())
    } else {
        Err(SettingError::new(
            SENDER_VAR,
            "must be at most 11 characters, or at most 15 digits for a numeric sender",
            SENDER_EXAMPLE,
        ))
    }
}

/// `name` or `name:language`; WhatsApp template names are lower-case letters, digits
/// and underscores, language codes look like `en` or `pt_BR`.
pub(super) fn template(value: &str) -> Result<(String, String), SettingError> {
    let (name, language) = match value.split_once(':') {
        Some((name, language)) => (name.trim(), language.trim()),
        None => (value, DEFAULT_WHATSAPP_LANGUAGE),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let language_ok = !language.is_empty()
        && language
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_');
    if name_ok && language_ok {
        Ok((name.to_owned(), language.to_owned()))
    } else {
        Err(SettingError::new(
            TEMPLATE_VAR,
            "must be an approved template name (a-z, 0-9, _), optionally followed by :language",
            TEMPLATE_EXAMPLE,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_takes_an_optional_language() {
        assert_eq!(
            template("otp_code").unwrap(),
            ("otp_code".to_owned(), "en".to_owned())
        );
        assert_eq!(
            template("otp_code:pt_BR").unwrap(),
            ("otp_code".to_owned(), "pt_BR".to_owned())
        );
        for bad in ["OTP code", "otp_code:", ":en", "otp-code:en", "otp:pt-BR"] {
            assert_eq!(template(bad).unwrap_err().var, TEMPLATE_VAR, "{bad}");
        }
    }

    #[test]
    fn sender_fits_sendpulse_limits() {
        assert!(sender("OtpRelay").is_ok());
        assert!(sender("+551199999999999").is_ok(), "15 digits");
        assert!(sender("TooLongSender").is_err(), "13 characters");
        assert!(sender("5511999999999999").is_err(), "16 digits");
    }
}
