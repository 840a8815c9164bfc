//! Twilio: SMS and WhatsApp through the Programmable Messaging API (2010-04-01).
//!
//! Wire facts this adapter relies on:
//! - `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP Basic
//!   `AccountSid:AuthToken`, a form-urlencoded (UTF-8) body: `To`, `From` or
//!   `MessagingServiceSid`, `Body`, optional `StatusCallback`, and `ValidityPeriod` in
//!   seconds (Twilio accepts 1 to 36000).
//! - WhatsApp puts `whatsapp:` before the `To` and `From` numbers. A business may open a
//!   WhatsApp conversation only with an approved template (free text reaches a user only
//!   within 24 h of their last message; outside it Twilio accepts the request and the
//!   message is dropped later), so `TWILIO_CONTENT_SID` is required with whatsapp: a
//!   Content template of type `whatsapp/authentication` (copy-code button), sent as
//!   `ContentSid` plus `ContentVariables={"1":"<code>"}` instead of `Body`
//!   (<https://www.twilio.com/docs/content/whatsappauthentication>: "a single variable must
//!   be defined at send time and set to the one-time passcode").
//! - Success is `201` with the Message resource; its `sid` matches later status
//!   callbacks and its `status` is usually `queued` or `accepted`. Any 2xx is an
//!   acceptance: one whose body cannot be read (or has no `sid`) is a receipt without a
//!   provider id, never a failure that would send the code again elsewhere.
//! - Errors are JSON `{"code":21211,"message":..,"more_info":..,"status":400}` or the
//!   RFC 9457 form `{"type","title","status","code","detail"}`. HTTP 429 and code
//!   20429 mean throttled (not processed); 5xx means the outcome is unknown. Error codes
//!   are classed by whose fault they are (<https://www.twilio.com/docs/api/errors>, one page
//!   per code; see [`code_error`]): our configuration (`provider_misconfigured`), our
//!   account (`account_unusable`), throttling, or the number (`invalid_recipient`).
//! - A `201` whose status is already `failed` or `undelivered` carries `error_code` and
//!   `error_message`; it is reported as that error, not as a receipt.
//! - Probe: `GET {base}/2010-04-01/Accounts/{AccountSid}.json`. That reply carries the
//!   account's auth token, so it is never echoed, not even in a protocol error.

mod money;
mod settings;
pub mod webhook;

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::http::{self, scrub, Reply};
use crate::settings::SettingError;
use crate::{
    Channel, DeliveryStatus, Followup, MessageProvider, Money, OutboundMessage, ProbeOutcome,
    ProviderContext, ProviderError, Receipt,
};

pub use money::{read_balance_reply, read_message_reply};
pub use settings::{TwilioSender, TwilioSettings};
use settings::{DEFAULT_BASE_URL, VALIDITY_SECONDS};

/// Maps a Twilio message status onto otp-relay's vocabulary (also for status callbacks).
///
/// `accepted`, `scheduled`, `queued`, `sending` and any status Twilio adds later mean
/// Twilio holds the message and its fate is not known yet.
pub fn delivery_status(raw: &str) -> DeliveryStatus {
    match raw {
        "sent" | "partially_delivered" => DeliveryStatus::Sent,
        "delivered" | "read" => DeliveryStatus::Delivered,
        "undelivered" => DeliveryStatus::Undelivered,
        "failed" | "canceled" => DeliveryStatus::Failed,
        _ => DeliveryStatus::Queued,
    }
}

/// Sends SMS and WhatsApp messages through one Twilio account.
#[derive(Debug)]
pub struct TwilioProvider {
    settings: TwilioSettings,
    client: reqwest::Client,
    /// Parsed once: a `&str` would be parsed again on every send.
    messages_url: reqwest::Url,
    /// `Authorization: Basic ...`, encoded once (marked sensitive: its `Debug` hides it).
    authorization: reqwest::header::HeaderValue,
    account_url: String,
    status_callback: Option<String>,
}

impl TwilioProvider {
    pub fn new(
        settings: TwilioSettings,
        context: &ProviderContext,
    ) -> Result<TwilioProvider, SettingError> {
        settings.validate()?;
        let base = settings.base_url.trim_end_matches('/');
        let account_url = format!("{base}/2010-04-01/Accounts/{}", settings.account_sid);
        let messages_url =
            reqwest::Url::parse(&format!("{account_url}/Messages.json")).map_err(|e| {
                SettingError::new(
                    "TWILIO_BASE_URL",
                    format!("not a URL ({e})"),
                    DEFAULT_BASE_URL,
                )
            })?;
        Ok(TwilioProvider {
            messages_url,
            authorization: basic_authorization(
                &settings.account_sid,
                settings.auth_token.expose_secret(),
            ),
            account_url: format!("{account_url}.json"),
            status_callback: context.callback_url(webhook::WEBHOOK),
            client: context.client.clone(),
            settings,
        })
    }

    /// The form body for `message`: its fields in the order they are sent, encoded as
    /// reqwest's `form` encodes them, straight into one string (a list of owned pairs
    /// first cost an allocation per field).
    fn form(&self, message: &OutboundMessage) -> Result<String, ProviderError> {
        let whatsapp = message.channel == Channel::Whatsapp;
        let address = |number| whatsapp_address(whatsapp, number);
        let mut form =
            form_urlencoded::Serializer::new(String::with_capacity(128 + message.text.len() * 3));
        form.append_pair("To", &address(message.to.e164()));
        match &self.settings.sender {
            TwilioSender::From(from) => form.append_pair("From", &address(from)),
            TwilioSender::MessagingService(sid) => form.append_pair("MessagingServiceSid", sid),
        };
        match &self.settings.content_sid {
            Some(content_sid) if whatsapp => {
                let code = message
                    .code
                    .as_deref()
                    .filter(|code| !code.trim().is_empty())
                    .ok_or(ProviderError::CodeRequired)?;
                form.append_pair("ContentSid", content_sid);
                form.append_pair(
                    "ContentVariables",
                    &serde_json::json!({ "1": code }).to_string(),
                );
            }
            _ => {
                form.append_pair("Body", &message.text);
            }
        }
        if let Some(url) = &self.status_callback {
            form.append_pair("StatusCallback", url);
        }
        // A code that reaches the phone after it expired is useless: let Twilio drop it.
        let validity = message
            .ttl
            .as_secs()
            .clamp(*VALIDITY_SECONDS.start(), *VALIDITY_SECONDS.end());
        form.append_pair("ValidityPeriod", &validity.to_string());
        Ok(form.finish())
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.header(reqwest::header::AUTHORIZATION, self.authorization.clone())
    }
}

/// A number as Twilio's `To` and `From` want it: `whatsapp:` before it for WhatsApp.
fn whatsapp_address(whatsapp: bool, number: &str) -> Cow<'_, str> {
    if whatsapp {
        Cow::Owned(format!("whatsapp:{number}"))
    } else {
        Cow::Borrowed(number)
    }
}

/// The value reqwest's `basic_auth` writes (`Basic ` and base64 of `user:password`),
/// made once rather than on every request.
fn basic_authorization(user: &str, password: &str) -> reqwest::header::HeaderValue {
    use base64::Engine;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut value = reqwest::header::HeaderValue::try_from(format!("Basic {credentials}"))
        .expect("base64 is always a valid header value");
    value.set_sensitive(true);
    value
}

#[async_trait]
impl MessageProvider for TwilioProvider {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn channels(&self) -> &[Channel] {
        &self.settings.channels
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        if !self.serves(message.channel) {
            return Err(ProviderError::Rejected {
                detail: format!("twilio is not configured for {}", message.channel),
            });
        }
        let form = self.form(message)?;
        tracing::debug!(to = %message.to.masked(), channel = %message.channel, "sending through twilio");
        // The header reqwest's `form` sets, after the same headers.
        let request = self
            .authorize(self.client.post(self.messages_url.clone()))
            .header(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(form);
        let receipt = read_send_reply(http::exchange(request).await?)?;
        tracing::debug!(
            sid = receipt.provider_message_id.as_deref().unwrap_or_default(),
            status = receipt.raw_status.as_deref().unwrap_or_default(),
            "twilio accepted the message"
        );
        Ok(receipt)
    }

    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        let request = self.authorize(self.client.get(&self.account_url));
        read_probe_reply(http::exchange(request).await?)
    }

    /// Status callbacks carry no price; the Message resource does, once final.
    fn followup(&self, _channel: Channel) -> Followup {
        Followup::PriceAfterFinal
    }

    async fn lookup(
        &self,
        provider_message_id: &str,
    ) -> Result<Option<crate::callbacks::StatusUpdate>, ProviderError> {
        self.fetch_message(provider_message_id).await
    }

    async fn balance(&self) -> Result<Option<Money>, ProviderError> {
        self.fetch_balance().await
    }
}

/// Reads Twilio's answer to the account probe. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_probe_reply(reply: Reply) -> Result<ProbeOutcome, ProviderError> {
    let (status, body) = read_reply(reply)?;

    #[derive(Deserialize)]
    struct Account {
        status: String,
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    // Not `http::protocol_error`: this body holds the auth token.
    let account =
        serde_json::from_slice::<Account>(&body).map_err(|_| ProviderError::Protocol {
            status: status.as_u16(),
            detail: "account reply without a status".to_owned(),
        })?;
    if account.status != "active" {
        // Twilio refuses to send for suspended or closed accounts.
        return Err(ProviderError::AccountUnusable {
            detail: format!("the Twilio account is {}", scrub(&account.status)),
        });
    }
    let kind = account
        .kind
        .as_deref()
        .map(scrub)
        .unwrap_or_else(|| "unknown".to_owned());
    Ok(ProbeOutcome::Verified(format!(
        "Twilio account is active ({kind} account)"
    )))
}

/// Reads Twilio's answer to a send: a receipt for a `2xx` Message resource, the matching
/// [`ProviderError`] otherwise. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_send_reply(reply: Reply) -> Result<Receipt, ProviderError> {
    let (status, body) = read_reply(reply)?;

    #[derive(Deserialize)]
    struct Created {
        sid: String,
        #[serde(default = "unknown_status")]
        status: String,
        error_code: Option<u32>,
        error_message: Option<String>,
    }
    let Some(created) = serde_json::from_slice::<Created>(&body)
        .ok()
        .filter(|created| !created.sid.is_empty())
    else {
        // Twilio took the message: sending it again elsewhere would deliver two codes.
        tracing::warn!(
            status = status.as_u16(),
            "twilio accepted the message but its reply has no readable sid"
        );
        return Ok(http::unreadable_acceptance("twilio"));
    };
    let delivery = delivery_status(&created.status);
    if matches!(
        delivery,
        DeliveryStatus::Failed | DeliveryStatus::Undelivered
    ) {
        // Twilio gave up at once and says why: that is a failed attempt (which the
        // dispatcher can fail over), not a receipt telling the caller all is well.
        let Some(code) = created.error_code else {
            return Err(ProviderError::Rejected {
                detail: format!("the message is {}", scrub(&created.status)),
            });
        };
        let detail = TwilioError {
            code,
            message: created.error_message,
            title: None,
            detail: None,
        }
        .describe();
        return Err(code_error(code, detail.clone()).unwrap_or(ProviderError::Rejected { detail }));
    }
    Ok(Receipt::new(
        "twilio",
        Some(created.sid),
        delivery,
        Some(created.status),
    ))
}

fn unknown_status() -> String {
    "queued".to_owned()
}

/// A success's status and body; non-2xx replies become the matching [`ProviderError`].
fn read_reply(reply: Reply) -> Result<(StatusCode, Vec<u8>), ProviderError> {
    if reply.status.is_success() {
        Ok((reply.status, reply.body))
    } else {
        Err(error_from_reply(
            reply.status,
            reply.retry_after,
            &reply.body,
        ))
    }
}

/// Twilio's error body, in either of its two shapes.
#[derive(Deserialize)]
struct TwilioError {
    code: u32,
    /// The classic 2010 API shape.
    message: Option<String>,
    /// The RFC 9457 shape.
    title: Option<String>,
    /// Both shapes may add a longer explanation.
    detail: Option<String>,
}

impl TwilioError {
    /// `21211: The 'To' number +**** is not a valid phone number.`: Twilio's code keys its
    /// docs; the text is scrubbed because it can echo the number.
    fn describe(&self) -> String {
        let text = [&self.message, &self.title, &self.detail]
            .into_iter()
            .flatten()
            .filter(|text| !text.is_empty())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(": ");
        format!("{}: {}", self.code, scrub(&text))
    }
}

fn error_from_reply(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    // Not Twilio's JSON (a proxy's page, an empty body): the status still says enough.
    let error = serde_json::from_slice::<TwilioError>(body).ok();
    let detail = error.as_ref().map_or_else(
        || format!("HTTP {}", status.as_u16()),
        TwilioError::describe,
    );
    let code = error.as_ref().map(|error| error.code);
    if code == Some(20429) {
        return ProviderError::RateLimited {
            detail,
            retry_after,
        };
    }
    // A 429 or 5xx means what its status says, whatever code it carries.
    if !http::status_decides(status) {
        if let Some(error) = code.and_then(|code| code_error(code, detail.clone())) {
            return error;
        }
        if status == StatusCode::UNAUTHORIZED {
            return ProviderError::Unauthorized { detail };
        }
        if code.is_some() && status.is_client_error() {
            return ProviderError::Rejected { detail };
        }
    }
    http::status_error(status, retry_after, detail, body)
}

/// The error a Twilio error code names, where the code says more than the HTTP status.
/// Each code is described at `https://www.twilio.com/docs/errors/<code>`.
fn code_error(code: u32, detail: String) -> Option<ProviderError> {
    Some(match code {
        // Authentication failed.
        20003 => ProviderError::Unauthorized { detail },
        // Our configuration, the same for every message until an operator fixes it:
        // 21609 the StatusCallback URL we sent is invalid; the sender: 21212 invalid From,
        // 21606 From cannot send to this destination, 21659 From is not a Twilio number,
        // 21661 From cannot send SMS, 21701/21705 no such Messaging Service; the WhatsApp
        // template: 21655 unknown ContentSid, 63016 free-form text outside the 24 h
        // window (a template is needed), 63027 no template for the language.
        21609 | 21212 | 21606 | 21659 | 21661 | 21701 | 21705 | 21655 | 63016 | 63027 => {
            ProviderError::Misconfigured {
                code: code.to_string(),
                detail,
            }
        }
        // Our account, not the number: 10001 the account is not active, 20005 it is
        // suspended or closed (which is also what an exhausted balance leads to), 21608 a
        // trial account may only send to verified numbers, 30454 a trial account's
        // message limit and 63038 the account's daily message limit are spent, 21660 From
        // belongs to another account, 63007 no WhatsApp sender for From in this account.
        10001 | 20005 | 21608 | 30454 | 63038 | 21660 | 63007 => {
            ProviderError::AccountUnusable { detail }
        }
        // 21611: the From sender's queue is full; the message was not created.
        21611 => ProviderError::RateLimited {
            detail,
            retry_after: None,
        },
        // The number itself: 21211 not a valid number, 21614 not a mobile number, 21635
        // a landline, 21268 a premium-rate number.
        21211 | 21614 | 21635 | 21268 => ProviderError::InvalidRecipient { detail },
        // 21408: the account may not send to the destination's region; 21612: To and From
        // cannot be connected from this account. Another provider may reach the number.
        21408 | 21612 => ProviderError::RegionNotEnabled { detail },
        // 21610: the recipient replied STOP to this sender.
        21610 => ProviderError::RecipientOptedOut { detail },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_twilio_status_has_a_place() {
        for (raw, expected) in [
            ("accepted", DeliveryStatus::Queued),
            ("scheduled", DeliveryStatus::Queued),
            ("queued", DeliveryStatus::Queued),
            ("sending", DeliveryStatus::Queued),
            ("sent", DeliveryStatus::Sent),
            ("partially_delivered", DeliveryStatus::Sent),
            ("delivered", DeliveryStatus::Delivered),
            ("read", DeliveryStatus::Delivered),
            ("undelivered", DeliveryStatus::Undelivered),
            ("failed", DeliveryStatus::Failed),
            ("canceled", DeliveryStatus::Failed),
            ("something_new", DeliveryStatus::Queued),
        ] {
            assert_eq!(delivery_status(raw), expected, "{raw}");
        }
    }

    #[test]
    fn error_detail_keeps_the_code_and_scrubs_the_text() {
        let error = TwilioError {
            code: 21211,
            message: Some("The 'To' number +5511966191717 is not a valid phone number.".into()),
            title: None,
            detail: None,
        };
        assert_eq!(
            error.describe(),
            "21211: The 'To' number +**** is not a valid phone number."
        );
    }

    #[test]
    fn the_prepared_authorization_is_reqwests_basic_auth_and_stays_hidden() {
        let client = reqwest::Client::new();
        let theirs = client
            .get("http://127.0.0.1/")
            .basic_auth("AC0123456789abcdef0123456789abcdef", Some("töken:x"))
            .build()
            .unwrap();
        let ours = basic_authorization("AC0123456789abcdef0123456789abcdef", "töken:x");
        let expected = &theirs.headers()[reqwest::header::AUTHORIZATION];
        assert_eq!(ours.as_bytes(), expected.as_bytes());
        assert!(ours.is_sensitive());
        assert!(!format!("{ours:?}").contains("QUMw"), "{ours:?}");
    }
}
