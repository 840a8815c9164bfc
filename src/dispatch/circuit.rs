//! A circuit breaker per provider: after `CIRCUIT_FAILURES` consecutive transient
//! failures the provider is skipped for `CIRCUIT_COOLDOWN`, then one trial request is let
//! through; its outcome closes the circuit or opens it again.
//!
//! A trial always resolves, so that no lost request can hold a provider out for good:
//! - its outcome (success or failure) is recorded through its [`Pass`];
//! - a pass dropped without an outcome (the send ran out of time before calling, the
//!   caller left, the server is stopping) gives the trial back: the next request may try;
//! - a trial still unresolved after its time (`PROVIDER_TIMEOUT`) counts as failed.
//!
//! A trial is only admitted to a send with time enough to run it.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cooldown is over and trial number `trial` is out until `expires`.
    HalfOpen {
        trial: u64,
        expires: Instant,
    },
}

/// Closed with no failure counted: the state of a healthy provider, where a success
/// changes nothing.
const CLEAN: State = State::Closed {
    consecutive_failures: 0,
};

#[derive(Debug)]
struct Inner {
    state: State,
    /// The last trial number handed out (numbers start at 1; 0 on a pass means none).
    trials: u64,
}

/// Whether a request may go to the provider now.
#[derive(Debug)]
pub enum Admission<'a> {
    Allowed(Pass<'a>),
    /// Skip the provider; it may be tried again after this long.
    Rejected {
        retry_after: Duration,
    },
}

/// What `/health/ready`, the metrics and the logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    /// The cooldown is over: the next request is admitted as the trial.
    HalfOpen,
    /// A trial is out; other requests wait for its outcome.
    Trial,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Trial => "trial",
        }
    }

    /// A request would be admitted now.
    pub fn admits(self) -> bool {
        matches!(self, CircuitState::Closed | CircuitState::HalfOpen)
    }
}

/// How long others wait while a trial is out: about the time for it to resolve.
const TRIAL_WAIT: Duration = Duration::from_secs(1);

/// `at + wait`, never panicking: durations here are bounded by the configuration, and
/// an impossible overflow reads as "now".
fn after(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait).unwrap_or(at)
}

/// One provider's breaker.
pub struct Circuit {
    provider: &'static str,
    failures_to_open: u32,
    cooldown: Duration,
    /// How long a trial may stay unresolved before it counts as failed.
    trial_timeout: Duration,
    /// The least time a send must have left to be admitted as the trial.
    trial_needs: Duration,
    inner: Mutex<Inner>,
    /// Whether the state is [`CLEAN`], published by every change under the lock: a
    /// healthy provider's sends are admitted and recorded without taking the lock,
    /// whose cache line would otherwise pass between the workers twice a send.
    clean: AtomicBool,
}

/// The locked state; letting it go publishes whether it is [`CLEAN`].
struct Locked<'a> {
    inner: MutexGuard<'a, Inner>,
    clean: &'a AtomicBool,
}

impl Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Before the lock is released (fields drop after this).
        let clean = self.inner.state == CLEAN;
        if self.clean.load(Ordering::Relaxed) != clean {
            self.clean.store(clean, Ordering::Release);
        }
    }
}

impl Circuit {
    /// A closed circuit. `trial_timeout` is the provider's attempt time; `trial_needs`
    /// the least time left a send must have to carry the trial.
    pub fn new(
        provider: &'static str,
        failures_to_open: u32,
        cooldown: Duration,
        trial_timeout: Duration,
        trial_needs: Duration,
    ) -> Self {
        Circuit {
            provider,
            failures_to_open: failures_to_open.max(1),
            cooldown,
            trial_timeout,
            trial_needs,
            inner: Mutex::new(Inner {
                state: CLEAN,
                trials: 0,
            }),
            clean: AtomicBool::new(true),
        }
    }

    fn inner(&self) -> Locked<'_> {
        Locked {
            // The state is a few plain values: a panic elsewhere cannot leave it torn.
            inner: self
                .inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            clean: &self.clean,
        }
    }

    /// Ends a trial that outlived its time as a failure.
    fn expire_trial(&self, inner: &mut Inner, now: Instant) {
        if let State::HalfOpen { expires, .. } = inner.state {
            if now >= expires {
                inner.state = State::Open {
                    until: after(expires, self.cooldown),
                };
                tracing::warn!(
                    provider = self.provider,
                    "circuit open: the trial request did not resolve in time"
                );
            }
        }
    }

    /// Decides whether a request with `time_left` before its deadline may go to the
    /// provider at `now`.
    pub fn admit(&self, now: Instant, time_left: Duration) -> Admission<'_> {
        if self.clean.load(Ordering::Acquire) {
            return Admission::Allowed(Pass::new(self, 0));
        }
        let mut inner = self.inner();
        self.expire_trial(&mut inner, now);
        match inner.state {
            State::Closed { .. } => Admission::Allowed(Pass::new(self, 0)),
            // A trial that cannot run would only be given back: leave it to a send that
            // can, and say so as a short wait.
            State::Open { until } if now >= until && time_left < self.trial_needs => {
                Admission::Rejected {
                    retry_after: TRIAL_WAIT,
                }
            }
            State::Open { until } if now >= until => {
                inner.trials += 1;
                let trial = inner.trials;
                inner.state = State::HalfOpen {
                    trial,
                    expires: after(now, self.trial_timeout),
                };
                tracing::info!(
                    provider = self.provider,
                    "circuit half-open: sending one trial request"
                );
                Admission::Allowed(Pass::new(self, trial))
            }
            State::Open { until } => Admission::Rejected {
                retry_after: until.saturating_duration_since(now),
            },
            State::HalfOpen { expires, .. } => Admission::Rejected {
                retry_after: expires.saturating_duration_since(now).min(TRIAL_WAIT),
            },
        }
    }

    /// Records an answered request: `transient_failure` is true for a failure that says
    /// the provider is unwell; false for a success or a permanent refusal (the provider
    /// answered, so it is up). `trial` is the pass's trial number (0 for none).
    fn record(&self, trial: u64, transient_failure: bool, now: Instant) {
        // A success outside a trial leaves a clean circuit as it is.
        if trial == 0 && !transient_failure && self.clean.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.inner();
        self.expire_trial(&mut inner, now);
        let next = match (inner.state, transient_failure) {
            (
                State::Closed {
                    consecutive_failures,
                },
                true,
            ) => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.failures_to_open {
                    State::Open {
                        until: after(now, self.cooldown),
                    }
                } else {
                    State::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            (State::HalfOpen { trial: current, .. }, true) if current == trial => State::Open {
                until: after(now, self.cooldown),
            },
            // A failure of a request sent before the cooldown ended says nothing the
            // trial will not; one reported after the circuit opened changes nothing.
            (state @ (State::HalfOpen { .. } | State::Open { .. }), true) => state,
            // Any answer shows the provider is up.
            (_, false) => State::Closed {
                consecutive_failures: 0,
            },
        };
        let before = std::mem::replace(&mut inner.state, next);
        match (before, next) {
            (State::Closed { .. } | State::HalfOpen { .. }, State::Open { .. }) => {
                tracing::warn!(
                    provider = self.provider,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "circuit open: skipping the provider after consecutive transient failures"
                )
            }
            (State::Open { .. } | State::HalfOpen { .. }, State::Closed { .. }) => {
                tracing::info!(
                    provider = self.provider,
                    "circuit closed: the provider answers again"
                )
            }
            _ => {}
        }
    }

    /// Returns trial number `trial` unused: the cooldown is over, so the next request
    /// may carry the trial at once.
    fn give_back(&self, trial: u64, now: Instant) {
        let mut inner = self.inner();
        if matches!(inner.state, State::HalfOpen { trial: current, .. } if current == trial) {
            inner.state = State::Open { until: now };
            tracing::info!(
                provider = self.provider,
                "circuit half-open: the trial request was given back unsent"
            );
        }
    }

    pub fn current(&self, now: Instant) -> CircuitState {
        let mut inner = self.inner();
        self.expire_trial(&mut inner, now);
        match inner.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::Trial,
        }
    }
}

/// Leave to send one request to the provider. When it carries the half-open trial, the
/// trial resolves with the first outcome recorded through it, or is given back when the
/// pass is dropped without one.
#[derive(Debug)]
pub struct Pass<'a> {
    circuit: &'a Circuit,
    /// The trial number while unresolved; 0 when not a trial or resolved. Atomic so
    /// that the retry loop's attempts can record through a shared reference.
    trial: AtomicU64,
}

impl<'a> Pass<'a> {
    fn new(circuit: &'a Circuit, trial: u64) -> Self {
        Pass {
            circuit,
            trial: AtomicU64::new(trial),
        }
    }

    /// Records an attempt's outcome (see [`Circuit::record`]).
    pub fn record(&self, transient_failure: bool, now: Instant) {
        let trial = self.trial.swap(0, Ordering::AcqRel);
        self.circuit.record(trial, transient_failure, now);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let trial = *self.trial.get_mut();
        if trial != 0 {
            self.circuit.give_back(trial, Instant::now());
        }
    }
}

impl std::fmt::Debug for Circuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuit")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLENTY: Duration = Duration::from_secs(10);

    fn circuit(failures: u32, cooldown: Duration) -> Circuit {
        Circuit::new(
            "p",
            failures,
            cooldown,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
    }

    fn pass(circuit: &Circuit, now: Instant) -> Pass<'_> {
        match circuit.admit(now, PLENTY) {
            Admission::Allowed(pass) => pass,
            Admission::Rejected { .. } => panic!("not admitted"),
        }
    }

    fn fail(circuit: &Circuit, now: Instant) {
        pass(circuit, now).record(true, now);
    }

    /// A circuit opened by one failure, and the moment its 5 s cooldown ends.
    fn cooled_down() -> (Circuit, Instant) {
        let circuit = circuit(1, Duration::from_secs(5));
        let t0 = Instant::now();
        fail(&circuit, t0);
        (circuit, t0 + Duration::from_secs(5))
    }

    #[test]
    fn opens_after_consecutive_transient_failures_then_half_opens_and_closes() {
        let circuit = circuit(3, Duration::from_secs(30));
        let t0 = Instant::now();
        fail(&circuit, t0);
        fail(&circuit, t0);
        assert!(matches!(circuit.admit(t0, PLENTY), Admission::Allowed(_)));
        fail(&circuit, t0);
        assert_eq!(circuit.current(t0), CircuitState::Open);
        assert!(matches!(
            circuit.admit(t0 + Duration::from_secs(10), PLENTY),
            Admission::Rejected { retry_after } if retry_after == Duration::from_secs(20)
        ));

        let after = t0 + Duration::from_secs(30);
        assert_eq!(circuit.current(after), CircuitState::HalfOpen);
        let trial = pass(&circuit, after);
        assert_eq!(circuit.current(after), CircuitState::Trial);
        assert!(
            matches!(circuit.admit(after, PLENTY), Admission::Rejected { .. }),
            "only one"
        );
        trial.record(false, after);
        assert_eq!(circuit.current(after), CircuitState::Closed);
    }

    fn clean(circuit: &Circuit) -> bool {
        circuit.clean.load(Ordering::Acquire)
    }

    #[test]
    fn a_clean_circuit_takes_sends_without_its_lock() {
        let circuit = circuit(2, Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(clean(&circuit));
        // Admitted and recorded while another holds the lock: neither takes it.
        {
            let _held = circuit.inner();
            pass(&circuit, t0).record(false, t0);
        }
        let (opened, after) = cooled_down();
        assert!(!clean(&opened));
        pass(&opened, after).record(false, after);
        assert!(clean(&opened), "the trial closed it");
    }

    #[test]
    fn a_failed_trial_opens_again_and_permanent_failures_reset_the_count() {
        let circuit = circuit(2, Duration::from_secs(5));
        let t0 = Instant::now();
        fail(&circuit, t0);
        assert!(!clean(&circuit), "one failure counted");
        pass(&circuit, t0).record(false, t0);
        assert!(clean(&circuit), "a success clears it");
        fail(&circuit, t0);
        assert_eq!(
            circuit.current(t0),
            CircuitState::Closed,
            "the count restarted"
        );
        fail(&circuit, t0);
        assert_eq!(circuit.current(t0), CircuitState::Open);

        let later = t0 + Duration::from_secs(5);
        fail(&circuit, later);
        assert_eq!(circuit.current(later), CircuitState::Open);
        assert!(matches!(
            circuit.admit(later, PLENTY),
            Admission::Rejected { .. }
        ));
    }

    #[test]
    fn a_trial_dropped_unresolved_is_given_back_to_the_next_request() {
        let (circuit, after) = cooled_down();
        drop(pass(&circuit, after));
        assert_eq!(circuit.current(after), CircuitState::HalfOpen);

        let trial = pass(&circuit, after);
        trial.record(false, after);
        drop(trial);
        assert_eq!(
            circuit.current(after),
            CircuitState::Closed,
            "a resolved trial is not given back"
        );
    }

    #[test]
    fn a_trial_unresolved_within_its_time_counts_as_failed() {
        let (circuit, after) = cooled_down();
        let lost = pass(&circuit, after);
        // Held, never resolved: at its expiry (5 s) it failed, so the circuit is open
        // for a cooldown from then, and a fresh trial follows.
        let expired = after + Duration::from_secs(5);
        assert_eq!(
            circuit.current(expired - Duration::from_millis(1)),
            CircuitState::Trial
        );
        assert_eq!(circuit.current(expired), CircuitState::Open);
        assert!(matches!(
            circuit.admit(expired + Duration::from_secs(1), PLENTY),
            Admission::Rejected { retry_after } if retry_after == Duration::from_secs(4)
        ));
        let next = pass(&circuit, expired + Duration::from_secs(5));
        // The lost trial's late drop does not give back the new one.
        drop(lost);
        assert_eq!(
            circuit.current(expired + Duration::from_secs(5)),
            CircuitState::Trial
        );
        next.record(false, expired + Duration::from_secs(5));
        assert_eq!(
            circuit.current(expired + Duration::from_secs(5)),
            CircuitState::Closed
        );
    }

    #[test]
    fn no_trial_is_admitted_to_a_send_without_time_to_run_it() {
        let (circuit, after) = cooled_down();
        assert!(matches!(
            circuit.admit(after, Duration::from_secs(4)),
            Admission::Rejected { .. }
        ));
        assert_eq!(
            circuit.current(after),
            CircuitState::HalfOpen,
            "the trial is still there for a send that can run it"
        );
        assert!(matches!(
            circuit.admit(after, Duration::from_secs(5)),
            Admission::Allowed(_)
        ));
    }
}
