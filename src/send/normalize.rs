//! Stage 1: the request's fields become a message ready to dispatch (E.164 number,
//! channel, final text and code, TTL), or the reason they cannot.

use std::time::Duration;

use otp_relay_providers::{OutboundMessage, Phone};

use super::{Request, SendError};
use crate::config::Config;
use crate::message::{compose, TextFields};

const MAX_TTL_SECONDS: u64 = 86_400;

/// Turns a request into a message ready to dispatch, or says what is wrong with it.
pub fn message(config: &Config, request: Request) -> Result<OutboundMessage, SendError> {
    let mobile = request.mobile.ok_or(SendError::MissingMobile)?;
    let to = Phone::parse(&mobile, config.default_region).map_err(SendError::InvalidMobile)?;
    let channel = match request.channel.as_deref().map(str::trim) {
        None | Some("") => config.default_channel,
        Some(name) => name.parse().map_err(|_| SendError::InvalidChannel)?,
    };
    let ttl = match request.ttl {
        None => config.message_ttl,
        Some(seconds @ 1..=MAX_TTL_SECONDS) => Duration::from_secs(seconds),
        Some(_) => return Err(SendError::InvalidTtl),
    };
    let composed = compose(
        TextFields {
            totp: request.totp.as_deref(),
            message: request.message.as_deref(),
            code: request.code.as_deref(),
            locale: request.locale.as_deref(),
        },
        &config.templates,
    )
    .map_err(SendError::InvalidText)?;
    Ok(OutboundMessage {
        id: ulid::Ulid::new().to_string(),
        to,
        channel,
        text: composed.text,
        code: composed.code,
        ttl,
    })
}
