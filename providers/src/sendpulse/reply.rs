//! How SendPulse's answers are read: acceptances, refusals and error texts.

use super::NAME;
use crate::http;
use crate::http::protocol_error;
use crate::http::scrub;
use crate::http::Reply;
use crate::DeliveryStatus;
use crate::ProviderError;
use crate::Receipt;
use serde::Deserialize;
use serde_json::Value;

/// How SendPulse's answers are read.
impl Reply {
    pub(super) fn redact(&mut self, secret: &str) {
        let text = String::from_utf8_lossy(&self.body);
        if !secret.is_empty() && text.contains(secret) {
            self.body = text.replace(secret, "[redacted]").into_bytes();
        }
    }

    /// SendPulse's own error text, scrubbed, if the body carries any.
    pub(super) fn provider_detail(&self) -> Option<String> {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .ok()
            .and_then(|body| body.detail())
    }

    /// SendPulse's own error text, or the HTTP status when the body has none.
    pub(super) fn detail(&self) -> String {
        self.provider_detail()
            .unwrap_or_else(|| format!("HTTP {}", self.status.as_u16()))
    }

    /// The error for a reply that is not a success.
    pub(super) fn error(&self) -> ProviderError {
        match self.status.as_u16() {
            401 | 403 => ProviderError::Unauthorized {
                detail: self.detail(),
            },
            400..=499 if !http::status_decides(self.status) => self.refused(),
            _ => http::status_error(self.status, self.retry_after, self.detail(), &self.body),
        }
    }

    /// A refusal: a 4xx, or a 2xx whose `result`/`success` is not true. Without any
    /// error text it is a reply of the wrong shape.
    pub(super) fn refused(&self) -> ProviderError {
        match self.provider_detail() {
            Some(detail) => refusal(detail),
            None => protocol_error(self.status, &self.body),
        }
    }
}

/// Every error field SendPulse is known to answer with.
#[derive(Deserialize)]
pub(super) struct ErrorBody {
    error_code: Option<Value>,
    error: Option<Value>,
    message: Option<String>,
    error_description: Option<String>,
    errors: Option<Value>,
}

impl ErrorBody {
    /// The fields joined and scrubbed; `None` when the body has none of them.
    pub(super) fn detail(&self) -> Option<String> {
        let text = |value: &Value| match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut parts: Vec<String> = Vec::new();
        if let Some(code) = &self.error_code {
            parts.push(format!("error_code {}", text(code)));
        }
        parts.extend(self.error.as_ref().map(text));
        for part in [&self.message, &self.error_description]
            .into_iter()
            .flatten()
        {
            // OAuth errors repeat the description as `message`.
            if !parts.contains(part) {
                parts.push(part.clone());
            }
        }
        parts.extend(self.errors.as_ref().map(Value::to_string));
        (!parts.is_empty()).then(|| scrub(&parts.join(": ")))
    }
}

/// SendPulse documents no per-cause error codes for these endpoints, so the refusal is
/// read from its text: a blacklisted or malformed number is the recipient's problem;
/// balance, sender and template troubles are our account's (another provider may do);
/// anything else is a rejection.
pub(super) fn refusal(detail: String) -> ProviderError {
    let text = detail.to_ascii_lowercase();
    let mentions = |words: &[&str]| words.iter().any(|word| text.contains(word));
    if mentions(&["black", "unsubscribed"]) {
        ProviderError::RecipientOptedOut { detail }
    } else if text.contains("phone") && mentions(&["invalid", "incorrect", "wrong", "not valid"]) {
        ProviderError::InvalidRecipient { detail }
    } else if mentions(&["balance", "funds", "money", "sender", "template"]) {
        ProviderError::AccountUnusable { detail }
    } else {
        ProviderError::Rejected { detail }
    }
}

/// Reads the answer to an SMS send. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_sms(reply: &Reply) -> Result<Receipt, ProviderError> {
    if !reply.status.is_success() {
        return Err(reply.error());
    }
    #[derive(Deserialize)]
    struct SmsReply {
        result: Option<bool>,
        campaign_id: Option<Value>,
        counters: Option<Counters>,
    }
    #[derive(Deserialize)]
    struct Counters {
        sends: Option<u64>,
        exceptions: Option<u64>,
    }
    let Ok(parsed) = serde_json::from_slice::<SmsReply>(&reply.body) else {
        return Ok(accepted_unread(reply));
    };
    if let Some(answer) = settled_by_marker(reply, parsed.result) {
        return answer;
    }
    let campaign_id = match parsed.campaign_id {
        Some(Value::Number(id)) => Some(id.to_string()),
        Some(Value::String(id)) if !id.is_empty() => Some(id),
        _ => None,
    };
    // A campaign that sends to nobody: SendPulse excluded the number.
    if let Some(Counters {
        sends: Some(0),
        exceptions,
    }) = parsed.counters
    {
        return Err(ProviderError::Rejected {
            detail: format!(
                "campaign created but no SMS sent: SendPulse excluded the number ({} exception(s))",
                exceptions.unwrap_or(0)
            ),
        });
    }
    Ok(Receipt::new(
        NAME,
        campaign_id,
        DeliveryStatus::Queued,
        None,
    ))
}

/// What SendPulse's own success marker (`result` or `success`) says of a 2xx: `None`
/// when it says `true` (read on), a refusal when `false`, an acceptance of unknown id
/// when it is missing.
fn settled_by_marker(
    reply: &Reply,
    marker: Option<bool>,
) -> Option<Result<Receipt, ProviderError>> {
    match marker {
        Some(true) => None,
        Some(false) => Some(Err(reply.refused())),
        None => Some(Ok(accepted_unread(reply))),
    }
}

/// A 2xx without SendPulse's `false`: the message is with SendPulse, id unknown.
pub(super) fn accepted_unread(reply: &Reply) -> Receipt {
    tracing::warn!(
        status = reply.status.as_u16(),
        "sendpulse accepted the message but its reply cannot be read"
    );
    http::unreadable_acceptance(NAME)
}

/// Reads the answer to a WhatsApp template send. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_whatsapp(reply: &Reply) -> Result<Receipt, ProviderError> {
    if !reply.status.is_success() {
        return Err(reply.error());
    }
    #[derive(Deserialize)]
    struct WhatsappReply {
        success: Option<bool>,
        data: Option<Message>,
    }
    #[derive(Deserialize)]
    struct Message {
        id: Option<String>,
        status: Option<i64>,
    }
    let Ok(parsed) = serde_json::from_slice::<WhatsappReply>(&reply.body) else {
        return Ok(accepted_unread(reply));
    };
    if let Some(answer) = settled_by_marker(reply, parsed.success) {
        return answer;
    }
    let (id, status) = match parsed.data {
        Some(Message {
            id: Some(id),
            status,
        }) if !id.is_empty() => (id, status),
        _ => return Ok(accepted_unread(reply)),
    };
    // The Message statuses of the chatbot API: 1 new, 2 sent, 3 delivered, 4 opened,
    // 5 redirected, 6 rejected.
    let (status, raw) = match status.unwrap_or(1) {
        1 => (DeliveryStatus::Queued, "new".to_owned()),
        2 => (DeliveryStatus::Sent, "sent".to_owned()),
        3 => (DeliveryStatus::Delivered, "delivered".to_owned()),
        4 => (DeliveryStatus::Delivered, "opened".to_owned()),
        5 => (DeliveryStatus::Delivered, "redirected".to_owned()),
        6 => {
            return Err(ProviderError::Rejected {
                detail: "WhatsApp message status 6 (rejected)".to_owned(),
            })
        }
        other => (DeliveryStatus::Queued, other.to_string()),
    };
    Ok(Receipt::new(NAME, Some(id), status, Some(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_detail_joins_the_known_fields_and_scrubs_numbers() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error":"invalid_client","error_description":"Client authentication failed","message":"Client authentication failed"}"#,
        )
        .unwrap();
        assert_eq!(
            body.detail().as_deref(),
            Some("invalid_client: Client authentication failed")
        );
        let body: ErrorBody = serde_json::from_str(
            r#"{"error_code":213,"message":"Phone 5511966191717 is invalid"}"#,
        )
        .unwrap();
        assert_eq!(
            body.detail().as_deref(),
            Some("error_code 213: Phone **** is invalid")
        );
        let body: ErrorBody = serde_json::from_str(r#"{"unrelated":true}"#).unwrap();
        assert_eq!(body.detail(), None);
    }

    #[test]
    fn refusals_are_read_from_the_text() {
        assert_eq!(
            refusal("Phone number is invalid".into()).code(),
            "invalid_recipient"
        );
        assert_eq!(
            refusal("Phone is in the blacklist".into()).code(),
            "recipient_opted_out"
        );
        for account in [
            "Not enough funds",
            "Insufficient balance",
            "Sender is not active",
            "Template not found",
        ] {
            assert_eq!(
                refusal(account.into()).code(),
                "account_unusable",
                "{account}"
            );
        }
        assert_eq!(refusal("Body is empty".into()).code(), "rejected");
    }
}
