//! The HTTP server: `BIND_ADDR`, `WORKERS`, and the connection limits that are not
//! read from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use otp_relay_providers::Env;

use super::var::Var;
use super::ConfigError;

/// How the HTTP server treats connections. Not read from the environment: the defaults
/// suit a relay on the login path (see README, "HTTP limits"); tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time for a client to send a request's line and headers: after it, 408 and the
    /// connection is closed.
    pub header_timeout: Duration,
    /// Time for a client to send a whole body once its headers are in: after it, 408
    /// and the connection is closed.
    pub body_timeout: Duration,
    /// How long an idle connection is kept open for the client's next request.
    pub keep_alive: Duration,
    /// Time to finish closing a connection before it is dropped.
    pub disconnect_timeout: Duration,
    /// Connections served at once by each worker (one worker per CPU); further ones
    /// wait in the listen backlog.
    pub max_connections_per_worker: usize,
    /// Most bytes of request line and headers (431 beyond).
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(15),
            disconnect_timeout: Duration::from_secs(1),
            max_connections_per_worker: 2048,
            max_header_bytes: 8 * 1024,
        }
    }
}

pub(super) fn parse_bind_addr(env: &Env<'_>) -> Result<SocketAddr, ConfigError> {
    Var::new(env, "BIND_ADDR", "0.0.0.0:3412").parse_with("0.0.0.0:3412", |v| {
        v.parse().map_err(|_| "not an address and port".to_owned())
    })
}

/// `WORKERS`; default one per CPU.
pub(super) fn parse_workers(env: &Env<'_>) -> Result<usize, ConfigError> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    Var::new(env, "WORKERS", "2").number(&cpus.to_string(), 1, 256)
}
