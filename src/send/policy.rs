//! Stage 2: where and to what kind of line the message may go (`ALLOWED_COUNTRIES`,
//! `BLOCKED_COUNTRIES`, `ALLOW_NON_MOBILE`), checked before anything is claimed or
//! counted.

use otp_relay_providers::OutboundMessage;

use super::SendError;
use crate::guards::number_policy;
use crate::guards::Limits;

/// Refuses a number the policy does not allow.
pub fn check(message: &OutboundMessage, limits: &Limits) -> Result<(), SendError> {
    number_policy::check(&message.to, limits).map_err(SendError::NumberRefused)
}
