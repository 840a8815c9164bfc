//! Stage 3: one send per `Idempotency-Key`, or per caller and (number, text) within
//! `DEDUPE_WINDOW` (see `crate::guards::idempotency`). A repeat gets the first
//! request's final answer, exactly as it was rendered then. The claim also counts the
//! send against the rate limits (stage 4) when it can, in the same store operation.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use otp_relay_providers::OutboundMessage;
use tokio::time::Instant;

use super::{limits, Render, SendError};
use crate::guards::idempotency::{self, Begin, KeySource, Ticket};
use crate::guards::rate::Counting;
use crate::store::{Store, StoreError, StoredAnswer};

/// What the send does after the idempotency check.
pub enum Claimed {
    /// Send; the ticket (when a key applies) takes the final answer. `counted`: the rate
    /// limits were counted with the claim.
    Proceed {
        ticket: Option<Ticket>,
        counted: bool,
    },
    /// Answer as the first time.
    Replay(StoredAnswer),
}

/// Claims the send's key, or finds the answer of the same request made before. With
/// `counting`, a claim counts the send against those limits too, and a limit that
/// refuses it leaves the key free.
pub async fn claim(
    store: &Arc<dyn Store>,
    message: &OutboundMessage,
    caller: &str,
    key: Option<&str>,
    (key_retention, dedupe_window): (Duration, Duration),
    deadline: Instant,
    counting: Option<&Counting>,
) -> Result<Claimed, SendError> {
    let source = KeySource {
        header: key,
        caller,
        e164: message.to.e164(),
        channel: message.channel.as_str(),
        text: &message.text,
    };
    let limits = counting.map(Counting::limits);
    let begun = idempotency::begin(
        store,
        &source,
        key_retention,
        dedupe_window,
        deadline,
        limits.as_deref(),
    )
    .await?;
    Ok(match begun {
        Some(Begin::Replay(answer)) => Claimed::Replay(answer),
        Some(Begin::Proceed(ticket)) => Claimed::Proceed {
            ticket: Some(ticket),
            counted: counting.is_some(),
        },
        Some(Begin::Limited { limit, retry_after }) => {
            let limited = counting
                .ok_or_else(|| StoreError("a limit refused that was not asked".into()))?
                .limited(limit, retry_after)?;
            return Err(limits::refused(message, limited));
        }
        None => Claimed::Proceed {
            ticket: None,
            counted: false,
        },
    })
}

/// The answer to keep for repeats, or `None` when the key is to be freed: the send
/// provably went nowhere (a repeat may then try again).
pub fn to_keep<'a>(
    outcome: Result<&'a StoredAnswer, &SendError>,
    render: &dyn Render,
) -> Option<Cow<'a, StoredAnswer>> {
    match outcome {
        Ok(answer) => Some(Cow::Borrowed(answer)),
        Err(error) if error.never_left() => None,
        // A provider may have sent it: the same failure for every repeat, no second send.
        Err(error) => Some(Cow::Owned(render.failed(error))),
    }
}

/// Stores the final answer for repeats, or frees the key (see [`to_keep`]).
pub async fn settle(
    ticket: Ticket,
    outcome: Result<&StoredAnswer, &SendError>,
    render: &dyn Render,
) {
    match to_keep(outcome, render) {
        Some(answer) => ticket.remember(&answer).await,
        None => ticket.release().await,
    }
}
