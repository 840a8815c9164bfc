//! Dispatch: hands a message to the providers of its route in their order, and keeps
//! logins working when providers fail.
//!
//! - A route ([`routes`], `ROUTES`) names the providers a destination may use, in order;
//!   without one, every provider in `PROVIDERS` order. Only the route's providers are
//!   tried, each with its own circuit (one per provider, shared by every route).
//! - A provider that does not serve the channel, or whose circuit is open, is skipped.
//! - A failure the provider provably did not process (throttled, connection refused)
//!   is retried at the same provider, at most `RETRY_MAX` times, with exponential
//!   backoff and jitter, or after the provider's own `Retry-After` when that fits in the
//!   time left. A timeout or a 5xx may have been processed: retrying could send the code
//!   twice, so the next provider is tried instead.
//! - A failure another provider could overcome moves on; one that none can (the number
//!   itself is bad) stops at once.
//! - Each attempt is bounded by `PROVIDER_TIMEOUT`, the whole send by `REQUEST_DEADLINE`.

pub mod circuit;
pub mod config_errors;
pub mod routes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use otp_relay_providers::{Channel, MessageProvider, OutboundMessage, ProviderError, Receipt};
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

use circuit::{Admission, Circuit, CircuitState, Pass};
use config_errors::{ConfigErrors, LastConfigError};
use routes::Planned;
pub use routes::{Route, UnknownRouteProvider};

use crate::prometheus;

/// One provider's try at a message, as reported to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub provider: &'static str,
    /// `sent`, `failed`, or `skipped` (circuit open).
    pub outcome: &'static str,
    /// The failure's stable code; `null` when sent.
    pub code: Option<&'static str>,
    /// The message provably did not reach this provider (skipped, or refused before
    /// processing): internal, not part of the answer.
    #[serde(skip)]
    pub never_left: bool,
}

impl Attempt {
    fn sent(provider: &'static str) -> Self {
        Attempt {
            provider,
            outcome: "sent",
            code: None,
            never_left: false,
        }
    }

    fn failed(provider: &'static str, error: &ProviderError) -> Self {
        Attempt {
            provider,
            outcome: "failed",
            code: Some(error.code()),
            never_left: error.never_reached_provider(),
        }
    }

    fn skipped(provider: &'static str) -> Self {
        Attempt {
            provider,
            outcome: "skipped",
            code: Some("circuit_open"),
            never_left: true,
        }
    }
}

/// A message a provider accepted.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The channel it went on (SMS when the requested one fell back).
    pub channel: Channel,
    pub receipt: Receipt,
    pub attempts: Vec<Attempt>,
}

/// Why no provider accepted a message.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no configured provider serves the {0} channel")]
    NoProviderForChannel(Channel),
    #[error("the provider rejected the message: {error}")]
    Rejected {
        error: ProviderError,
        attempts: Vec<Attempt>,
    },
    #[error("no provider could take the message now")]
    Unavailable {
        /// When a provider may be usable again, if anyone said.
        retry_after: Option<Duration>,
        attempts: Vec<Attempt>,
    },
    #[error("the request deadline passed before a provider accepted the message")]
    DeadlineExceeded { attempts: Vec<Attempt> },
}

impl DispatchError {
    /// No provider can have received the message: none serves the channel, or every
    /// attempt was skipped (open circuit) or failed in a way that provably sent nothing
    /// (see [`ProviderError::never_reached_provider`]). Only then may the send give its
    /// rate-limit allowance back and release its `Idempotency-Key`.
    pub fn never_left(&self) -> bool {
        self.attempts().iter().all(|attempt| attempt.never_left)
    }

    pub fn attempts(&self) -> &[Attempt] {
        match self {
            DispatchError::NoProviderForChannel(_) => &[],
            DispatchError::Rejected { attempts, .. }
            | DispatchError::Unavailable { attempts, .. }
            | DispatchError::DeadlineExceeded { attempts } => attempts,
        }
    }
}

/// Time bounds and retry policy.
#[derive(Debug, Clone, Copy)]
pub struct DispatchPolicy {
    pub provider_timeout: Duration,
    pub request_deadline: Duration,
    pub retry_max: u32,
    pub circuit_failures: u32,
    pub circuit_cooldown: Duration,
}

impl DispatchPolicy {
    /// The least time a send must have left to carry a circuit's half-open trial: an
    /// attempt's whole time, so that the deadline cannot cut the trial short and fail a
    /// healthy provider; or half the deadline when attempts may take longer than that,
    /// so that a fresh send can always carry it.
    pub fn trial_needs(&self) -> Duration {
        self.provider_timeout.min(self.request_deadline / 2)
    }
}

/// A provider and its circuit.
struct Slot {
    provider: Arc<dyn MessageProvider>,
    circuit: Circuit,
}

/// The ordered providers with their circuits, and the routes over them.
pub struct Dispatcher {
    slots: Vec<Slot>,
    /// Most specific first.
    plans: Vec<Planned>,
    /// Every slot, in priority order.
    everyone: Box<[usize]>,
    policy: DispatchPolicy,
    config_errors: ConfigErrors,
}

/// Where the attempt loop for one provider ended.
enum ProviderOutcome {
    Sent(Receipt),
    Failed(ProviderError),
    /// The deadline ran out during this provider's attempts.
    OutOfTime,
}

impl Dispatcher {
    /// The providers in priority order, every destination sent to all of them.
    pub fn new(providers: Vec<Arc<dyn MessageProvider>>, policy: DispatchPolicy) -> Self {
        let slots: Vec<Slot> = providers
            .into_iter()
            .map(|provider| Slot {
                circuit: Circuit::new(
                    provider.name(),
                    policy.circuit_failures,
                    policy.circuit_cooldown,
                    policy.provider_timeout,
                    policy.trial_needs(),
                ),
                provider,
            })
            .collect();
        Dispatcher {
            everyone: (0..slots.len()).collect(),
            slots,
            plans: Vec::new(),
            policy,
            config_errors: ConfigErrors::default(),
        }
    }

    /// The latest error of `provider` that was our configuration's fault, if any.
    pub fn last_config_error(&self, provider: &str) -> Option<LastConfigError> {
        self.config_errors.last(provider)
    }

    /// The providers, in priority order, with their circuit states.
    pub fn provider_states(&self) -> Vec<(&'static str, CircuitState)> {
        let now = Instant::now();
        self.slots
            .iter()
            .map(|slot| (slot.provider.name(), slot.circuit.current(now)))
            .collect()
    }

    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn MessageProvider>> {
        self.slots.iter().map(|slot| &slot.provider)
    }

    /// Sends `message` through the providers of `route`, giving up at `deadline`. A
    /// recipient who is not on the requested channel (never started the Telegram bot,
    /// has no WhatsApp) gets the code by SMS when one of the route's providers sends
    /// SMS: the user logging in needs the code, not the channel.
    pub async fn send(
        &self,
        route: Route<'_>,
        message: &OutboundMessage,
        deadline: Instant,
    ) -> Result<Delivery, DispatchError> {
        let first = self
            .send_on_channel(route, message, deadline, Vec::new())
            .await;
        match first {
            Err(DispatchError::Rejected {
                error: ProviderError::RecipientNotRegistered { .. },
                attempts,
            }) if message.channel != Channel::Sms
                && route.slots().any(|slot| slot.provider.serves(Channel::Sms)) =>
            {
                tracing::info!(
                    message_id = %message.id,
                    channel = %message.channel,
                    "recipient not on this channel: falling back to sms"
                );
                let by_sms = OutboundMessage {
                    channel: Channel::Sms,
                    ..message.clone()
                };
                self.send_on_channel(route, &by_sms, deadline, attempts)
                    .await
            }
            other => other,
        }
    }

    async fn send_on_channel(
        &self,
        route: Route<'_>,
        message: &OutboundMessage,
        deadline: Instant,
        attempts: Vec<Attempt>,
    ) -> Result<Delivery, DispatchError> {
        let attempts = Mutex::new(attempts);
        let mut served = false;
        // Whether some provider may take the message later (a transient failure or an
        // open circuit), and the last refusal that another provider could have overcome.
        let mut worth_retrying_later = false;
        let mut last_refusal: Option<ProviderError> = None;
        let mut reopen_after: Option<Duration> = None;

        for slot in route
            .slots()
            .filter(|slot| slot.provider.serves(message.channel))
        {
            served = true;
            let name = slot.provider.name();
            let now = Instant::now();
            let time_left = deadline.saturating_duration_since(now);
            if time_left.is_zero() {
                return Err(DispatchError::DeadlineExceeded {
                    attempts: attempts.into_inner().unwrap_or_default(),
                });
            }
            let pass = match slot.circuit.admit(now, time_left) {
                Admission::Allowed(pass) => pass,
                Admission::Rejected { retry_after } => {
                    prometheus::counter(
                        prometheus::PROVIDER_ATTEMPTS,
                        &[
                            ("provider", name),
                            ("channel", message.channel.as_str()),
                            ("outcome", "skipped"),
                        ],
                    )
                    .increment(1);
                    push(&attempts, Attempt::skipped(name));
                    worth_retrying_later = true;
                    reopen_after = Some(reopen_after.map_or(retry_after, |r| r.min(retry_after)));
                    continue;
                }
            };
            let outcome = self
                .try_provider(slot, &pass, message, deadline, &attempts)
                .await;
            // An unresolved trial (out of time before calling) is given back here; a
            // dropped send gives it back the same way.
            drop(pass);
            match outcome {
                ProviderOutcome::Sent(receipt) => {
                    self.config_errors.cleared(name);
                    return Ok(Delivery {
                        channel: message.channel,
                        receipt,
                        attempts: attempts.into_inner().unwrap_or_default(),
                    });
                }
                ProviderOutcome::OutOfTime => {
                    return Err(DispatchError::DeadlineExceeded {
                        attempts: attempts.into_inner().unwrap_or_default(),
                    })
                }
                ProviderOutcome::Failed(error) => {
                    tracing::warn!(
                        message_id = %message.id,
                        provider = name,
                        code = error.code(),
                        transient = error.is_transient(),
                        "provider attempt failed: {error}"
                    );
                    self.config_errors.note(name, &error);
                    if !error.another_provider_may_succeed() {
                        return Err(DispatchError::Rejected {
                            error,
                            attempts: attempts.into_inner().unwrap_or_default(),
                        });
                    }
                    if let Some(wait) = error.retry_after() {
                        reopen_after = Some(reopen_after.map_or(wait, |r| r.min(wait)));
                    }
                    if error.is_transient() {
                        worth_retrying_later = true;
                    } else {
                        last_refusal = Some(error);
                    }
                }
            }
        }
        let attempts = attempts.into_inner().unwrap_or_default();
        if !served {
            return Err(DispatchError::NoProviderForChannel(message.channel));
        }
        if Instant::now() >= deadline {
            return Err(DispatchError::DeadlineExceeded { attempts });
        }
        match last_refusal {
            Some(error) if !worth_retrying_later => {
                Err(DispatchError::Rejected { error, attempts })
            }
            _ => Err(DispatchError::Unavailable {
                retry_after: reopen_after,
                attempts,
            }),
        }
    }

    /// Sends through one provider, retrying what is safe to retry within the deadline.
    async fn try_provider(
        &self,
        slot: &Slot,
        pass: &Pass<'_>,
        message: &OutboundMessage,
        deadline: Instant,
        attempts: &Mutex<Vec<Attempt>>,
    ) -> ProviderOutcome {
        let name = slot.provider.name();
        let once = || async {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Stop::OutOfTime);
            }
            let capped_by_deadline = remaining < self.policy.provider_timeout;
            let budget = remaining.min(self.policy.provider_timeout);
            let started = Instant::now();
            // A span per attempt for traces: which provider, and how it ended.
            let span = tracing::info_span!(
                "provider attempt",
                provider = name,
                channel = message.channel.as_str(),
                outcome = tracing::field::Empty,
            );
            let result = tokio::time::timeout(budget, slot.provider.send(message))
                .instrument(span.clone())
                .await
                .unwrap_or(Err(ProviderError::Timeout))
                // Adapters keep the text and the number out of their errors; this makes
                // sure of it for a provider that echoes them back.
                .map_err(|error| {
                    let text = message.text.trim();
                    let scrubbed = otp_relay_providers::http::scrub(text);
                    error.redacted(&[text, &scrubbed, message.to.e164(), message.to.digits()])
                });
            let now = Instant::now();
            let outcome = result.as_ref().map_or_else(|e| e.code(), |_| "sent");
            span.record("outcome", outcome);
            prometheus::counter(
                prometheus::PROVIDER_ATTEMPTS,
                &[
                    ("provider", name),
                    ("channel", message.channel.as_str()),
                    ("outcome", outcome),
                ],
            )
            .increment(1);
            prometheus::histogram(prometheus::PROVIDER_DURATION, &[("provider", name)])
                .record(prometheus::seconds(now - started));
            match result {
                Ok(receipt) => {
                    pass.record(false, now);
                    push(attempts, Attempt::sent(name));
                    Ok(receipt)
                }
                Err(error) => {
                    // The adapter refused before calling out: nothing is known of the
                    // provider's health, so the pass (a trial, maybe) is given back.
                    if !matches!(error, ProviderError::CodeRequired) {
                        pass.record(error.is_transient(), now);
                    }
                    push(attempts, Attempt::failed(name, &error));
                    if matches!(error, ProviderError::Timeout) && capped_by_deadline {
                        return Err(Stop::OutOfTime);
                    }
                    Err(Stop::Failed(error))
                }
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.policy.retry_max as usize)
            .with_jitter();
        let result = once
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|stop| matches!(stop, Stop::Failed(error) if error.is_safe_to_retry()))
            .adjust(|stop, backoff_delay| retry_wait(stop, backoff_delay, deadline, Instant::now()))
            .await;
        match result {
            Ok(receipt) => ProviderOutcome::Sent(receipt),
            Err(Stop::Failed(error)) => ProviderOutcome::Failed(error),
            Err(Stop::OutOfTime) => ProviderOutcome::OutOfTime,
        }
    }
}

/// How long to wait before retrying after `stop`, or `None` to stop retrying.
/// `backoff_delay` is backon's next delay, `None` once `RETRY_MAX` retries are spent:
/// the provider's own delay (clamped where it was read) may only lengthen a wait, never
/// add a retry. Waiting past the deadline only to fail is worse than failing over now.
fn retry_wait(
    stop: &Stop,
    backoff_delay: Option<Duration>,
    deadline: Instant,
    now: Instant,
) -> Option<Duration> {
    let Stop::Failed(error) = stop else {
        return None;
    };
    let wait = backoff_delay?.max(error.retry_after().unwrap_or_default());
    now.checked_add(wait)
        .is_some_and(|resume| resume < deadline)
        .then_some(wait)
}

/// Why one try ended without a receipt.
enum Stop {
    Failed(ProviderError),
    OutOfTime,
}

fn push(attempts: &Mutex<Vec<Attempt>>, attempt: Attempt) {
    attempts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(attempt);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider answering each send with the next of `answers`.
    struct Scripted {
        answers: Mutex<Vec<Result<(), ProviderError>>>,
    }

    #[async_trait::async_trait]
    impl MessageProvider for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }
        fn channels(&self) -> &[Channel] {
            &[Channel::Sms]
        }
        async fn send(&self, _: &OutboundMessage) -> Result<Receipt, ProviderError> {
            let answer = self.answers.lock().unwrap().remove(0);
            answer.map(|()| {
                Receipt::new(
                    "scripted",
                    None,
                    otp_relay_providers::DeliveryStatus::Queued,
                    None,
                )
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_made_before_calling_out_gives_the_trial_back() {
        let provider = Arc::new(Scripted {
            answers: Mutex::new(vec![
                Err(ProviderError::Unavailable {
                    detail: "503".into(),
                }),
                Err(ProviderError::CodeRequired),
            ]),
        });
        let cooldown = Duration::from_secs(30);
        let dispatcher = Dispatcher::new(
            vec![provider],
            DispatchPolicy {
                provider_timeout: Duration::from_secs(1),
                request_deadline: Duration::from_secs(5),
                retry_max: 0,
                circuit_failures: 1,
                circuit_cooldown: cooldown,
            },
        );
        let message = OutboundMessage {
            id: "01J0000000000000000000000".into(),
            to: otp_relay_providers::Phone::parse("+5511966191717", None).unwrap(),
            channel: Channel::Sms,
            text: "Your code is 123456".into(),
            code: None,
            ttl: Duration::from_secs(300),
        };
        let deadline = || Instant::now() + Duration::from_secs(5);
        let route = dispatcher.default_route();
        assert!(dispatcher.send(route, &message, deadline()).await.is_err());
        assert_eq!(dispatcher.provider_states()[0].1, CircuitState::Open);

        tokio::time::advance(cooldown).await;
        // The trial goes to a send the adapter refuses without calling the provider:
        // that says nothing of its health, so the next send gets the trial.
        let route = dispatcher.default_route();
        assert!(dispatcher.send(route, &message, deadline()).await.is_err());
        assert_eq!(dispatcher.provider_states()[0].1, CircuitState::HalfOpen);
    }

    fn limited(retry_after: Option<Duration>) -> Stop {
        Stop::Failed(ProviderError::RateLimited {
            detail: "slow down".into(),
            retry_after,
        })
    }

    #[test]
    fn a_provider_delay_lengthens_a_wait_but_never_adds_a_retry() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        let backoff = Some(Duration::from_millis(100));
        let zero = limited(Some(Duration::ZERO));
        assert_eq!(
            retry_wait(&zero, None, deadline, now),
            None,
            "retries spent"
        );
        assert_eq!(retry_wait(&zero, backoff, deadline, now), backoff);
        let longer = limited(Some(Duration::from_secs(2)));
        assert_eq!(
            retry_wait(&longer, backoff, deadline, now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_wait(&Stop::OutOfTime, backoff, deadline, now), None);
    }

    #[test]
    fn a_wait_past_the_deadline_fails_over_instead_and_never_overflows() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1);
        let backoff = Some(Duration::from_millis(100));
        assert_eq!(
            retry_wait(
                &limited(Some(Duration::from_secs(5))),
                backoff,
                deadline,
                now
            ),
            None
        );
        assert_eq!(
            retry_wait(&limited(None), Some(Duration::MAX), deadline, now),
            None
        );
    }
}
