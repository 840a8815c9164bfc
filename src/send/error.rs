//! Why a send did not happen, in the send service's own terms (the HTTP layer maps these
//! to answers in `api::error`, the CLI to exit codes).

use otp_relay_providers::PhoneError;

use crate::dispatch::DispatchError;
use crate::guards::idempotency::IdempotencyError;
use crate::guards::number_policy::NumberRefused;
use crate::guards::rate::Limited;
use crate::message::TextError;
use crate::store::StoreError;

/// Everything a send can end with other than an accepted message or a replay.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
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
    #[error("{0}")]
    NumberRefused(NumberRefused),
    #[error("too many messages ({} limit); retry later", .0.scope.as_str())]
    RateLimited(Limited),
    #[error("{0}")]
    Idempotency(#[from] IdempotencyError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("too many sends in progress, or no memory left to keep their limits; retry shortly")]
    Overloaded,
    #[error("{error}")]
    Dispatch { id: String, error: DispatchError },
}

impl SendError {
    /// The stable machine code (the `code` of the HTTP problem answer, the `outcome`
    /// label of the send metrics).
    pub fn code(&self) -> &'static str {
        match self {
            SendError::MissingMobile => "missing_mobile",
            SendError::InvalidMobile(_) => "invalid_mobile",
            SendError::InvalidText(_) => "invalid_text",
            SendError::InvalidChannel => "invalid_channel",
            SendError::InvalidTtl => "invalid_ttl",
            SendError::NumberRefused(NumberRefused::CountryNotAllowed) => "country_not_allowed",
            SendError::NumberRefused(NumberRefused::UnsupportedNumberType) => {
                "unsupported_number_type"
            }
            SendError::RateLimited(_) => "rate_limited",
            SendError::Idempotency(IdempotencyError::InvalidKey) => "invalid_idempotency_key",
            SendError::Idempotency(IdempotencyError::KeyReused) => "idempotency_key_reused",
            SendError::Idempotency(IdempotencyError::StillInFlight) => "deadline_exceeded",
            SendError::Idempotency(IdempotencyError::Store(_)) | SendError::Store(_) => {
                "store_unavailable"
            }
            SendError::Overloaded => "overloaded",
            SendError::Dispatch { error, .. } => match error {
                DispatchError::NoProviderForChannel(_) => "channel_not_configured",
                DispatchError::Rejected { error, .. } if error.is_recipient_problem() => {
                    error.code()
                }
                DispatchError::Rejected { .. } => "provider_rejected",
                DispatchError::Unavailable { .. } => "no_provider_available",
                DispatchError::DeadlineExceeded { .. } => "deadline_exceeded",
            },
        }
    }

    /// The request itself is unusable (missing or invalid fields): sending it again
    /// unchanged cannot succeed, whatever the limits or providers.
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            SendError::MissingMobile
                | SendError::InvalidMobile(_)
                | SendError::InvalidText(_)
                | SendError::InvalidChannel
                | SendError::InvalidTtl
        )
    }

    /// Whether the send provably reached no provider: refused before dispatch (policy,
    /// rate limit, store), or a dispatch that never left (see
    /// `DispatchError::never_left`).
    pub fn never_left(&self) -> bool {
        match self {
            SendError::Dispatch { error, .. } => error.never_left(),
            _ => true,
        }
    }
}
