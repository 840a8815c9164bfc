//! Telegram settings: the `TELEGRAM_*` variables, read and checked once at startup.

use crate::Env;
use crate::SettingError;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use std::str::FromStr;
use std::time::Duration;

pub(super) const MODE: &str = "TELEGRAM_MODE";
pub(super) const GATEWAY_TOKEN: &str = "TELEGRAM_GATEWAY_TOKEN";
pub(super) const GATEWAY_BASE_URL: &str = "TELEGRAM_GATEWAY_BASE_URL";
pub(super) const BOT_TOKEN: &str = "TELEGRAM_BOT_TOKEN";
pub(super) const BOT_BASE_URL: &str = "TELEGRAM_BOT_BASE_URL";
pub(super) const WEBHOOK_SECRET: &str = "TELEGRAM_WEBHOOK_SECRET";
pub(super) const SENDER_USERNAME: &str = "TELEGRAM_GATEWAY_SENDER_USERNAME";
pub(super) const LINK_TTL: &str = "TELEGRAM_LINK_TTL";

pub(super) const GATEWAY_TOKEN_EXAMPLE: &str = "AAGx-your-token-from-gateway.telegram.org";
pub(super) const BOT_TOKEN_EXAMPLE: &str = "123456789:AAH-your-token-from-BotFather";
pub(super) const WEBHOOK_SECRET_EXAMPLE: &str = "a-long-random-string_0123456789";
pub(super) const SENDER_USERNAME_EXAMPLE: &str = "acme_codes";
/// How long a bot chat link lives without a delivery, by default.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(180 * 24 * 3600);

/// Which Telegram API delivers the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelegramMode {
    /// The Telegram Gateway API: codes to phone numbers, rendered by Telegram.
    Gateway,
    /// A Telegram bot: the full text, to users who linked their chat.
    Bot,
}

impl TelegramMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TelegramMode::Gateway => "gateway",
            TelegramMode::Bot => "bot",
        }
    }
}

impl FromStr for TelegramMode {
    type Err = SettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gateway" => Ok(TelegramMode::Gateway),
            "bot" => Ok(TelegramMode::Bot),
            _ => Err(SettingError::new(
                MODE,
                format!("{s:?} is not a mode; expected gateway or bot"),
                "gateway",
            )),
        }
    }
}

/// The Telegram provider's settings. Tokens are [`SecretString`]s: `Debug` hides them.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    pub mode: TelegramMode,
    /// Required in gateway mode.
    pub gateway_token: Option<SecretString>,
    /// Without a trailing slash.
    pub gateway_base_url: String,
    /// Required in bot mode.
    pub bot_token: Option<SecretString>,
    /// Without a trailing slash.
    pub bot_base_url: String,
    /// Authenticates the bot's webhook (`X-Telegram-Bot-Api-Secret-Token`); optional.
    pub webhook_secret: Option<SecretString>,
    /// `TELEGRAM_GATEWAY_SENDER_USERNAME`: a verified channel that sends the codes,
    /// without `@`; gateway mode only.
    pub sender_username: Option<String>,
    /// `TELEGRAM_LINK_TTL`: how long a bot chat link lives without a delivery.
    pub link_ttl: Duration,
}

impl TelegramSettings {
    pub fn from_env(env: &Env<'_>) -> Result<TelegramSettings, SettingError> {
        let settings = TelegramSettings {
            mode: env
                .get(MODE)
                .map_or(Ok(TelegramMode::Gateway), str::parse)?,
            gateway_token: env.optional_secret(GATEWAY_TOKEN),
            gateway_base_url: env.base_url(GATEWAY_BASE_URL, "https://gatewayapi.telegram.org")?,
            bot_token: env.optional_secret(BOT_TOKEN),
            bot_base_url: env.base_url(BOT_BASE_URL, "https://api.telegram.org")?,
            webhook_secret: env.optional_secret(WEBHOOK_SECRET),
            sender_username: env
                .get(SENDER_USERNAME)
                .map(|name| name.trim_start_matches('@').to_owned()),
            link_ttl: match env.get(LINK_TTL) {
                None => DEFAULT_LINK_TTL,
                Some(text) => parse_link_ttl(text)?,
            },
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that the mode's token is there and that every secret has a usable shape.
    /// Error texts never quote a secret.
    pub fn validate(&self) -> Result<(), SettingError> {
        if let Some(token) = &self.gateway_token {
            check_gateway_token(token.expose_secret())?;
        }
        if let Some(token) = &self.bot_token {
            check_bot_token(token.expose_secret())?;
        }
        if let Some(secret) = &self.webhook_secret {
            check_webhook_secret(secret.expose_secret())?;
        }
        if let Some(name) = &self.sender_username {
            check_sender_username(name)?;
        }
        match self.mode {
            TelegramMode::Gateway if self.gateway_token.is_none() => Err(SettingError::new(
                GATEWAY_TOKEN,
                if self.bot_token.is_some() {
                    "is required when TELEGRAM_MODE=gateway (the default); to send from the bot set TELEGRAM_MODE=bot"
                } else {
                    "is required when TELEGRAM_MODE=gateway (the default)"
                },
                GATEWAY_TOKEN_EXAMPLE,
            )),
            TelegramMode::Bot if self.bot_token.is_none() => Err(SettingError::new(
                BOT_TOKEN,
                "is required when TELEGRAM_MODE=bot",
                BOT_TOKEN_EXAMPLE,
            )),
            _ => Ok(()),
        }
    }

    /// Variables that are set but play no part in the configured mode.
    pub fn unused_variables(&self) -> Vec<&'static str> {
        let mut unused = Vec::new();
        match self.mode {
            TelegramMode::Gateway => {
                if self.bot_token.is_some() {
                    unused.push(BOT_TOKEN);
                }
                if self.webhook_secret.is_some() {
                    unused.push(WEBHOOK_SECRET);
                }
            }
            TelegramMode::Bot => {
                if self.gateway_token.is_some() {
                    unused.push(GATEWAY_TOKEN);
                }
                if self.sender_username.is_some() {
                    unused.push(SENDER_USERNAME);
                }
            }
        }
        unused
    }
}

/// The token goes into an `Authorization` header: visible ASCII only, and some of it.
pub(super) fn check_gateway_token(token: &str) -> Result<(), SettingError> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(SettingError::new(
            GATEWAY_TOKEN,
            "must be the token from the Gateway account settings, without spaces",
            GATEWAY_TOKEN_EXAMPLE,
        ))
    }
}

/// The token goes into the URL path: `<bot id>:<secret>`, nothing that could end or
/// change the path.
pub(super) fn check_bot_token(token: &str) -> Result<(), SettingError> {
    let well_formed = token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !secret.is_empty()
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    if well_formed {
        Ok(())
    } else {
        Err(SettingError::new(
            BOT_TOKEN,
            "does not look like a token from @BotFather (digits, a colon, then letters, digits, '_' or '-')",
            BOT_TOKEN_EXAMPLE,
        ))
    }
}

/// A Telegram public username: 5 to 32 of `a-z A-Z 0-9 _`, starting with a letter.
pub(super) fn check_sender_username(name: &str) -> Result<(), SettingError> {
    let valid = (5..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(SettingError::new(
            SENDER_USERNAME,
            "must be the username of a verified Telegram channel (5 to 32 letters, digits or '_', optionally after '@')",
            SENDER_USERNAME_EXAMPLE,
        ))
    }
}

/// `180d`, `12h`, `30m`, `90s` or a bare number of seconds; at least a minute, so a
/// typo cannot make every link vanish at once.
pub(super) fn parse_link_ttl(text: &str) -> Result<Duration, SettingError> {
    let invalid = || {
        SettingError::new(
            LINK_TTL,
            "must be a duration of at least 1m, written with a unit s, m, h or d",
            "180d",
        )
    };
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let seconds_per_unit = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    let ttl = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per_unit))
        .map(Duration::from_secs)
        .ok_or_else(invalid)?;
    if ttl < Duration::from_secs(60) {
        return Err(invalid());
    }
    Ok(ttl)
}

/// What `setWebhook` accepts as `secret_token`: 1-256 of `A-Z a-z 0-9 _ -`.
pub(super) fn check_webhook_secret(secret: &str) -> Result<(), SettingError> {
    let valid = (1..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(SettingError::new(
            WEBHOOK_SECRET,
            "must be 1 to 256 characters out of A-Z, a-z, 0-9, '_' and '-'",
            WEBHOOK_SECRET_EXAMPLE,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_tokens_must_be_path_safe() {
        assert!(check_bot_token("123456789:AAH-x_y").is_ok());
        for bad in [
            "123456789",
            ":AAH",
            "12a:AAH",
            "123:",
            "123:AA/../x",
            "123:AA?x",
        ] {
            assert!(check_bot_token(bad).is_err(), "{bad}");
        }
    }
}
