//! Rate limits: `RATE_LIMIT_PER_NUMBER`, `RATE_LIMIT_PER_CLIENT`, `RATE_LIMIT_GLOBAL`,
//! counted in the shared store so that replicas enforce one limit together.

use std::time::Duration;

use otp_relay_providers::Phone;

use super::digest;
use crate::config::{Limits, RateSpec};
use crate::store::{RateDecision, RateLimit, Store, StoreError};

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

/// Counts one send for the number, the caller and in all, or (counting none) says
/// which limit refuses it: the number's first, then the caller's, then the global one.
pub async fn check(
    store: &dyn Store,
    limits: &Limits,
    phone: &Phone,
    client: &str,
) -> Result<Result<(), Limited>, StoreError> {
    let on: Vec<(Scope, String, RateSpec)> = [
        (Scope::Number, limits.rate_per_number),
        (Scope::Client, limits.rate_per_client),
        (Scope::Global, limits.rate_global),
    ]
    .into_iter()
    .filter_map(|(scope, spec)| {
        // Digests only for the limits that are on: most deployments set one or two.
        let spec = spec?;
        let id = match scope {
            Scope::Number => digest(&[phone.e164()]),
            Scope::Client => digest(&[client]),
            Scope::Global => String::new(),
        };
        Some((scope, format!("rate:{}:{id}", scope.as_str()), spec))
    })
    .collect();
    if on.is_empty() {
        return Ok(Ok(()));
    }
    let rate_limits: Vec<RateLimit<'_>> = on
        .iter()
        .map(|(_, key, spec)| RateLimit { key, spec: *spec })
        .collect();
    Ok(match store.rate_acquire(&rate_limits).await? {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { limit, retry_after } => Err(Limited {
            scope: on
                .get(limit)
                .map(|(scope, ..)| *scope)
                .ok_or_else(|| StoreError("the store named a limit that was not asked".into()))?,
            retry_after,
        }),
    })
}
