//! Stage 3: one send per `Idempotency-Key`, or per caller and (number, text) within
//! `DEDUPE_WINDOW` (see `crate::guards::idempotency`). A repeat gets the first
//! request's final answer, exactly as it was rendered then.

use std::sync::Arc;
use std::time::Duration;

use otp_relay_providers::OutboundMessage;
use tokio::time::Instant;

use super::{Render, SendError};
use crate::guards::idempotency::{self, Begin, KeySource, Ticket};
use crate::store::{Store, StoredAnswer};

/// What the send does after the idempotency check.
pub enum Claimed {
    /// Send; the ticket (when a key applies) takes the final answer.
    Proceed(Option<Ticket>),
    /// Answer as the first time.
    Replay(StoredAnswer),
}

/// Claims the send's key, or finds the answer of the same request made before.
pub async fn claim(
    store: &Arc<dyn Store>,
    message: &OutboundMessage,
    caller: &str,
    key: Option<&str>,
    (key_retention, dedupe_window): (Duration, Duration),
    deadline: Instant,
) -> Result<Claimed, SendError> {
    let source = KeySource {
        header: key,
        caller,
        e164: message.to.e164(),
        channel: message.channel.as_str(),
        text: &message.text,
    };
    Ok(
        match idempotency::begin(store, &source, key_retention, dedupe_window, deadline).await? {
            Some(Begin::Replay(answer)) => Claimed::Replay(answer),
            Some(Begin::Proceed(ticket)) => Claimed::Proceed(Some(ticket)),
            None => Claimed::Proceed(None),
        },
    )
}

/// Stores the final answer for repeats, or frees the key when the send provably went
/// nowhere (a repeat may then try again).
pub async fn settle(
    ticket: Ticket,
    outcome: Result<&StoredAnswer, &SendError>,
    render: &dyn Render,
) {
    match outcome {
        Ok(answer) => ticket.remember(answer).await,
        Err(error) if error.never_left() => ticket.release().await,
        // A provider may have sent it: the same failure for every repeat, no second send.
        Err(error) => ticket.remember(&render.failed(error)).await,
    }
}
