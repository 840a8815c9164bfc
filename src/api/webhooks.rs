//! Provider callbacks: delivery reports and the Telegram bot's updates.
//!
//! Each is verified with its provider's own signature scheme before anything is read
//! (see `otp_relay_providers::callbacks`); a bad, missing or stale signature is 401 and
//! changes nothing. A webhook whose provider or secret is not configured answers 404.
//!
//! An authentic callback is acknowledged with `200 OK` and an empty body, the answer
//! every provider documents: the Telegram Gateway repeats a report not answered with
//! exactly 200 up to 10 times (<https://core.telegram.org/gateway/api#report-delivery>),
//! Vonage's SMS API and Messages API specs name 200 as the answer that accepts a delivery
//! receipt or status webhook, Twilio's status callbacks and the Bot API's webhooks take
//! any 2xx (<https://www.twilio.com/docs/api/errors/11217>: anything else is an error). Reports about unknown messages, and Gateway reports that carry no delivery
//! status (code verification only), are acknowledged too, so providers do not retry them.

use std::time::SystemTime;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use otp_relay_providers::callbacks::telegram::{self as tg, BotUpdate};
use otp_relay_providers::callbacks::{self, StatusUpdate};
use otp_relay_providers::{
    Phone, ProviderSettings, TelegramMode, TelegramSettings, TwilioSettings, VonageSettings,
};

use crate::api::body::read_limited;
use crate::api::error::ApiError;
use crate::api::state::AppState;

fn header_value<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn twilio_settings(state: &AppState) -> Option<&TwilioSettings> {
    state.config.providers.iter().find_map(|p| match p {
        ProviderSettings::Twilio(settings) => Some(settings),
        _ => None,
    })
}

fn vonage_settings(state: &AppState) -> Option<&VonageSettings> {
    state.config.providers.iter().find_map(|p| match p {
        ProviderSettings::Vonage(settings) => Some(settings),
        _ => None,
    })
}

fn telegram_settings(state: &AppState) -> Option<&TelegramSettings> {
    state.config.providers.iter().find_map(|p| match p {
        ProviderSettings::Telegram(settings) => Some(settings),
        _ => None,
    })
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

/// `POST /webhooks/twilio`: status callbacks, `X-Twilio-Signature` over the public URL.
pub async fn twilio(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let settings = twilio_settings(&state).ok_or(ApiError::WebhookNotConfigured)?;
    let base = state
        .config
        .public_base_url
        .as_deref()
        .ok_or(ApiError::WebhookNotConfigured)?;
    let body = read_limited(&req, payload, state.config.http.body_timeout).await?;
    let update = callbacks::twilio::verify_status(
        &settings.auth_token,
        &format!("{base}/webhooks/twilio"),
        &body,
        header_value(&req, callbacks::twilio::SIGNATURE_HEADER),
    )?;
    record(&state, update).await
}

/// `POST /webhooks/vonage`: SMS API receipts (signed parameters, form or JSON) and
/// Messages API status webhooks (signed JWT in `Authorization`).
pub async fn vonage(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let settings = vonage_settings(&state).ok_or(ApiError::WebhookNotConfigured)?;
    let secret = settings
        .signature_secret
        .as_ref()
        .ok_or(ApiError::WebhookNotConfigured)?;
    let body = read_limited(&req, payload, state.config.http.body_timeout).await?;
    let now = SystemTime::now();
    let authorization = header_value(&req, header::AUTHORIZATION.as_str());
    let update = if authorization.is_some() {
        callbacks::vonage::verify_messages_status(secret, authorization, &body, now)?
    } else {
        let is_json = header_value(&req, header::CONTENT_TYPE.as_str())
            .is_some_and(|v| v.starts_with("application/json"));
        let mut params = if is_json {
            callbacks::vonage::json_params(&body)?
        } else {
            callbacks::form_params(&body)
        };
        if params.is_empty() {
            params = callbacks::form_params(req.query_string().as_bytes());
        }
        callbacks::vonage::verify_sms_receipt(secret, settings.signature_method, &params, now)?
    };
    record(&state, update).await
}

/// `POST /webhooks/telegram-gateway`: delivery reports, HMAC-SHA256 keyed by the
/// token's SHA-256.
pub async fn telegram_gateway(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = telegram_settings(&state)
        .and_then(|s| s.gateway_token.as_ref())
        .ok_or(ApiError::WebhookNotConfigured)?;
    let body = read_limited(&req, payload, state.config.http.body_timeout).await?;
    let update = tg::verify_gateway_status(
        token,
        header_value(&req, tg::TIMESTAMP_HEADER),
        header_value(&req, tg::SIGNATURE_HEADER),
        &body,
        SystemTime::now(),
    )?;
    match update {
        Some(update) => record(&state, update).await,
        None => {
            tracing::debug!("telegram gateway report without a delivery status");
            Ok(HttpResponse::Ok().finish())
        }
    }
}

/// `POST /webhooks/telegram-bot`: users link their number by sharing their own contact
/// (`/start`), and unlink it (`/stop`).
pub async fn telegram_bot(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let secret = telegram_settings(&state)
        .filter(|s| s.mode == TelegramMode::Bot)
        .and_then(|s| s.webhook_secret.as_ref())
        .ok_or(ApiError::WebhookNotConfigured)?;
    let bot = state
        .telegram_bot
        .as_ref()
        .ok_or(ApiError::WebhookNotConfigured)?;
    let body = read_limited(&req, payload, state.config.http.body_timeout).await?;
    let update = tg::verify_bot_update(secret, header_value(&req, tg::SECRET_TOKEN_HEADER), &body)?;
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
