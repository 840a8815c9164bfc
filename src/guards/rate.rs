//! Rate limits: `RATE_LIMIT_PER_NUMBER`, `RATE_LIMIT_PER_CLIENT`, `RATE_LIMIT_GLOBAL`,
//! counted in the shared store so that replicas enforce one limit together.

use std::time::Duration;

use otp_relay_providers::Phone;

use super::digest;
use crate::config::Limits;
use crate::store::{RateDecision, Store, StoreError};

/// Which limit refused a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Number,
    Client,
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Number => "number",
            Scope::Client => "client",
            Scope::Global => "global",
        }
    }

    /// The reason reported in the refusal metrics.
    pub fn refusal_reason(self) -> &'static str {
        match self {
            Scope::Number => "rate_limit_number",
            Scope::Client => "rate_limit_client",
            Scope::Global => "rate_limit_global",
        }
    }
}

/// A limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after: Duration,
}

/// Counts one send for the number, the caller and in all; refuses at the first limit
/// reached.
pub async fn check(
    store: &dyn Store,
    limits: &Limits,
    phone: &Phone,
    client: &str,
) -> Result<Result<(), Limited>, StoreError> {
    let checks = [
        (Scope::Number, limits.rate_per_number),
        (Scope::Client, limits.rate_per_client),
        (Scope::Global, limits.rate_global),
    ];
    for (scope, spec) in checks {
        let Some(spec) = spec else { continue };
        // Digests only for the limits that are on: most deployments set one or two.
        let id = match scope {
            Scope::Number => digest(&[phone.e164()]),
            Scope::Client => digest(&[client]),
            Scope::Global => String::new(),
        };
        let key = format!("rate:{}:{id}", scope.as_str());
        if let RateDecision::Limited { retry_after } = store.rate_acquire(&key, spec).await? {
            return Ok(Err(Limited { scope, retry_after }));
        }
    }
    Ok(Ok(()))
}
