//! Provider callbacks: delivery reports and the Telegram bot's updates.
//!
//! The server only routes, applies and answers: each provider's [`Webhook`] (in the
//! providers crate) verifies a request with the provider's own scheme before anything is
//! read and turns it into a status update or a bot update. A bad, missing or stale
//! signature is 401 and changes nothing; a webhook whose provider or secret is not
//! configured answers 404; a method the provider never uses, 405.
//!
//! An authentic callback is acknowledged with `200 OK` and an empty body, the answer
//! every provider documents: the Telegram Gateway repeats a report not answered with
//! exactly 200 up to 10 times (<https://core.telegram.org/gateway/api#report-delivery>),
//! Vonage's SMS API and Messages API specs name 200 as the answer that accepts a delivery
//! receipt or status webhook, Twilio's status callbacks and the Bot API's webhooks take
//! any 2xx (<https://www.twilio.com/docs/api/errors/11217>: anything else is an error).
//! Reports about unknown messages, and Gateway reports that carry no delivery status
//! (code verification only), are acknowledged too, so providers do not retry them.

use std::sync::Arc;
use std::time::SystemTime;

use actix_web::{web, HttpRequest, HttpResponse};
use otp_relay_providers::callbacks::{Callback, CallbackRequest, StatusUpdate, Webhook};
use otp_relay_providers::telegram::webhook::{self as tg, BotUpdate};
use otp_relay_providers::{CallbackUrls, Phone};

use crate::api::body::read_limited;
use crate::api::error::ApiError;
use crate::api::state::AppState;

/// The route every webhook is served on: `{name}` is the webhook's own name
/// ([`Webhook::name`]: `twilio`, `vonage`, `telegram-gateway`, `telegram-bot`).
pub const ROUTE: &str = "/webhooks/{name}";

/// The public URL of each webhook, `{PUBLIC_BASE_URL}/webhooks/{name}`, handed to the
/// providers: they give it with each send and, where the scheme signs it, verify by it.
pub struct WebhookUrls {
    /// `PUBLIC_BASE_URL` without a trailing slash.
    base: Option<String>,
}

impl WebhookUrls {
    pub fn new(public_base_url: Option<&str>) -> Self {
        WebhookUrls {
            base: public_base_url.map(|base| base.trim_end_matches('/').to_owned()),
        }
    }
}

impl CallbackUrls for WebhookUrls {
    fn url(&self, webhook: &str) -> Option<String> {
        let base = self.base.as_ref()?;
        Some(format!("{base}/webhooks/{webhook}"))
    }

    fn setting(&self) -> &'static str {
        "PUBLIC_BASE_URL"
    }

    fn example(&self) -> &'static str {
        "https://otp.example.com"
    }
}

/// The configured webhook called `name`.
fn find<'s>(state: &'s AppState, name: &str) -> Option<&'s Arc<dyn Webhook>> {
    state.webhooks.iter().find(|webhook| webhook.name() == name)
}

/// `POST /webhooks/{name}` (and `GET`, for Vonage receipts sent that way): the
/// provider's webhook verifies and reads the request; what it says is applied here.
pub async fn receive(
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let webhook = find(&state, &name).ok_or(ApiError::WebhookNotConfigured)?;
    let body = read_limited(&req, payload, state.config.http.body_timeout).await?;
    // The providers crate speaks the `http` crate's types, actix an older copy of them.
    let mut headers = reqwest::header::HeaderMap::with_capacity(req.headers().len());
    for (header_name, value) in req.headers() {
        if let (Ok(header_name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(header_name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(header_name, value);
        }
    }
    let url = state.webhook_urls.url(webhook.name());
    let request = CallbackRequest {
        method: req.method().as_str(),
        url: url.as_deref(),
        query: req.query_string().as_bytes(),
        headers: &headers,
        body: &body,
        now: SystemTime::now(),
    };
    match webhook.receive(&request)? {
        Callback::Status(update) => record(&state, update).await,
        Callback::Bot(update) => bot_update(&state, update).await,
        Callback::Nothing(why) => {
            tracing::debug!(webhook = webhook.name(), "nothing to apply: {why}");
            Ok(HttpResponse::Ok().finish())
        }
    }
}

/// Applies a verified report to its record and acknowledges it.
async fn record(state: &AppState, update: StatusUpdate) -> Result<HttpResponse, ApiError> {
    match state.records.apply(&update).await? {
        Some(record) => {
            tracing::info!(
                message_id = %record.id,
                provider = update.provider,
                reported = %update.status,
                status = %record.status,
                "delivery report"
            );
            state.followups.after_report(&record);
        }
        None => tracing::debug!(
            provider = update.provider,
            "delivery report for an unknown message"
        ),
    }
    Ok(HttpResponse::Ok().finish())
}

/// A bot user's action: users link their number by sharing their own contact
/// (`/start`), and unlink it (`/stop`).
async fn bot_update(state: &AppState, update: BotUpdate) -> Result<HttpResponse, ApiError> {
    let bot = state
        .telegram_bot
        .as_ref()
        .ok_or(ApiError::WebhookNotConfigured)?;
    let reply = match update {
        BotUpdate::Start { chat_id } => Some(tg::ask_for_contact(chat_id)),
        BotUpdate::SharedContact {
            chat_id,
            own: false,
            ..
        } => {
            tracing::warn!(chat_id, "refused a contact that is not the sender's own");
            Some(tg::refuse_foreign_contact(chat_id))
        }
        BotUpdate::SharedContact {
            chat_id,
            phone,
            own: true,
        } => match Phone::parse(&phone, None) {
            Ok(phone) => {
                state.records.link_chat(&phone, chat_id).await?;
                tracing::info!(chat_id, to = %phone.masked(), "telegram chat linked");
                Some(tg::confirm_linked(chat_id))
            }
            Err(_) => Some(tg::polite_ignore(chat_id)),
        },
        BotUpdate::Stop { chat_id } => {
            if state.records.unlink_chat(chat_id).await? {
                tracing::info!(chat_id, "telegram chat unlinked");
            }
            Some(tg::confirm_unlinked(chat_id))
        }
        BotUpdate::Other { chat_id } => chat_id.map(tg::polite_ignore),
    };
    if let Some(reply) = reply {
        // The update is handled; a failed reply must not make Telegram send it again.
        if let Err(error) = bot.bot_send_json(&reply).await {
            tracing::warn!(
                code = error.code(),
                "could not answer the bot user: {error}"
            );
        }
    }
    Ok(HttpResponse::Ok().finish())
}
