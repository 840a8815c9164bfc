//! The SMS API: the form it takes and the always-200 reply it gives.

use super::money;
use super::receipt;
use super::unexpected_status;
use super::VonageProvider;
use super::NAME;
use crate::http;
use crate::http::scrub;
use crate::http::Reply;
use crate::text::is_gsm7;
use crate::OutboundMessage;
use crate::ProviderError;
use crate::Receipt;
use secrecy::ExposeSecret;
use serde::Deserialize;

impl VonageProvider {
    pub(super) async fn send_sms_api(
        &self,
        message: &OutboundMessage,
    ) -> Result<Receipt, ProviderError> {
        let (key, secret) = self.settings.key_pair().expect("checked in new");
        let ttl_ms = message
            .ttl
            .as_millis()
            .clamp(20_000, 604_800_000)
            .to_string();
        let mut form = vec![
            ("api_key", key),
            ("api_secret", secret.expose_secret()),
            ("from", &self.settings.from),
            ("to", message.to.digits()),
            ("text", &message.text),
        ];
        if !is_gsm7(&message.text) {
            form.push(("type", "unicode"));
        }
        form.push(("ttl", &ttl_ms));
        form.push(("client-ref", &message.id));
        if let Some(callback) = &self.callback_url {
            form.push(("callback", callback));
        }
        let request = self
            .client
            .post(format!("{}/sms/json", self.settings.sms_base_url))
            .form(&form);
        read_sms_api_reply(http::exchange(request).await?, secret.expose_secret())
    }
}

/// Reads the SMS API's answer to a send (always HTTP 200; each part has a status).
/// `secret` is the API secret the form carried: masked in any reply before it can reach
/// an error detail. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_sms_api_reply(reply: Reply, secret: &str) -> Result<Receipt, ProviderError> {
    let Reply {
        status,
        retry_after,
        body,
    } = reply;
    // The secret travels in the form: a reply that echoes it (a proxy's error page)
    // must not carry it into an error detail.
    let body = redact(body, secret);
    // Any 2xx is an answer to read (a proxy may say 202): only the reply's own statuses
    // tell a refusal, so a 2xx never fails over to send a second code.
    if !status.is_success() {
        return Err(unexpected_status(status, retry_after, &body));
    }
    let Ok(reply) = serde_json::from_slice::<SmsReply>(&body) else {
        // Errors come as readable JSON with a non-zero status: a 200 that cannot be
        // read is Vonage's acceptance.
        tracing::warn!("vonage answered 200 with a reply that cannot be read");
        return Ok(http::unreadable_acceptance(NAME));
    };
    let (accepted, failed): (Vec<&SmsPart>, Vec<&SmsPart>) =
        reply.messages.iter().partition(|part| part.status == "0");
    let Some(first) = accepted.first() else {
        return match failed.first() {
            Some(failed) => Err(sms_error(failed)),
            None => Ok(http::unreadable_acceptance(NAME)),
        };
    };
    if let Some(failed) = failed.first() {
        // Some parts went out: the message is with Vonage, so this is no failure to
        // fail over (the user would get the code twice), only a partial one to log.
        tracing::warn!(
            status = %scrub(&failed.status),
            "vonage accepted only some parts of the message"
        );
    }
    let mut ids = accepted.iter().filter_map(|part| part.message_id.clone());
    let mut receipt = receipt(ids.next(), &first.status);
    receipt.part_ids = ids.collect();
    Ok(money::with_sms_money(receipt, &body))
}

/// `body` with every occurrence of `secret` masked.
pub(super) fn redact(body: Vec<u8>, secret: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(&body);
    if secret.is_empty() || !text.contains(secret) {
        return body;
    }
    text.replace(secret, "[redacted]").into_bytes()
}

#[derive(Deserialize)]
pub(super) struct SmsReply {
    messages: Vec<SmsPart>,
}

#[derive(Deserialize)]
pub(super) struct SmsPart {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text")]
    error_text: Option<String>,
}

/// Maps an SMS API part status (see the SMS API's error table, `x-errors` in its spec)
/// onto a `ProviderError`; only called when no part of the message was accepted.
pub(super) fn sms_error(part: &SmsPart) -> ProviderError {
    let detail = scrub(&format!(
        "status {}: {}",
        part.status,
        part.error_text.as_deref().unwrap_or("")
    ));
    match part.status.as_str() {
        // Throttled / too many binds: nothing was sent (no part was accepted).
        "1" | "10" => ProviderError::RateLimited {
            detail,
            retry_after: None,
        },
        "5" => ProviderError::Unavailable { detail },
        // Our configuration: 15 the sender id is not authorised, 23 the callback URL we
        // sent is too long or has illegal characters.
        code @ ("15" | "23") => ProviderError::Misconfigured {
            code: code.to_owned(),
            detail,
        },
        "6" | "33" => ProviderError::InvalidRecipient { detail },
        "7" => ProviderError::RecipientOptedOut { detail },
        // Bad credentials, bad signature, signature and secret both sent.
        "4" | "14" | "32" => ProviderError::Unauthorized { detail },
        // Our account: barred, out of credit, not provisioned for the SMS API, still in
        // demo mode (whitelisted destinations only).
        "8" | "9" | "11" | "29" => ProviderError::AccountUnusable { detail },
        _ => ProviderError::Rejected { detail },
    }
}
