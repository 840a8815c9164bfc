//! The one place where failures become HTTP answers: RFC 9457 `application/problem+json`
//! with a stable `code` and whether retrying may help.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::dispatch::{Attempt, DispatchError};
use crate::guards::access::AccessDenied;
use crate::guards::idempotency::IdempotencyError;
use crate::guards::number_policy::NumberRefused;
use crate::guards::rate::Scope;
use crate::send::SendError;
use crate::store::StoreError;
use otp_relay_providers::callbacks::CallbackError;

/// The media type of every failure answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything the API can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedBody(String),
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
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("{0}")]
    Store(#[from] StoreError),
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
    /// Which rate limit refused the send (429 `rate_limited` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<Scope>,
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
            ApiError::BodyTooLarge { .. } => ("body_too_large", S::PAYLOAD_TOO_LARGE, "Request body too large", false),
            ApiError::BodyTimeout(_) => ("request_timeout", S::REQUEST_TIMEOUT, "Request timeout", true),
            ApiError::HeadersTooLarge { .. } => ("headers_too_large", S::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request headers too large", false),
            ApiError::Access(AccessDenied::AddressNotAllowed) => ("forbidden", S::FORBIDDEN, "Forbidden", false),
            ApiError::Access(_) => ("unauthorized", S::UNAUTHORIZED, "Unauthorized", false),
            ApiError::NotFound => ("not_found", S::NOT_FOUND, "Not found", false),
            ApiError::Store(_) => ("store_unavailable", S::SERVICE_UNAVAILABLE, "State store unavailable", true),
            ApiError::Send(error) => return classify_send(error),
            ApiError::MessageNotFound => ("message_not_found", S::NOT_FOUND, "Message not found", false),
            ApiError::WebhookNotConfigured => ("webhook_not_configured", S::NOT_FOUND, "Webhook not configured", false),
            ApiError::Callback(CallbackError::MethodNotAllowed) => ("method_not_allowed", S::METHOD_NOT_ALLOWED, "Method not allowed", false),
            ApiError::Callback(error) if error.is_auth_failure() => ("invalid_signature", S::UNAUTHORIZED, "Invalid signature", false),
            ApiError::Callback(_) => ("malformed_callback", S::BAD_REQUEST, "Malformed callback", false),
        };
        Classified { code, status, title, retryable }
    }

    /// The stable machine code of the answer.
    pub fn code(&self) -> &'static str {
        self.classify().code
    }

    /// The problem document this error is answered with, exactly as sent.
    pub fn problem_json(&self) -> String {
        match self {
            ApiError::Send(error) => send_problem_json(error),
            _ => problem_json(self.classify(), self.to_string(), None, None, None),
        }
    }

    /// Seconds to wait before trying again, for answers that carry `Retry-After`.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Send(error) => send_retry_after(error),
            ApiError::Store(_) => Some(1),
            _ => None,
        }
    }
}

/// The `Retry-After` seconds of a send that did not happen, for answers that carry one
/// (kept with the answer under an `Idempotency-Key`, so repeats carry it too).
pub fn send_retry_after(error: &SendError) -> Option<u64> {
    match error {
        SendError::Dispatch {
            error: DispatchError::Unavailable { retry_after, .. },
            ..
        } => Some(retry_after.map_or(1, whole_seconds)),
        SendError::RateLimited(limited) => Some(whole_seconds(limited.retry_after)),
        SendError::Overloaded | SendError::Store(_) => Some(1),
        _ => None,
    }
}

/// The HTTP status of a send that did not happen.
pub fn send_status(error: &SendError) -> StatusCode {
    classify_send(error).status
}

/// The problem document a send that did not happen is answered with, exactly as sent
/// (kept under an `Idempotency-Key` to answer repeats alike).
pub fn send_problem_json(error: &SendError) -> String {
    let (id, attempts) = match error {
        SendError::Dispatch { id, error } => (Some(id.as_str()), Some(error.attempts())),
        _ => (None, None),
    };
    let limit = match error {
        SendError::RateLimited(limited) => Some(limited.scope),
        _ => None,
    };
    problem_json(classify_send(error), error.to_string(), id, attempts, limit)
}

fn problem_json(
    classified: Classified,
    detail: String,
    id: Option<&str>,
    attempts: Option<&[Attempt]>,
    limit: Option<Scope>,
) -> String {
    let Classified {
        code,
        status,
        title,
        retryable,
    } = classified;
    let problem = Problem {
        kind: format!("urn:otp-relay:problem:{code}"),
        title,
        status: status.as_u16(),
        detail,
        code,
        retryable,
        id,
        attempts,
        limit,
    };
    serde_json::to_string(&problem).unwrap_or_default()
}

/// How a send that did not happen is answered (its `code` is the send service's own).
#[rustfmt::skip]
fn classify_send(error: &SendError) -> Classified {
    use StatusCode as S;
    let (status, title, retryable) = match error {
        SendError::MissingMobile => (S::BAD_REQUEST, "Missing mobile number", false),
        SendError::InvalidMobile(_) => (S::UNPROCESSABLE_ENTITY, "Invalid mobile number", false),
        SendError::InvalidText(_) => (S::UNPROCESSABLE_ENTITY, "Invalid message text", false),
        SendError::InvalidChannel => (S::UNPROCESSABLE_ENTITY, "Invalid channel", false),
        SendError::InvalidTtl => (S::UNPROCESSABLE_ENTITY, "Invalid TTL", false),
        SendError::NumberRefused(NumberRefused::CountryNotAllowed) => (S::FORBIDDEN, "Country not allowed", false),
        SendError::NumberRefused(NumberRefused::UnsupportedNumberType) => (S::UNPROCESSABLE_ENTITY, "Unsupported number type", false),
        SendError::RateLimited(_) => (S::TOO_MANY_REQUESTS, "Rate limited", true),
        SendError::Idempotency(IdempotencyError::InvalidKey) => (S::BAD_REQUEST, "Invalid Idempotency-Key", false),
        SendError::Idempotency(IdempotencyError::KeyReused) => (S::UNPROCESSABLE_ENTITY, "Idempotency-Key reused", false),
        SendError::Idempotency(IdempotencyError::StillInFlight) => (S::GATEWAY_TIMEOUT, "Deadline exceeded", true),
        SendError::Idempotency(IdempotencyError::Store(_)) | SendError::Store(_) => (S::SERVICE_UNAVAILABLE, "State store unavailable", true),
        SendError::Overloaded => (S::SERVICE_UNAVAILABLE, "Overloaded", true),
        SendError::Dispatch { error, .. } => match error {
            DispatchError::NoProviderForChannel(_) => (S::UNPROCESSABLE_ENTITY, "Channel not configured", false),
            // The caller can fix these (another number, a registered user): 422 with
            // the provider's own code.
            DispatchError::Rejected { error, .. } if error.is_recipient_problem() => (S::UNPROCESSABLE_ENTITY, "Recipient refused by the provider", false),
            DispatchError::Rejected { .. } => (S::BAD_GATEWAY, "Provider rejected the message", false),
            DispatchError::Unavailable { .. } => (S::SERVICE_UNAVAILABLE, "No provider available", true),
            DispatchError::DeadlineExceeded { .. } => (S::GATEWAY_TIMEOUT, "Deadline exceeded", true),
        },
    };
    Classified { code: error.code(), status, title, retryable }
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
