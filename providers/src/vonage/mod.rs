//! Vonage: SMS through the SMS API, or SMS and WhatsApp through the Messages API
//! (`VONAGE_API=sms|messages`).
//!
//! Wire facts that matter:
//!
//! - **SMS API**: `POST {VONAGE_SMS_BASE_URL}/sms/json`, form-urlencoded (UTF-8) with the
//!   credentials in the body: `api_key`, `api_secret`, `from`, `to` (digits, no `+`),
//!   `text`, `type=unicode` only when the text has a character outside GSM 03.38 (basic
//!   table plus extension table, see [`crate::text::is_gsm7`]), `ttl` in milliseconds, `client-ref`
//!   (our id) and `callback` (`{PUBLIC_BASE_URL}/webhooks/vonage`) when a public URL is
//!   set. The reply is **HTTP 200 even on failure**: one `messages[]` entry per SMS part,
//!   each with its own `message-id` and, later, its own delivery receipt. A part with
//!   `status: "0"` was accepted: then the message is with Vonage (a failover would send
//!   the code twice), so the receipt keeps every accepted part's id. Only when no part
//!   was accepted is the reply an error, whose `error-text` is kept (scrubbed) in the
//!   detail. A 200 whose body cannot be read is an acceptance without an id (Vonage
//!   answers 200 to failures too, but an error always comes as readable JSON with a
//!   non-zero status). The secret travels in the form, so it is masked in any reply
//!   before the reply can become an error.
//! - **Messages API**: `POST {VONAGE_MESSAGES_BASE_URL}/v1/messages`, JSON
//!   `{message_type, channel, to, from, text, client_ref}` with `to`/`from` as digits
//!   without `+` (plus `ttl` in seconds for SMS). WhatsApp may open a conversation only
//!   with an approved template, and codes go in an authentication template, which has a
//!   copy-code (or one-tap) button: Vonage sends such interactive templates as
//!   `message_type: "custom"` with `custom: {type: "template", template: {name, language:
//!   {policy: "deterministic", code}, components: [body parameter = code, button
//!   (sub_type url, index 0) parameter = code]}}`
//!   (<https://developer.vonage.com/en/messages/code-snippets/whatsapp/send-authentication-template>;
//!   the Node SDK's `WhatsAppCustom` sends the same `custom` object through as is; the
//!   button `index` is the string `"0"`, as Meta's Cloud API examples write it),
//!   so `VONAGE_WHATSAPP_TEMPLATE` (`name` or `name:language`, default `en_US`) is
//!   required with whatsapp. Auth is `Bearer` with an RS256 JWT
//!   (`application_id`, `iat`, `jti`, `exp`) signed with the application's private key,
//!   reused until shortly before it expires, or `Basic key:secret` when no application is
//!   configured. Success is `202 {message_uuid}` (any 2xx is an acceptance, even without
//!   a readable uuid); errors are RFC 7807 problems whose `type` ends in `#<code>`
//!   (`...#1170`, the catalogue in the spec's `x-errors`), with `Retry-After` on 429. A 4xx
//!   other than 429 is a refusal of this request, never transient (see `problem_error`
//!   in `messages.rs`).
//! - Failures of our account (no credit, barred, sender or template not allowed) are
//!   `account_unusable` in both APIs: another provider may still deliver.
//!   There is no per-message callback here: this adapter does not send the optional
//!   `webhook_url` override, so status webhooks go where the Vonage application's
//!   Status URL points (set it to `{PUBLIC_BASE_URL}/webhooks/vonage`).
//! - Probe: `GET {VONAGE_SMS_BASE_URL}/account/get-balance` with Basic key:secret.

mod jwt;
mod messages;
mod money;
mod settings;
mod sms;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::http::{self, Reply};
use crate::settings::SettingError;
use crate::{
    Channel, DeliveryStatus, MessageProvider, OutboundMessage, ProbeOutcome, ProviderContext,
    ProviderError, Receipt,
};
pub use jwt::Clock;
use jwt::{signing_key, JwtSigner, MessagesAuth};
pub use messages::read_messages_api_reply;
pub use money::read_account_balance;
pub use settings::{VonageApi, VonageSettings, WhatsappTemplate};
pub use sms::read_sms_api_reply;

const NAME: &str = "vonage";

/// Sends through Vonage's SMS API or Messages API.
pub struct VonageProvider {
    settings: VonageSettings,
    client: reqwest::Client,
    callback_url: Option<String>,
    auth: MessagesAuth,
}

impl VonageProvider {
    /// Builds the provider on the shared client; checks the credentials the API needs.
    pub fn new(
        settings: VonageSettings,
        context: &ProviderContext,
    ) -> Result<VonageProvider, SettingError> {
        Self::with_clock(settings, context, Arc::new(SystemTime::now))
    }

    /// As [`VonageProvider::new`], with the clock that dates the JWTs.
    pub fn with_clock(
        settings: VonageSettings,
        context: &ProviderContext,
        clock: Clock,
    ) -> Result<VonageProvider, SettingError> {
        let application = settings
            .application_id
            .as_ref()
            .zip(settings.private_key.as_ref());
        let auth = match (settings.api, application) {
            (VonageApi::Messages, Some((id, pem))) => {
                MessagesAuth::Jwt(JwtSigner::new(id.clone(), signing_key(pem)?, clock))
            }
            _ if settings.key_pair().is_some() => MessagesAuth::Basic,
            _ => {
                return Err(SettingError::new(
                    "VONAGE_API_KEY",
                    "key and secret (or, for the Messages API, an application) are required",
                    "abcd1234",
                ))
            }
        };
        Ok(VonageProvider {
            callback_url: context.callback_url(webhook::WEBHOOK),
            client: context.client.clone(),
            settings,
            auth,
        })
    }
}

#[async_trait]
impl MessageProvider for VonageProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn channels(&self) -> &[Channel] {
        &self.settings.channels
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        if !self.serves(message.channel) {
            return Err(ProviderError::Rejected {
                detail: format!("vonage is not configured for {}", message.channel),
            });
        }
        tracing::debug!(
            to = %message.to.masked(),
            channel = %message.channel,
            api = ?self.settings.api,
            "sending through vonage"
        );
        let result = match self.settings.api {
            VonageApi::Sms => self.send_sms_api(message).await,
            VonageApi::Messages => self.send_messages_api(message).await,
        };
        if let Err(error) = &result {
            tracing::debug!(to = %message.to.masked(), code = error.code(), "vonage send failed");
        }
        result
    }

    /// Reads the account balance, which needs the key and secret.
    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        let Some(request) = self.balance_request() else {
            return Ok(ProbeOutcome::NotSupported);
        };
        read_balance_reply(http::exchange(request).await?)
    }

    async fn balance(&self) -> Result<Option<crate::Money>, ProviderError> {
        self.fetch_balance().await
    }
}

/// Reads the answer to the balance probe. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_balance_reply(reply: Reply) -> Result<ProbeOutcome, ProviderError> {
    let Reply {
        status,
        retry_after,
        body,
    } = reply;
    if status != StatusCode::OK {
        return Err(match status.as_u16() {
            401 | 403 => ProviderError::Unauthorized {
                detail: format!("HTTP {}", status.as_u16()),
            },
            _ => unexpected_status(status, retry_after, &body),
        });
    }
    let balance: Balance =
        serde_json::from_slice(&body).map_err(|_| http::protocol_error(status, &body))?;
    Ok(ProbeOutcome::Verified(format!(
        "account balance {:.2} EUR",
        balance.value
    )))
}

fn receipt(id: Option<String>, raw_status: &str) -> Receipt {
    // Vonage accepted it; delivery is reported later by webhook.
    Receipt::new(
        NAME,
        id,
        DeliveryStatus::Queued,
        Some(raw_status.to_owned()),
    )
}

/// A non-success reply that is not in the provider's documented error shape.
fn unexpected_status(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    let detail = format!("HTTP {} {}", status.as_u16(), http::body_detail(body));
    http::status_error(status, retry_after, detail, body)
}

#[derive(Deserialize)]
struct Balance {
    value: f64,
}
