//! Where state is kept: `REDIS_URL`, `REDIS_CLUSTER`, `REDIS_TIMEOUT`,
//! `MESSAGE_RETENTION`, `MEMORY_STORE_MIB`.

use std::time::Duration;

use otp_relay_providers::Env;
use secrecy::SecretString;

use super::var::{millis, DurationBounds, Var, DAY, MINUTE, MS};
use super::ConfigError;
use crate::store::StoreSettings;

const MESSAGE_RETENTION_BOUNDS: DurationBounds = millis(MINUTE, 90 * DAY);
/// `REDIS_TIMEOUT`; it must also be at most `REQUEST_DEADLINE / STORE_CALLS_PER_SEND`.
const REDIS_TIMEOUT_BOUNDS: DurationBounds = millis(10 * MS, MINUTE);
/// The store calls one send makes one after another (claim, limits, record, answer):
/// each may wait `REDIS_TIMEOUT` on a hung Redis before falling back to memory.
const STORE_CALLS_PER_SEND: u32 = 4;

/// The store's settings and `MESSAGE_RETENTION`; `REDIS_TIMEOUT` must fit within
/// `request_deadline`.
pub(super) fn parse_store(
    env: &Env<'_>,
    request_deadline: Duration,
) -> Result<(StoreSettings, Duration), ConfigError> {
    let (redis_url, redis_cluster, redis_timeout) = parse_redis(env, request_deadline)?;
    let message_retention =
        Var::new(env, "MESSAGE_RETENTION", "24h").duration("24h", MESSAGE_RETENTION_BOUNDS)?;
    let memory_store_mib: u64 = Var::new(env, "MEMORY_STORE_MIB", "64").number("8", 1, 65_536)?;
    let settings = StoreSettings {
        redis_url,
        redis_cluster,
        redis_timeout,
        memory_bytes: memory_store_mib << 20,
    };
    Ok((settings, message_retention))
}

/// `REDIS_URL`, `REDIS_CLUSTER` and `REDIS_TIMEOUT`.
fn parse_redis(
    env: &Env<'_>,
    deadline: Duration,
) -> Result<(Option<SecretString>, bool, Duration), ConfigError> {
    let cluster = Var::new(env, "REDIS_CLUSTER", "true").boolean(false)?;
    let url = Var::new(env, "REDIS_URL", "redis://redis:6379").value;
    let url = match url {
        None if cluster => {
            return Err(ConfigError::Invalid {
                var: "REDIS_CLUSTER",
                value: Some("true".into()),
                problem: "needs REDIS_URL (one or more of the cluster's nodes)".into(),
                example: "true with REDIS_URL=redis://node-1:6379,redis://node-2:6379",
            })
        }
        None => None,
        Some(url) => {
            // The URLs may hold a password: never echo them.
            let invalid = |problem: &str, example| ConfigError::Invalid {
                var: "REDIS_URL",
                value: None,
                problem: problem.into(),
                example,
            };
            let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
            if nodes.len() > 1 && !cluster {
                return Err(invalid(
                    "a comma list names the nodes of a Redis Cluster: set REDIS_CLUSTER=true",
                    "redis://node-1:6379,redis://node-2:6379",
                ));
            }
            for node in nodes {
                let scheme = node.split("://").next().unwrap_or_default();
                let ok = if cluster {
                    scheme == "redis" && node.contains("://")
                } else {
                    matches!(scheme, "redis" | "redis+unix" | "unix")
                };
                if scheme == "rediss" {
                    // The redis client is built without TLS (no TLS stack in the tree).
                    return Err(invalid(
                        "rediss:// (TLS) is not supported by this build",
                        "redis://redis:6379",
                    ));
                }
                if !ok && cluster {
                    return Err(invalid(
                        "each cluster node must start with redis://",
                        "redis://node-1:6379,redis://node-2:6379",
                    ));
                }
                if !ok {
                    return Err(invalid(
                        "must start with redis:// or unix://",
                        "redis://redis:6379",
                    ));
                }
            }
            Some(SecretString::from(url.to_owned()))
        }
    };
    let timeout_var = Var::new(env, "REDIS_TIMEOUT", "1s");
    let timeout = match timeout_var.value {
        // A store call must leave the request time to send.
        None => crate::store::redis::DEFAULT_TIMEOUT.min(deadline / STORE_CALLS_PER_SEND),
        Some(_) => {
            let timeout = timeout_var.duration("1s", REDIS_TIMEOUT_BOUNDS)?;
            if timeout > deadline / STORE_CALLS_PER_SEND {
                return Err(timeout_var.invalid(format!(
                    "must be at most a quarter of REQUEST_DEADLINE ({}): a send makes up to \
                     four store calls in turn, and a hung Redis must leave it time to send",
                    humantime::format_duration(deadline)
                )));
            }
            timeout
        }
    };
    Ok((url, cluster, timeout))
}
