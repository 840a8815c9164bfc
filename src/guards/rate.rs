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
    // Digests only for the limits that are on: most deployments set one or two.
    let checks: [(Scope, Option<_>, fn(&Phone, &str) -> String); 3] = [
        (Scope::Number, limits.rate_per_number, |phone, _| {
            digest(&[phone.e164()])
        }),
        (Scope::Client, limits.rate_per_client, |_, client| {
            digest(&[client])
        }),
        (Scope::Global, limits.rate_global, |_, _| String::new()),
    ];
    for (scope, spec, id) in checks {
        let Some(spec) = spec else { continue };
        let key = format!("rate:{}:{}", scope.as_str(), id(phone, client));
        if let RateDecision::Limited { retry_after } = store.rate_acquire(&key, spec).await? {
            return Ok(Err(Limited { scope, retry_after }));
        }
    }
    Ok(Ok(()))
}
