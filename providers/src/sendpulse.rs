//! SendPulse: SMS through `POST {base}/sms/send` and WhatsApp templates through
//! `POST {base}/whatsapp/contacts/sendTemplateByPhone`, both authorised with an OAuth
//! client-credentials access token.
//!
//! Wire facts that matter:
//! - Token: `POST {base}/oauth/access_token` with the JSON
//!   `{"grant_type":"client_credentials","client_id":..,"client_secret":..}`; the reply is
//!   `{"access_token":..,"token_type":"Bearer","expires_in":3600}`. The token is cached
//!   until [`TOKEN_REFRESH_MARGIN`] before it expires and fetched by one task at a time;
//!   a token that lives no longer than the margin serves only the send that fetched it.
//!   When a send answers 401 the token is fetched again once and the send retried once
//!   (a 401 means SendPulse processed nothing). A 400/401/403 from the token endpoint
//!   means the credentials are wrong: permanent. Any other failure to get a token (5xx,
//!   no answer in time) happened before the message was sent: it is `connect_failed`,
//!   safe to retry, and gives back the caller's allowance.
//! - SMS: Bearer token, JSON `{"sender":..,"phones":["5511..."],"body":..}` (numbers as
//!   digit strings without `+`); success `{"result":true,"campaign_id":N}`. SendPulse
//!   runs the campaign asynchronously, so success means queued.
//! - WhatsApp: Bearer token, JSON `{"bot_id":..,"phone":"5511...","template":{"name":..,
//!   "language":{"code":..},"components":[{"type":"body","parameters":[{"type":"text",
//!   "text":"<code>"}]},{"type":"button","sub_type":"url","index":0,"parameters":
//!   [{"type":"text","text":"<code>"}]}]}}`: a WhatsApp conversation may only be opened
//!   with an approved template, and codes go in an authentication template, whose
//!   copy-code button carries the code as its URL parameter (button components take
//!   `sub_type` and a numeric `index`, per the sendTemplateByPhone schema in SendPulse's
//!   WhatsApp API spec); success `{"success":true,"data":{"id":..,"status":1,..}}`.
//! - A 2xx is an acceptance unless SendPulse's own marker (`result`, `success`) says
//!   `false`: a 2xx whose body cannot be read, or has no id, is a receipt without an id.
//! - Errors: `{"error_code":..,"message":..}`, `{"error":..,"error_description":..}`,
//!   `{"result":false,..}` or `{"success":false,"message"|"errors":..}`. 429 is
//!   throttling (nothing processed), 5xx an unknown outcome. No per-cause codes are
//!   documented, so refusals are read from their text (see `refusal`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{self, protocol_error, scrub, Reply};
use crate::settings::{Env, SettingError};
use crate::{
    Channel, DeliveryStatus, MessageProvider, OutboundMessage, ProbeOutcome, ProviderContext,
    ProviderError, Receipt,
};

pub const DEFAULT_BASE_URL: &str = "https://api.sendpulse.com";
/// Template language used when `SENDPULSE_WHATSAPP_TEMPLATE` names none.
pub const DEFAULT_WHATSAPP_LANGUAGE: &str = "en";
/// How long before its expiry a cached token is replaced.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);

const NAME: &str = "sendpulse";
const CHANNEL_VAR: &str = "SENDPULSE_CHANNEL";
const SENDER_VAR: &str = "SENDPULSE_SENDER";
const BOT_ID_VAR: &str = "SENDPULSE_WHATSAPP_BOT_ID";
const TEMPLATE_VAR: &str = "SENDPULSE_WHATSAPP_TEMPLATE";
const CHANNEL_EXAMPLE: &str = "sms,whatsapp";
const SENDER_EXAMPLE: &str = "OtpRelay";
const BOT_ID_EXAMPLE: &str = "64a1f0c2b3d4e5f6a7b8c9d0";
const TEMPLATE_EXAMPLE: &str = "otp_code:pt_BR";
const SERVED: [Channel; 2] = [Channel::Sms, Channel::Whatsapp];

/// SendPulse settings, read from `SENDPULSE_*` variables.
#[derive(Debug, Clone)]
pub struct SendpulseSettings {
    /// `SENDPULSE_CLIENT_ID`: the API ID from Settings > API.
    pub client_id: String,
    /// `SENDPULSE_CLIENT_SECRET`: the API secret.
    pub client_secret: SecretString,
    /// `SENDPULSE_CHANNEL`: `sms`, `whatsapp` or both.
    pub channels: Vec<Channel>,
    /// `SENDPULSE_SENDER`: the SMS sender name; required when sms is served.
    pub sender: Option<String>,
    /// Required when whatsapp is served.
    pub whatsapp: Option<SendpulseWhatsapp>,
    /// `SENDPULSE_BASE_URL` without a trailing slash.
    pub base_url: String,
}

/// The WhatsApp bot and the approved template that carries the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendpulseWhatsapp {
    /// `SENDPULSE_WHATSAPP_BOT_ID`.
    pub bot_id: String,
    /// Template name, the part of `SENDPULSE_WHATSAPP_TEMPLATE` before `:`.
    pub template: String,
    /// Template language code, the part after `:` (default `en`).
    pub language: String,
}

impl SendpulseSettings {
    pub fn from_env(env: &Env<'_>) -> Result<SendpulseSettings, SettingError> {
        let client_id = env
            .required("SENDPULSE_CLIENT_ID", "a1b2c3d4e5f60718293a4b5c6d7e8f90")?
            .to_owned();
        let client_secret = env.secret(
            "SENDPULSE_CLIENT_SECRET",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        )?;
        let channels = env.channels(CHANNEL_VAR, Channel::Sms, &SERVED, CHANNEL_EXAMPLE)?;

        let sender = if channels.contains(&Channel::Sms) {
            Some(sender(env.required(SENDER_VAR, SENDER_EXAMPLE)?)?)
        } else {
            not_served(env, SENDER_VAR, Channel::Sms)?;
            None
        };
        let whatsapp = if channels.contains(&Channel::Whatsapp) {
            let bot_id = env.required(BOT_ID_VAR, BOT_ID_EXAMPLE)?.to_owned();
            let (template, language) = template(env.required(TEMPLATE_VAR, TEMPLATE_EXAMPLE)?)?;
            Some(SendpulseWhatsapp {
                bot_id,
                template,
                language,
            })
        } else {
            not_served(env, BOT_ID_VAR, Channel::Whatsapp)?;
            not_served(env, TEMPLATE_VAR, Channel::Whatsapp)?;
            None
        };

        Ok(SendpulseSettings {
            client_id,
            client_secret,
            channels,
            sender,
            whatsapp,
            base_url: env.base_url("SENDPULSE_BASE_URL", DEFAULT_BASE_URL)?,
        })
    }
}

/// A variable set for a channel that `SENDPULSE_CHANNEL` leaves out is most likely a
/// forgotten channel, so it is refused rather than silently ignored.
fn not_served(env: &Env<'_>, var: &'static str, channel: Channel) -> Result<(), SettingError> {
    match env.get(var) {
        Some(_) => Err(SettingError::new(
            CHANNEL_VAR,
            format!(
                "does not include {channel}, yet {var} is set (add {channel} here or unset {var})"
            ),
            CHANNEL_EXAMPLE,
        )),
        None => Ok(()),
    }
}

/// An alphanumeric sender has at most 11 characters, a numeric one at most 15 digits.
fn sender(value: &str) -> Result<String, SettingError> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    let numeric = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let fits = if numeric {
        digits.len() <= 15
    } else {
        value.chars().count() <= 11
    };
    if fits {
        Ok(value.to_owned())
    } else {
        Err(SettingError::new(
            SENDER_VAR,
            "must be at most 11 characters, or at most 15 digits for a numeric sender",
            SENDER_EXAMPLE,
        ))
    }
}

/// `name` or `name:language`; WhatsApp template names are lower-case letters, digits
/// and underscores, language codes look like `en` or `pt_BR`.
fn template(value: &str) -> Result<(String, String), SettingError> {
    let (name, language) = match value.split_once(':') {
        Some((name, language)) => (name.trim(), language.trim()),
        None => (value, DEFAULT_WHATSAPP_LANGUAGE),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let language_ok = !language.is_empty()
        && language
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_');
    if name_ok && language_ok {
        Ok((name.to_owned(), language.to_owned()))
    } else {
        Err(SettingError::new(
            TEMPLATE_VAR,
            "must be an approved template name (a-z, 0-9, _), optionally followed by :language",
            TEMPLATE_EXAMPLE,
        ))
    }
}

/// Sends through SendPulse.
pub struct SendpulseProvider {
    client: reqwest::Client,
    channels: Vec<Channel>,
    client_id: String,
    client_secret: SecretString,
    token_url: String,
    sms: Option<SmsRoute>,
    whatsapp: Option<WhatsappRoute>,
    tokens: TokenCache,
}

struct SmsRoute {
    url: String,
    sender: String,
}

struct WhatsappRoute {
    url: String,
    settings: SendpulseWhatsapp,
}

impl SendpulseProvider {
    /// Checks that the settings hold what each served channel needs (they may have been
    /// built directly rather than read by [`SendpulseSettings::from_env`]).
    pub fn new(
        settings: SendpulseSettings,
        context: &ProviderContext,
    ) -> Result<SendpulseProvider, SettingError> {
        if settings.channels.is_empty() {
            return Err(SettingError::new(
                CHANNEL_VAR,
                "lists no channel",
                CHANNEL_EXAMPLE,
            ));
        }
        if let Some(channel) = settings.channels.iter().find(|c| !SERVED.contains(c)) {
            return Err(SettingError::new(
                CHANNEL_VAR,
                format!("this provider cannot send on {channel}"),
                CHANNEL_EXAMPLE,
            ));
        }
        let base = &settings.base_url;
        let sms = match (settings.channels.contains(&Channel::Sms), settings.sender) {
            (true, Some(sender)) => Some(SmsRoute {
                url: format!("{base}/sms/send"),
                sender,
            }),
            (true, None) => {
                return Err(SettingError::new(
                    SENDER_VAR,
                    "is required when sms is served",
                    SENDER_EXAMPLE,
                ))
            }
            (false, _) => None,
        };
        let whatsapp = match (
            settings.channels.contains(&Channel::Whatsapp),
            settings.whatsapp,
        ) {
            (true, Some(whatsapp)) => Some(WhatsappRoute {
                url: format!("{base}/whatsapp/contacts/sendTemplateByPhone"),
                settings: whatsapp,
            }),
            (true, None) => {
                return Err(SettingError::new(
                    BOT_ID_VAR,
                    format!("and {TEMPLATE_VAR} are required when whatsapp is served"),
                    BOT_ID_EXAMPLE,
                ))
            }
            (false, _) => None,
        };
        Ok(SendpulseProvider {
            client: context.client.clone(),
            channels: settings.channels,
            client_id: settings.client_id,
            client_secret: settings.client_secret,
            token_url: format!("{base}/oauth/access_token"),
            sms,
            whatsapp,
            tokens: TokenCache::default(),
        })
    }

    /// The URL and JSON body for `message`, checked before any token is fetched.
    fn request_for(&self, message: &OutboundMessage) -> Result<(&str, Value), ProviderError> {
        match (message.channel, &self.sms, &self.whatsapp) {
            (Channel::Sms, Some(sms), _) => Ok((
                &sms.url,
                json!({
                    "sender": sms.sender,
                    "phones": [message.to.digits()],
                    "body": message.text,
                }),
            )),
            (Channel::Whatsapp, _, Some(whatsapp)) => {
                // An approved template carries the code as its body parameter.
                let code = message.code.as_deref().ok_or(ProviderError::CodeRequired)?;
                let settings = &whatsapp.settings;
                Ok((
                    &whatsapp.url,
                    json!({
                        "bot_id": settings.bot_id,
                        "phone": message.to.digits(),
                        "template": {
                            "name": settings.template,
                            "language": {"code": settings.language},
                            "components": [
                                {
                                    "type": "body",
                                    "parameters": [{"type": "text", "text": code}],
                                },
                                {
                                    "type": "button",
                                    "sub_type": "url",
                                    "index": 0,
                                    "parameters": [{"type": "text", "text": code}],
                                },
                            ],
                        },
                    }),
                ))
            }
            (channel, _, _) => Err(ProviderError::Rejected {
                detail: format!("sendpulse is not configured to send on {channel}"),
            }),
        }
    }

    /// A valid access token: the cached one unless it is stale or is `rejected` (the
    /// one a send just had refused), else a new one. One task fetches at a time; tasks
    /// that waited for that fetch take its result instead of fetching again.
    async fn access_token(
        &self,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, ProviderError> {
        let seen = self.tokens.fetches.load(Ordering::Acquire);
        let mut slot = self.tokens.slot.lock().await;
        if let Some(cached) = &slot.token {
            let refused =
                rejected.is_some_and(|r| r.expose_secret() == cached.value.expose_secret());
            if !refused && Instant::now() < cached.refresh_at {
                return Ok(cached.value.clone());
            }
        }
        if self.tokens.fetches.load(Ordering::Acquire) != seen {
            if let Some(error) = &slot.last_error {
                return Err(error.clone());
            }
        }

        let fetched = self.fetch_token().await;
        self.tokens.fetches.fetch_add(1, Ordering::Release);
        match fetched {
            Ok((value, expires_in)) => {
                tracing::debug!(
                    expires_in = expires_in.as_secs(),
                    "fetched a SendPulse access token"
                );
                let now = Instant::now();
                slot.token = Some(CachedToken {
                    value: value.clone(),
                    // An absurd lifetime counts as none: the next send fetches again.
                    refresh_at: now
                        .checked_add(expires_in.saturating_sub(TOKEN_REFRESH_MARGIN))
                        .unwrap_or(now),
                });
                slot.last_error = None;
                Ok(value)
            }
            Err(error) => {
                slot.token = None;
                slot.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration), ProviderError> {
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose_secret(),
        });
        let request = self
            .client
            .post(&self.token_url)
            .header(ACCEPT, "application/json")
            .json(&body);
        let reply = http::exchange(request).await.map_err(before_sending)?;
        read_token_reply(reply, self.client_secret.expose_secret()).map_err(before_sending)
    }

    async fn post(
        &self,
        url: &str,
        body: &Value,
        token: &SecretString,
    ) -> Result<Reply, ProviderError> {
        let request = self
            .client
            .post(url)
            .bearer_auth(token.expose_secret())
            .header(ACCEPT, "application/json")
            .json(body);
        http::exchange(request).await
    }
}

#[async_trait]
impl MessageProvider for SendpulseProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn channels(&self) -> &[Channel] {
        &self.channels
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        let (url, body) = self.request_for(message)?;
        tracing::debug!(to = %message.to.masked(), channel = %message.channel, "sending through SendPulse");
        let token = self.access_token(None).await?;
        let mut reply = self.post(url, &body, &token).await?;
        if reply.status == StatusCode::UNAUTHORIZED {
            tracing::debug!(
                "SendPulse refused the access token; fetching a new one and retrying once"
            );
            let fresh = self.access_token(Some(&token)).await?;
            reply = self.post(url, &body, &fresh).await?;
        }
        match message.channel {
            Channel::Whatsapp => read_whatsapp(&reply),
            _ => read_sms(&reply),
        }
    }

    /// Fetching a token proves the credentials and sends nothing.
    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        self.access_token(None).await?;
        Ok(ProbeOutcome::Verified(
            "SendPulse issued an OAuth access token".to_owned(),
        ))
    }
}

/// Reads the answer to an access-token request: the token and its lifetime, or why
/// there is none. `client_secret` is masked in any error reply. Public for the fuzz
/// targets.
#[doc(hidden)]
pub fn read_token_reply(
    mut reply: Reply,
    client_secret: &str,
) -> Result<(SecretString, Duration), ProviderError> {
    if reply.status != StatusCode::OK {
        // An error reply that echoes the request must not carry the secret further.
        reply.redact(client_secret);
    }
    match reply.status.as_u16() {
        200 => {
            #[derive(Deserialize)]
            struct TokenReply {
                access_token: String,
                expires_in: u64,
            }
            match serde_json::from_slice::<TokenReply>(&reply.body) {
                Ok(token) if !token.access_token.is_empty() => Ok((
                    SecretString::from(token.access_token),
                    Duration::from_secs(token.expires_in),
                )),
                // The body may hold a token: it never goes into the detail.
                _ => Err(ProviderError::Protocol {
                    status: 200,
                    detail: "token reply lacks access_token or expires_in".to_owned(),
                }),
            }
        }
        400 | 401 | 403 => Err(ProviderError::Unauthorized {
            detail: format!("access token refused: {}", reply.detail()),
        }),
        429 | 500..=599 => Err(reply.error()),
        _ => Err(protocol_error(reply.status, &reply.body)),
    }
}

/// A failure to get a token: whatever the token endpoint did, the message itself was
/// not sent, so an outcome that would be unknown for a send (5xx, no answer in time) is
/// here a failure that provably never reached the provider.
fn before_sending(error: ProviderError) -> ProviderError {
    match error {
        ProviderError::Unavailable { detail } => ProviderError::Connect {
            detail: format!("no access token, nothing sent: {detail}"),
        },
        ProviderError::Timeout => ProviderError::Connect {
            detail: "the token endpoint did not answer in time; nothing sent".to_owned(),
        },
        other => other,
    }
}

#[derive(Default)]
struct TokenCache {
    slot: tokio::sync::Mutex<TokenSlot>,
    /// Finished fetches. Read before waiting for `slot`, it tells a waiter whether a
    /// fetch completed meanwhile.
    fetches: AtomicU64,
}

#[derive(Default)]
struct TokenSlot {
    token: Option<CachedToken>,
    /// Why the latest fetch failed, handed to the tasks that waited for it.
    last_error: Option<ProviderError>,
}

struct CachedToken {
    value: SecretString,
    refresh_at: Instant,
}

/// How SendPulse's answers are read.
impl Reply {
    fn redact(&mut self, secret: &str) {
        let text = String::from_utf8_lossy(&self.body);
        if !secret.is_empty() && text.contains(secret) {
            self.body = text.replace(secret, "[redacted]").into_bytes();
        }
    }

    /// SendPulse's own error text, scrubbed, if the body carries any.
    fn provider_detail(&self) -> Option<String> {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .ok()
            .and_then(|body| body.detail())
    }

    /// SendPulse's own error text, or the HTTP status when the body has none.
    fn detail(&self) -> String {
        self.provider_detail()
            .unwrap_or_else(|| format!("HTTP {}", self.status.as_u16()))
    }

    /// The error for a reply that is not a success.
    fn error(&self) -> ProviderError {
        match self.status.as_u16() {
            429 => ProviderError::RateLimited {
                detail: self.detail(),
                retry_after: self.retry_after,
            },
            500..=599 => ProviderError::Unavailable {
                detail: self.detail(),
            },
            401 | 403 => ProviderError::Unauthorized {
                detail: self.detail(),
            },
            400..=499 => self.refused(),
            _ => protocol_error(self.status, &self.body),
        }
    }

    /// A refusal: a 4xx, or a 2xx whose `result`/`success` is not true. Without any
    /// error text it is a reply of the wrong shape.
    fn refused(&self) -> ProviderError {
        match self.provider_detail() {
            Some(detail) => refusal(detail),
            None => protocol_error(self.status, &self.body),
        }
    }
}

/// Every error field SendPulse is known to answer with.
#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<Value>,
    error: Option<Value>,
    message: Option<String>,
    error_description: Option<String>,
    errors: Option<Value>,
}

impl ErrorBody {
    /// The fields joined and scrubbed; `None` when the body has none of them.
    fn detail(&self) -> Option<String> {
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
fn refusal(detail: String) -> ProviderError {
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
    match parsed.result {
        Some(true) => {}
        Some(false) => return Err(reply.refused()),
        None => return Ok(accepted_unread(reply)),
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

/// A 2xx without SendPulse's `false`: the message is with SendPulse, id unknown.
fn accepted_unread(reply: &Reply) -> Receipt {
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
    match parsed.success {
        Some(true) => {}
        Some(false) => return Err(reply.refused()),
        None => return Ok(accepted_unread(reply)),
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
    fn template_takes_an_optional_language() {
        assert_eq!(
            template("otp_code").unwrap(),
            ("otp_code".to_owned(), "en".to_owned())
        );
        assert_eq!(
            template("otp_code:pt_BR").unwrap(),
            ("otp_code".to_owned(), "pt_BR".to_owned())
        );
        for bad in ["OTP code", "otp_code:", ":en", "otp-code:en", "otp:pt-BR"] {
            assert_eq!(template(bad).unwrap_err().var, TEMPLATE_VAR, "{bad}");
        }
    }

    #[test]
    fn sender_fits_sendpulse_limits() {
        assert!(sender("OtpRelay").is_ok());
        assert!(sender("+551199999999999").is_ok(), "15 digits");
        assert!(sender("TooLongSender").is_err(), "13 characters");
        assert!(sender("5511999999999999").is_err(), "16 digits");
    }

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
