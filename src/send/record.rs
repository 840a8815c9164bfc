//! Stage 7: keeps the send's outcome for `GET /v1/messages/{id}` (shown to the caller
//! that sent it only) and for delivery reports, and schedules what follows a send: the
//! status and price lookups, and the channel fallback.

use std::time::SystemTime;

use otp_relay_providers::{DeliveryStatus, OutboundMessage};

use crate::channel_fallback::ChannelFallbacks;
use crate::dispatch::{Delivery, DispatchError, Route};
use crate::followup::Followups;
use crate::records::{timestamp, MessageRecord, Records};

/// What follows a send.
pub struct After<'a> {
    pub followups: &'a Followups,
    pub fallbacks: &'a ChannelFallbacks,
}

/// Records the outcome. A record that cannot be kept is logged; the send itself stands.
pub async fn keep(
    records: &Records,
    after: After<'_>,
    message: &OutboundMessage,
    route: Route<'_>,
    sender: &str,
    result: &Result<Delivery, DispatchError>,
) {
    let now = timestamp(SystemTime::now());
    let route = route.selector().map(ToString::to_string);
    let record = match result {
        Ok(delivery) => MessageRecord {
            channel: delivery.channel.as_str().to_owned(),
            provider: Some(delivery.receipt.provider.clone()),
            provider_message_id: delivery.receipt.provider_message_id.clone(),
            status: delivery.receipt.status,
            provider_status: delivery.receipt.raw_status.clone(),
            error_code: None,
            cost: delivery.receipt.cost.clone(),
            ..new_record(message, route, &now)
        }
        .with_parts(&delivery.receipt.part_ids),
        Err(error) => {
            let last = error.attempts().last();
            MessageRecord {
                provider: last.map(|a| a.provider.to_owned()),
                error_code: Some(last.and_then(|a| a.code).unwrap_or("not_sent").to_owned()),
                ..new_record(message, route, &now)
            }
        }
    };
    // Before the record is kept, so that no report (they find the message through the
    // record) can come before the fallback it would cancel or hasten.
    if let Ok(delivery) = result {
        after.fallbacks.after_send(message, delivery).await;
    }
    if let Err(error) = records.save(&record, sender).await {
        tracing::warn!(message_id = %message.id, %error, "could not keep the message record");
    }
    if let Ok(delivery) = result {
        after
            .followups
            .after_send(delivery.channel, &delivery.receipt, message.ttl);
    }
}

fn new_record(message: &OutboundMessage, route: Option<String>, now: &str) -> MessageRecord {
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
        route,
        fallback: None,
    }
}
