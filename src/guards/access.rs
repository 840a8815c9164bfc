//! Who may ask otp-relay to send: API keys, allowed networks, or nobody checked; and
//! which address a request comes from when it passes through trusted proxies.
//!
//! Only `X-Forwarded-For` is read (every line of it, in order), and only from a peer
//! in `TRUSTED_PROXIES`. RFC 7239 `Forwarded` is not read: proxies that set only that
//! header are refused as unknown clients rather than mistaken for the proxy itself.
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a `[::]` listener sees of IPv4
//! peers) are compared as the IPv4 address they carry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// A network as it is compared: `::ffff:a.b.c.d/n` (n >= 96) is the IPv4 network it maps.
fn canonical_network(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
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
            allowed_networks: allowed_networks
                .into_iter()
                .map(canonical_network)
                .collect(),
            disabled,
            trusted_proxies: trusted_proxies.into_iter().map(canonical_network).collect(),
        }
    }

    /// Whether any API key is configured (a presented key is read only then).
    pub fn has_keys(&self) -> bool {
        !self.key_digests.is_empty()
    }

    /// Whether the operator chose any access setting at all.
    pub fn is_configured(&self) -> bool {
        self.disabled || !self.key_digests.is_empty() || !self.allowed_networks.is_empty()
    }

    /// The caller's address: the peer, or, when the peer is a trusted proxy, the
    /// right-most hop of `forwarded_for` (every `X-Forwarded-For` line, in order) that is
    /// not itself a trusted proxy. `None` when it cannot be known: no peer, a hop that is
    /// not a bare IP address (`junk`, `203.0.113.9:4711`) where the walk needs it, or a
    /// trusted proxy that sent an RFC 7239 `Forwarded` header (`rfc7239_forwarded`) but
    /// no `X-Forwarded-For`.
    pub fn client_ip(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: &[&str],
        rfc7239_forwarded: bool,
    ) -> Option<IpAddr> {
        // Compared as IPv4 when IPv4-mapped, like every address here.
        let peer = peer?.to_canonical();
        if !self.is_trusted_proxy(peer) {
            return Some(peer);
        }
        if forwarded_for.is_empty() {
            // The proxy speaking for itself, unless it says it forwards someone else.
            return (!rfc7239_forwarded).then_some(peer);
        }
        // The lines are one list, walked from its end: the proxy appended to the last line.
        let hops_from_the_right = forwarded_for.iter().rev().flat_map(|line| line.rsplit(','));
        let mut client = None;
        for hop in hops_from_the_right {
            // A hop we cannot read is where believing stops, and there the client is
            // unknown: never the proxy that forwarded it.
            let ip = hop.trim().parse::<IpAddr>().ok()?.to_canonical();
            client = Some(ip);
            if !self.is_trusted_proxy(ip) {
                break;
            }
        }
        // Every hop a trusted proxy: the left-most one is where the request began.
        client
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
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
        let address_allowed = client_ip
            .map(|ip| ip.to_canonical())
            .is_some_and(|ip| self.allowed_networks.iter().any(|n| n.contains(&ip)));
        if address_allowed {
            Ok(())
        } else if !self.key_digests.is_empty() {
            Err(AccessDenied::MissingKey)
        } else {
            Err(AccessDenied::AddressNotAllowed)
        }
    }
}

/// Who a caller is, for per-caller limits, idempotency keys, dedupe and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The digest of the API key it presented.
    Key(String),
    /// Its address (canonical: IPv4-mapped addresses as IPv4), when it sent no key.
    Address(IpAddr),
    /// Neither: no key, and an address that could not be known.
    Unknown,
    /// The operator's own command line on this host (`otp-relay send`).
    Cli,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Key(digest) => write!(f, "key:{digest}"),
            Identity::Address(IpAddr::V4(ip)) => write_ipv4(f, *ip),
            Identity::Address(ip) => write!(f, "ip:{ip}"),
            Identity::Unknown => f.write_str("unknown"),
            Identity::Cli => f.write_str("cli"),
        }
    }
}

/// `ip:` and the address in dotted decimal, handed to the formatter in one piece: this
/// runs on every send, and `Ipv4Addr`'s own `Display` pads each octet through it (more
/// than the rest of the identity cost).
fn write_ipv4(f: &mut fmt::Formatter<'_>, ip: Ipv4Addr) -> fmt::Result {
    let mut text = [0u8; "ip:255.255.255.255".len()];
    text[..3].copy_from_slice(b"ip:");
    let mut len = 3;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    f.write_str(std::str::from_utf8(&text[..len]).expect("ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn an_ipv4_identity_reads_as_the_address_does(octets: [u8; 4]) {
            let ip = Ipv4Addr::from(octets);
            proptest::prop_assert_eq!(
                Identity::Address(IpAddr::V4(ip)).to_string(),
                format!("ip:{ip}")
            );
        }
    }

    fn policy(keys: &[&str], networks: &[&str], proxies: &[&str]) -> AccessPolicy {
        AccessPolicy::new(
            keys.iter()
                .map(|k| SecretString::from(k.to_string()))
                .collect(),
            networks.iter().map(|n| net(n)).collect(),
            false,
            proxies.iter().map(|n| net(n)).collect(),
        )
    }

    fn net(text: &str) -> IpNet {
        text.parse()
            .unwrap_or_else(|_| IpNet::from(text.parse::<IpAddr>().unwrap()))
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let p = policy(&[], &["10.1.0.0/16"], &["192.168.0.1/32", "192.168.0.2/32"]);
        // Untrusted peer: its header is ignored.
        assert_eq!(
            p.client_ip(ip("203.0.113.9"), &["10.1.2.3"], false),
            ip("203.0.113.9")
        );
        // Trusted peer: the right-most untrusted hop is the client.
        assert_eq!(
            p.client_ip(
                ip("192.168.0.1"),
                &["6.6.6.6, 10.1.2.3, 192.168.0.2"],
                false
            ),
            ip("10.1.2.3")
        );
        // Every hop trusted: the first one.
        assert_eq!(
            p.client_ip(ip("192.168.0.1"), &["192.168.0.2"], false),
            ip("192.168.0.2")
        );
        // No header: the proxy itself.
        assert_eq!(
            p.client_ip(ip("192.168.0.1"), &[], false),
            ip("192.168.0.1")
        );
    }

    #[test]
    fn every_forwarded_for_line_counts_and_the_last_is_the_proxys() {
        let p = policy(&[], &["10.0.0.0/8"], &["127.0.0.1"]);
        // The client wrote the first line; the proxy appended the second.
        let ip_seen = p.client_ip(ip("127.0.0.1"), &["10.1.2.3", "203.0.113.9"], false);
        assert_eq!(ip_seen, ip("203.0.113.9"));
        assert_eq!(p.check(ip_seen, None), Err(AccessDenied::AddressNotAllowed));
        assert_eq!(
            p.client_ip(
                ip("127.0.0.1"),
                &["203.0.113.9", "10.1.2.3, 127.0.0.1"],
                false
            ),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn an_unreadable_hop_makes_the_client_unknown_never_the_proxy() {
        let p = policy(&[], &["127.0.0.0/8"], &["127.0.0.1"]);
        for chain in [
            &["junk"][..],
            &["203.0.113.9:4711"],
            &["[2001:db8::1]:4711"],
            &["10.1.2.3, "],
            &["10.1.2.3", "junk"],
        ] {
            let seen = p.client_ip(ip("127.0.0.1"), chain, false);
            assert_eq!(seen, None, "{chain:?}");
            assert_eq!(p.check(seen, None), Err(AccessDenied::AddressNotAllowed));
        }
        // Junk left of the client is the client's own business.
        assert_eq!(
            p.client_ip(ip("127.0.0.1"), &["junk, 203.0.113.9"], false),
            ip("203.0.113.9")
        );
        // A trusted proxy that forwards with RFC 7239 `Forwarded` only.
        assert_eq!(p.client_ip(ip("127.0.0.1"), &[], true), None);
        // The header means nothing from a peer that is not a proxy.
        assert_eq!(p.client_ip(ip("10.9.9.9"), &[], true), ip("10.9.9.9"));
    }

    #[test]
    fn ipv4_mapped_addresses_compare_as_ipv4() {
        let p = policy(&[], &["10.0.0.0/8"], &["127.0.0.1"]);
        assert_eq!(p.check(ip("::ffff:10.1.2.3"), None), Ok(()));
        assert_eq!(
            p.check(ip("::ffff:11.1.2.3"), None),
            Err(AccessDenied::AddressNotAllowed)
        );
        // A mapped peer is the trusted proxy; a mapped hop is the IPv4 client.
        assert_eq!(
            p.client_ip(ip("::ffff:127.0.0.1"), &["::ffff:10.1.2.3"], false),
            ip("10.1.2.3")
        );
        // Networks written in the mapped form work for IPv4 peers too.
        let mapped = policy(&[], &["::ffff:10.0.0.0/104"], &[]);
        assert_eq!(mapped.check(ip("10.1.2.3"), None), Ok(()));
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
