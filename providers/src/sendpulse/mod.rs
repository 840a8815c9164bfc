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

mod campaign;
mod reply;
mod settings;
mod token;

use async_trait::async_trait;
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::http::{self, Reply};
use crate::settings::SettingError;
use crate::{
    Channel, Followup, MessageProvider, Money, OutboundMessage, ProbeOutcome, ProviderContext,
    ProviderError, Receipt,
};

pub use campaign::{read_balance_reply, read_campaign_reply};
pub use reply::{read_sms, read_whatsapp};
pub use settings::{
    SendpulseSettings, SendpulseWhatsapp, DEFAULT_BASE_URL, DEFAULT_WHATSAPP_LANGUAGE,
};
use settings::{
    BOT_ID_EXAMPLE, BOT_ID_VAR, CHANNEL_EXAMPLE, CHANNEL_VAR, SENDER_EXAMPLE, SENDER_VAR, SERVED,
    TEMPLATE_VAR,
};
use token::TokenCache;
pub use token::{read_token_reply, TOKEN_REFRESH_MARGIN};

const NAME: &str = "sendpulse";

/// Sends through SendPulse.
pub struct SendpulseProvider {
    client: reqwest::Client,
    channels: Vec<Channel>,
    client_id: String,
    client_secret: SecretString,
    token_url: String,
    /// `SENDPULSE_BASE_URL`, for the campaign and balance calls.
    base_url: String,
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
            base_url: base.clone(),
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

    /// SMS has no delivery callback: the campaign is polled.
    fn followup(&self, channel: Channel) -> Followup {
        match channel {
            Channel::Sms => Followup::PollUntilFinal,
            _ => Followup::Nothing,
        }
    }

    async fn lookup(
        &self,
        provider_message_id: &str,
    ) -> Result<Option<crate::callbacks::StatusUpdate>, ProviderError> {
        self.fetch_campaign(provider_message_id).await
    }

    async fn balance(&self) -> Result<Option<Money>, ProviderError> {
        self.fetch_balance().await
    }
}
