//! The one place where failures become HTTP answers: RFC 9457 `application/problem+json`
//! with a stable `code` and whether retrying may help.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use otp_relay_providers::PhoneError;
use serde::Serialize;

use crate::dispatch::{Attempt, DispatchError};
use crate::guards::access::AccessDenied;
use crate::guards::idempotency::IdempotencyError;
use crate::guards::number_policy::NumberRefused;
use crate::guards::rate::Limited;
use crate::message::TextError;
use crate::store::StoreError;
use otp_relay_providers::callbacks::CallbackError;

/// The media type of every failure answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything the API can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedBody(String),
    #[error("the `mobile` field is required")]
    MissingMobile,
    #[error("`mobile` is not a usable phone number: {0}")]
    InvalidMobile(PhoneError),
    #[error("{0}")]
    InvalidText(TextError),
    #[error("`channel` must be one of sms, whatsapp, telegram")]
    InvalidChannel,
    #[error("`ttl` must be a whole number of seconds between 1 and 86400")]
    InvalidTtl,
    #[error("the body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the body did not arrive within {} seconds", .0.as_secs_f64())]
    BodyTimeout(std::time::Duration),
    #[error("the request line and headers are larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("{0}")]
    Access(AccessDenied),
    #[error("no route for this path")]
    NotFound,
    #[error("{error}")]
    Dispatch { id: String, error: DispatchError },
    #[error("{0}")]
    NumberRefused(NumberRefused),
    #[error("too many messages ({} limit); retry later", .0.scope.as_str())]
    RateLimited(Limited),
    #[error("{0}")]
    Idempotency(#[from] IdempotencyError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("too many sends in progress; retry shortly")]
    Overloaded,
    #[error("no message with this id (records are kept for MESSAGE_RETENTION)")]
    MessageNotFound,
    #[error("this webhook's provider or secret is not configured")]
    WebhookNotConfigured,
    #[error("{0}")]
    Callback(#[from] CallbackError),
}

/// The problem document (RFC 9457) with otp-relay's extension members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// `urn:otp-relay:problem:<code>`.
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: String,
    /// Stable machine-readable code.
    code: &'static str,
    /// Whether the same request may succeed later.
    retryable: bool,
    /// The message id, when a provider was tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<&'a [Attempt]>,
}

/// The `code` of a problem answer, left on the response for the metrics.
#[derive(Debug, Clone, Copy)]
pub struct ProblemCode(pub &'static str);

/// How an error is answered.
struct Classified {
    code: &'static str,
    status: StatusCode,
    title: &'static str,
    retryable: bool,
}

impl ApiError {
    /// The stable machine code, status, title and whether to retry.
    #[rustfmt::skip]
    fn classify(&self) -> Classified {
        use StatusCode as S;
        let (code, status, title, retryable) = match self {
            ApiError::MalformedBody(_) => ("malformed_json", S::BAD_REQUEST, "Malformed request body", false),
            ApiError::MissingMobile => ("missing_mobile", S::BAD_REQUEST, "Missing mobile number", false),
            ApiError::InvalidMobile(_) => ("invalid_mobile", S::UNPROCESSABLE_ENTITY, "Invalid mobile number", false),
            ApiError::InvalidText(_) => ("invalid_text", S::UNPROCESSABLE_ENTITY, "Invalid message text", false),
            ApiError::InvalidChannel => ("invalid_channel", S::UNPROCESSABLE_ENTITY, "Invalid channel", false),
            ApiError::InvalidTtl => ("invalid_ttl", S::UNPROCESSABLE_ENTITY, "Invalid TTL", false),
            ApiError::BodyTooLarge { .. } => ("body_too_large", S::PAYLOAD_TOO_LARGE, "Request body too large", false),
            ApiError::BodyTimeout(_) => ("request_timeout", S::REQUEST_TIMEOUT, "Request timeout", true),
            ApiError::HeadersTooLarge { .. } => ("headers_too_large", S::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request headers too large", false),
            ApiError::Access(AccessDenied::AddressNotAllowed) => ("forbidden", S::FORBIDDEN, "Forbidden", false),
            ApiError::Access(_) => ("unauthorized", S::UNAUTHORIZED, "Unauthorized", false),
            ApiError::NotFound => ("not_found", S::NOT_FOUND, "Not found", false),
            ApiError::NumberRefused(NumberRefused::CountryNotAllowed) => ("country_not_allowed", S::FORBIDDEN, "Country not allowed", false),
            ApiError::NumberRefused(NumberRefused::UnsupportedNumberType) => ("unsupported_number_type", S::UNPROCESSABLE_ENTITY, "Unsupported number type", false),
            ApiError::RateLimited(_) => ("rate_limited", S::TOO_MANY_REQUESTS, "Rate limited", true),
            ApiError::Idempotency(IdempotencyError::InvalidKey) => ("invalid_idempotency_key", S::BAD_REQUEST, "Invalid Idempotency-Key", false),
            ApiError::Idempotency(IdempotencyError::KeyReused) => ("idempotency_key_reused", S::UNPROCESSABLE_ENTITY, "Idempotency-Key reused", false),
            ApiError::Idempotency(IdempotencyError::StillInFlight) => ("deadline_exceeded", S::GATEWAY_TIMEOUT, "Deadline exceeded", true),
            ApiError::Idempotency(IdempotencyError::Store(_)) | ApiError::Store(_) => ("store_unavailable", S::SERVICE_UNAVAILABLE, "State store unavailable", true),
            ApiError::Overloaded => ("overloaded", S::SERVICE_UNAVAILABLE, "Overloaded", true),
            ApiError::MessageNotFound => ("message_not_found", S::NOT_FOUND, "Message not found", false),
            ApiError::WebhookNotConfigured => ("webhook_not_configured", S::NOT_FOUND, "Webhook not configured", false),
            ApiError::Callback(error) if error.is_auth_failure() => ("invalid_signature", S::UNAUTHORIZED, "Invalid signature", false),
            ApiError::Callback(_) => ("malformed_callback", S::BAD_REQUEST, "Malformed callback", false),
            ApiError::Dispatch { error, .. } => match error {
                DispatchError::NoProviderForChannel(_) => ("channel_not_configured", S::UNPROCESSABLE_ENTITY, "Channel not configured", false),
                // The caller can fix these (another number, a registered user): 422 with
                // the provider's own code.
                DispatchError::Rejected { error, .. } if error.is_recipient_problem() => (error.code(), S::UNPROCESSABLE_ENTITY, "Recipient refused by the provider", false),
                DispatchError::Rejected { .. } => ("provider_rejected", S::BAD_GATEWAY, "Provider rejected the message", false),
                DispatchError::Unavailable { .. } => ("no_provider_available", S::SERVICE_UNAVAILABLE, "No provider available", true),
                DispatchError::DeadlineExceeded { .. } => ("deadline_exceeded", S::GATEWAY_TIMEOUT, "Deadline exceeded", true),
            },
        };
        Classified { code, status, title, retryable }
    }

    /// The stable machine code of the answer.
    pub fn code(&self) -> &'static str {
        self.classify().code
    }

    /// The problem document this error is answered with, exactly as sent (kept under
    /// an `Idempotency-Key` to answer repeats alike).
    pub fn problem_json(&self) -> String {
        let Classified {
            code,
            status,
            title,
            retryable,
        } = self.classify();
        let (id, attempts) = match self {
            ApiError::Dispatch { id, error } => (Some(id.as_str()), Some(error.attempts())),
            _ => (None, None),
        };
        let problem = Problem {
            kind: format!("urn:otp-relay:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            code,
            retryable,
            id,
            attempts,
        };
        serde_json::to_string(&problem).unwrap_or_default()
    }

    /// Seconds to wait before trying again, for answers that carry `Retry-After`.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Dispatch {
                error: DispatchError::Unavailable { retry_after, .. },
                ..
            } => Some(retry_after.map_or(1, whole_seconds)),
            ApiError::RateLimited(limited) => Some(whole_seconds(limited.retry_after)),
            ApiError::Overloaded | ApiError::Store(_) => Some(1),
            _ => None,
        }
    }
}

/// `Retry-After` seconds: rounded up, at least one.
fn whole_seconds(duration: std::time::Duration) -> u64 {
    duration.as_secs_f64().ceil().max(1.0) as u64
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.classify().status
    }

    fn error_response(&self) -> HttpResponse {
        let Classified { code, status, .. } = self.classify();
        let body = self.problem_json();
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Some(seconds) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if matches!(
            self,
            ApiError::Access(AccessDenied::MissingKey | AccessDenied::WrongKey)
        ) {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        let mut response = response.body(body);
        // For the request metrics, which only see the response.
        response.extensions_mut().insert(ProblemCode(code));
        response
    }
}
