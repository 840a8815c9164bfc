//! The send service: the one way to send a code, below every entrance (the HTTP routes
//! and the CLI alike), so that the same guards, limits and records apply to all.
//!
//! A send runs these stages, each in its own module, in this order:
//! [`normalize`] (fields to a message) → [`policy`] (countries, line types) →
//! [`idempotency`] (claim the key or replay the first answer) → [`limits`] (rate
//! limits) → [`route`] (which providers, in which order: `ROUTES`) → [`dispatch`] (the
//! route's providers, with failover) → [`record`] (the message record and follow-up
//! lookups). A claim and the limits are counted in one store operation, and the record
//! is written with the claim's answer in another, so that a send on one Redis server
//! takes two round trips. The send is measured
//! (`otp_relay_send_duration_seconds` by outcome), refusals and replays are counted.
//!
//! Nothing here knows HTTP: the caller names who is calling, and says how an outcome is
//! rendered for the answer stored under an idempotency key ([`Render`]).

pub mod dispatch;
pub mod error;
pub mod idempotency;
pub mod limits;
pub mod normalize;
pub mod policy;
pub mod record;
pub mod route;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use self::error::SendError;
use self::idempotency::Claimed;
use crate::channel_fallback::ChannelFallbacks;
use crate::config::Config;
use crate::dispatch::{Delivery, Dispatcher};
use crate::followup::Followups;
use crate::guards::access::Identity;
use crate::guards::idempotency::Ticket;
use crate::prometheus;
use crate::records::Records;
use crate::store::{Store, StoredAnswer};

/// What to send, as the caller gave it (text fields already decoded).
#[derive(Default)]
pub struct Request {
    /// Destination, in any format `DEFAULT_REGION` makes readable.
    pub mobile: Option<String>,
    /// Message text; 4-10 digits alone are a bare code rendered by the template.
    pub totp: Option<String>,
    /// Explicit text (wins over `totp`).
    pub message: Option<String>,
    /// Explicit code; otherwise extracted from the text.
    pub code: Option<String>,
    /// `sms`, `whatsapp` or `telegram`; default `DEFAULT_CHANNEL`.
    pub channel: Option<String>,
    /// Picks a template for bare codes.
    pub locale: Option<String>,
    /// Seconds the code stays valid; default `MESSAGE_TTL`.
    pub ttl: Option<u64>,
}

/// Who asks, and how the request arrived.
pub struct Context {
    /// Whose limits, keys, dedupe and records the send counts under.
    pub caller: Identity,
    /// The caller's idempotency key, if it gave one.
    pub idempotency_key: Option<String>,
    /// When the request arrived: the send's duration counts from here.
    pub received_at: Instant,
}

/// A message a provider accepted.
pub struct Sent {
    /// otp-relay's id for the message.
    pub id: String,
    /// The destination, masked.
    pub to: String,
    pub delivery: Delivery,
}

/// How a send ended, short of an error.
pub enum Outcome {
    /// Sent now; `answer` is how it was rendered (and stored for repeats).
    Sent {
        sent: Box<Sent>,
        answer: StoredAnswer,
    },
    /// The same request was answered before: this is that answer, unchanged.
    Replayed(StoredAnswer),
}

/// Renders a send's final answer, as stored under an idempotency key and replayed to
/// repeats. The entrance that serves the answer decides its form; the service stores
/// it as given, so that a repeat gets exactly what the first request got.
pub trait Render: Sync {
    fn sent(&self, sent: &Sent) -> StoredAnswer;
    fn failed(&self, error: &SendError) -> StoredAnswer;
}

/// The send service and what it sends with.
pub struct SendService {
    config: Arc<Config>,
    dispatcher: Arc<Dispatcher>,
    store: Arc<dyn Store>,
    records: Records,
    followups: Followups,
    fallbacks: ChannelFallbacks,
    /// One permit per send in progress (`MAX_IN_FLIGHT`).
    in_flight: Semaphore,
}

impl SendService {
    pub fn new(
        config: Arc<Config>,
        dispatcher: Arc<Dispatcher>,
        store: Arc<dyn Store>,
        records: Records,
        followups: Followups,
        fallbacks: ChannelFallbacks,
    ) -> Self {
        SendService {
            in_flight: Semaphore::new(config.limits.max_in_flight),
            config,
            dispatcher,
            store,
            records,
            followups,
            fallbacks,
        }
    }

    /// The providers with their circuits (for health and metrics).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The status and price lookups it schedules after sends.
    pub fn followups(&self) -> &Followups {
        &self.followups
    }

    /// Sends in progress now.
    pub fn in_flight(&self) -> usize {
        self.config.limits.max_in_flight - self.in_flight.available_permits()
    }

    /// Sends one message: normalized, checked, claimed, counted, dispatched, recorded;
    /// measured and counted in the metrics whatever the outcome.
    pub async fn send(
        &self,
        request: Request,
        context: Context,
        render: &dyn Render,
    ) -> Result<Outcome, SendError> {
        let result = self.run(request, &context, render).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(error) => {
                let reason = match error {
                    SendError::RateLimited(limited) => Some(limited.scope.refusal_reason()),
                    SendError::NumberRefused(_) => Some(error.code()),
                    _ => None,
                };
                if let Some(reason) = reason {
                    prometheus::counter(prometheus::REFUSALS, &[("reason", reason)]).increment(1);
                }
                error.code()
            }
        };
        observe(context.received_at, outcome);
        result
    }

    async fn run(
        &self,
        request: Request,
        context: &Context,
        render: &dyn Render,
    ) -> Result<Outcome, SendError> {
        let limits = &self.config.limits;
        let deadline = Instant::now() + limits.request_deadline;
        // Refuse at once rather than queue: the caller is a login waiting on us.
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| SendError::Overloaded)?;
        let message = normalize::message(&self.config, request)?;
        policy::check(&message, limits)?;
        let identity = context.caller.to_string();
        let retention = (self.config.message_retention, limits.dedupe_window);
        let key = context.idempotency_key.as_deref();
        let counting = limits::counting(self.store.as_ref(), limits, &message, &context.caller);
        let claimed = idempotency::claim(
            &self.store,
            &message,
            &identity,
            key,
            retention,
            deadline,
            counting.as_ref(),
        )
        .await?;
        let (ticket, counted) = match claimed {
            Claimed::Replay(answer) => {
                prometheus::counter(prometheus::IDEMPOTENT_REPLAYS, &[]).increment(1);
                tracing::info!(to = %message.to.masked(), "repeated request: answering as the first time");
                return Ok(Outcome::Replayed(answer));
            }
            Claimed::Proceed { ticket, counted } => (ticket, counted),
        };
        let (sent, answer) = self
            .deliver(
                &message,
                (&context.caller, &identity),
                deadline,
                render,
                (ticket, counted),
            )
            .await?;
        Ok(Outcome::Sent {
            sent: Box::new(sent),
            answer,
        })
    }

    /// Counts the send against the limits (unless `counted` with the claim), hands it to
    /// the providers, records it and settles the ticket.
    async fn deliver(
        &self,
        message: &otp_relay_providers::OutboundMessage,
        (caller, identity): (&Identity, &str),
        deadline: Instant,
        render: &dyn Render,
        (ticket, counted): (Option<Ticket>, bool),
    ) -> Result<(Sent, StoredAnswer), SendError> {
        let limits = &self.config.limits;
        if !counted {
            if let Err(error) = limits::acquire(self.store.as_ref(), limits, message, caller).await
            {
                if let Some(ticket) = ticket {
                    idempotency::settle(ticket, Err(&error), render).await;
                }
                return Err(error);
            }
        }
        let route = route::choose(&self.dispatcher, message);
        let result = dispatch::send(&self.dispatcher, route, message, deadline).await;
        dispatch::log(message, route, &result);
        let record = record::of(message, route, &result);
        let outcome = match result {
            Ok(delivery) => {
                let sent = Sent {
                    id: message.id.clone(),
                    to: message.to.masked(),
                    delivery,
                };
                let answer = render.sent(&sent);
                Ok((sent, answer))
            }
            Err(error) => {
                if error.never_left() {
                    limits::refund(self.store.as_ref(), limits, message, caller).await;
                }
                Err(SendError::Dispatch {
                    id: message.id.clone(),
                    error,
                })
            }
        };
        let answer = outcome.as_ref().map(|(_, answer)| answer);
        let kept = idempotency::to_keep(answer, render);
        let claim = ticket.map(|ticket| (ticket, kept.as_deref()));
        let delivery = outcome.as_ref().ok().map(|(sent, _)| &sent.delivery);
        let after = record::After {
            followups: &self.followups,
            fallbacks: &self.fallbacks,
        };
        record::keep(
            &self.records,
            after,
            message,
            identity,
            &record,
            delivery,
            claim,
        )
        .await;
        outcome
    }
}

/// Records one send's duration under its outcome (`ok` or the error's code). Public for
/// the entrances' own failures before the service is reached (an unreadable body).
pub fn observe(received_at: Instant, outcome: &'static str) {
    prometheus::histogram(prometheus::SEND_DURATION, &[("outcome", outcome)])
        .record(prometheus::seconds(received_at.elapsed()));
}
