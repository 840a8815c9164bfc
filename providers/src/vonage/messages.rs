//! The Messages API: SMS and WhatsApp as JSON, answers as RFC 7807 problems.

use super::jwt::MessagesAuth;
use super::receipt;
use super::unexpected_status;
use super::VonageProvider;
use super::NAME;
use crate::http;
use crate::http::scrub;
use crate::http::Reply;
use crate::Channel;
use crate::OutboundMessage;
use crate::ProviderError;
use crate::Receipt;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use std::fmt::Write as _;
use std::time::Duration;

impl VonageProvider {
    pub(super) async fn send_messages_api(
        &self,
        message: &OutboundMessage,
    ) -> Result<Receipt, ProviderError> {
        let to = message.to.digits();
        let from = &self.settings.from;
        let body = match (message.channel, &self.settings.whatsapp_template) {
            (Channel::Whatsapp, Some(template)) => {
                let code = message
                    .code
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .ok_or(ProviderError::CodeRequired)?;
                // Authentication templates carry the code twice: in the body text and
                // as the URL parameter of the copy-code button (index 0).
                json!({
                    "message_type": "custom",
                    "channel": "whatsapp",
                    "to": to,
                    "from": from,
                    "custom": {
                        "type": "template",
                        "template": {
                            "name": template.name,
                            "language": {"policy": "deterministic", "code": template.locale},
                            "components": [
                                {
                                    "type": "body",
                                    "parameters": [{"type": "text", "text": code}],
                                },
                                {
                                    "type": "button",
                                    "sub_type": "url",
                                    "index": "0",
                                    "parameters": [{"type": "text", "text": code}],
                                },
                            ],
                        },
                    },
                    "client_ref": message.id,
                })
            }
            (Channel::Whatsapp, None) => json!({
                "message_type": "text",
                "channel": "whatsapp",
                "to": to,
                "from": from,
                "text": message.text,
                "client_ref": message.id,
            }),
            _ => json!({
                "message_type": "text",
                "channel": "sms",
                "to": to,
                "from": from,
                "text": message.text,
                "client_ref": message.id,
                "ttl": message.ttl.as_secs().clamp(20, 604_800),
            }),
        };
        let request = self
            .client
            .post(format!("{}/v1/messages", self.settings.messages_base_url))
            .json(&body);
        let request = match &self.auth {
            MessagesAuth::Jwt(signer) => request.bearer_auth(signer.token()?.expose_secret()),
            MessagesAuth::Basic => {
                let (key, secret) = self.settings.key_pair().expect("checked in new");
                request.basic_auth(key, Some(secret.expose_secret()))
            }
        };
        read_messages_api_reply(http::exchange(request).await?)
    }
}

/// Reads the Messages API's answer to a send: `202 {message_uuid}` or an RFC 7807
/// problem. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_messages_api_reply(reply: Reply) -> Result<Receipt, ProviderError> {
    let Reply {
        status,
        retry_after,
        body,
    } = reply;
    if status.is_success() {
        return match serde_json::from_slice::<Accepted>(&body) {
            Ok(accepted) => Ok(receipt(Some(accepted.message_uuid), "accepted")),
            Err(_) => {
                tracing::warn!(
                    status = status.as_u16(),
                    "vonage accepted the message but its reply has no readable message_uuid"
                );
                Ok(http::unreadable_acceptance(NAME))
            }
        };
    }
    match serde_json::from_slice::<Problem>(&body) {
        Ok(problem) => Err(problem_error(status, retry_after, &problem)),
        Err(_) => Err(unexpected_status(status, retry_after, &body)),
    }
}

#[derive(Deserialize)]
pub(super) struct Accepted {
    message_uuid: String,
}

/// An RFC 7807 problem as the Messages API sends it.
#[derive(Deserialize)]
pub(super) struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    invalid_parameters: Vec<InvalidParameter>,
}

#[derive(Deserialize)]
pub(super) struct InvalidParameter {
    name: Option<String>,
    reason: Option<String>,
}

/// Maps a Messages API problem onto a `ProviderError`: by its code where the code says
/// more than the HTTP status, otherwise by the status.
pub(super) fn problem_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    problem: &Problem,
) -> ProviderError {
    let fragment = problem.kind.rsplit_once('#').map_or("", |(_, f)| f);
    let code = fragment.parse::<u16>().ok().filter(|c| *c < 10_000);
    // The code stays as is (scrub would mask a four-digit code); the texts are scrubbed.
    let label = match code {
        Some(code) => format!(" {code}"),
        None if !fragment.is_empty() => format!(" {}", scrub(fragment)),
        None => String::new(),
    };
    let mut texts = String::new();
    for text in [problem.title.as_deref(), problem.detail.as_deref()]
        .into_iter()
        .flatten()
    {
        write!(texts, ": {text}").unwrap();
    }
    for parameter in &problem.invalid_parameters {
        let name = parameter.name.as_deref().unwrap_or("?");
        let reason = parameter.reason.as_deref().unwrap_or("");
        write!(texts, "; {name}: {reason}").unwrap();
    }
    let detail = format!("HTTP {}{label}{}", status.as_u16(), scrub(&texts));

    let misconfigured = |code: u16, detail: String| ProviderError::Misconfigured {
        code: code.to_string(),
        detail,
    };
    // The catalogue is the Messages API spec's `x-errors` (1000-1490).
    let error = match code {
        Some(1000 | 1241 | 1472) => ProviderError::RateLimited {
            detail,
            retry_after,
        },
        // Platform or destination trouble that may clear: the outcome is unknown.
        Some(1030 | 1100 | 1180 | 1220 | 1230 | 1331) => ProviderError::Unavailable { detail },
        // The number: invalid message (unknown prefix), invalid or inactive recipient.
        Some(1040 | 1170 | 1190 | 1430) => ProviderError::InvalidRecipient { detail },
        // Barred, or the user sent STOP.
        Some(1050 | 1240) => ProviderError::RecipientOptedOut { detail },
        // Not a user of the channel (WhatsApp), or a device that cannot receive it: SMS
        // may still reach them.
        Some(1300 | 1310) => ProviderError::RecipientNotRegistered { detail },
        // Our account: barred, provider quota, not enabled for REST, demo-mode
        // destination list, no number pool, daily limit (10DLC).
        Some(1060 | 1070 | 1080 | 1160 | 1242 | 1460) => ProviderError::AccountUnusable { detail },
        // Fraud Defender country or network block: set on our account for this
        // destination; another provider may reach it.
        Some(1474 | 1475) => ProviderError::RegionNotEnabled { detail },
        // Our configuration: invalid template, illegal sender, facility not enabled,
        // unsupported channel, invalid sender, message type not for the channel, free
        // text outside the 24 h window (a template is needed), originating number on a
        // Do-Not-Originate list, entity/header/content id required by the destination's
        // regulator.
        Some(
            code @ (1022 | 1120 | 1140 | 1340 | 1400 | 1420 | 1440 | 1476 | 1480 | 1481 | 1482),
        ) => misconfigured(code, detail),
        _ => match status.as_u16() {
            429 => ProviderError::RateLimited {
                detail,
                retry_after,
            },
            401 | 403 => ProviderError::Unauthorized { detail },
            // Low balance: ours, not the message's; another provider may do.
            402 => ProviderError::AccountUnusable { detail },
            500.. => ProviderError::Unavailable { detail },
            _ => ProviderError::Rejected { detail },
        },
    };
    // A 4xx other than 429 is this request refused: whatever its code says, repeating it
    // will not help, and it says nothing about the provider's health (the circuit counts
    // only transient failures).
    match error {
        ProviderError::RateLimited { detail, .. } | ProviderError::Unavailable { detail }
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS =>
        {
            ProviderError::Rejected { detail }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn problem_detail_keeps_the_code_and_scrubs_the_texts() {
        let problem = Problem {
            kind: "https://developer.vonage.com/api-errors/messages#1170".into(),
            title: Some("Invalid recipient".into()),
            detail: Some("The `to` 5511966191717 is invalid".into()),
            invalid_parameters: vec![],
        };
        let error = problem_error(StatusCode::UNPROCESSABLE_ENTITY, None, &problem);
        assert_eq!(
            error,
            ProviderError::InvalidRecipient {
                detail: "HTTP 422 1170: Invalid recipient: The `to` **** is invalid".into()
            }
        );
    }
}
