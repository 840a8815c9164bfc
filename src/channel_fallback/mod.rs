//! Delivery-aware channel fallback (`CHANNEL_FALLBACK=sms`): a message sent on another
//! channel (Telegram, WhatsApp) that is not reported delivered (or read) within
//! `CHANNEL_FALLBACK_AFTER` is sent once more, by SMS, with the same text and code. A
//! failure report (failed, expired, undelivered) makes it due at once; a delivery
//! report cancels it.
//!
//! - After the send is accepted, a pending fallback (the destination, the text and the
//!   code, due `CHANNEL_FALLBACK_AFTER` later) goes to the store: with Redis it outlives
//!   the replica that accepted the send, and every replica sweeps the due ones; in
//!   memory it is lost with the process. Its payload lives at most the message's time
//!   to live, and is deleted when the fallback is finished or cancelled.
//! - Reports reach it through [`Records::apply`] (a [`StatusHook`]), whatever brought
//!   them: a webhook or a poll.
//! - A [worker](worker) per replica takes due fallbacks, at most
//!   [`FallbackSettings::batch`] at a time, every [`FallbackSettings::sweep_every`] or
//!   at once when a report on this replica made one due, and sends them through the
//!   dispatcher on the SMS channel (failover and circuits apply; rate limits are not
//!   counted again: the message was counted once).
//! - Taking one leases it to the replica (atomically: one replica at a time) for twice
//!   `REQUEST_DEADLINE` ([`worker::lease`]); the replica finishes it
//!   (deletes it) once the SMS leg is saved on the record. A replica that stops in
//!   between (killed, or its runtime ended by a shutdown) leaves the lease to run out,
//!   and then another takes it again: at least once. It checks the record first, and
//!   sends nothing when the leg is already there, so a second SMS goes out only when a
//!   replica stopped during the provider call itself.
//! - A recipient who is not on the channel at all still gets the SMS at once, from the
//!   dispatcher itself ([`crate::dispatch`]); this is for messages a channel accepted.

pub mod worker;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use otp_relay_providers::{Channel, DeliveryStatus, OutboundMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::dispatch::Delivery;
use crate::prometheus;
use crate::records::{MessageRecord, StatusHook};
use crate::store::Store;

/// When and how fallbacks happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackSettings {
    /// `CHANNEL_FALLBACK`: the channel to fall back to (`sms`), or `None` (`off`).
    pub channel: Option<Channel>,
    /// `CHANNEL_FALLBACK_AFTER`: how long a send waits for its delivery report.
    pub after: Duration,
    /// How often each replica looks for due fallbacks (no variable).
    pub sweep_every: Duration,
    /// Most fallbacks taken, and sent at once, per look (no variable).
    pub batch: usize,
}

/// `CHANNEL_FALLBACK_AFTER` when not set.
pub const DEFAULT_AFTER: Duration = Duration::from_secs(20);

impl Default for FallbackSettings {
    fn default() -> Self {
        FallbackSettings {
            channel: None,
            after: DEFAULT_AFTER,
            sweep_every: Duration::from_secs(1),
            batch: 16,
        }
    }
}

/// What the store keeps of a pending fallback: what the SMS needs.
#[derive(Serialize, Deserialize)]
struct Payload {
    /// E.164.
    to: String,
    text: String,
    code: Option<String>,
    /// When the code stops being worth delivering, in ms since 1970.
    expires_at: u64,
}

/// Schedules fallbacks and hears of reports (cheap to clone).
#[derive(Clone)]
pub struct ChannelFallbacks {
    store: Arc<dyn Store>,
    settings: FallbackSettings,
    /// Wakes this replica's worker when a report here made a fallback due.
    wake: Arc<Notify>,
}

fn unix_millis(at: SystemTime) -> u64 {
    u64::try_from(
        at.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

impl ChannelFallbacks {
    /// Fallbacks over `store`, off unless `settings.channel` names one.
    pub fn new(store: Arc<dyn Store>, settings: FallbackSettings) -> Self {
        ChannelFallbacks {
            store,
            settings,
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.channel.is_some()
    }

    /// After a provider accepted `message` on `delivery.channel`: keeps a pending SMS,
    /// unless the message already went by SMS or is already delivered. It is kept for
    /// the message's time to live, even when that ends before the fallback is due: a
    /// failure report may still make it due before then. A fallback that cannot be kept
    /// is logged and counted; the send itself stands.
    pub async fn after_send(&self, message: &OutboundMessage, delivery: &Delivery) {
        let Some(fallback) = self.settings.channel else {
            return;
        };
        let status = delivery.receipt.status;
        if delivery.channel == fallback || status == DeliveryStatus::Delivered {
            return;
        }
        let delay = if status.is_final() {
            Duration::ZERO
        } else {
            self.settings.after
        };
        let payload = Payload {
            to: message.to.e164().to_owned(),
            text: message.text.clone(),
            code: message.code.clone(),
            expires_at: unix_millis(SystemTime::now() + message.ttl),
        };
        let payload = serde_json::to_string(&payload).expect("a payload serializes");
        let scheduled = self
            .store
            .schedule_fallback(&message.id, &payload, delay, message.ttl)
            .await;
        if let Err(error) = scheduled {
            count(
                if delay.is_zero() { "failed" } else { "timeout" },
                "not_scheduled",
            );
            tracing::warn!(message_id = %message.id, %error, "could not keep the channel fallback");
        } else if delay.is_zero() {
            self.wake.notify_one();
        }
    }
}

/// Counts one fallback under its reason and outcome.
fn count(reason: &'static str, outcome: &'static str) {
    prometheus::counter(
        prometheus::CHANNEL_FALLBACKS,
        &[("reason", reason), ("outcome", outcome)],
    )
    .increment(1);
}

#[async_trait]
impl StatusHook for ChannelFallbacks {
    /// Delivered (or read) cancels the fallback; failed, expired or undelivered makes it
    /// due now.
    async fn status_moved(&self, record: &MessageRecord) {
        if !self.enabled() {
            return;
        }
        let result = match record.status {
            DeliveryStatus::Delivered => self.store.cancel_fallback(&record.id).await,
            DeliveryStatus::Failed | DeliveryStatus::Undelivered => {
                let hastened = self.store.hasten_fallback(&record.id).await;
                if matches!(hastened, Ok(true)) {
                    self.wake.notify_one();
                }
                hastened
            }
            DeliveryStatus::Queued | DeliveryStatus::Sent => return,
        };
        match result {
            Ok(true) => tracing::info!(
                message_id = %record.id,
                status = %record.status,
                "channel fallback {}",
                if record.status == DeliveryStatus::Delivered { "cancelled" } else { "due now" }
            ),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                message_id = %record.id,
                %error,
                "could not update the channel fallback"
            ),
        }
    }
}
