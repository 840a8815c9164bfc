//! The replica's fallback worker: takes (leases) due fallbacks from the store and sends
//! each by SMS through the dispatcher, then shows the leg on the message's record and
//! finishes the fallback in the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use otp_relay_providers::{Channel, OutboundMessage, Phone};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{count, unix_millis, ChannelFallbacks, Payload};
use crate::dispatch::Dispatcher;
use crate::followup::Followups;
use crate::records::{timestamp, FallbackLeg, LegState, Records};
use crate::store::{Store, TakenFallback};

struct Worker {
    store: Arc<dyn Store>,
    records: Records,
    dispatcher: Arc<Dispatcher>,
    /// Status polls and price lookups for the SMS, as for any send.
    followups: Followups,
    channel: Channel,
    /// Each SMS gets this long (`REQUEST_DEADLINE`).
    deadline: Duration,
    /// How long a taken fallback stays this replica's.
    lease: Duration,
}

/// How long a taken fallback stays with its taker, for SMS sent within `deadline`
/// (`REQUEST_DEADLINE`): the send's deadline, and as long again to save its leg on the
/// record (a few store calls, each within `REDIS_TIMEOUT`, itself within the deadline).
/// Past it the fallback is taken again, by whichever replica looks first.
pub fn lease(deadline: Duration) -> Duration {
    deadline * 2
}

/// Starts this replica's worker (on the current Tokio runtime), when fallbacks are on
/// and some provider serves the fallback channel.
pub fn start(
    fallbacks: &ChannelFallbacks,
    records: Records,
    dispatcher: Arc<Dispatcher>,
    followups: Followups,
    deadline: Duration,
) {
    let Some(channel) = fallbacks.settings.channel else {
        return;
    };
    if !dispatcher.providers().any(|p| p.serves(channel)) {
        tracing::warn!(
            %channel,
            "CHANNEL_FALLBACK is set but no configured provider serves the channel: \
             pending fallbacks will wait for a replica that has one"
        );
        return;
    }
    let worker = Arc::new(Worker {
        store: Arc::clone(&fallbacks.store),
        records,
        dispatcher,
        followups,
        channel,
        deadline,
        lease: lease(deadline),
    });
    let wake = Arc::clone(&fallbacks.wake);
    let every = fallbacks.settings.sweep_every;
    let batch = fallbacks.settings.batch.max(1);
    tokio::spawn(async move {
        loop {
            // A bounded wait, or less when a report here made one due.
            let _ = tokio::time::timeout(every, wake.notified()).await;
            // Batch after batch while full ones come.
            while worker.sweep(batch).await == batch {}
        }
    });
}

impl Worker {
    /// Takes up to `batch` due fallbacks and sends them, all at once; returns how many
    /// it took.
    async fn sweep(self: &Arc<Self>, batch: usize) -> usize {
        let taken = match self.store.take_due_fallbacks(batch, self.lease).await {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(%error, "could not take due channel fallbacks");
                return 0;
            }
        };
        let n = taken.len();
        let mut sends = JoinSet::new();
        for fallback in taken {
            let worker = Arc::clone(self);
            sends.spawn(async move { worker.handle(fallback).await });
        }
        while sends.join_next().await.is_some() {}
        n
    }

    /// Sends one fallback (unless an earlier taker did), then finishes it.
    async fn handle(&self, fallback: TakenFallback) {
        let id = fallback.id.clone();
        if fallback.retaken {
            // Its earlier taker stopped: after the leg was saved, or before.
            match self.records.has_fallback_leg(&id).await {
                Ok(true) => {
                    tracing::info!(message_id = %id, "channel fallback already sent");
                    self.finish(&id).await;
                    return;
                }
                Ok(false) => {}
                Err(error) => {
                    // Left leased: taken again when the lease runs out.
                    tracing::warn!(message_id = %id, %error, "could not read the record");
                    return;
                }
            }
        }
        self.send(fallback).await;
        self.finish(&id).await;
    }

    async fn finish(&self, id: &str) {
        if let Err(error) = self.store.finish_fallback(id).await {
            tracing::warn!(message_id = %id, %error, "could not finish the channel fallback");
        }
    }

    /// Sends one fallback, unless its code lapsed.
    async fn send(&self, fallback: TakenFallback) {
        let reason = if fallback.hastened {
            "failed"
        } else {
            "timeout"
        };
        let id = fallback.id;
        let Ok(payload) = serde_json::from_str::<Payload>(&fallback.payload) else {
            tracing::warn!(message_id = %id, "unreadable channel fallback: dropped");
            return;
        };
        let now = SystemTime::now();
        let left = Duration::from_millis(payload.expires_at.saturating_sub(unix_millis(now)));
        let Ok(to) = Phone::parse(&payload.to, None) else {
            return;
        };
        if left.is_zero() {
            return;
        }
        let message = OutboundMessage {
            id: id.clone(),
            to,
            channel: self.channel,
            text: payload.text,
            code: payload.code,
            ttl: left,
        };
        // The SMS takes the destination's route too (ROUTES), as a first send would.
        let route = self.dispatcher.route_for(&message.to);
        let result = self
            .dispatcher
            .send(route, &message, Instant::now() + self.deadline)
            .await;
        let sent = LegState::of(&result, self.channel);
        let leg = FallbackLeg::new(reason, sent, timestamp(SystemTime::now()));
        count(reason, if result.is_ok() { "sent" } else { "failed" });
        match &result {
            Ok(delivery) => tracing::info!(
                message_id = %id,
                to = %message.to.masked(),
                reason,
                provider = %delivery.receipt.provider,
                "channel fallback sent"
            ),
            Err(error) => tracing::warn!(
                message_id = %id,
                to = %message.to.masked(),
                reason,
                "channel fallback not sent: {error}"
            ),
        }
        if let Err(error) = self.records.save_fallback_leg(&id, &leg).await {
            tracing::warn!(message_id = %id, %error, "could not record the channel fallback");
        }
        if let Ok(delivery) = &result {
            // After the leg is saved, so a poll's answer finds it.
            self.followups
                .after_send(delivery.channel, &delivery.receipt, message.ttl);
        }
    }
}
