//! `POST /api/sms` and `POST /v1/messages`: one handler for the QIAM payload and the
//! canonical one.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use otp_relay_providers::{Channel, OutboundMessage, Phone};
use serde::{Deserialize, Serialize};

use crate::api::body::{decode_text, parse_json, read_limited};
use crate::api::error::ApiError;
use crate::dispatch::Attempt;
use crate::guards::access::Caller;
use crate::message::{compose, TextFields};
use crate::startup::AppState;

/// A string, or a number some callers send where a string is meant.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(serde_json::Number),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(text) => text,
            Scalar::Number(n) => n.to_string(),
        }
    }
}

/// The send request; unknown fields (QIAM's `used`) are ignored.
#[derive(Debug, Deserialize)]
struct SendRequest {
    mobile: Option<Scalar>,
    totp: Option<Scalar>,
    message: Option<String>,
    code: Option<Scalar>,
    channel: Option<String>,
    locale: Option<String>,
    ttl: Option<u64>,
}

/// The answer to a successful send.
#[derive(Debug, Serialize)]
struct SendResponse<'a> {
    id: &'a str,
    status: &'a str,
    channel: Channel,
    provider: &'a str,
    provider_message_id: Option<&'a str>,
    attempts: &'a [Attempt],
}

const MAX_TTL_SECONDS: u64 = 86_400;

pub async fn send(
    req: HttpRequest,
    _caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_limited(&req, payload).await?;
    let request: SendRequest = parse_json(&decode_text(&body))?;
    let message = state.validate(request)?;

    match state.dispatcher.send(&message).await {
        Ok(delivery) => {
            let receipt = &delivery.receipt;
            tracing::info!(
                message_id = %message.id,
                to = %message.to.masked(),
                channel = %message.channel,
                provider = %receipt.provider,
                status = %receipt.status,
                "message accepted by provider"
            );
            Ok(HttpResponse::Ok().json(SendResponse {
                id: &message.id,
                status: receipt.status.as_str(),
                channel: message.channel,
                provider: &receipt.provider,
                provider_message_id: receipt.provider_message_id.as_deref(),
                attempts: &delivery.attempts,
            }))
        }
        Err(error) => {
            tracing::warn!(
                message_id = %message.id,
                to = %message.to.masked(),
                channel = %message.channel,
                "message not sent: {error}"
            );
            Err(ApiError::Dispatch {
                id: message.id,
                error,
            })
        }
    }
}

impl AppState {
    /// Turns a request into a message ready to dispatch, or says what is wrong with it.
    fn validate(&self, request: SendRequest) -> Result<OutboundMessage, ApiError> {
        let config = &self.config;
        let mobile = request
            .mobile
            .map(Scalar::into_string)
            .ok_or(ApiError::MissingMobile)?;
        let to = Phone::parse(&mobile, config.default_region).map_err(ApiError::InvalidMobile)?;
        let channel = match request.channel.as_deref().map(str::trim) {
            None | Some("") => config.default_channel,
            Some(name) => name.parse().map_err(|_| ApiError::InvalidChannel)?,
        };
        let ttl = match request.ttl {
            None => config.message_ttl,
            Some(seconds @ 1..=MAX_TTL_SECONDS) => Duration::from_secs(seconds),
            Some(_) => return Err(ApiError::InvalidTtl),
        };
        let totp = request.totp.map(Scalar::into_string);
        let code = request.code.map(Scalar::into_string);
        let composed = compose(
            TextFields {
                totp: totp.as_deref(),
                message: request.message.as_deref(),
                code: code.as_deref(),
                locale: request.locale.as_deref(),
            },
            &config.templates,
        )
        .map_err(ApiError::InvalidText)?;
        Ok(OutboundMessage {
            id: ulid::Ulid::new().to_string(),
            to,
            channel,
            text: composed.text,
            code: composed.code,
            ttl,
        })
    }
}
