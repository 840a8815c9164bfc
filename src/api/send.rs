//! `POST /api/sms` and `POST /v1/messages`: one handler for the QIAM payload and the
//! canonical one.

use std::time::Duration;

use actix_web::http::{header::ContentType, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use otp_relay_providers::{Channel, OutboundMessage, Phone};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

use otp_relay_providers::DeliveryStatus;
use tokio::time::Instant;

use crate::api::body::{decode_text, parse_json, read_limited};
use crate::api::error::{ApiError, PROBLEM_JSON};
use crate::config::Config;
use crate::dispatch::Attempt;
use crate::guards::access::Caller;
use crate::guards::idempotency::{self, Begin, IdempotencyError, KeySource};
use crate::guards::{number_policy, rate};
use crate::message::{compose, TextFields};
use crate::prometheus;
use crate::records::{timestamp, MessageRecord};
use crate::startup::AppState;
use crate::store::StoredAnswer;

/// A string, or a number some callers send where a string is meant.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Number(serde_json::Number),
}

impl Scalar {
    pub fn into_string(self) -> String {
        match self {
            Scalar::Text(text) => text,
            Scalar::Number(n) => n.to_string(),
        }
    }
}

/// The send request; unknown fields (QIAM's `used`) are ignored.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SendRequest {
    /// Destination, normalized to E.164 (`DEFAULT_REGION` for national formats).
    #[schema(value_type = Option<String>, example = "+5511966191717")]
    pub mobile: Option<Scalar>,
    /// The message text; 4-10 digits alone are a bare code rendered by the template.
    #[schema(value_type = Option<String>, example = "Your SMS code is 123456 and is valid for 5 minutes.")]
    pub totp: Option<Scalar>,
    /// Explicit text (wins over `totp`).
    pub message: Option<String>,
    /// Explicit code (4-10 digits); otherwise the first 4-8 digit run of the text.
    #[schema(value_type = Option<String>)]
    pub code: Option<Scalar>,
    /// `sms`, `whatsapp` or `telegram`; default `DEFAULT_CHANNEL`.
    pub channel: Option<String>,
    /// Picks `MESSAGE_TEMPLATE_<LOCALE>` for bare codes.
    pub locale: Option<String>,
    /// Seconds the code stays valid (1-86400); default `MESSAGE_TTL`.
    pub ttl: Option<u64>,
}

/// The answer to a successful send.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SendResponse<'a> {
    /// otp-relay's id for the message (a ULID).
    id: &'a str,
    /// `queued`, `sent`, `delivered`, `failed` or `undelivered`.
    status: &'a str,
    #[schema(value_type = String, example = "sms")]
    channel: Channel,
    provider: &'a str,
    provider_message_id: Option<&'a str>,
    attempts: &'a [Attempt],
}

const MAX_TTL_SECONDS: u64 = 86_400;

/// Reads a send request out of a body's text, in one caller's dialect.
pub type Dialect = fn(&HttpRequest, &str) -> Result<SendRequest, ApiError>;

/// `POST /api/sms` and `POST /v1/messages`.
pub async fn send(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve_send(req, caller, payload, state, |_, text| parse_json(text)).await
}

/// The whole send, for any dialect: measured, guarded, dispatched.
pub async fn serve_send(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
    dialect: Dialect,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let result = handle_send(req, caller, payload, state, dialect).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => {
            let reason = match error {
                ApiError::RateLimited(limited) => Some(limited.scope.refusal_reason()),
                ApiError::NumberRefused(_) => Some(error.code()),
                _ => None,
            };
            if let Some(reason) = reason {
                metrics::counter!(prometheus::REFUSALS, "reason" => reason).increment(1);
            }
            error.code()
        }
    };
    prometheus::histogram(prometheus::SEND_DURATION, &[("outcome", outcome)])
        .record(prometheus::seconds(started.elapsed()));
    result
}

async fn handle_send(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
    dialect: Dialect,
) -> Result<HttpResponse, ApiError> {
    let limits = &state.config.limits;
    // The body first, within its own bound: a client still sending holds no send slot,
    // and a slow one does not spend the send's time: the deadline starts once it is in.
    let body = read_limited(&req, payload, state.config.http.body_timeout).await?;
    let deadline = Instant::now() + limits.request_deadline;
    // Refuse at once rather than queue: the caller is a login waiting on us.
    let _permit = state
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded)?;
    let request = dialect(&req, &decode_text(&body))?;
    let message = build_message(&state.config, request)?;
    number_policy::check(&message.to, limits).map_err(ApiError::NumberRefused)?;

    let header = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map_err(|_| IdempotencyError::InvalidKey))
        .transpose()?;
    let identity = caller.identity.to_string();
    let source = KeySource {
        header,
        caller: &identity,
        e164: message.to.e164(),
        channel: message.channel.as_str(),
        text: &message.text,
    };
    let begin = idempotency::begin(
        &state.store,
        &source,
        state.config.message_retention,
        limits.dedupe_window,
        deadline,
    )
    .await?;
    let ticket = match begin {
        Some(Begin::Replay(answer)) => {
            metrics::counter!(prometheus::IDEMPOTENT_REPLAYS).increment(1);
            tracing::info!(to = %message.to.masked(), "repeated request: answering as the first time");
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            let content_type = if status.is_success() {
                ContentType::json()
            } else {
                ContentType(PROBLEM_JSON.parse().expect("a valid media type"))
            };
            return Ok(HttpResponse::build(status)
                .content_type(content_type)
                .insert_header(("Idempotent-Replayed", "true"))
                .body(answer.body));
        }
        Some(Begin::Proceed(ticket)) => Some(ticket),
        None => None,
    };

    let outcome = deliver(&state, &message, &caller, deadline).await;
    if let Some(ticket) = ticket {
        match &outcome {
            Ok(answer) => ticket.remember(answer).await,
            Err(error) if never_left(error) => ticket.release().await,
            // A provider may have sent it: the same failure for every repeat, no second send.
            Err(error) => {
                let answer = StoredAnswer {
                    status: error.status_code().as_u16(),
                    body: error.problem_json(),
                };
                ticket.remember(&answer).await;
            }
        }
    }
    let answer = outcome?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(answer.body))
}

/// Whether a failed `deliver` provably reached no provider: refused before dispatch
/// (rate limit, store), or a dispatch that never left (see `DispatchError::never_left`).
fn never_left(error: &ApiError) -> bool {
    match error {
        ApiError::Dispatch { error, .. } => error.never_left(),
        _ => true,
    }
}

/// Counts the send against the rate limits and hands it to the providers.
async fn deliver(
    state: &AppState,
    message: &OutboundMessage,
    caller: &Caller,
    deadline: Instant,
) -> Result<StoredAnswer, ApiError> {
    let limits = &state.config.limits;
    if let Err(limited) =
        rate::check(state.store.as_ref(), limits, &message.to, &caller.identity).await?
    {
        tracing::warn!(
            to = %message.to.masked(),
            scope = limited.scope.as_str(),
            "rate limit reached"
        );
        return Err(ApiError::RateLimited(limited));
    }
    let result = state.dispatcher.send(message, deadline).await;
    keep_record(state, message, &caller.identity.to_string(), &result).await;
    match result {
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
            let body = serde_json::to_string(&SendResponse {
                id: &message.id,
                status: receipt.status.as_str(),
                channel: delivery.channel,
                provider: &receipt.provider,
                provider_message_id: receipt.provider_message_id.as_deref(),
                attempts: &delivery.attempts,
            })
            .expect("the response serializes");
            Ok(StoredAnswer { status: 200, body })
        }
        Err(error) => {
            tracing::warn!(
                message_id = %message.id,
                to = %message.to.masked(),
                channel = %message.channel,
                "message not sent: {error}"
            );
            Err(ApiError::Dispatch {
                id: message.id.clone(),
                error,
            })
        }
    }
}

/// Records the send's outcome for `GET /v1/messages/{id}` (shown to `sender` only)
/// and delivery reports. A
/// record that cannot be kept is logged; the send itself stands.
async fn keep_record(
    state: &AppState,
    message: &OutboundMessage,
    sender: &str,
    result: &Result<crate::dispatch::Delivery, crate::dispatch::DispatchError>,
) {
    let now = timestamp(SystemTime::now());
    let record = match result {
        Ok(delivery) => MessageRecord {
            channel: delivery.channel.as_str().to_owned(),
            provider: Some(delivery.receipt.provider.clone()),
            provider_message_id: delivery.receipt.provider_message_id.clone(),
            status: delivery.receipt.status,
            provider_status: delivery.receipt.raw_status.clone(),
            error_code: None,
            ..new_record(message, &now)
        }
        .with_parts(&delivery.receipt.part_ids),
        Err(error) => {
            let last = error.attempts().last();
            MessageRecord {
                provider: last.map(|a| a.provider.to_owned()),
                error_code: Some(last.and_then(|a| a.code).unwrap_or("not_sent").to_owned()),
                ..new_record(message, &now)
            }
        }
    };
    if let Err(error) = state.records.save(&record, sender).await {
        tracing::warn!(message_id = %message.id, %error, "could not keep the message record");
    }
}

fn new_record(message: &OutboundMessage, now: &str) -> MessageRecord {
    MessageRecord {
        id: message.id.clone(),
        channel: message.channel.as_str().to_owned(),
        provider: None,
        provider_message_id: None,
        status: DeliveryStatus::Failed,
        provider_status: None,
        error_code: None,
        to: message.to.masked(),
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
        parts: Vec::new(),
    }
}

/// Turns a request into a message ready to dispatch, or says what is wrong with it.
pub fn build_message(config: &Config, request: SendRequest) -> Result<OutboundMessage, ApiError> {
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
