//! The Telegram Bot API: chat messages to users who linked their chat, bot replies
//! and webhook registration.

use super::clean;
use super::says_not_ok;
use super::unexpected;
use super::unreadable_acceptance;
use super::CHANNELS;
use super::NAME;
use crate::http;
use crate::http::Reply;
use crate::Channel;
use crate::ChatDirectory;
use crate::DeliveryStatus;
use crate::MessageProvider;
use crate::OutboundMessage;
use crate::ProbeOutcome;
use crate::ProviderContext;
use crate::ProviderError;
use crate::Receipt;
use crate::TelegramSettings;
use async_trait::async_trait;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Sends messages from a Telegram bot (`TELEGRAM_MODE=bot`) to the chats users linked,
/// answers those users, and registers the bot's webhook.
pub struct TelegramBot {
    token: SecretString,
    base_url: String,
    client: reqwest::Client,
    chats: Arc<dyn ChatDirectory>,
}

impl fmt::Debug for TelegramBot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramBot")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl TelegramBot {
    /// Built from validated settings: the bot token is present.
    pub(super) fn new(settings: &TelegramSettings, context: &ProviderContext) -> TelegramBot {
        TelegramBot {
            token: settings.bot_token.clone().expect("validated"),
            base_url: settings.bot_base_url.clone(),
            client: context.client.clone(),
            chats: Arc::clone(&context.chats),
        }
    }

    fn url(&self, method: &str) -> String {
        format!(
            "{}/bot{}/{method}",
            self.base_url,
            self.token.expose_secret()
        )
    }

    async fn post<T: Serialize>(&self, method: &str, body: &T) -> Result<Reply, ProviderError> {
        http::exchange(self.client.post(self.url(method)).json(body)).await
    }

    /// Sends a bot reply built by [`super::webhook`] (`ask_for_contact` and
    /// the like) with the Bot API's `sendMessage`. Errors are read as for a code's send.
    pub async fn bot_send_json(&self, body: &serde_json::Value) -> Result<(), ProviderError> {
        let reply = self.post("sendMessage", body).await?;
        let _: IgnoredAny = self.bot_result(&reply)?;
        Ok(())
    }

    /// Points the bot's webhook at `url` with `setWebhook`: Telegram will send
    /// `secret` in `X-Telegram-Bot-Api-Secret-Token`, and only `message` updates (the
    /// ones the bot acts on). Returns Telegram's description (`"Webhook was set"`).
    pub async fn set_webhook(
        &self,
        url: &str,
        secret: &SecretString,
    ) -> Result<String, ProviderError> {
        let body = serde_json::json!({
            "url": url,
            "secret_token": secret.expose_secret(),
            "allowed_updates": ["message"],
        });
        let reply = self.post("setWebhook", &body).await?;
        match self.bot_reply::<bool>(&reply)? {
            (true, description) => Ok(description.map_or_else(
                || "webhook set".to_owned(),
                |description| clean(self.token.expose_secret(), &description),
            )),
            (false, _) => Err(unexpected(self.token.expose_secret(), &reply)),
        }
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
        read_bot_reply(reply, self.token.expose_secret())
    }
}

#[async_trait]
impl MessageProvider for TelegramBot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn channels(&self) -> &[Channel] {
        &CHANNELS
    }

    /// `getMe`: proves the token and names the bot, sending nothing.
    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        let reply = self.post("getMe", &serde_json::json!({})).await?;
        let bot: BotUser = self.bot_result(&reply)?;
        let name = bot.username.map_or(bot.first_name, |u| format!("@{u}"));
        Ok(ProbeOutcome::Verified(format!("getMe: bot {name}")))
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
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
        let reply = self.post("sendMessage", &body).await?;
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

#[derive(Serialize)]
pub(super) struct BotMessage<'a> {
    chat_id: i64,
    text: &'a str,
}

#[derive(Deserialize)]
pub(super) struct BotReply<T> {
    ok: Option<bool>,
    result: Option<T>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<BotParameters>,
}

#[derive(Deserialize)]
pub(super) struct BotParameters {
    retry_after: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct SentMessage {
    message_id: i64,
}

#[derive(Deserialize)]
pub(super) struct BotUser {
    first_name: String,
    username: Option<String>,
}

/// Whether a bot error detail says the user blocked the bot.
pub(super) fn blocked_the_bot(detail: &str) -> bool {
    detail.to_ascii_lowercase().contains("blocked")
}

/// A Bot API error as a [`ProviderError`]; `detail` is the cleaned code and description.
pub(super) fn bot_error(
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
