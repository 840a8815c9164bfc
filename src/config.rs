//! Configuration: every environment variable otp-relay reads, parsed and validated once
//! at startup.
//!
//! A bad value stops startup with one line naming the variable, what is wrong with the
//! value and an example of a good one. Nothing is silently ignored.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use otp_relay_providers::registry::KNOWN_PROVIDERS;
use otp_relay_providers::{Channel, Env, ProviderSettings, Region, SettingError};
use secrecy::SecretString;
use serde::Deserialize;

use crate::guards::access::AccessPolicy;
use crate::message::MessageTemplates;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {problem}{}; for example {var}={example}", shown(.value))]
    Invalid {
        var: &'static str,
        /// The offending value, or `None` when it is secret.
        value: Option<String>,
        problem: String,
        example: &'static str,
    },
    #[error(transparent)]
    Provider(#[from] SettingError),
    #[error(
        "refusing to start: provider {providers} sends real messages but no caller access \
         control is set. Set one of: AUTH_API_KEYS=key1,key2 (callers send \
         `Authorization: Bearer <key>` or `X-API-Key: <key>`), AUTH_ALLOWED_CIDRS=10.0.0.0/8 \
         (admits callers by address; the QIAM/Keycloak extension cannot send headers, so \
         this is how it connects), or AUTH_DISABLED=true (anyone who can reach the port may \
         send; only on a private network)"
    )]
    NoAccessControl { providers: String },
}

fn shown(value: &Option<String>) -> String {
    match value {
        Some(value) => format!(" (got {value:?})"),
        None => String::new(),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// `N/DURATION`: at most N events per sliding DURATION.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u32,
    pub per: Duration,
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, per) = s
            .split_once('/')
            .ok_or_else(|| "expected COUNT/DURATION".to_owned())?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| "the count must be a whole number".to_owned())?;
        if count == 0 {
            return Err(
                "the count must be at least 1 (leave the variable empty or `off` to disable)"
                    .into(),
            );
        }
        let per = per.trim();
        // `5/m` reads as five per minute.
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            parse_duration(per)?
        } else {
            parse_duration(&format!("1{per}"))?
        };
        let per = RATE_PERIOD_BOUNDS
            .check(per)
            .map_err(|problem| format!("the period {problem}"))?;
        let spec = RateSpec { count, per };
        if !spec.is_exact() {
            return Err(format!(
                "{count} per {} is more than one per microsecond and does not divide into \
                 whole nanoseconds, finer than the limiter counts (for example {} per \
                 second at most, or a count that divides the period in nanoseconds; `off` \
                 disables the limit)",
                humantime::format_duration(per),
                Duration::from_secs(1).as_nanos() / MIN_RATE_INTERVAL.as_nanos()
            ));
        }
        Ok(spec)
    }
}

/// Below this time between two events a rate must divide its period into whole
/// nanoseconds. The stores count time in nanoseconds: at one or more microseconds
/// between events, rounding the interval down to whole nanoseconds changes a rate by
/// under 0.1%; below it only an exact interval keeps the rate what it says.
pub const MIN_RATE_INTERVAL: Duration = Duration::from_micros(1);

/// The shortest and the longest period a rate may span. Redis counts in doubles, whose
/// whole numbers are exact up to 2^53 nanoseconds (104 days): well beyond the longest.
pub const RATE_PERIODS: (Duration, Duration) = (RATE_PERIOD_BOUNDS.min, RATE_PERIOD_BOUNDS.max);

impl RateSpec {
    /// Whether the limiter counts this rate as written: its interval is a whole number of
    /// nanoseconds, or long enough that rounding it to one does not matter.
    pub fn is_exact(&self) -> bool {
        self.interval() >= MIN_RATE_INTERVAL
            || self.per.as_nanos() % u128::from(self.count.max(1)) == 0
    }

    /// The time between two events at the sustained rate: `per / count`, rounded down
    /// to a whole nanosecond, at least one.
    pub fn interval(&self) -> Duration {
        let nanos = self.per.as_nanos() / u128::from(self.count.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX).max(1))
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("not a duration: {e}"))
}

/// The sensible range of a duration setting. Every duration read from the environment
/// has one: beyond it a value is a typo (`10d` for `10s`), and unbounded durations would
/// overflow the time arithmetic they feed.
#[derive(Debug, Clone, Copy)]
struct DurationBounds {
    min: Duration,
    max: Duration,
}

impl DurationBounds {
    const fn new(min: Duration, max: Duration) -> Self {
        DurationBounds { min, max }
    }

    fn check(self, duration: Duration) -> Result<Duration, String> {
        if duration < self.min || duration > self.max {
            let shown = |d: Duration| humantime::format_duration(d).to_string();
            return Err(if self.min.is_zero() {
                format!("must be at most {}", shown(self.max))
            } else {
                format!(
                    "must be between {} and {}",
                    shown(self.min),
                    shown(self.max)
                )
            });
        }
        Ok(duration)
    }
}

const MS: u64 = 1;
const SECOND: u64 = 1000 * MS;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

const fn millis(min: u64, max: u64) -> DurationBounds {
    DurationBounds::new(Duration::from_millis(min), Duration::from_millis(max))
}

/// `REQUEST_DEADLINE`: a login waits on it.
const REQUEST_DEADLINE_BOUNDS: DurationBounds = millis(100 * MS, 5 * MINUTE);
/// `PROVIDER_TIMEOUT`; it may also not exceed `REQUEST_DEADLINE`.
const PROVIDER_TIMEOUT_BOUNDS: DurationBounds = millis(100 * MS, 5 * MINUTE);
const CIRCUIT_COOLDOWN_BOUNDS: DurationBounds = millis(100 * MS, HOUR);
/// `DEDUPE_WINDOW`: 0 turns dedupe off.
const DEDUPE_WINDOW_BOUNDS: DurationBounds = millis(0, DAY);
/// `MESSAGE_TTL`: the same range a request's `ttl` may ask for.
const MESSAGE_TTL_BOUNDS: DurationBounds = millis(SECOND, DAY);
const MESSAGE_RETENTION_BOUNDS: DurationBounds = millis(MINUTE, 90 * DAY);
/// `REDIS_TIMEOUT`; it must also be at most `REQUEST_DEADLINE / STORE_CALLS_PER_SEND`.
const REDIS_TIMEOUT_BOUNDS: DurationBounds = millis(10 * MS, MINUTE);
/// The store calls one send makes one after another (claim, limits, record, answer):
/// each may wait `REDIS_TIMEOUT` on a hung Redis before falling back to memory.
const STORE_CALLS_PER_SEND: u32 = 4;
/// The period of a rate limit (`N/PERIOD`).
const RATE_PERIOD_BOUNDS: DurationBounds = millis(SECOND, 31 * DAY);

/// Limits and abuse controls (enforced by the guards and the dispatcher).
#[derive(Debug, Clone)]
pub struct Limits {
    pub rate_per_number: Option<RateSpec>,
    pub rate_per_client: Option<RateSpec>,
    pub rate_global: Option<RateSpec>,
    pub allowed_countries: Vec<Region>,
    pub blocked_countries: Vec<Region>,
    pub allow_non_mobile: bool,
    pub dedupe_window: Duration,
    pub provider_timeout: Duration,
    pub request_deadline: Duration,
    pub retry_max: u32,
    pub circuit_failures: u32,
    pub circuit_cooldown: Duration,
    pub max_in_flight: usize,
}

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

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind_addr: SocketAddr,
    /// In priority order.
    pub providers: Vec<ProviderSettings>,
    pub default_channel: Channel,
    pub default_region: Option<Region>,
    pub templates: MessageTemplates,
    pub message_ttl: Duration,
    pub public_base_url: Option<String>,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub access: AccessPolicy,
    pub limits: Limits,
    /// `REDIS_URL`: one server, or with `redis_cluster` one or more seeds of a cluster
    /// (a comma list).
    pub redis_url: Option<SecretString>,
    /// `REDIS_CLUSTER`: `redis_url` names a Redis Cluster.
    pub redis_cluster: bool,
    /// `REDIS_TIMEOUT`: the longest one store operation may take, within
    /// `REQUEST_DEADLINE`.
    pub redis_timeout: Duration,
    pub message_retention: Duration,
    /// Most memory the in-process store may use, in bytes (`MEMORY_STORE_MIB`).
    pub memory_store_bytes: u64,
    /// HTTP worker threads, each with its own event loop (`WORKERS`; default one per CPU).
    pub workers: usize,
    pub http: HttpLimits,
    /// When statuses, prices and balances are looked up after a send (no variable).
    pub followup: crate::followup::FollowupSettings,
}

/// The variables as text, straight from the environment.
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    bind_addr: Option<String>,
    providers: Option<String>,
    default_channel: Option<String>,
    default_region: Option<String>,
    message_template: Option<String>,
    message_ttl: Option<String>,
    public_base_url: Option<String>,
    log_format: Option<String>,
    rust_log: Option<String>,
    auth_api_keys: Option<String>,
    auth_allowed_cidrs: Option<String>,
    auth_disabled: Option<String>,
    trusted_proxies: Option<String>,
    rate_limit_per_number: Option<String>,
    rate_limit_per_client: Option<String>,
    rate_limit_global: Option<String>,
    allowed_countries: Option<String>,
    blocked_countries: Option<String>,
    allow_non_mobile: Option<String>,
    dedupe_window: Option<String>,
    provider_timeout: Option<String>,
    request_deadline: Option<String>,
    retry_max: Option<String>,
    circuit_failures: Option<String>,
    circuit_cooldown: Option<String>,
    max_in_flight: Option<String>,
    workers: Option<String>,
    redis_url: Option<String>,
    redis_cluster: Option<String>,
    redis_timeout: Option<String>,
    message_retention: Option<String>,
    memory_store_mib: Option<String>,
}

/// Reads one variable: absent or blank means the default.
struct Var<'a> {
    name: &'static str,
    value: Option<&'a str>,
    example: &'static str,
}

impl<'a> Var<'a> {
    fn new(name: &'static str, value: &'a Option<String>, example: &'static str) -> Self {
        let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty());
        Var {
            name,
            value,
            example,
        }
    }

    fn invalid(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            var: self.name,
            value: self.value.map(str::to_owned),
            problem: problem.into(),
            example: self.example,
        }
    }

    fn parse_with<T>(
        &self,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(self.value.unwrap_or(default)).map_err(|problem| self.invalid(problem))
    }

    fn optional<T>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.value
            .map(|v| parse(v).map_err(|problem| self.invalid(problem)))
            .transpose()
    }

    /// A duration within `bounds` (see [`DurationBounds`]).
    fn duration(&self, default: &str, bounds: DurationBounds) -> Result<Duration, ConfigError> {
        self.parse_with(default, |text| bounds.check(parse_duration(text)?))
    }

    fn number<T: FromStr + PartialOrd + Copy + std::fmt::Display>(
        &self,
        default: &str,
        min: T,
        max: T,
    ) -> Result<T, ConfigError> {
        self.parse_with(default, |text| {
            let n: T = text.parse().map_err(|_| "not a whole number".to_owned())?;
            if n < min || n > max {
                return Err(format!("must be between {min} and {max}"));
            }
            Ok(n)
        })
    }

    fn boolean(&self, default: bool) -> Result<bool, ConfigError> {
        match self.value.map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(_) => Err(self.invalid("expected true or false")),
        }
    }

    fn rate(&self, default: Option<&str>) -> Result<Option<RateSpec>, ConfigError> {
        match self.value.or(default) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|problem: String| self.invalid(problem)),
        }
    }

    fn list(&self) -> Vec<&'a str> {
        self.value
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn regions(&self) -> Result<Vec<Region>, ConfigError> {
        self.list()
            .into_iter()
            .map(|code| {
                code.parse::<Region>()
                    .map_err(|e| self.invalid(format!("{code:?} is {e}")))
            })
            .collect()
    }

    fn networks(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.list()
            .into_iter()
            .map(|item| parse_network(item).map_err(|problem| self.invalid(problem)))
            .collect()
    }
}

/// A CIDR block, or a single address meaning just that address.
fn parse_network(item: &str) -> Result<IpNet, String> {
    item.parse::<IpNet>()
        .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{item:?} is not an address or CIDR block"))
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Reads the given variables as if they were the environment.
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        // Every field is text, so envy cannot fail on a value; the checks below name the
        // variable when one is wrong.
        let raw: RawConfig =
            envy::from_iter(vars.iter().map(|(k, v)| (k.clone(), v.clone()))).unwrap_or_default();

        let bind_addr = Var::new("BIND_ADDR", &raw.bind_addr, "0.0.0.0:3412")
            .parse_with("0.0.0.0:3412", |v| {
                v.parse().map_err(|_| "not an address and port".to_owned())
            })?;

        let provider_names =
            parse_provider_names(&Var::new("PROVIDERS", &raw.providers, "twilio,vonage"))?;

        let default_channel = Var::new("DEFAULT_CHANNEL", &raw.default_channel, "sms")
            .parse_with("sms", |v| v.parse::<Channel>().map_err(|e| e.to_string()))?;

        let default_region = Var::new("DEFAULT_REGION", &raw.default_region, "BR")
            .optional(|v| v.parse::<Region>().map_err(|e| e.to_string()))?;

        let template_var = Var::new(
            "MESSAGE_TEMPLATE",
            &raw.message_template,
            "\"Your code is {code}\"",
        );
        let mut templates = MessageTemplates::new(
            template_var
                .value
                .unwrap_or(crate::message::DEFAULT_TEMPLATE),
        )
        .map_err(|problem| template_var.invalid(problem))?;
        for (name, value) in vars.iter() {
            if let Some(locale) = name.strip_prefix("MESSAGE_TEMPLATE_") {
                templates
                    .add_locale(locale, value)
                    .map_err(|problem| ConfigError::Invalid {
                        var: "MESSAGE_TEMPLATE_<LOCALE>",
                        value: Some(format!("{name}={value}")),
                        problem,
                        example: "\"Seu código é {code}\" as MESSAGE_TEMPLATE_PT_BR",
                    })?;
            }
        }

        let message_ttl =
            Var::new("MESSAGE_TTL", &raw.message_ttl, "5m").duration("5m", MESSAGE_TTL_BOUNDS)?;

        let public_base_url = Var::new(
            "PUBLIC_BASE_URL",
            &raw.public_base_url,
            "https://otp.example.com",
        )
        .optional(|v| {
            let url = reqwest::Url::parse(v).map_err(|e| format!("not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err("must be an http or https URL with a host".into());
            }
            Ok(v.trim_end_matches('/').to_owned())
        })?;

        let default_format = if cfg!(debug_assertions) {
            "pretty"
        } else {
            "json"
        };
        let log_format = Var::new("LOG_FORMAT", &raw.log_format, "json").parse_with(
            default_format,
            |v| match v.to_ascii_lowercase().as_str() {
                "json" => Ok(LogFormat::Json),
                "pretty" => Ok(LogFormat::Pretty),
                _ => Err("expected json or pretty".into()),
            },
        )?;
        let log_filter = Var::new("RUST_LOG", &raw.rust_log, "info,otp_relay=debug").parse_with(
            "info",
            |v| {
                tracing_subscriber::EnvFilter::try_new(v)
                    .map(|_| v.to_owned())
                    .map_err(|e| format!("not a log filter: {e}"))
            },
        )?;

        let access = parse_access(&raw)?;
        check_access_is_configured(&provider_names, &access)?;
        let env = Env::new(&vars);
        let providers = provider_names
            .iter()
            .map(|name| {
                ProviderSettings::from_env(name, &env)?.ok_or_else(|| ConfigError::Invalid {
                    var: "PROVIDERS",
                    value: Some(name.to_string()),
                    problem: format!("provider {name:?} is not available in this build"),
                    example: "console",
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limits = parse_limits(&raw)?;

        let (redis_url, redis_cluster, redis_timeout) = parse_redis(&raw, &limits)?;
        let message_retention = Var::new("MESSAGE_RETENTION", &raw.message_retention, "24h")
            .duration("24h", MESSAGE_RETENTION_BOUNDS)?;
        let memory_store_mib: u64 =
            Var::new("MEMORY_STORE_MIB", &raw.memory_store_mib, "64").number("8", 1, 65_536)?;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = Var::new("WORKERS", &raw.workers, "2").number(&cpus.to_string(), 1, 256)?;

        Ok(Config {
            bind_addr,
            providers,
            default_channel,
            default_region,
            templates,
            message_ttl,
            public_base_url,
            log_format,
            log_filter,
            access,
            limits,
            redis_url,
            redis_cluster,
            redis_timeout,
            message_retention,
            memory_store_bytes: memory_store_mib << 20,
            workers,
            http: HttpLimits::default(),
            followup: crate::followup::FollowupSettings::default(),
        })
    }
}

/// `REDIS_URL`, `REDIS_CLUSTER` and `REDIS_TIMEOUT`.
fn parse_redis(
    raw: &RawConfig,
    limits: &Limits,
) -> Result<(Option<SecretString>, bool, Duration), ConfigError> {
    let cluster = Var::new("REDIS_CLUSTER", &raw.redis_cluster, "true").boolean(false)?;
    let url = Var::new("REDIS_URL", &raw.redis_url, "redis://redis:6379").value;
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
    let timeout_var = Var::new("REDIS_TIMEOUT", &raw.redis_timeout, "1s");
    let deadline = limits.request_deadline;
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

/// A real provider sends paid messages: an open endpoint would let anyone spend the
/// account, so one of the access settings must be chosen on purpose.
fn check_access_is_configured(
    providers: &[&str],
    access: &AccessPolicy,
) -> Result<(), ConfigError> {
    let real: Vec<&str> = providers
        .iter()
        .copied()
        .filter(|p| *p != "console")
        .collect();
    if !real.is_empty() && !access.is_configured() {
        return Err(ConfigError::NoAccessControl {
            providers: real.join(","),
        });
    }
    Ok(())
}

/// The `PROVIDERS` list, lower-cased, each a known provider and none twice; the
/// console alone or not at all.
fn parse_provider_names(var: &Var<'_>) -> Result<Vec<&'static str>, ConfigError> {
    let names = var.list();
    if names.is_empty() {
        return Ok(vec!["console"]);
    }
    let mut seen = HashSet::new();
    names
        .into_iter()
        .map(|name| {
            let lower = name.to_ascii_lowercase();
            let known = KNOWN_PROVIDERS
                .iter()
                .copied()
                .find(|k| *k == lower)
                .ok_or_else(|| {
                    var.invalid(format!(
                        "unknown provider {name:?}; known providers are {}",
                        KNOWN_PROVIDERS.join(", ")
                    ))
                })?;
            if !seen.insert(known) {
                return Err(var.invalid(format!("provider {name:?} is listed twice")));
            }
            Ok(known)
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|names| {
            // Behind a failing real provider the console would "deliver" to the logs: the
            // login succeeds, the user gets nothing, the code sits in the output.
            if names.len() > 1 && names.contains(&"console") {
                return Err(var.invalid(
                    "console prints messages instead of sending them and cannot be listed \
                     beside a real provider; list only real providers, or console alone",
                ));
            }
            Ok(names)
        })
}

fn parse_access(raw: &RawConfig) -> Result<AccessPolicy, ConfigError> {
    let keys_var = Var::new("AUTH_API_KEYS", &raw.auth_api_keys, "k3y-one,k3y-two");
    let api_keys: Vec<SecretString> = keys_var
        .list()
        .into_iter()
        .map(|key| SecretString::from(key.to_owned()))
        .collect();
    if keys_var.value.is_some() && api_keys.is_empty() {
        return Err(ConfigError::Invalid {
            var: "AUTH_API_KEYS",
            value: None,
            problem: "lists no key".into(),
            example: "k3y-one,k3y-two",
        });
    }
    let allowed_cidrs = Var::new(
        "AUTH_ALLOWED_CIDRS",
        &raw.auth_allowed_cidrs,
        "10.0.0.0/8,192.168.1.20",
    )
    .networks()?;
    let disabled = Var::new("AUTH_DISABLED", &raw.auth_disabled, "true").boolean(false)?;
    let trusted_proxies = Var::new(
        "TRUSTED_PROXIES",
        &raw.trusted_proxies,
        "10.0.0.1,172.16.0.0/12",
    )
    .networks()?;
    Ok(AccessPolicy::new(
        api_keys,
        allowed_cidrs,
        disabled,
        trusted_proxies,
    ))
}

fn parse_limits(raw: &RawConfig) -> Result<Limits, ConfigError> {
    let allowed_countries =
        Var::new("ALLOWED_COUNTRIES", &raw.allowed_countries, "BR,PT").regions()?;
    let blocked_countries =
        Var::new("BLOCKED_COUNTRIES", &raw.blocked_countries, "KP,CU").regions()?;
    if let Some(both) = allowed_countries
        .iter()
        .find(|r| blocked_countries.contains(r))
    {
        return Err(ConfigError::Invalid {
            var: "BLOCKED_COUNTRIES",
            value: Some(both.to_string()),
            problem: "also listed in ALLOWED_COUNTRIES".into(),
            example: "KP,CU",
        });
    }
    let request_deadline = Var::new("REQUEST_DEADLINE", &raw.request_deadline, "10s")
        .duration("10s", REQUEST_DEADLINE_BOUNDS)?;
    let timeout_var = Var::new("PROVIDER_TIMEOUT", &raw.provider_timeout, "5s");
    let provider_timeout = timeout_var.duration("5s", PROVIDER_TIMEOUT_BOUNDS)?;
    // An attempt cannot outlast the send it is part of.
    if provider_timeout > request_deadline {
        return Err(timeout_var.invalid(format!(
            "must not exceed REQUEST_DEADLINE ({})",
            humantime::format_duration(request_deadline)
        )));
    }
    Ok(Limits {
        rate_per_number: Var::new("RATE_LIMIT_PER_NUMBER", &raw.rate_limit_per_number, "5/10m")
            .rate(Some("5/10m"))?,
        rate_per_client: Var::new(
            "RATE_LIMIT_PER_CLIENT",
            &raw.rate_limit_per_client,
            "600/1m",
        )
        .rate(None)?,
        rate_global: Var::new("RATE_LIMIT_GLOBAL", &raw.rate_limit_global, "100/1s").rate(None)?,
        allowed_countries,
        blocked_countries,
        allow_non_mobile: Var::new("ALLOW_NON_MOBILE", &raw.allow_non_mobile, "true")
            .boolean(false)?,
        dedupe_window: Var::new("DEDUPE_WINDOW", &raw.dedupe_window, "60s")
            .duration("60s", DEDUPE_WINDOW_BOUNDS)?,
        provider_timeout,
        request_deadline,
        retry_max: Var::new("RETRY_MAX", &raw.retry_max, "1").number("1", 0, 10)?,
        circuit_failures: Var::new("CIRCUIT_FAILURES", &raw.circuit_failures, "5")
            .number("5", 1, 1000)?,
        circuit_cooldown: Var::new("CIRCUIT_COOLDOWN", &raw.circuit_cooldown, "30s")
            .duration("30s", CIRCUIT_COOLDOWN_BOUNDS)?,
        max_in_flight: Var::new("MAX_IN_FLIGHT", &raw.max_in_flight, "1024")
            .number("1024", 1, 1_000_000)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn error(vars: &[(&str, &str)]) -> String {
        config(vars).expect_err("should be refused").to_string()
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = config(&[]).unwrap();
        assert_eq!(c.bind_addr, "0.0.0.0:3412".parse().unwrap());
        assert_eq!(
            c.providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
            ["console"]
        );
        assert_eq!(c.default_channel, Channel::Sms);
        assert_eq!(c.default_region, None);
        assert_eq!(c.message_ttl, Duration::from_secs(300));
        assert_eq!(
            c.templates.render("1234", None),
            "Your verification code is 1234"
        );
        assert_eq!(
            c.limits.rate_per_number,
            Some(RateSpec {
                count: 5,
                per: Duration::from_secs(600)
            })
        );
        assert_eq!(c.limits.dedupe_window, Duration::from_secs(60));
        assert_eq!(c.limits.provider_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.request_deadline, Duration::from_secs(10));
        assert_eq!(c.limits.retry_max, 1);
        assert_eq!(c.limits.circuit_failures, 5);
        assert_eq!(c.limits.circuit_cooldown, Duration::from_secs(30));
        assert_eq!(c.limits.max_in_flight, 1024);
        assert_eq!(c.message_retention, Duration::from_secs(86_400));
        assert!(c.redis_url.is_none());
        assert!(!c.redis_cluster);
        assert_eq!(c.redis_timeout, Duration::from_secs(1));
        assert_eq!(c.memory_store_bytes, crate::store::memory::DEFAULT_BUDGET);
        assert_eq!(
            c.workers,
            std::thread::available_parallelism().map_or(1, usize::from)
        );
    }

    #[test]
    fn workers_are_a_count_of_at_least_one() {
        assert_eq!(config(&[("WORKERS", "3")]).unwrap().workers, 3);
        for bad in ["0", "many", "-1"] {
            let message = error(&[("WORKERS", bad)]);
            assert!(message.contains("WORKERS"), "{bad}: {message}");
        }
    }

    #[test]
    fn the_memory_store_budget_is_whole_mebibytes() {
        let c = config(&[("MEMORY_STORE_MIB", "256")]).unwrap();
        assert_eq!(c.memory_store_bytes, 256 * 1024 * 1024);
        for bad in ["0", "1.5", "64MiB", "65537"] {
            let message = error(&[("MEMORY_STORE_MIB", bad)]);
            assert!(message.contains("MEMORY_STORE_MIB"), "{bad}: {message}");
        }
    }

    #[test]
    fn values_are_parsed() {
        let c = config(&[
            ("BIND_ADDR", "127.0.0.1:0"),
            ("PROVIDERS", "console"),
            ("DEFAULT_CHANNEL", "whatsapp"),
            ("DEFAULT_REGION", "br"),
            ("MESSAGE_TTL", "2m"),
            ("MESSAGE_TEMPLATE", "Code: {code}"),
            ("MESSAGE_TEMPLATE_PT_BR", "Código: {code}"),
            ("RATE_LIMIT_PER_NUMBER", "3/m"),
            ("RATE_LIMIT_GLOBAL", "100/1s"),
            ("RATE_LIMIT_PER_CLIENT", "off"),
            ("ALLOWED_COUNTRIES", "BR, PT"),
            ("DEDUPE_WINDOW", "0s"),
            ("LOG_FORMAT", "json"),
            ("PUBLIC_BASE_URL", "https://otp.example.com/"),
        ])
        .unwrap();
        assert_eq!(c.default_channel, Channel::Whatsapp);
        assert_eq!(c.default_region.map(|r| r.to_string()), Some("BR".into()));
        assert_eq!(c.message_ttl, Duration::from_secs(120));
        assert_eq!(c.templates.render("1", Some("pt-BR")), "Código: 1");
        assert_eq!(c.templates.render("1", None), "Code: 1");
        assert_eq!(
            c.limits.rate_per_number,
            Some(RateSpec {
                count: 3,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(c.limits.rate_per_client, None);
        assert_eq!(c.limits.allowed_countries.len(), 2);
        assert_eq!(c.limits.dedupe_window, Duration::ZERO);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.public_base_url.as_deref(),
            Some("https://otp.example.com")
        );
    }

    #[test]
    fn rates_finer_than_the_limiter_counts_stop_startup() {
        for name in [
            "RATE_LIMIT_PER_NUMBER",
            "RATE_LIMIT_PER_CLIENT",
            "RATE_LIMIT_GLOBAL",
        ] {
            for bad in [
                "300000000/1s",
                "1000001/1s",
                "3600000001/1h",
                "4000000000/1s",
            ] {
                let message = error(&[(name, bad)]);
                assert!(message.contains(name), "{bad}: {message}");
            }
        }
        // One per microsecond, finer rates that divide a period into whole nanoseconds
        // (as the observed 100000000/1s does), and once in 31 days are accepted.
        let c = config(&[
            ("RATE_LIMIT_GLOBAL", "1000000/1s"),
            ("RATE_LIMIT_PER_CLIENT", "100000000/1s"),
            ("RATE_LIMIT_PER_NUMBER", "1/31d"),
        ])
        .unwrap();
        let global = c.limits.rate_global.unwrap();
        assert_eq!(global.interval(), Duration::from_micros(1));
        let client = c.limits.rate_per_client.unwrap();
        assert_eq!(client.interval(), Duration::from_nanos(10));
        assert_eq!(
            c.limits.rate_per_number.unwrap().interval(),
            Duration::from_secs(31 * 86_400)
        );
    }

    #[test]
    fn a_bad_value_names_the_variable_the_problem_and_an_example() {
        let message = error(&[("MESSAGE_TTL", "soon")]);
        assert!(
            message.starts_with("MESSAGE_TTL: not a duration"),
            "{message}"
        );
        assert!(message.contains("(got \"soon\")"), "{message}");
        assert!(message.ends_with("for example MESSAGE_TTL=5m"), "{message}");

        for (var, value) in [
            ("BIND_ADDR", "localhost"),
            ("DEFAULT_CHANNEL", "fax"),
            ("DEFAULT_REGION", "Brazil"),
            ("RATE_LIMIT_PER_NUMBER", "5 per minute"),
            ("RATE_LIMIT_GLOBAL", "0/1s"),
            ("AUTH_ALLOWED_CIDRS", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.local"),
            ("AUTH_DISABLED", "maybe"),
            ("RETRY_MAX", "-1"),
            ("MAX_IN_FLIGHT", "0"),
            ("PROVIDER_TIMEOUT", "0s"),
            ("MESSAGE_TEMPLATE", "no placeholder"),
            ("LOG_FORMAT", "xml"),
            ("RUST_LOG", "info,[=bad"),
            ("PUBLIC_BASE_URL", "ftp://x"),
            ("BLOCKED_COUNTRIES", "ZZ"),
        ] {
            let message = error(&[(var, value)]);
            assert!(message.starts_with(&format!("{var}: ")), "{var}: {message}");
            assert!(message.contains("for example"), "{var}: {message}");
        }
    }

    #[test]
    fn absurd_durations_and_counts_are_refused_naming_the_variable() {
        for (var, value) in [
            ("REQUEST_DEADLINE", "0s"),
            ("REQUEST_DEADLINE", "1ms"),
            ("REQUEST_DEADLINE", "1h"),
            ("REQUEST_DEADLINE", "584542046091y"),
            ("PROVIDER_TIMEOUT", "0s"),
            ("PROVIDER_TIMEOUT", "10d"),
            ("CIRCUIT_COOLDOWN", "0s"),
            ("CIRCUIT_COOLDOWN", "2h"),
            ("DEDUPE_WINDOW", "30d"),
            ("MESSAGE_TTL", "0s"),
            ("MESSAGE_TTL", "2d"),
            ("MESSAGE_RETENTION", "1s"),
            ("MESSAGE_RETENTION", "1y"),
            ("RATE_LIMIT_PER_NUMBER", "5/0s"),
            ("RATE_LIMIT_PER_CLIENT", "5/1ms"),
            ("RATE_LIMIT_GLOBAL", "5/1y"),
            ("MEMORY_STORE_MIB", "1000000"),
            ("MAX_IN_FLIGHT", "0"),
            ("MAX_IN_FLIGHT", "18446744073709551616"),
            ("RETRY_MAX", "11"),
            ("RETRY_MAX", "4294967296"),
            ("CIRCUIT_FAILURES", "0"),
        ] {
            let message = error(&[(var, value)]);
            assert!(
                message.starts_with(&format!("{var}: ")),
                "{var}={value}: {message}"
            );
        }
        let message = error(&[("REQUEST_DEADLINE", "1h")]);
        assert!(message.contains("between 100ms and 5m"), "{message}");
    }

    #[test]
    fn an_attempt_may_not_outlast_the_request_deadline() {
        let message = error(&[("REQUEST_DEADLINE", "2s"), ("PROVIDER_TIMEOUT", "3s")]);
        assert!(
            message.starts_with("PROVIDER_TIMEOUT: must not exceed REQUEST_DEADLINE (2s)"),
            "{message}"
        );
        let c = config(&[("REQUEST_DEADLINE", "2s"), ("PROVIDER_TIMEOUT", "2s")]).unwrap();
        assert_eq!(c.limits.provider_timeout, Duration::from_secs(2));
        let message = error(&[("REQUEST_DEADLINE", "1s")]);
        assert!(message.starts_with("PROVIDER_TIMEOUT: "), "{message}");
    }

    #[test]
    fn provider_variables_are_validated_at_startup() {
        let message = error(&[("PROVIDERS", "twilio"), ("AUTH_DISABLED", "true")]);
        assert!(
            message.starts_with("TWILIO_ACCOUNT_SID: is required"),
            "{message}"
        );
        let c = config(&[
            ("PROVIDERS", "telegram, twilio"),
            ("AUTH_DISABLED", "true"),
            ("TELEGRAM_GATEWAY_TOKEN", "gateway-token"),
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_FROM", "+14155552671"),
        ])
        .unwrap();
        let names: Vec<&str> = c.providers.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["telegram", "twilio"]);
    }

    #[test]
    fn the_console_beside_a_real_provider_is_refused() {
        for list in ["twilio,console", "console, telegram"] {
            let message = error(&[("PROVIDERS", list), ("AUTH_DISABLED", "true")]);
            assert!(message.starts_with("PROVIDERS: "), "{list}: {message}");
            assert!(
                message.contains("beside a real provider"),
                "{list}: {message}"
            );
        }
    }

    #[test]
    fn a_bad_vonage_signature_method_is_refused() {
        let message = error(&[
            ("PROVIDERS", "vonage"),
            ("AUTH_DISABLED", "true"),
            ("VONAGE_API_KEY", "key"),
            ("VONAGE_API_SECRET", "secret"),
            ("VONAGE_FROM", "Acme"),
            ("VONAGE_SIGNATURE_METHOD", "rot13"),
        ]);
        assert!(
            message.starts_with("VONAGE_SIGNATURE_METHOD: expected md5hash"),
            "{message}"
        );
    }

    #[test]
    fn unknown_or_repeated_providers_are_refused() {
        let message = error(&[("PROVIDERS", "console,carrier-pigeon")]);
        assert!(
            message.contains("unknown provider \"carrier-pigeon\""),
            "{message}"
        );
        let message = error(&[("PROVIDERS", "console,console")]);
        assert!(message.contains("listed twice"), "{message}");
    }

    #[test]
    fn a_real_provider_without_access_control_is_refused_with_the_three_options() {
        let message = error(&[("PROVIDERS", "twilio")]);
        assert!(message.contains("refusing to start"), "{message}");
        for option in ["AUTH_API_KEYS", "AUTH_ALLOWED_CIDRS", "AUTH_DISABLED=true"] {
            assert!(message.contains(option), "{message}");
        }
        for setting in [
            ("AUTH_API_KEYS", "k"),
            ("AUTH_ALLOWED_CIDRS", "10.0.0.0/8"),
            ("AUTH_DISABLED", "true"),
        ] {
            let vars = [
                ("PROVIDERS", "twilio"),
                ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
                ("TWILIO_AUTH_TOKEN", "token"),
                ("TWILIO_FROM", "+14155552671"),
                setting,
            ];
            assert!(config(&vars).is_ok(), "{setting:?}");
        }
        // The console provider sends nothing real and needs no access setting.
        assert!(config(&[("PROVIDERS", "console")]).is_ok());
    }

    #[test]
    fn a_redis_cluster_is_named_by_one_or_more_seeds() {
        let c = config(&[
            ("REDIS_CLUSTER", "true"),
            ("REDIS_URL", "redis://node-1:6379, redis://node-2:6379"),
        ])
        .unwrap();
        assert!(c.redis_cluster);
        let c = config(&[("REDIS_CLUSTER", "yes"), ("REDIS_URL", "redis://cfg:6379")]).unwrap();
        assert!(c.redis_cluster);
        for (vars, named) in [
            (vec![("REDIS_CLUSTER", "true")], "REDIS_CLUSTER"),
            (vec![("REDIS_CLUSTER", "maybe")], "REDIS_CLUSTER"),
            (
                vec![("REDIS_URL", "redis://:hunter2@a:6379,redis://b:6379")],
                "REDIS_URL",
            ),
            (
                vec![
                    ("REDIS_CLUSTER", "true"),
                    ("REDIS_URL", "redis://:hunter2@a:6379,unix:///tmp/r.sock"),
                ],
                "REDIS_URL",
            ),
            (vec![("REDIS_URL", "rediss://:hunter2@a:6379")], "TLS"),
        ] {
            let message = error(&vars);
            assert!(message.contains(named), "{vars:?}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn the_redis_timeout_fits_within_the_request_deadline() {
        let c = config(&[("REDIS_TIMEOUT", "200ms")]).unwrap();
        assert_eq!(c.redis_timeout, Duration::from_millis(200));
        // The default never outlasts a short deadline.
        let c = config(&[("REQUEST_DEADLINE", "300ms"), ("PROVIDER_TIMEOUT", "300ms")]).unwrap();
        assert_eq!(c.redis_timeout, Duration::from_millis(75));
        for bad in [
            vec![("REDIS_TIMEOUT", "0s")],
            vec![("REDIS_TIMEOUT", "soon")],
            vec![("REDIS_TIMEOUT", "10s")],
            vec![("REDIS_TIMEOUT", "3s")],
            vec![
                ("REDIS_TIMEOUT", "2s"),
                ("REQUEST_DEADLINE", "1s"),
                ("PROVIDER_TIMEOUT", "1s"),
            ],
        ] {
            let message = error(&bad);
            assert!(message.contains("REDIS_TIMEOUT"), "{bad:?}: {message}");
        }
    }

    #[test]
    fn secrets_are_neither_echoed_nor_debug_printed() {
        let message = error(&[("REDIS_URL", "http://user:hunter2@host")]);
        assert!(!message.contains("hunter2"), "{message}");
        let c = config(&[
            ("AUTH_API_KEYS", "key-hunter2"),
            ("REDIS_URL", "redis://:hunter2@redis:6379"),
        ])
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }
}
