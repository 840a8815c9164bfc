//! Who may ask otp-relay to send: API keys, allowed networks, or nobody checked.

use std::fmt;
use std::future::{ready, Ready};
use std::net::IpAddr;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::ApiError;

/// Why a caller was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")]
    MissingKey,
    #[error("the API key is not valid")]
    WrongKey,
    #[error("requests from this address are not allowed")]
    AddressNotAllowed,
}

/// The access settings: `AUTH_API_KEYS`, `AUTH_ALLOWED_CIDRS`, `AUTH_DISABLED`,
/// `TRUSTED_PROXIES`.
///
/// A caller is let in by a valid key or by an allowed address, either one. Keys are
/// kept only as SHA-256 digests and compared in constant time.
#[derive(Clone)]
pub struct AccessPolicy {
    key_digests: Vec<[u8; 32]>,
    allowed_networks: Vec<IpNet>,
    disabled: bool,
    trusted_proxies: Vec<IpNet>,
}

impl fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessPolicy")
            .field(
                "api_keys",
                &format_args!("<{} keys>", self.key_digests.len()),
            )
            .field("allowed_networks", &self.allowed_networks)
            .field("disabled", &self.disabled)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl AccessPolicy {
    pub fn new(
        api_keys: Vec<SecretString>,
        allowed_networks: Vec<IpNet>,
        disabled: bool,
        trusted_proxies: Vec<IpNet>,
    ) -> Self {
        AccessPolicy {
            key_digests: api_keys.iter().map(|k| digest(k.expose_secret())).collect(),
            allowed_networks,
            disabled,
            trusted_proxies,
        }
    }

    /// Whether the operator chose any access setting at all.
    pub fn is_configured(&self) -> bool {
        self.disabled || !self.key_digests.is_empty() || !self.allowed_networks.is_empty()
    }

    /// The caller's address: the peer, or, when the peer is a trusted proxy, the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let peer = peer?;
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        let Some(chain) = forwarded_for.filter(|_| trusted(&peer)) else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted(&ip) {
                        break;
                    }
                }
                // A hop we cannot read ends what we can believe.
                Err(_) => break,
            }
        }
        Some(client)
    }

    /// Decides whether a caller at `client_ip` presenting `key` may send.
    pub fn check(&self, client_ip: Option<IpAddr>, key: Option<&str>) -> Result<(), AccessDenied> {
        if self.disabled || !self.is_configured() {
            return Ok(());
        }
        if let Some(key) = key.filter(|_| !self.key_digests.is_empty()) {
            let presented = digest(key);
            // Compare against every key so timing does not tell which one matched.
            let matched = self
                .key_digests
                .iter()
                .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(&presented));
            return if bool::from(matched) {
                Ok(())
            } else {
                Err(AccessDenied::WrongKey)
            };
        }
        let address_allowed =
            client_ip.is_some_and(|ip| self.allowed_networks.iter().any(|n| n.contains(&ip)));
        if address_allowed {
            Ok(())
        } else if !self.key_digests.is_empty() {
            Err(AccessDenied::MissingKey)
        } else {
            Err(AccessDenied::AddressNotAllowed)
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, Basic auth whose password
/// is the key (authentik), a bare `Authorization: <key>` (keycloak-mfa-plugins), or
/// `X-API-Key: <key>`.
fn presented_key(req: &HttpRequest) -> Option<String> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let from_authorization = authorization.and_then(|value| match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(token.trim().to_owned())
        }
        Some((scheme, credentials)) if scheme.eq_ignore_ascii_case("basic") => {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials.trim())
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            decoded
                .split_once(':')
                .map(|(_, password)| password.to_owned())
        }
        Some(_) => None,
        None => Some(value.to_owned()),
    });
    from_authorization.or_else(|| {
        req.headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    })
}

/// A caller that passed the access policy; handlers that take one are protected.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ip: Option<IpAddr>,
    /// Who this is for per-caller limits and idempotency keys: a digest of the API key
    /// it presented, or else its address.
    pub identity: String,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(policy) = req.app_data::<web::Data<AccessPolicy>>() else {
            // Wiring error: fail closed.
            return ready(Err(ApiError::Access(AccessDenied::AddressNotAllowed)));
        };
        let forwarded_for = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let ip = policy.client_ip(req.peer_addr().map(|a| a.ip()), forwarded_for);
        let key = presented_key(req).filter(|_| !policy.key_digests.is_empty());
        let key = key.as_deref();
        ready(
            policy
                .check(ip, key)
                .map(|()| Caller {
                    ip,
                    identity: match (key, ip) {
                        (Some(key), _) => format!("key:{}", crate::guards::digest(&[key])),
                        (None, Some(ip)) => format!("ip:{ip}"),
                        (None, None) => "unknown".to_owned(),
                    },
                })
                .map_err(ApiError::Access),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(keys: &[&str], networks: &[&str], proxies: &[&str]) -> AccessPolicy {
        AccessPolicy::new(
            keys.iter()
                .map(|k| SecretString::from(k.to_string()))
                .collect(),
            networks.iter().map(|n| n.parse().unwrap()).collect(),
            false,
            proxies.iter().map(|n| n.parse().unwrap()).collect(),
        )
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let p = policy(&[], &["10.1.0.0/16"], &["192.168.0.1/32", "192.168.0.2/32"]);
        // Untrusted peer: its header is ignored.
        assert_eq!(
            p.client_ip(ip("203.0.113.9"), Some("10.1.2.3")),
            ip("203.0.113.9")
        );
        // Trusted peer: the right-most untrusted hop is the client.
        assert_eq!(
            p.client_ip(ip("192.168.0.1"), Some("6.6.6.6, 10.1.2.3, 192.168.0.2")),
            ip("10.1.2.3")
        );
        // Garbage stops the walk at the last hop we could read.
        assert_eq!(
            p.client_ip(ip("192.168.0.1"), Some("junk")),
            ip("192.168.0.1")
        );
    }

    #[test]
    fn a_key_or_an_allowed_address_lets_a_caller_in() {
        let p = policy(&["s3cret"], &["10.0.0.0/8"], &[]);
        assert_eq!(p.check(ip("10.2.3.4"), None), Ok(()));
        assert_eq!(p.check(ip("8.8.8.8"), Some("s3cret")), Ok(()));
        assert_eq!(p.check(ip("8.8.8.8"), None), Err(AccessDenied::MissingKey));
        assert_eq!(
            p.check(ip("10.2.3.4"), Some("nope")),
            Err(AccessDenied::WrongKey)
        );
        let cidr_only = policy(&[], &["10.0.0.0/8"], &[]);
        assert_eq!(
            cidr_only.check(ip("8.8.8.8"), Some("anything")),
            Err(AccessDenied::AddressNotAllowed)
        );
    }

    #[test]
    fn debug_never_shows_keys() {
        let p = policy(&["very-secret-key"], &[], &[]);
        let printed = format!("{p:?}");
        assert!(!printed.contains("very-secret-key"));
        assert!(printed.contains("<1 keys>"));
    }
}
