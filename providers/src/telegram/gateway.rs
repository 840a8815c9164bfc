//! The Telegram Gateway API: verification codes to phone numbers.

use super::clean;
use super::unexpected;
use super::unreadable_acceptance;
use super::webhook::GATEWAY_WEBHOOK;
use super::CHANNELS;
use super::NAME;
use crate::http;
use crate::http::Reply;
use crate::Channel;
use crate::DeliveryStatus;
use crate::MessageProvider;
use crate::OutboundMessage;
use crate::ProbeOutcome;
use crate::ProviderContext;
use crate::ProviderError;
use crate::Receipt;
use crate::SettingError;
use crate::TelegramSettings;
use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::Deserialize;
use serde::Serialize;
use std::fmt;

/// The validity Telegram accepts for a verification message, in seconds.
pub(super) const GATEWAY_TTL: std::ops::RangeInclusive<u64> = 30..=3600;
/// Longest `callback_url` the Gateway accepts, in bytes.
pub(super) const MAX_CALLBACK_URL: usize = 256;

/// Sends codes through the Telegram Gateway API (`TELEGRAM_MODE=gateway`).
pub struct TelegramGateway {
    token: SecretString,
    base_url: String,
    sender_username: Option<String>,
    client: reqwest::Client,
    /// Delivery reports go here, when a public https URL is configured.
    callback_url: Option<String>,
}

impl fmt::Debug for TelegramGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramGateway")
            .field("base_url", &self.base_url)
            .field("sender_username", &self.sender_username)
            .field("callback_url", &self.callback_url)
            .finish_non_exhaustive()
    }
}

impl TelegramGateway {
    /// Built from validated settings: the Gateway token is present.
    pub(super) fn new(
        settings: &TelegramSettings,
        context: &ProviderContext,
    ) -> Result<TelegramGateway, SettingError> {
        let urls = &context.callback_urls;
        let callback_url = urls.url(GATEWAY_WEBHOOK);
        if let Some(url) = &callback_url {
            if url.len() > MAX_CALLBACK_URL {
                return Err(SettingError::new(
                    urls.setting(),
                    "is too long: the Telegram Gateway takes callback URLs of at most 256 bytes",
                    urls.example(),
                ));
            }
        }
        // Telegram refuses a send whose callback_url is not https: without one, codes
        // still go out, only delivery reports are lost.
        let callback_url = callback_url.filter(|url| {
            let https = url.starts_with("https://");
            if !https {
                tracing::warn!(
                    "{} is not https: the Telegram Gateway takes only https callback URLs, \
                     so codes are sent without delivery reports",
                    urls.setting()
                );
            }
            https
        });
        Ok(TelegramGateway {
            token: settings.gateway_token.clone().expect("validated"),
            base_url: settings.gateway_base_url.clone(),
            sender_username: settings.sender_username.clone(),
            client: context.client.clone(),
            callback_url,
        })
    }
}

#[async_trait]
impl MessageProvider for TelegramGateway {
    fn name(&self) -> &'static str {
        NAME
    }

    fn channels(&self) -> &[Channel] {
        &CHANNELS
    }

    /// The Gateway has no free authenticated call (`checkSendAbility` is billed).
    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        Ok(ProbeOutcome::NotSupported)
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
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
            sender_username: self.sender_username.as_deref(),
        };
        let url = format!("{}/sendVerificationMessage", self.base_url);
        let request = self
            .client
            .post(url)
            .bearer_auth(self.token.expose_secret());
        let reply = http::exchange(request.json(&body)).await?;
        let receipt = read_gateway_reply(&reply, self.token.expose_secret())?;
        tracing::debug!(
            message_id = %message.id,
            to = %message.to.masked(),
            request_id = receipt.provider_message_id.as_deref().unwrap_or_default(),
            "Telegram Gateway accepted the code"
        );
        Ok(receipt)
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
                .and_then(|result| serde_json::from_str::<RequestStatus>(result.get()).ok());
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
            receipt.cost = gateway_money(result.request_cost.as_deref());
            receipt.balance = gateway_money(result.remaining_balance.as_deref());
            Ok(receipt)
        }
        _ => Err(unexpected(token, reply)),
    }
}

/// What the Gateway takes as `code`: 4 to 8 ASCII digits.
pub(super) fn is_gateway_code(code: &str) -> bool {
    (4..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Serialize)]
pub(super) struct VerificationRequest<'a> {
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
pub(super) struct GatewayReply {
    ok: Option<bool>,
    /// Raw, so the amounts in it are read as written (never through f64).
    result: Option<Box<serde_json::value::RawValue>>,
    error: Option<String>,
}

/// A Gateway `RequestStatus`: the `result` of a send, and the body of a delivery report
/// (see [`super::webhook`]).
#[derive(Deserialize)]
pub(crate) struct RequestStatus {
    pub(crate) request_id: String,
    pub(crate) delivery_status: Option<GatewayDelivery>,
    /// What the request cost, and what is left, in the Gateway's credits (see
    /// [`gateway_money`]).
    pub(crate) request_cost: Option<Box<serde_json::value::RawValue>>,
    pub(crate) remaining_balance: Option<Box<serde_json::value::RawValue>>,
}

/// A Gateway amount. `RequestStatus.request_cost` ("Total request cost incurred") and
/// `remaining_balance` ("Remaining balance in credits") are JSON floats in the Gateway
/// API docs (core.telegram.org/gateway/api#requeststatus), which name no currency: the
/// account is funded through Fragment and counted in credits. So the currency is left
/// unnamed rather than guessed.
pub(crate) fn gateway_money(raw: Option<&serde_json::value::RawValue>) -> Option<crate::Money> {
    crate::Money::parse(&crate::money::decimal_text(raw?)?, None)
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
pub(super) fn gateway_error(error: &str, detail: String, reply: &Reply) -> ProviderError {
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
}
