//! Stage 6: keeps the send's outcome for `GET /v1/messages/{id}` (shown to the caller
//! that sent it only) and for delivery reports, and schedules the status and price
//! lookups that follow a send. The idempotency claim is settled with the record, in one
//! store operation.

use std::time::SystemTime;

use otp_relay_providers::{DeliveryStatus, OutboundMessage};

use crate::dispatch::{Delivery, DispatchError};
use crate::followup::Followups;
use crate::guards::idempotency::Ticket;
use crate::records::{timestamp, MessageRecord, Records};
use crate::store::StoredAnswer;

/// The record of a send's outcome, to [`keep`].
pub fn of(message: &OutboundMessage, result: &Result<Delivery, DispatchError>) -> MessageRecord {
    let now = timestamp(SystemTime::now());
    match result {
        Ok(delivery) => MessageRecord {
            channel: delivery.channel.as_str().to_owned(),
            provider: Some(delivery.receipt.provider.clone()),
            provider_message_id: delivery.receipt.provider_message_id.clone(),
            status: delivery.receipt.status,
            provider_status: delivery.receipt.raw_status.clone(),
            error_code: None,
            cost: delivery.receipt.cost.clone(),
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
    }
}

/// Keeps the record and, for a send with an idempotency key, settles its claim in the
/// same store operation: the answer kept for repeats, or (`None`) the key freed (see
/// `idempotency::to_keep`). A record that cannot be kept is logged; the send itself
/// stands. A delivery's follow-up lookups are scheduled once its record is kept.
pub async fn keep(
    records: &Records,
    followups: &Followups,
    message: &OutboundMessage,
    sender: &str,
    record: MessageRecord,
    delivery: Option<&Delivery>,
    claim: Option<(Ticket, Option<&StoredAnswer>)>,
) {
    let saved = match claim {
        None => records.save(&record, sender).await,
        Some((ticket, answer)) => {
            let done = records
                .save_and_settle(&record, sender, &ticket.settle(answer))
                .await;
            ticket.settled(answer.is_some(), done.settle);
            done.put
        }
    };
    if let Err(error) = saved {
        tracing::warn!(message_id = %message.id, %error, "could not keep the message record");
    }
    if let Some(delivery) = delivery {
        followups.after_send(delivery.channel, &delivery.receipt, message.ttl);
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
        cost: None,
        parts: Vec::new(),
    }
}
