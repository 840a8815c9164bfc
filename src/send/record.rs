//! Stage 7: keeps the send's outcome for `GET /v1/messages/{id}` (shown to the caller
//! that sent it only) and for delivery reports, and schedules what follows a send: the
//! status and price lookups, and the channel fallback.

use std::time::SystemTime;

use otp_relay_providers::OutboundMessage;

use crate::channel_fallback::ChannelFallbacks;
use crate::dispatch::{Delivery, DispatchError, Route};
use crate::followup::Followups;
use crate::records::{timestamp, MessageRecord, Records, Sent};

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
    let sent = Sent::of(result, message.channel);
    let part_ids = result.as_ref().map_or(&[][..], |d| &d.receipt.part_ids[..]);
    let record = MessageRecord {
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
    .with_parts(part_ids);
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
