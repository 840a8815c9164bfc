//! Telegram callbacks: Gateway delivery reports (the `telegram-gateway` webhook) and Bot
//! API updates (the `telegram-bot` webhook), plus the bot's replies.
//!
//! **Gateway reports** are a `RequestStatus` JSON object sent to the `callback_url` of
//! `sendVerificationMessage` ("Receiving reports" in the Gateway API docs):
//! - `X-Request-Timestamp`: when the report was sent, Unix seconds;
//! - `X-Request-Signature`: hex HMAC-SHA256 of `timestamp + "\n" + body` (the body as
//!   sent), keyed by the SHA-256 digest of the Gateway API token;
//! - the timestamp must be within 5 minutes of now.
//!
//! **Bot updates** are not signed. `setWebhook` registers a `secret_token` (1-256 of
//! `A-Za-z0-9_-`, our `TELEGRAM_WEBHOOK_SECRET`) and Telegram sends it back in
//! `X-Telegram-Bot-Api-Secret-Token` on every update; it is compared in constant time
//! (of SHA-256 digests, so not even its length shows). No time is signed.
//!
//! Users link their number to a chat: `/start` answers with a one-time keyboard whose
//! button shares the user's own contact; a shared contact whose `user_id` is the sender's
//! links the number; `/stop` unlinks. Only private chats count: a number linked to a
//! group would post codes to the whole group.

use std::fmt;
use std::time::SystemTime;

use hmac::Hmac;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{gateway_status, RequestStatus};
use crate::callbacks::{
    check_fresh, hmac, json_error, parse_unix, presented, same, verify_hex, Callback,
    CallbackError, CallbackRequest, StatusUpdate, Webhook,
};
use crate::phone::mask_digits;

/// The Gateway's webhook name: the last segment of its path.
pub const GATEWAY_WEBHOOK: &str = "telegram-gateway";
/// The bot's webhook name: the last segment of its path.
pub const BOT_WEBHOOK: &str = "telegram-bot";

/// The Gateway report header that carries the signed time.
pub const TIMESTAMP_HEADER: &str = "X-Request-Timestamp";
/// The Gateway report header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Request-Signature";
/// The bot webhook header that carries `secret_token`.
pub const SECRET_TOKEN_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// Verifies and reads a Gateway delivery report. `timestamp` and `signature` are the
/// `X-Request-Timestamp` and `X-Request-Signature` headers, `body` the raw body.
/// `Ok(None)` is an authentic report that says nothing about delivery.
pub fn verify_gateway_status(
    gateway_token: &SecretString,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<Option<StatusUpdate>, CallbackError> {
    let timestamp = presented(timestamp)?;
    let signature = presented(signature)?;
    let key = Sha256::digest(gateway_token.expose_secret().as_bytes());
    let expected = hmac::<Hmac<Sha256>>(&key, &[timestamp.as_bytes(), b"\n", body]);
    verify_hex(&expected, signature)?;
    check_fresh(parse_unix(timestamp), now)?;

    let report: RequestStatus =
        serde_json::from_slice(body).map_err(|e| json_error("a RequestStatus object", &e))?;
    // Reports also cover code verification (`verification_status` only): authentic, but
    // nothing for us, and it must still be acknowledged with 200 or Telegram repeats it.
    let Some(raw_status) = report.delivery_status.map(|delivery| delivery.status) else {
        return Ok(None);
    };
    Ok(Some(StatusUpdate {
        provider: "telegram",
        provider_message_id: report.request_id,
        status: gateway_status(&raw_status),
        raw_status,
        error_code: None,
        // The send's answer already priced the request.
        cost: None,
    }))
}

/// The Gateway's delivery reports, signed with a key derived from the Gateway token.
pub struct GatewayWebhook {
    token: SecretString,
}

impl GatewayWebhook {
    pub fn new(gateway_token: SecretString) -> Self {
        GatewayWebhook {
            token: gateway_token,
        }
    }
}

impl Webhook for GatewayWebhook {
    fn name(&self) -> &'static str {
        GATEWAY_WEBHOOK
    }

    fn receive(&self, request: &CallbackRequest<'_>) -> Result<Callback, CallbackError> {
        request.expect_post()?;
        let update = verify_gateway_status(
            &self.token,
            request.header(TIMESTAMP_HEADER),
            request.header(SIGNATURE_HEADER),
            request.body,
            request.now,
        )?;
        Ok(update.map_or(
            Callback::Nothing("a gateway report without a delivery status"),
            Callback::Status,
        ))
    }
}

/// The bot's updates, authenticated by the secret token given to `setWebhook`.
pub struct BotWebhook {
    secret: SecretString,
}

impl BotWebhook {
    pub fn new(webhook_secret: SecretString) -> Self {
        BotWebhook {
            secret: webhook_secret,
        }
    }
}

impl Webhook for BotWebhook {
    fn name(&self) -> &'static str {
        BOT_WEBHOOK
    }

    fn receive(&self, request: &CallbackRequest<'_>) -> Result<Callback, CallbackError> {
        request.expect_post()?;
        verify_bot_update(
            &self.secret,
            request.header(SECRET_TOKEN_HEADER),
            request.body,
        )
        .map(Callback::Bot)
    }
}

/// What a bot update asks of us.
#[derive(Clone, PartialEq, Eq)]
pub enum BotUpdate {
    /// `/start` (with or without a payload or a `@bot` mention) in a private chat.
    Start { chat_id: i64 },
    /// `/stop` in a private chat: unlink the chat.
    Stop { chat_id: i64 },
    /// A contact shared in a private chat.
    SharedContact {
        chat_id: i64,
        /// As Telegram sent it (with or without `+`); the server normalizes it.
        phone: String,
        /// The contact is the sender's own (`contact.user_id == from.id`), not someone
        /// else's: only then may the number be linked.
        own: bool,
    },
    /// Anything else. `chat_id` is set when the update comes from a private chat, where
    /// a short reply is polite; it is `None` for groups, channels and chatless updates,
    /// which get no answer.
    Other { chat_id: Option<i64> },
}

/// The phone number is masked: `Debug` output may reach a log.
impl fmt::Debug for BotUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BotUpdate::Start { chat_id } => {
                f.debug_struct("Start").field("chat_id", chat_id).finish()
            }
            BotUpdate::Stop { chat_id } => {
                f.debug_struct("Stop").field("chat_id", chat_id).finish()
            }
            BotUpdate::SharedContact {
                chat_id,
                phone,
                own,
            } => {
                let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
                f.debug_struct("SharedContact")
                    .field("chat_id", chat_id)
                    .field("phone", &mask_digits(&digits))
                    .field("own", own)
                    .finish()
            }
            BotUpdate::Other { chat_id } => {
                f.debug_struct("Other").field("chat_id", chat_id).finish()
            }
        }
    }
}

/// Verifies and reads a Bot API update. `header` is `X-Telegram-Bot-Api-Secret-Token`.
pub fn verify_bot_update(
    webhook_secret: &SecretString,
    header: Option<&str>,
    body: &[u8],
) -> Result<BotUpdate, CallbackError> {
    let token = presented(header)?;
    let expected = Sha256::digest(webhook_secret.expose_secret().as_bytes());
    if !same(&expected, &Sha256::digest(token.as_bytes())) {
        return Err(CallbackError::BadSignature);
    }
    let update: Update =
        serde_json::from_slice(body).map_err(|e| json_error("an Update object", &e))?;
    Ok(update.into_bot_update())
}

#[derive(Deserialize)]
struct Update {
    message: Option<Message>,
    edited_message: Option<Message>,
    callback_query: Option<CallbackQuery>,
}

#[derive(Deserialize)]
struct CallbackQuery {
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Message {
    chat: Chat,
    from: Option<User>,
    text: Option<String>,
    contact: Option<Contact>,
}

#[derive(Deserialize)]
struct Chat {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct User {
    id: i64,
}

#[derive(Deserialize)]
struct Contact {
    phone_number: String,
    /// Absent when the contact is not a Telegram user.
    user_id: Option<i64>,
}

impl Update {
    fn into_bot_update(self) -> BotUpdate {
        match self.message {
            Some(message) => message.into_bot_update(),
            None => BotUpdate::Other {
                chat_id: self
                    .edited_message
                    .or(self.callback_query.and_then(|query| query.message))
                    .and_then(|message| message.private_chat()),
            },
        }
    }
}

impl Message {
    fn private_chat(&self) -> Option<i64> {
        (self.chat.kind == "private").then_some(self.chat.id)
    }

    fn into_bot_update(self) -> BotUpdate {
        let Some(chat_id) = self.private_chat() else {
            return BotUpdate::Other { chat_id: None };
        };
        if let Some(contact) = self.contact {
            let sender = self.from.map(|user| user.id);
            return BotUpdate::SharedContact {
                chat_id,
                phone: contact.phone_number,
                own: contact.user_id.is_some() && contact.user_id == sender,
            };
        }
        match self.text.as_deref().and_then(command) {
            Some(name) if name.eq_ignore_ascii_case("start") => BotUpdate::Start { chat_id },
            Some(name) if name.eq_ignore_ascii_case("stop") => BotUpdate::Stop { chat_id },
            _ => BotUpdate::Other {
                chat_id: Some(chat_id),
            },
        }
    }
}

/// The command name of `/name`, `/name@bot` or `/name payload`.
fn command(text: &str) -> Option<&str> {
    let word = text.strip_prefix('/')?.split_whitespace().next()?;
    let name = word.split('@').next()?;
    (!name.is_empty()).then_some(name)
}

/// Removes the reply keyboard a previous message showed.
fn remove_keyboard() -> Value {
    json!({"remove_keyboard": true})
}

/// A one-button keyboard that shares the user's own contact.
fn contact_keyboard() -> Value {
    json!({
        "keyboard": [[{"text": "Share my phone number", "request_contact": true}]],
        "one_time_keyboard": true,
        "resize_keyboard": true
    })
}

/// The `sendMessage` body answering `/start`: asks for the user's own number.
pub fn ask_for_contact(chat_id: i64) -> Value {
    json!({
        "chat_id": chat_id,
        "text": "To receive your verification codes here, share your phone number with the button below.",
        "reply_markup": contact_keyboard()
    })
}

/// The `sendMessage` body confirming that the shared number is linked to this chat.
pub fn confirm_linked(chat_id: i64) -> Value {
    json!({
        "chat_id": chat_id,
        "text": "Thank you. Verification codes for your number will be sent to this chat. Send /stop to unlink it.",
        "reply_markup": remove_keyboard()
    })
}

/// The `sendMessage` body refusing a contact that is not the sender's own. The button is
/// offered again: it can only share the user's own number.
pub fn refuse_foreign_contact(chat_id: i64) -> Value {
    json!({
        "chat_id": chat_id,
        "text": "Only your own phone number can be linked. Please share it with the button below.",
        "reply_markup": contact_keyboard()
    })
}

/// The `sendMessage` body confirming `/stop`.
pub fn confirm_unlinked(chat_id: i64) -> Value {
    json!({
        "chat_id": chat_id,
        "text": "Done: this chat will no longer receive verification codes. Send /start to link it again.",
        "reply_markup": remove_keyboard()
    })
}

/// The `sendMessage` body answering anything else in a private chat.
pub fn polite_ignore(chat_id: i64) -> Value {
    json!({
        "chat_id": chat_id,
        "text": "This bot only delivers verification codes. Send /start to link your phone number, or /stop to unlink it."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_with_mentions_and_payloads() {
        assert_eq!(command("/start"), Some("start"));
        assert_eq!(command("/start@MyBot"), Some("start"));
        assert_eq!(command("/start@MyBot payload"), Some("start"));
        assert_eq!(command("/stop now"), Some("stop"));
        assert_eq!(command("start"), None);
        assert_eq!(command("/"), None);
        assert_eq!(command("/@MyBot"), None);
    }

    #[test]
    fn debug_masks_the_shared_number() {
        let update = BotUpdate::SharedContact {
            chat_id: 7,
            phone: "+5511966191717".into(),
            own: true,
        };
        let printed = format!("{update:?}");
        assert!(!printed.contains("5511966191717"), "{printed}");
        assert!(printed.contains("+55119*****17"), "{printed}");
    }
}
