//! A circuit breaker per provider: after `CIRCUIT_FAILURES` consecutive transient
//! failures the provider is skipped for `CIRCUIT_COOLDOWN`, then one trial request is let
//! through; its outcome closes the circuit or opens it again.

use std::sync::Mutex;
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
    /// The cooldown is over and one trial request is out.
    HalfOpen,
}

/// Whether a request may go to the provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Skip the provider; it may be tried again after this long.
    Rejected {
        retry_after: Duration,
    },
}

/// What `/health/ready` and the logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// One provider's breaker.
pub struct Circuit {
    provider: &'static str,
    failures_to_open: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Circuit {
    pub fn new(provider: &'static str, failures_to_open: u32, cooldown: Duration) -> Self {
        Circuit {
            provider,
            failures_to_open: failures_to_open.max(1),
            cooldown,
            state: Mutex::new(State::Closed {
                consecutive_failures: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain values: a panic elsewhere cannot leave it torn.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides whether a request may go to the provider at `now`.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut state = self.state();
        match *state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                tracing::info!(
                    provider = self.provider,
                    "circuit half-open: sending one trial request"
                );
                Admission::Allowed
            }
            State::Open { until } => Admission::Rejected {
                retry_after: until - now,
            },
            // The trial is out; others wait for its outcome.
            State::HalfOpen => Admission::Rejected {
                retry_after: Duration::from_secs(1),
            },
        }
    }

    /// Records an answered request: `transient_failure` is true for a failure that says
    /// the provider is unwell; false for a success or a permanent refusal (the provider
    /// answered, so it is up).
    pub fn record(&self, transient_failure: bool, now: Instant) {
        let mut state = self.state();
        let next = match (*state, transient_failure) {
            (
                State::Closed {
                    consecutive_failures,
                },
                true,
            ) => {
                let failures = consecutive_failures + 1;
                if failures >= self.failures_to_open {
                    State::Open {
                        until: now + self.cooldown,
                    }
                } else {
                    State::Closed {
                        consecutive_failures: failures,
                    }
                }
            }
            (State::HalfOpen, true) => State::Open {
                until: now + self.cooldown,
            },
            // A failure reported after the circuit opened changes nothing.
            (State::Open { until }, true) => State::Open { until },
            (_, false) => State::Closed {
                consecutive_failures: 0,
            },
        };
        let before = std::mem::replace(&mut *state, next);
        match (before, next) {
            (State::Closed { .. } | State::HalfOpen, State::Open { .. }) => tracing::warn!(
                provider = self.provider,
                cooldown_ms = self.cooldown.as_millis() as u64,
                "circuit open: skipping the provider after consecutive transient failures"
            ),
            (State::Open { .. } | State::HalfOpen, State::Closed { .. }) => {
                tracing::info!(
                    provider = self.provider,
                    "circuit closed: the provider answers again"
                )
            }
            _ => {}
        }
    }

    pub fn current(&self, now: Instant) -> CircuitState {
        match *self.state() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if now >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_transient_failures_then_half_opens_and_closes() {
        let circuit = Circuit::new("p", 3, Duration::from_secs(30));
        let t0 = Instant::now();
        circuit.record(true, t0);
        circuit.record(true, t0);
        assert_eq!(circuit.admit(t0), Admission::Allowed);
        circuit.record(true, t0);
        assert_eq!(circuit.current(t0), CircuitState::Open);
        assert_eq!(
            circuit.admit(t0 + Duration::from_secs(10)),
            Admission::Rejected {
                retry_after: Duration::from_secs(20)
            }
        );

        let after = t0 + Duration::from_secs(30);
        assert_eq!(circuit.admit(after), Admission::Allowed, "one trial");
        assert!(
            matches!(circuit.admit(after), Admission::Rejected { .. }),
            "only one"
        );
        circuit.record(false, after);
        assert_eq!(circuit.current(after), CircuitState::Closed);
    }

    #[test]
    fn a_failed_trial_opens_again_and_permanent_failures_reset_the_count() {
        let circuit = Circuit::new("p", 2, Duration::from_secs(5));
        let t0 = Instant::now();
        circuit.record(true, t0);
        circuit.record(false, t0);
        circuit.record(true, t0);
        assert_eq!(
            circuit.current(t0),
            CircuitState::Closed,
            "the count restarted"
        );
        circuit.record(true, t0);
        assert_eq!(circuit.current(t0), CircuitState::Open);

        let later = t0 + Duration::from_secs(5);
        assert_eq!(circuit.admit(later), Admission::Allowed);
        circuit.record(true, later);
        assert_eq!(circuit.current(later), CircuitState::Open);
        assert!(matches!(circuit.admit(later), Admission::Rejected { .. }));
    }
}
