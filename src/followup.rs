//! After the send: learning what became of a message, and what it cost, where the
//! provider's answer and callbacks do not say, and keeping the account balances in view.
//!
//! - SendPulse sends no SMS delivery callback, so its campaigns are polled: first
//!   [`FollowupSettings::first_poll`] after the send, then backing off (doubling, up to
//!   [`FollowupSettings::max_poll_interval`]) until a final status or the message's time
//!   to live ([`Followup::PollUntilFinal`]).
//! - Twilio's callbacks carry no price: the message is looked up once,
//!   [`FollowupSettings::price_delay`] after its final status ([`Followup::PriceAfterFinal`]).
//! - One worker task does every lookup, one at a time, from a queue of at most
//!   [`FollowupSettings::queue`] jobs: when it is full a job is dropped (counted in
//!   `otp_relay_followups_total{outcome="dropped"}` and logged) and its record keeps its
//!   status. Each lookup is claimed in the store first, so replicas sharing Redis never
//!   both make it.
//! - One more task reads every provider's balance into `otp_relay_provider_balance`,
//!   every [`FollowupSettings::balance_every`].

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use otp_relay_providers::{
    Channel, DeliveryStatus, Followup, MessageProvider, Money, ProviderError, Receipt,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::guards::digest;
use crate::prometheus;
use crate::records::{MessageRecord, Records};
use crate::store::{Claim, Store};

/// When lookups happen. Not read from the environment: the defaults follow the
/// providers' pace; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowupSettings {
    /// From a send to the first poll of its status.
    pub first_poll: Duration,
    /// The longest wait between two polls of one message.
    pub max_poll_interval: Duration,
    /// From a final status to the lookup of the price.
    pub price_delay: Duration,
    /// Most lookups waiting at once.
    pub queue: usize,
    /// How long a replica's claim on one lookup holds off the others.
    pub claim_ttl: Duration,
    /// From start to the first background read of the balances: not at once, so a
    /// starting replica's first calls are the sends it is there for.
    pub balance_first: Duration,
    /// How often balances are read (`None`: never, in the background).
    pub balance_every: Option<Duration>,
}

impl Default for FollowupSettings {
    fn default() -> Self {
        FollowupSettings {
            first_poll: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(60),
            price_delay: Duration::from_secs(5),
            queue: 4096,
            claim_ttl: Duration::from_secs(300),
            balance_first: Duration::from_secs(60),
            balance_every: Some(Duration::from_secs(300)),
        }
    }
}

/// The longest a lookup or a balance call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a job asks the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The status, until it is final.
    Poll,
    /// The price, once.
    Price,
}

struct Job {
    provider: Arc<dyn MessageProvider>,
    provider_message_id: String,
    kind: Kind,
    /// Lookups made so far.
    attempt: u32,
    /// No poll after this.
    until: Instant,
}

/// A job and when it is due, ordered soonest first.
struct Due {
    at: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` pops the greatest, the soonest must come first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The handle that schedules lookups (cheap to clone).
#[derive(Clone)]
pub struct Followups {
    jobs: mpsc::Sender<(Instant, Job)>,
    /// Jobs accepted and not finished: held within `settings.queue`.
    queued: Arc<AtomicUsize>,
    /// Jobs and balance rounds not finished: what tests wait on.
    pending: Arc<watch::Sender<usize>>,
    providers: Arc<[Arc<dyn MessageProvider>]>,
    settings: FollowupSettings,
}

impl Followups {
    /// Starts the worker (on the current Tokio runtime) for `providers`.
    pub fn start(
        providers: Vec<Arc<dyn MessageProvider>>,
        records: Records,
        store: Arc<dyn Store>,
        settings: FollowupSettings,
    ) -> Followups {
        let queue = settings.queue.max(1);
        let (jobs, incoming) = mpsc::channel(queue);
        let pending = Arc::new(watch::Sender::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            queued: Arc::clone(&queued),
            records,
            store,
            settings: settings.clone(),
            pending: Arc::clone(&pending),
            token: ulid::Ulid::new().to_string(),
        };
        tokio::spawn(worker.run(incoming));
        if let Some(every) = settings.balance_every {
            let first = settings.balance_first;
            spawn_balance_refresh(providers.clone(), first, every, Arc::clone(&pending));
        }
        Followups {
            jobs,
            queued,
            pending,
            providers: providers.into(),
            settings,
        }
    }

    /// After a provider accepted a message: polls it when its provider sends no
    /// callback, and shows the balance the answer stated.
    pub fn after_send(&self, channel: Channel, receipt: &Receipt, ttl: Duration) {
        let Some(provider) = self.provider(&receipt.provider) else {
            return;
        };
        if let Some(balance) = &receipt.balance {
            prometheus::set_balance(provider.name(), balance);
        }
        let Some(id) = &receipt.provider_message_id else {
            return;
        };
        if provider.followup(channel) == Followup::PollUntilFinal && !receipt.status.is_final() {
            let now = Instant::now();
            self.schedule(
                now + self.settings.first_poll,
                Job {
                    provider,
                    provider_message_id: id.clone(),
                    kind: Kind::Poll,
                    attempt: 0,
                    until: now + ttl,
                },
            );
        }
    }

    /// After a delivery report: looks the price up, of the message and of its fallback
    /// SMS, when the provider's reports carry none and the status is final.
    pub fn after_report(&self, record: &MessageRecord) {
        self.price_after_final(
            record.status,
            record.cost.as_ref(),
            record.provider.as_deref(),
            record.provider_message_id.as_deref(),
            &record.channel,
        );
        if let Some(leg) = &record.fallback {
            self.price_after_final(
                leg.status,
                leg.cost.as_ref(),
                leg.provider.as_deref(),
                leg.provider_message_id.as_deref(),
                &leg.channel,
            );
        }
    }

    /// Schedules the price lookup of one leg, once its status is final and it has none.
    fn price_after_final(
        &self,
        status: DeliveryStatus,
        cost: Option<&Money>,
        provider: Option<&str>,
        provider_message_id: Option<&str>,
        channel: &str,
    ) {
        if !status.is_final() || cost.is_some() {
            return;
        }
        let (Some(name), Some(id)) = (provider, provider_message_id) else {
            return;
        };
        let Some(provider) = self.provider(name) else {
            return;
        };
        let channel = channel.parse().unwrap_or(Channel::Sms);
        if provider.followup(channel) == Followup::PriceAfterFinal {
            let at = Instant::now() + self.settings.price_delay;
            self.schedule(
                at,
                Job {
                    provider,
                    provider_message_id: id.to_owned(),
                    kind: Kind::Price,
                    attempt: 0,
                    until: at,
                },
            );
        }
    }

    /// Resolves once no lookup is waiting or running and no balance is being read (for
    /// tests).
    pub async fn settled(&self) {
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    fn provider(&self, name: &str) -> Option<Arc<dyn MessageProvider>> {
        self.providers.iter().find(|p| p.name() == name).cloned()
    }

    fn schedule(&self, at: Instant, job: Job) {
        let limit = self.settings.queue.max(1);
        let name = job.provider.name();
        let admitted = self
            .queued
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.pending.send_modify(|pending| *pending += 1);
            if self.jobs.try_send((at, job)).is_ok() {
                return;
            }
            // The worker is gone (shutting down): the job will not run.
            finish(&self.queued, &self.pending);
        }
        prometheus::counter(
            prometheus::FOLLOWUPS,
            &[("provider", name), ("outcome", "dropped")],
        )
        .increment(1);
        tracing::warn!(
            provider = name,
            limit,
            "follow-up queue full: the message keeps its last known status"
        );
    }
}

/// Marks one job done.
fn finish(queued: &AtomicUsize, pending: &watch::Sender<usize>) {
    queued.fetch_sub(1, AtomicOrdering::AcqRel);
    pending.send_modify(|pending| *pending = pending.saturating_sub(1));
}

struct Worker {
    queued: Arc<AtomicUsize>,
    records: Records,
    store: Arc<dyn Store>,
    settings: FollowupSettings,
    pending: Arc<watch::Sender<usize>>,
    /// This replica's name in claims.
    token: String,
}

impl Worker {
    async fn run(self, mut incoming: mpsc::Receiver<(Instant, Job)>) {
        let mut due: BinaryHeap<Due> = BinaryHeap::new();
        let mut seq = 0u64;
        loop {
            let next = due.peek().map(|d| d.at);
            tokio::select! {
                job = incoming.recv() => match job {
                    Some((at, job)) => {
                        seq += 1;
                        due.push(Due { at, seq, job });
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    let Some(Due { job, .. }) = due.pop() else { continue };
                    match self.run_job(job).await {
                        Some((at, again)) => {
                            seq += 1;
                            due.push(Due { at, seq, job: again });
                        }
                        None => finish(&self.queued, &self.pending),
                    }
                }
            }
        }
    }

    /// Makes one lookup; returns the job again, with when, if it must be repeated.
    async fn run_job(&self, mut job: Job) -> Option<(Instant, Job)> {
        let name = job.provider.name();
        let count = |outcome: &'static str| {
            prometheus::counter(
                prometheus::FOLLOWUPS,
                &[("provider", name), ("outcome", outcome)],
            )
            .increment(1);
        };
        if !self.claim(&job).await {
            count("claimed_elsewhere");
            return None;
        }
        job.attempt += 1;
        let looked_up =
            tokio::time::timeout(CALL_TIMEOUT, job.provider.lookup(&job.provider_message_id))
                .await
                .unwrap_or(Err(ProviderError::Timeout));
        let finished = match looked_up {
            Ok(Some(update)) => {
                let final_status = update.status.is_final();
                match self.records.apply(&update).await {
                    Ok(Some(record)) => tracing::info!(
                        message_id = %record.id,
                        provider = name,
                        status = %record.status,
                        cost = record.cost.as_ref().map(Money::to_string),
                        "follow-up lookup"
                    ),
                    Ok(None) => {
                        tracing::debug!(provider = name, "follow-up for an unknown message")
                    }
                    Err(error) => {
                        tracing::warn!(provider = name, %error, "could not record a follow-up")
                    }
                }
                count(if final_status { "final" } else { "pending" });
                final_status
            }
            Ok(None) => {
                count("pending");
                false
            }
            Err(error) => {
                count("error");
                tracing::warn!(
                    provider = name,
                    code = error.code(),
                    "follow-up lookup failed: {error}"
                );
                false
            }
        };
        if finished || job.kind == Kind::Price {
            return None;
        }
        let at = Instant::now() + self.backoff(job.attempt);
        if at > job.until {
            tracing::info!(
                provider = name,
                lookups = job.attempt,
                "no final status within the message's time to live: polling stops"
            );
            return None;
        }
        Some((at, job))
    }

    /// The wait after `attempt` lookups: the first poll's delay, doubled each time, at
    /// most `max_poll_interval`.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.settings
            .first_poll
            .saturating_mul(factor)
            .min(self.settings.max_poll_interval)
    }

    /// Takes this lookup for this replica. A store that cannot be reached does not stop
    /// it: a lookup made twice costs less than one never made.
    async fn claim(&self, job: &Job) -> bool {
        let which = match job.kind {
            Kind::Poll => job.attempt.to_string(),
            Kind::Price => "price".to_owned(),
        };
        let key = format!(
            "followup:{}:{}",
            job.provider.name(),
            digest(&[&job.provider_message_id, &which])
        );
        match self
            .store
            .claim(&key, &self.token, "", self.settings.claim_ttl)
            .await
        {
            Ok(Claim::Claimed) => true,
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(%error, "could not claim a follow-up lookup; making it anyway");
                true
            }
        }
    }
}

/// Reads every provider's balance (each within a bound) into
/// `otp_relay_provider_balance`, and returns what each said.
pub async fn refresh_balances(
    providers: &[Arc<dyn MessageProvider>],
) -> Vec<(&'static str, Result<Option<Money>, ProviderError>)> {
    let mut balances = Vec::with_capacity(providers.len());
    for provider in providers {
        let balance = tokio::time::timeout(CALL_TIMEOUT, provider.balance())
            .await
            .unwrap_or(Err(ProviderError::Timeout));
        match &balance {
            Ok(Some(money)) => prometheus::set_balance(provider.name(), money),
            Ok(None) => {}
            Err(error) => tracing::warn!(
                provider = provider.name(),
                code = error.code(),
                "could not read the account balance: {error}"
            ),
        }
        balances.push((provider.name(), balance));
    }
    balances
}

/// Reads the balances after `first`, then every `every`, for as long as the runtime
/// runs. A round counts as pending work (see [`Followups::settled`]); the first from now
/// on.
fn spawn_balance_refresh(
    providers: Vec<Arc<dyn MessageProvider>>,
    first: Duration,
    every: Duration,
    pending: Arc<watch::Sender<usize>>,
) {
    pending.send_modify(|pending| *pending += 1);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(Instant::now() + first, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            ticks.tick().await;
            if !first {
                pending.send_modify(|pending| *pending += 1);
            }
            first = false;
            refresh_balances(&providers).await;
            pending.send_modify(|pending| *pending = pending.saturating_sub(1));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_come_due_soonest_first() {
        let now = Instant::now();
        let job = || Job {
            provider: Arc::new(otp_relay_providers::ConsoleProvider::stdout()),
            provider_message_id: "1".into(),
            kind: Kind::Poll,
            attempt: 0,
            until: now,
        };
        let mut heap = BinaryHeap::new();
        heap.push(Due {
            at: now + Duration::from_secs(2),
            seq: 1,
            job: job(),
        });
        heap.push(Due {
            at: now + Duration::from_secs(1),
            seq: 2,
            job: job(),
        });
        heap.push(Due {
            at: now + Duration::from_secs(1),
            seq: 3,
            job: job(),
        });
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|d| d.seq)).collect();
        assert_eq!(order, [2, 3, 1]);
    }
}
