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
//!   [`webhook`], sent with [`TelegramBot::bot_send_json`]), and
//!   [`TelegramBot::set_webhook`] registers its webhook with the secret Telegram
//!   must send back.
//!
//! Delivery reports and bot updates are verified in [`webhook`].
//!
//! Probe: `getMe` in bot mode. The Gateway has no free authenticated call
//! (`checkSendAbility` is billed), so it reports [`ProbeOutcome::NotSupported`].

mod bot;
mod gateway;
mod settings;
pub mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;

use crate::http::Reply;
use crate::settings::SettingError;
use crate::{
    http, Channel, MessageProvider, OutboundMessage, ProbeOutcome, ProviderContext, ProviderError,
    Receipt,
};

pub use bot::{read_bot_reply, TelegramBot};
pub(crate) use gateway::{gateway_status, RequestStatus};
pub use gateway::{read_gateway_reply, TelegramGateway};
pub use settings::{TelegramMode, TelegramSettings, DEFAULT_LINK_TTL};

/// Both modes are the `telegram` provider (`PROVIDERS=telegram`).
const NAME: &str = "telegram";
const CHANNELS: [Channel; 1] = [Channel::Telegram];

/// The Telegram provider as `TELEGRAM_MODE` configures it: the Gateway or a bot, one
/// of two provider types, each built once and holding only what its API needs.
#[derive(Debug)]
pub enum TelegramProvider {
    Gateway(TelegramGateway),
    /// Shared: the same bot sends codes and answers the users who link their chat.
    Bot(Arc<TelegramBot>),
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
        Ok(match settings.mode {
            TelegramMode::Gateway => {
                TelegramProvider::Gateway(TelegramGateway::new(&settings, context)?)
            }
            TelegramMode::Bot => {
                TelegramProvider::Bot(Arc::new(TelegramBot::new(&settings, context)))
            }
        })
    }

    /// The bot, in bot mode.
    pub fn bot(&self) -> Option<&Arc<TelegramBot>> {
        match self {
            TelegramProvider::Bot(bot) => Some(bot),
            TelegramProvider::Gateway(_) => None,
        }
    }

    /// The provider to send with: the Gateway or the bot itself.
    pub fn into_provider(self) -> Arc<dyn MessageProvider> {
        match self {
            TelegramProvider::Gateway(gateway) => Arc::new(gateway),
            TelegramProvider::Bot(bot) => bot,
        }
    }

    /// [`TelegramBot::bot_send_json`]; in gateway mode no bot is in use, and this fails
    /// without a request.
    pub async fn bot_send_json(&self, body: &serde_json::Value) -> Result<(), ProviderError> {
        self.require_bot()?.bot_send_json(body).await
    }

    /// [`TelegramBot::set_webhook`]; bot mode only.
    pub async fn set_webhook(
        &self,
        url: &str,
        secret: &SecretString,
    ) -> Result<String, ProviderError> {
        self.require_bot()?.set_webhook(url, secret).await
    }

    fn require_bot(&self) -> Result<&TelegramBot, ProviderError> {
        self.bot()
            .map(|bot| &**bot)
            .ok_or_else(|| ProviderError::AccountUnusable {
                detail: "no Telegram bot is in use: TELEGRAM_MODE is gateway".to_owned(),
            })
    }

    fn provider(&self) -> &dyn MessageProvider {
        match self {
            TelegramProvider::Gateway(gateway) => gateway,
            TelegramProvider::Bot(bot) => &**bot,
        }
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
    let body = clean(token, &String::from_utf8_lossy(&reply.body));
    http::status_error(
        reply.status,
        reply.retry_after,
        reply.status.to_string(),
        body.as_bytes(),
    )
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

#[async_trait]
impl MessageProvider for TelegramProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn channels(&self) -> &[Channel] {
        &CHANNELS
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        self.provider().send(message).await
    }

    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        self.provider().probe().await
    }
}
