//! Dispatch: hands a message to the configured providers in priority order.
//!
//! Each attempt is bounded by `PROVIDER_TIMEOUT` and the whole send by
//! `REQUEST_DEADLINE`. A failure that another provider could overcome moves on to the
//! next provider that serves the channel; one that no provider can overcome (the number
//! itself is bad) stops at once. Every attempt is reported back.

use std::sync::Arc;
use std::time::Duration;

use otp_relay_providers::{Channel, MessageProvider, OutboundMessage, ProviderError, Receipt};
use serde::Serialize;
use tokio::time::Instant;

/// One provider's try at a message, as reported to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub provider: &'static str,
    /// `sent` or `failed`.
    pub outcome: &'static str,
    /// The failure's stable code; `null` when sent.
    pub code: Option<&'static str>,
}

/// A message a provider accepted.
#[derive(Debug, Clone)]
pub struct Delivery {
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
    #[error("no provider could take the message now: {error}")]
    Unavailable {
        error: ProviderError,
        attempts: Vec<Attempt>,
    },
    #[error("the request deadline passed before a provider accepted the message")]
    DeadlineExceeded { attempts: Vec<Attempt> },
}

impl DispatchError {
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            DispatchError::NoProviderForChannel(_) => &[],
            DispatchError::Rejected { attempts, .. }
            | DispatchError::Unavailable { attempts, .. }
            | DispatchError::DeadlineExceeded { attempts } => attempts,
        }
    }
}

/// The ordered providers and the time bounds that apply to a send.
pub struct Dispatcher {
    providers: Vec<Arc<dyn MessageProvider>>,
    provider_timeout: Duration,
    request_deadline: Duration,
}

impl Dispatcher {
    pub fn new(
        providers: Vec<Arc<dyn MessageProvider>>,
        provider_timeout: Duration,
        request_deadline: Duration,
    ) -> Self {
        Dispatcher {
            providers,
            provider_timeout,
            request_deadline,
        }
    }

    /// The providers, in priority order.
    pub fn providers(&self) -> &[Arc<dyn MessageProvider>] {
        &self.providers
    }

    pub async fn send(&self, message: &OutboundMessage) -> Result<Delivery, DispatchError> {
        let deadline = Instant::now() + self.request_deadline;
        let mut attempts = Vec::new();
        let mut last_error = None;
        for provider in self.providers.iter().filter(|p| p.serves(message.channel)) {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(DispatchError::DeadlineExceeded { attempts });
            }
            let budget = remaining.min(self.provider_timeout);
            let result = tokio::time::timeout(budget, provider.send(message))
                .await
                .unwrap_or(Err(ProviderError::Timeout));
            match result {
                Ok(receipt) => {
                    attempts.push(Attempt {
                        provider: provider.name(),
                        outcome: "sent",
                        code: None,
                    });
                    return Ok(Delivery { receipt, attempts });
                }
                Err(error) => {
                    tracing::warn!(
                        message_id = %message.id,
                        provider = provider.name(),
                        code = error.code(),
                        transient = error.is_transient(),
                        "provider attempt failed: {error}"
                    );
                    attempts.push(Attempt {
                        provider: provider.name(),
                        outcome: "failed",
                        code: Some(error.code()),
                    });
                    if !error.another_provider_may_succeed() {
                        return Err(DispatchError::Rejected { error, attempts });
                    }
                    last_error = Some(error);
                }
            }
        }
        match last_error {
            None => Err(DispatchError::NoProviderForChannel(message.channel)),
            Some(ProviderError::Timeout) if Instant::now() >= deadline => {
                Err(DispatchError::DeadlineExceeded { attempts })
            }
            Some(error) if error.is_transient() => {
                Err(DispatchError::Unavailable { error, attempts })
            }
            Some(error) => Err(DispatchError::Rejected { error, attempts }),
        }
    }
}
