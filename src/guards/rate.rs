//! Rate limits: `RATE_LIMIT_PER_NUMBER`, `RATE_LIMIT_PER_PREFIX`,
//! `RATE_LIMIT_PER_CLIENT`, `RATE_LIMIT_PER_COUNTRY`, `RATE_LIMIT_GLOBAL`, counted in the
//! shared store so that replicas enforce one limit together.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::Ipv6Net;
use otp_relay_providers::Phone;

use super::access::Identity;
use super::digest;
use super::pumping;
use super::Limits;
use crate::store::RateSpec;
use crate::store::{RateDecision, RateLimit, Store, StoreError};

/// Which limit refused a send (named in the 429 answer's `limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Number,
    /// A block of consecutive numbers (`RATE_LIMIT_PER_PREFIX`).
    Prefix,
    Client,
    /// The destination region (`RATE_LIMIT_PER_COUNTRY`).
    Country,
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Number => "number",
            Scope::Prefix => "prefix",
            Scope::Client => "client",
            Scope::Country => "country",
            Scope::Global => "global",
        }
    }

    /// The reason reported in the refusal metrics.
    pub fn refusal_reason(self) -> &'static str {
        match self {
            Scope::Number => "rate_limit_number",
            Scope::Prefix => "rate_limit_prefix",
            Scope::Client => "rate_limit_client",
            Scope::Country => "rate_limit_country",
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

/// Whom `RATE_LIMIT_PER_CLIENT` counts: the API key; else the IPv4 address, or the
/// IPv6 /64 (one subscriber's network, whose addresses it can rotate through at will).
pub fn client_key(identity: &Identity) -> String {
    match identity {
        Identity::Address(IpAddr::V6(v6)) => {
            let net = Ipv6Net::new(*v6, 64).map_or(*v6, |n| n.network());
            format!("net:{net}/64")
        }
        other => other.to_string(),
    }
}

/// Why a send may not go ahead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A limit was reached.
    Limited(Limited),
    /// The in-process store is full of live guard state: counting more would mean
    /// forgetting some.
    Overloaded,
}

/// The limits that are on, with their keys, narrowest first: the number's, its block's,
/// the caller's, its region's, the global one. Keys hold digests or region codes, never
/// numbers (a block's prefix is most of a number).
fn limits_on(limits: &Limits, phone: &Phone, client: &Identity) -> Vec<(Scope, String, RateSpec)> {
    let country = limits.rate_per_country.counter(phone);
    let (country_id, country_rate) = match country {
        Some((id, rate)) => (Some(id), Some(rate)),
        None => (None, None),
    };
    [
        (Scope::Number, limits.rate_per_number),
        (Scope::Prefix, limits.rate_per_prefix),
        (Scope::Client, limits.rate_per_client),
        (Scope::Country, country_rate),
        (Scope::Global, limits.rate_global),
    ]
    .into_iter()
    .filter_map(|(scope, spec)| {
        // Digests only for the limits that are on: most deployments set one or two.
        let spec = spec?;
        let id = match scope {
            Scope::Number => digest(&[phone.e164()]),
            // The block size is part of the key: a block of 1000 and one of 100 that
            // share their first digits are different counters.
            Scope::Prefix => {
                let digits = limits.prefix_digits;
                digest(&[&digits.to_string(), pumping::prefix(phone, digits)])
            }
            Scope::Client => digest(&[&client_key(client)]),
            Scope::Country => country_id.clone().unwrap_or_default(),
            Scope::Global => String::new(),
        };
        Some((scope, format!("rate:{}:{id}", scope.as_str()), spec))
    })
    .collect()
}

fn rate_limits(on: &[(Scope, String, RateSpec)]) -> Vec<RateLimit<'_>> {
    on.iter()
        .map(|(_, key, spec)| RateLimit { key, spec: *spec })
        .collect()
}

/// The limits one send counts against, for a store operation that counts them along
/// with something else ([`Store::claim_and_acquire`]).
pub struct Counting {
    on: Vec<(Scope, String, RateSpec)>,
}

impl Counting {
    pub fn new(limits: &Limits, phone: &Phone, client: &Identity) -> Self {
        Counting {
            on: limits_on(limits, phone, client),
        }
    }

    /// No limit is on.
    pub fn is_empty(&self) -> bool {
        self.on.is_empty()
    }

    /// The limits to ask the store about, in the order [`Counting::limited`] reads.
    pub fn limits(&self) -> Vec<RateLimit<'_>> {
        rate_limits(&self.on)
    }

    /// The refusal of the store's verdict that `limit` (its place in
    /// [`Counting::limits`]) refused first.
    pub fn limited(&self, limit: usize, retry_after: Duration) -> Result<Limited, StoreError> {
        let scope = self
            .on
            .get(limit)
            .map(|(scope, ..)| *scope)
            .ok_or_else(|| StoreError("the store named a limit that was not asked".into()))?;
        Ok(Limited { scope, retry_after })
    }
}

/// Counts one send against every limit that is on, or (counting none) says which limit
/// refuses it: the first in the order of [`limits_on`].
/// Refuses every send while the store is [overloaded](Store::overloaded).
pub async fn check(
    store: &dyn Store,
    limits: &Limits,
    phone: &Phone,
    client: &Identity,
) -> Result<Result<(), Refused>, StoreError> {
    if store.overloaded() {
        return Ok(Err(Refused::Overloaded));
    }
    let counting = Counting::new(limits, phone, client);
    if counting.is_empty() {
        return Ok(Ok(()));
    }
    Ok(match store.rate_acquire(&counting.limits()).await? {
        RateDecision::Allowed => Ok(()),
        RateDecision::Limited { limit, retry_after } => {
            Err(Refused::Limited(counting.limited(limit, retry_after)?))
        }
    })
}

/// Gives back what [`check`] counted, for a send that provably never left: it must not
/// use up any limit's allowance.
pub async fn refund(
    store: &dyn Store,
    limits: &Limits,
    phone: &Phone,
    client: &Identity,
) -> Result<(), StoreError> {
    let on = limits_on(limits, phone, client);
    if on.is_empty() {
        return Ok(());
    }
    store.rate_refund(&rate_limits(&on)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Identity {
        Identity::Address(text.parse().unwrap())
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let one = client_key(&address("2001:db8:1:2::a"));
        assert_eq!(one, "net:2001:db8:1:2::/64");
        assert_eq!(client_key(&address("2001:db8:1:2:ffff:1:2:3")), one);
        assert_ne!(client_key(&address("2001:db8:1:3::a")), one);
        // IPv4 clients, and clients by key, are counted one by one.
        assert_eq!(client_key(&address("10.1.2.3")), "ip:10.1.2.3");
        assert_ne!(client_key(&address("10.1.2.4")), "ip:10.1.2.3");
        assert_eq!(client_key(&Identity::Key("ab12".into())), "key:ab12");
    }
}
