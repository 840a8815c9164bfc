//! Telegram: one-time codes through the Telegram Gateway API, or plain messages from a
//! Telegram bot. `TELEGRAM_MODE` picks one; the provider serves the `telegram` channel.
//!
//! **Gateway** (`gateway`, the default) delivers a code to a phone number from Telegram's
//! "Verification Codes" account:
//! `POST {TELEGRAM_GATEWAY_BASE_URL}/sendVerificationMessage`, `Authorization: Bearer
//! <token>`, JSON `{phone_number: "+55…", code, ttl, payload, callback_url}`.
//! - Telegram renders its own message around the code: our text is **not sent**. The code
//!   must be 4 to 8 digits; a message without one fails with `code_required` before any
//!   request is made.
//! - `ttl` is the message's validity clamped to the 30..=3600 s Telegram accepts (an
//!   undelivered message is refunded after it); `payload` is our message id, so delivery
//!   reports can be matched; `callback_url` is `{PUBLIC_BASE_URL}/webhooks/telegram-gateway`
//!   when a public URL is set and is https (Telegram takes at most 256 bytes, and only
//!   https: an http one would have every send refused, so it is left out, with a warning
//!   at startup); `sender_username` is `TELEGRAM_GATEWAY_SENDER_USERNAME`, a verified
//!   channel of ours that then sends the code (<https://core.telegram.org/gateway/api>).
//! - Replies: `{"ok":true,"result":{"request_id","request_cost","remaining_balance",…,
//!   "delivery_status":{"status"}}}` (cost and balance are kept on the receipt) or
//!   `{"ok":false,"error":"ACCESS_TOKEN_INVALID"}` (an upper-case name, `FLOOD_WAIT_<s>`
//!   for flood control). `BALANCE_NOT_ENOUGH` is our account's problem
//!   (`account_unusable`); `CALLBACK_URL_INVALID`, `TTL_INVALID`, `PAYLOAD_INVALID` and
//!   `SENDER_*` are our configuration's (`provider_misconfigured`): another provider may
//!   still deliver. A 2xx without `"ok": false` is an acceptance even when it cannot be
//!   read: a receipt without an id, never a failover that would send a second code.
//!
//! **Bot** (`bot`) sends the full text as a chat message:
//! `POST {TELEGRAM_BOT_BASE_URL}/bot<token>/sendMessage`, JSON `{chat_id, text}`.
//! - A bot cannot message a phone number. Users link their chat by sharing their contact
//!   with the bot; the [`ChatDirectory`] maps the number to that chat. A number with no chat
//!   fails with `recipient_not_registered`, so the dispatcher can fail over to SMS.
//! - Replies: `{"ok":true,"result":{"message_id",…}}` or `{"ok":false,"error_code":429,
//!   "description":"…","parameters":{"retry_after":5}}`. A 2xx without `"ok": false` is
//!   an acceptance, as for the Gateway.
//! - A user who blocked the bot (403 "Forbidden: bot was blocked by the user") cannot be
//!   reached on this channel: the link is dropped and the send fails with
//!   `recipient_not_registered`, so the dispatcher falls back to SMS. A delivered message
//!   renews the link (see [`ChatDirectory::renew`]), which otherwise expires after
//!   `TELEGRAM_LINK_TTL`, so a recycled number stops reaching the previous owner.
//! - The token sits in the URL path. URLs never reach an error (see
//!   [`http::transport_error`]) or a log, and reply text is cleaned of the token before it
//!   becomes an error detail.
//! - The bot also answers users who link their chat (replies built in
//!   [`crate::callbacks::telegram`], sent with [`TelegramProvider::bot_send_json`]), and
//!   [`TelegramProvider::set_webhook`] registers its webhook with the secret Telegram
//!   must send back.
//!
//! Delivery reports and bot updates are verified in [`crate::callbacks::telegram`].
//!
//! Probe: `getMe` in bot mode. The Gateway has no free authenticated call
//! (`checkSendAbility` is billed), so it reports [`ProbeOutcome::NotSupported`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::http::Reply;
use crate::settings::{Env, SettingError};
use crate::{
    http, Channel, ChatDirectory, DeliveryStatus, MessageProvider, OutboundMessage, ProbeOutcome,
    ProviderContext, ProviderError, Receipt,
};

const MODE: &str = "TELEGRAM_MODE";
const GATEWAY_TOKEN: &str = "TELEGRAM_GATEWAY_TOKEN";
const GATEWAY_BASE_URL: &str = "TELEGRAM_GATEWAY_BASE_URL";
const BOT_TOKEN: &str = "TELEGRAM_BOT_TOKEN";
const BOT_BASE_URL: &str = "TELEGRAM_BOT_BASE_URL";
const WEBHOOK_SECRET: &str = "TELEGRAM_WEBHOOK_SECRET";
const SENDER_USERNAME: &str = "TELEGRAM_GATEWAY_SENDER_USERNAME";
const LINK_TTL: &str = "TELEGRAM_LINK_TTL";

const GATEWAY_TOKEN_EXAMPLE: &str = "AAGx-your-token-from-gateway.telegram.org";
const BOT_TOKEN_EXAMPLE: &str = "123456789:AAH-your-token-from-BotFather";
const WEBHOOK_SECRET_EXAMPLE: &str = "a-long-random-string_0123456789";
const SENDER_USERNAME_EXAMPLE: &str = "acme_codes";
/// How long a bot chat link lives without a delivery, by default.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(180 * 24 * 3600);

/// The validity Telegram accepts for a verification message, in seconds.
const GATEWAY_TTL: std::ops::RangeInclusive<u64> = 30..=3600;
/// Longest `callback_url` the Gateway accepts, in bytes.
const MAX_CALLBACK_URL: usize = 256;

const CHANNELS: [Channel; 1] = [Channel::Telegram];

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
fn check_gateway_token(token: &str) -> Result<(), SettingError> {
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
fn check_bot_token(token: &str) -> Result<(), SettingError> {
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
fn check_sender_username(name: &str) -> Result<(), SettingError> {
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
fn parse_link_ttl(text: &str) -> Result<Duration, SettingError> {
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
fn check_webhook_secret(secret: &str) -> Result<(), SettingError> {
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

/// Delivers through the Telegram Gateway or a bot, as configured.
pub struct TelegramProvider {
    settings: TelegramSettings,
    client: reqwest::Client,
    chats: Arc<dyn ChatDirectory>,
    /// Gateway delivery reports go here, when a public URL is configured.
    callback_url: Option<String>,
}

impl fmt::Debug for TelegramProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramProvider")
            .field("settings", &self.settings)
            .field("callback_url", &self.callback_url)
            .finish_non_exhaustive()
    }
}

impl TelegramProvider {
    pub fn new(
        settings: TelegramSettings,
        context: &ProviderContext,
    ) -> Result<TelegramProvider, SettingError> {
        settings.validate()?;
        for var in settings.unused_variables() {
            tracing::warn!(
                "{var} is set but unused: TELEGRAM_MODE={}",
                settings.mode.as_str()
            );
        }
        let callback_url = match settings.mode {
            TelegramMode::Gateway => context.callback_url("telegram-gateway"),
            TelegramMode::Bot => None,
        };
        if let Some(url) = &callback_url {
            if url.len() > MAX_CALLBACK_URL {
                return Err(SettingError::new(
                    "PUBLIC_BASE_URL",
                    "is too long: the Telegram Gateway takes callback URLs of at most 256 bytes",
                    "https://otp.example.com",
                ));
            }
        }
        // Telegram refuses a send whose callback_url is not https: without one, codes
        // still go out, only delivery reports are lost.
        let callback_url = callback_url.filter(|url| {
            let https = url.starts_with("https://");
            if !https {
                tracing::warn!(
                    "PUBLIC_BASE_URL is not https: the Telegram Gateway takes only https \
                     callback URLs, so codes are sent without delivery reports"
                );
            }
            https
        });
        Ok(TelegramProvider {
            settings,
            client: context.client.clone(),
            chats: Arc::clone(&context.chats),
            callback_url,
        })
    }

    /// The token of the configured mode (present: checked in [`TelegramProvider::new`]).
    fn token(&self) -> &SecretString {
        let token = match self.settings.mode {
            TelegramMode::Gateway => &self.settings.gateway_token,
            TelegramMode::Bot => &self.settings.bot_token,
        };
        token.as_ref().expect("validated in new")
    }

    /// Provider text made safe for an error detail: no token, no digit runs.
    fn clean(&self, text: &str) -> String {
        clean(self.token().expose_secret(), text)
    }

    fn unexpected(&self, reply: &Reply) -> ProviderError {
        unexpected(self.token().expose_secret(), reply)
    }

    async fn post<T: Serialize>(
        &self,
        request: reqwest::RequestBuilder,
        body: &T,
    ) -> Result<Reply, ProviderError> {
        http::exchange(request.json(body)).await
    }

    async fn send_verification(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        let code = message
            .code
            .as_deref()
            .filter(|code| is_gateway_code(code))
            .ok_or(ProviderError::CodeRequired)?;
        let body = VerificationRequest {
            phone_number: message.to.e164(),
            code,
            ttl: message
                .ttl
                .as_secs()
                .clamp(*GATEWAY_TTL.start(), *GATEWAY_TTL.end()),
            payload: &message.id,
            callback_url: self.callback_url.as_deref(),
            sender_username: self.settings.sender_username.as_deref(),
        };
        let url = format!("{}/sendVerificationMessage", self.settings.gateway_base_url);
        let request = self
            .client
            .post(url)
            .bearer_auth(self.token().expose_secret());
        let reply = self.post(request, &body).await?;
        let receipt = read_gateway_reply(&reply, self.token().expose_secret())?;
        tracing::debug!(
            message_id = %message.id,
            to = %message.to.masked(),
            request_id = receipt.provider_message_id.as_deref().unwrap_or_default(),
            "Telegram Gateway accepted the code"
        );
        Ok(receipt)
    }

    fn bot_url(&self, method: &str) -> String {
        format!(
            "{}/bot{}/{method}",
            self.settings.bot_base_url,
            self.token().expose_secret()
        )
    }

    /// Sends a bot reply built by [`crate::callbacks::telegram`] (`ask_for_contact` and
    /// the like) with the Bot API's `sendMessage`. Errors are read as for a code's send.
    /// Bot mode only: in gateway mode no bot is in use, and this fails without a request.
    pub async fn bot_send_json(&self, body: &serde_json::Value) -> Result<(), ProviderError> {
        self.require_bot()?;
        let request = self.client.post(self.bot_url("sendMessage"));
        let reply = self.post(request, body).await?;
        let _: IgnoredAny = self.bot_result(&reply)?;
        Ok(())
    }

    /// Points the bot's webhook at `url` with `setWebhook`: Telegram will send
    /// `secret` in `X-Telegram-Bot-Api-Secret-Token`, and only `message` updates (the
    /// ones the bot acts on). Returns Telegram's description (`"Webhook was set"`).
    /// Bot mode only.
    pub async fn set_webhook(
        &self,
        url: &str,
        secret: &SecretString,
    ) -> Result<String, ProviderError> {
        self.require_bot()?;
        let body = serde_json::json!({
            "url": url,
            "secret_token": secret.expose_secret(),
            "allowed_updates": ["message"],
        });
        let request = self.client.post(self.bot_url("setWebhook"));
        let reply = self.post(request, &body).await?;
        match self.bot_reply::<bool>(&reply)? {
            (true, description) => Ok(description.map_or_else(
                || "webhook set".to_owned(),
                |description| self.clean(&description),
            )),
            (false, _) => Err(self.unexpected(&reply)),
        }
    }

    fn require_bot(&self) -> Result<(), ProviderError> {
        match self.settings.mode {
            TelegramMode::Bot => Ok(()),
            TelegramMode::Gateway => Err(ProviderError::AccountUnusable {
                detail: "no Telegram bot is in use: TELEGRAM_MODE is gateway".to_owned(),
            }),
        }
    }

    async fn send_chat_message(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        let Some(chat_id) = self.chats.chat_for(&message.to).await? else {
            return Err(ProviderError::RecipientNotRegistered {
                detail: "no Telegram chat is linked to this number: the user has not \
                         shared their contact with the bot"
                    .to_owned(),
            });
        };
        let body = BotMessage {
            chat_id,
            text: &message.text,
        };
        let request = self.client.post(self.bot_url("sendMessage"));
        let reply = self.post(request, &body).await?;
        let receipt = match self.bot_result::<SentMessage>(&reply) {
            Ok(sent) => Receipt::new(
                self.name(),
                // A bot message is identified by its chat and its number within the chat.
                Some(format!("{chat_id}:{}", sent.message_id)),
                // The Bot API reports no delivery: the message is on Telegram's servers.
                DeliveryStatus::Sent,
                None,
            ),
            // A 2xx without `"ok": false` is an acceptance, read or not.
            Err(_) if reply.status.is_success() && !says_not_ok(&reply) => {
                unreadable_acceptance(&reply)
            }
            Err(ProviderError::RecipientOptedOut { detail }) if blocked_the_bot(&detail) => {
                // Not reachable on this channel, perhaps not even the same person: drop
                // the link, and let the dispatcher fall back to SMS.
                if let Err(error) = self.chats.forget(&message.to, chat_id).await {
                    tracing::warn!(code = error.code(), "could not unlink a blocked chat");
                }
                tracing::info!(to = %message.to.masked(), "the user blocked the bot: chat unlinked");
                return Err(ProviderError::RecipientNotRegistered {
                    detail: format!("{detail}; the chat was unlinked"),
                });
            }
            Err(error) => return Err(error),
        };
        // A delivery renews the link; failing to renew must not fail a sent message.
        if let Err(error) = self.chats.renew(&message.to, chat_id).await {
            tracing::warn!(code = error.code(), "could not renew a telegram chat link");
        }
        tracing::debug!(
            message_id = %message.id,
            to = %message.to.masked(),
            "Telegram bot sent the message"
        );
        Ok(receipt)
    }

    /// The `result` of a Bot API reply, or the error it describes.
    fn bot_result<T: DeserializeOwned>(&self, reply: &Reply) -> Result<T, ProviderError> {
        self.bot_reply(reply).map(|(result, _)| result)
    }

    /// The `result` and `description` of a Bot API reply, or the error it describes.
    fn bot_reply<T: DeserializeOwned>(
        &self,
        reply: &Reply,
    ) -> Result<(T, Option<String>), ProviderError> {
        read_bot_reply(reply, self.token().expose_secret())
    }
}

/// Provider text made safe for an error detail: no token, no digit runs.
fn clean(token: &str, text: &str) -> String {
    // A bot token's secret is what follows the bot id; removing it alone also catches
    // a path echoed with the colon percent-encoded.
    let secret = token.split_once(':').map_or(token, |(_, secret)| secret);
    http::scrub(&text.replace(secret, "<token>"))
}

/// A reply of no documented shape: 429 and 5xx keep their meaning, anything else is
/// a protocol error (with the token removed, in case a proxy echoed the URL).
fn unexpected(token: &str, reply: &Reply) -> ProviderError {
    if reply.status == StatusCode::TOO_MANY_REQUESTS {
        ProviderError::RateLimited {
            detail: reply.status.to_string(),
            retry_after: reply.retry_after,
        }
    } else if reply.status.is_server_error() {
        ProviderError::Unavailable {
            detail: reply.status.to_string(),
        }
    } else {
        let body = String::from_utf8_lossy(&reply.body);
        http::protocol_error(reply.status, clean(token, &body).as_bytes())
    }
}

/// Reads the Gateway's answer to `sendVerificationMessage`. `token` is the Gateway
/// token, removed from any detail. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_gateway_reply(reply: &Reply, token: &str) -> Result<Receipt, ProviderError> {
    let parsed = serde_json::from_slice::<GatewayReply>(&reply.body).ok();
    match parsed {
        Some(GatewayReply {
            ok: Some(false),
            error: Some(error),
            ..
        }) => Err(gateway_error(&error, clean(token, &error), reply)),
        Some(GatewayReply {
            ok: Some(false), ..
        }) => Err(unexpected(token, reply)),
        // A 2xx without Telegram's `"ok": false` is an acceptance, read or not.
        _ if reply.status.is_success() => {
            let result = parsed
                .and_then(|p| p.result)
                .and_then(|result| serde_json::from_value::<RequestStatus>(result).ok());
            let Some(result) = result else {
                return Ok(unreadable_acceptance(reply));
            };
            let raw_status = result.delivery_status.map(|d| d.status);
            let mut receipt = Receipt::new(
                "telegram",
                Some(result.request_id),
                raw_status
                    .as_deref()
                    .map_or(DeliveryStatus::Queued, gateway_status),
                raw_status,
            );
            receipt.cost = result.request_cost.map(|n| n.to_string());
            receipt.remaining_balance = result.remaining_balance.map(|n| n.to_string());
            Ok(receipt)
        }
        _ => Err(unexpected(token, reply)),
    }
}

fn unreadable_acceptance(reply: &Reply) -> Receipt {
    tracing::warn!(
        status = reply.status.as_u16(),
        "telegram accepted the message but its reply cannot be read"
    );
    http::unreadable_acceptance("telegram")
}

/// Whether a reply carries Telegram's own refusal marker, `"ok": false`.
fn says_not_ok(reply: &Reply) -> bool {
    #[derive(Deserialize)]
    struct Marker {
        ok: Option<bool>,
    }
    serde_json::from_slice::<Marker>(&reply.body).is_ok_and(|m| m.ok == Some(false))
}

/// The `result` and `description` of a Bot API reply, or the error it describes.
/// `token` is the bot token, removed from any detail. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_bot_reply<T: DeserializeOwned>(
    reply: &Reply,
    token: &str,
) -> Result<(T, Option<String>), ProviderError> {
    match serde_json::from_slice::<BotReply<T>>(&reply.body) {
        Ok(BotReply {
            ok: Some(true),
            result: Some(result),
            description,
            ..
        }) if reply.status.is_success() => Ok((result, description)),
        Ok(BotReply {
            ok: Some(false),
            error_code: Some(code),
            description: Some(description),
            parameters,
            ..
        }) => Err(bot_error(
            code,
            &description,
            clean(token, &format!("{code}: {description}")),
            parameters
                .and_then(|p| p.retry_after)
                .map(crate::http::provider_delay)
                .or(reply.retry_after),
        )),
        _ => Err(unexpected(token, reply)),
    }
}

#[async_trait]
impl MessageProvider for TelegramProvider {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn channels(&self) -> &[Channel] {
        &CHANNELS
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        match self.settings.mode {
            TelegramMode::Gateway => self.send_verification(message).await,
            TelegramMode::Bot => self.send_chat_message(message).await,
        }
    }

    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        if self.settings.mode == TelegramMode::Gateway {
            return Ok(ProbeOutcome::NotSupported);
        }
        let request = self.client.post(self.bot_url("getMe"));
        let reply = self.post(request, &serde_json::json!({})).await?;
        let bot: BotUser = self.bot_result(&reply)?;
        let name = bot.username.map_or(bot.first_name, |u| format!("@{u}"));
        Ok(ProbeOutcome::Verified(format!("getMe: bot {name}")))
    }
}

/// What the Gateway takes as `code`: 4 to 8 ASCII digits.
fn is_gateway_code(code: &str) -> bool {
    (4..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Serialize)]
struct VerificationRequest<'a> {
    phone_number: &'a str,
    code: &'a str,
    ttl: u64,
    payload: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender_username: Option<&'a str>,
}

#[derive(Deserialize)]
struct GatewayReply {
    ok: Option<bool>,
    result: Option<serde_json::Value>,
    error: Option<String>,
}

/// A Gateway `RequestStatus`: the `result` of a send, and the body of a delivery report
/// (see [`crate::callbacks::telegram`]).
#[derive(Deserialize)]
pub(crate) struct RequestStatus {
    pub(crate) request_id: String,
    pub(crate) delivery_status: Option<GatewayDelivery>,
    /// What the request cost, in the Gateway's own unit.
    pub(crate) request_cost: Option<serde_json::Number>,
    /// The account balance left after this request.
    pub(crate) remaining_balance: Option<serde_json::Number>,
}

#[derive(Deserialize)]
pub(crate) struct GatewayDelivery {
    pub(crate) status: String,
}

/// A Gateway `DeliveryStatus.status` in our vocabulary (for receipts and reports alike).
pub(crate) fn gateway_status(status: &str) -> DeliveryStatus {
    match status {
        "delivered" | "read" => DeliveryStatus::Delivered,
        // Not delivered within the ttl (and refunded).
        "expired" => DeliveryStatus::Undelivered,
        "revoked" => DeliveryStatus::Failed,
        // "sent", and any status added later: Telegram has the message.
        _ => DeliveryStatus::Sent,
    }
}

/// A Gateway `error` name as a [`ProviderError`]; `detail` is the cleaned name.
fn gateway_error(error: &str, detail: String, reply: &Reply) -> ProviderError {
    let error = error.trim().to_ascii_uppercase();
    match error.as_str() {
        e if e.starts_with("ACCESS_TOKEN_") => ProviderError::Unauthorized { detail },
        // Flood control refuses the request; `FLOOD_WAIT_<seconds>` says how long to wait.
        e if e.starts_with("FLOOD_WAIT") => ProviderError::RateLimited {
            retry_after: e
                .rsplit('_')
                .next()
                .and_then(crate::http::delay_seconds)
                .or(reply.retry_after),
            detail,
        },
        // The number is fine but has no Telegram account Telegram can deliver to: SMS may.
        "PHONE_NUMBER_NOT_FOUND" | "PHONE_NUMBER_NOT_AVAILABLE" => {
            ProviderError::RecipientNotRegistered { detail }
        }
        e if e.starts_with("PHONE_NUMBER_") => ProviderError::InvalidRecipient { detail },
        "CODE_INVALID" | "CODE_LENGTH_INVALID" | "CODE_LENGTH_REQUIRED" => {
            ProviderError::CodeRequired
        }
        // Our account: an empty balance blocks every send until topped up, and a sender
        // channel it may not use blocks them too. Permanent, yet another provider may do.
        "BALANCE_NOT_ENOUGH" => ProviderError::AccountUnusable { detail },
        // Our configuration: the callback URL, ttl or payload we send, the sender channel
        // we named. Every send fails alike until an operator fixes it.
        e if e.starts_with("SENDER_")
            || matches!(
                e,
                "CALLBACK_URL_INVALID" | "TTL_INVALID" | "PAYLOAD_INVALID"
            ) =>
        {
            ProviderError::Misconfigured {
                // The name is Telegram's, upper case and short; scrubbed for the label.
                code: http::scrub(e).chars().take(64).collect(),
                detail,
            }
        }
        e if e.contains("TIMEOUT") || e.contains("INTERNAL") => {
            ProviderError::Unavailable { detail }
        }
        _ if reply.status == StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited {
            detail,
            retry_after: reply.retry_after,
        },
        _ if reply.status.is_server_error() => ProviderError::Unavailable { detail },
        _ => ProviderError::Rejected { detail },
    }
}

#[derive(Serialize)]
struct BotMessage<'a> {
    chat_id: i64,
    text: &'a str,
}

#[derive(Deserialize)]
struct BotReply<T> {
    ok: Option<bool>,
    result: Option<T>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<BotParameters>,
}

#[derive(Deserialize)]
struct BotParameters {
    retry_after: Option<u64>,
}

#[derive(Deserialize)]
struct SentMessage {
    message_id: i64,
}

#[derive(Deserialize)]
struct BotUser {
    first_name: String,
    username: Option<String>,
}

/// Whether a bot error detail says the user blocked the bot.
fn blocked_the_bot(detail: &str) -> bool {
    detail.to_ascii_lowercase().contains("blocked")
}

/// A Bot API error as a [`ProviderError`]; `detail` is the cleaned code and description.
fn bot_error(
    code: u16,
    description: &str,
    detail: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    let description = description.to_ascii_lowercase();
    match code {
        429 => ProviderError::RateLimited {
            detail,
            retry_after,
        },
        // The token is the only variable part of the path: 404 means Telegram knows no
        // bot by it.
        401 | 404 => ProviderError::Unauthorized { detail },
        403 if description.contains("blocked") => ProviderError::RecipientOptedOut { detail },
        // The account is gone, or the user never started the bot: SMS may still reach them.
        403 if description.contains("deactivated") || description.contains("initiate") => {
            ProviderError::RecipientNotRegistered { detail }
        }
        400 if description.contains("chat not found")
            || description.contains("peer_id_invalid") =>
        {
            ProviderError::RecipientNotRegistered { detail }
        }
        500.. => ProviderError::Unavailable { detail },
        _ => ProviderError::Rejected { detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_statuses_map_to_delivery_statuses() {
        assert_eq!(gateway_status("sent"), DeliveryStatus::Sent);
        assert_eq!(gateway_status("delivered"), DeliveryStatus::Delivered);
        assert_eq!(gateway_status("read"), DeliveryStatus::Delivered);
        assert_eq!(gateway_status("expired"), DeliveryStatus::Undelivered);
        assert_eq!(gateway_status("revoked"), DeliveryStatus::Failed);
    }

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
