//! Stage 7: keeps the send's outcome for `GET /v1/messages/{id}` (shown to the caller
//! that sent it only) and for delivery reports, and schedules what follows a send: the
//! status and price lookups, and the channel fallback. The idempotency claim is settled
//! with the record, in one store operation.

use std::time::SystemTime;

use otp_relay_providers::OutboundMessage;

use crate::channel_fallback::ChannelFallbacks;
use crate::dispatch::{Delivery, DispatchError, Route};
use crate::followup::Followups;
use crate::guards::idempotency::Ticket;
use crate::records::{timestamp, LegState, MessageRecord, Records};
use crate::store::StoredAnswer;

/// What follows a send.
pub struct After<'a> {
    pub followups: &'a Followups,
    pub fallbacks: &'a ChannelFallbacks,
}

/// The record of a send's outcome, to [`keep`].
pub fn of(
    message: &OutboundMessage,
    route: Route<'_>,
    result: &Result<Delivery, DispatchError>,
) -> MessageRecord {
    let now = timestamp(SystemTime::now());
    let route = route.selector().map(ToString::to_string);
    let sent = LegState::of(result, message.channel);
    let part_ids = result.as_ref().map_or(&[][..], |d| &d.receipt.part_ids[..]);
    MessageRecord {
        channel: sent.channel,
        provider: sent.provider,
        provider_message_id: sent.provider_message_id,
        status: sent.status,
        provider_status: sent.provider_status,
        error_code: sent.error_code,
        cost: sent.cost,
        id: message.id.clone(),
        to: message.to.masked(),
        created_at: now.clone(),
        updated_at: now,
        parts: Vec::new(),
        route,
        fallback: None,
    }
    .with_parts(part_ids)
}

/// Keeps the record of a send (`delivery` when a provider accepted it) and, for a send
/// with an idempotency key, settles its claim in the same store operation: the answer
/// kept for repeats, or (`None`) the key freed (see `idempotency::to_keep`). A record
/// that cannot be kept is logged; the send itself stands.
pub async fn keep(
    records: &Records,
    after: After<'_>,
    message: &OutboundMessage,
    sender: &str,
    record: &MessageRecord,
    delivery: Option<&Delivery>,
    claim: Option<(Ticket, Option<&StoredAnswer>)>,
) {
    // Before the record is kept, so that no report (they find the message through the
    // record) can come before the fallback it would cancel or hasten.
    if let Some(delivery) = delivery {
        after.fallbacks.after_send(message, delivery).await;
    }
    let saved = match claim {
        None => records.save(record, sender).await,
        Some((ticket, answer)) => {
            let done = records
                .save_and_settle(record, sender, &ticket.settle(answer))
                .await;
            ticket.settled(answer.is_some(), done.settle);
            done.put
        }
    };
    if let Err(error) = saved {
        tracing::warn!(message_id = %message.id, %error, "could not keep the message record");
    }
    if let Some(delivery) = delivery {
        after
            .followups
            .after_send(delivery.channel, &delivery.receipt, message.ttl);
    }
}
