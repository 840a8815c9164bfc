//! Configuration: every environment variable otp-relay reads, parsed and validated once
//! at startup, one module per concern, each reading its variables through [`var::Var`].
//!
//! A bad value stops startup with one line naming the variable, what is wrong with the
//! value and an example of a good one. Nothing is silently ignored.

mod access;
mod fallback;
mod http;
mod limits;
mod providers;
mod routes;
mod store;
mod telemetry;
mod templates;
mod var;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use otp_relay_providers::{Channel, Env, ProviderSettings, Region, SettingError};

use crate::dispatch::routes::RouteTable;
use crate::guards::access::AccessPolicy;
use crate::guards::Limits;
use crate::message::MessageTemplates;
use crate::store::StoreSettings;
use crate::telemetry::LogFormat;
use var::{millis, Var, DAY, SECOND};

pub use http::HttpLimits;
pub use limits::RATE_PERIODS;

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

/// `MESSAGE_TTL`: the same range a request's `ttl` may ask for.
const MESSAGE_TTL_BOUNDS: var::DurationBounds = millis(SECOND, DAY);

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind_addr: SocketAddr,
    /// In priority order.
    pub providers: Vec<ProviderSettings>,
    /// `ROUTES`: which providers take which destinations; empty when unset.
    pub routes: RouteTable,
    pub default_channel: Channel,
    pub default_region: Option<Region>,
    pub templates: MessageTemplates,
    pub message_ttl: Duration,
    pub public_base_url: Option<String>,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub access: AccessPolicy,
    pub limits: Limits,
    /// Redis or memory, and the memory budget.
    pub store: StoreSettings,
    pub message_retention: Duration,
    /// HTTP worker threads, each with its own event loop (`WORKERS`; default one per CPU).
    pub workers: usize,
    pub http: HttpLimits,
    /// When statuses, prices and balances are looked up after a send (no variable).
    pub followup: crate::followup::FollowupSettings,
    /// Whether, and after how long, a message on another channel falls back to SMS.
    pub fallback: crate::channel_fallback::FallbackSettings,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Reads the given variables as if they were the environment. Every variable is read
    /// by name through [`Env`], the same reader the providers' settings use.
    pub fn from_vars<I>(vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let env = Env::new(&vars);
        let bind_addr = http::parse_bind_addr(&env)?;
        let provider_names = providers::parse_provider_names(&env)?;
        let routes = routes::parse_routes(&env, &provider_names)?;
        let default_channel = Var::new(&env, "DEFAULT_CHANNEL", "sms")
            .parse_with("sms", |v| v.parse::<Channel>().map_err(|e| e.to_string()))?;
        let default_region = Var::new(&env, "DEFAULT_REGION", "BR")
            .optional(|v| v.parse::<Region>().map_err(|e| e.to_string()))?;
        let templates = templates::parse_templates(&env, &vars)?;
        let message_ttl = Var::new(&env, "MESSAGE_TTL", "5m").duration("5m", MESSAGE_TTL_BOUNDS)?;
        let public_base_url = Var::new(&env, "PUBLIC_BASE_URL", "https://otp.example.com")
            .optional(|v| {
                let url = reqwest::Url::parse(v).map_err(|e| format!("not a URL: {e}"))?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err("must be an http or https URL with a host".into());
                }
                Ok(v.trim_end_matches('/').to_owned())
            })?;
        let (log_format, log_filter) = telemetry::parse_logging(&env)?;
        let access = access::parse_access(&env)?;
        access::check_access_is_configured(&provider_names, &access)?;
        let providers = providers::provider_settings(&provider_names, &env)?;
        let limits = limits::parse_limits(&env)?;
        let (store, message_retention) = store::parse_store(&env, limits.request_deadline)?;
        let workers = http::parse_workers(&env)?;
        let fallback = fallback::parse_fallback(&env)?;

        Ok(Config {
            bind_addr,
            providers,
            routes,
            default_channel,
            default_region,
            templates,
            message_ttl,
            public_base_url,
            log_format,
            log_filter,
            access,
            limits,
            store,
            message_retention,
            workers,
            http: HttpLimits::default(),
            followup: crate::followup::FollowupSettings::default(),
            fallback,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RateSpec;

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
        assert!(c.store.redis_url.is_none());
        assert!(!c.store.redis_cluster);
        assert_eq!(c.store.redis_timeout, Duration::from_secs(1));
        assert_eq!(c.store.memory_bytes, crate::store::memory::DEFAULT_BUDGET);
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
        assert_eq!(c.store.memory_bytes, 256 * 1024 * 1024);
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
        assert!(c.store.redis_cluster);
        let c = config(&[("REDIS_CLUSTER", "yes"), ("REDIS_URL", "redis://cfg:6379")]).unwrap();
        assert!(c.store.redis_cluster);
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
        assert_eq!(c.store.redis_timeout, Duration::from_millis(200));
        // The default never outlasts a short deadline.
        let c = config(&[("REQUEST_DEADLINE", "300ms"), ("PROVIDER_TIMEOUT", "300ms")]).unwrap();
        assert_eq!(c.store.redis_timeout, Duration::from_millis(75));
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

    #[test]
    fn channel_fallback_is_off_unless_set_and_waits_as_told() {
        let c = config(&[]).unwrap();
        assert_eq!(c.fallback.channel, None);
        assert_eq!(c.fallback.after, Duration::from_secs(20));
        let c = config(&[
            ("CHANNEL_FALLBACK", "SMS"),
            ("CHANNEL_FALLBACK_AFTER", "500ms"),
        ])
        .unwrap();
        assert_eq!(c.fallback.channel, Some(Channel::Sms));
        assert_eq!(c.fallback.after, Duration::from_millis(500));
        assert_eq!(
            config(&[("CHANNEL_FALLBACK", "off")])
                .unwrap()
                .fallback
                .channel,
            None
        );
        let refused = error(&[("CHANNEL_FALLBACK", "whatsapp")]);
        assert!(
            refused.contains("CHANNEL_FALLBACK") && refused.contains("sms or off"),
            "{refused}"
        );
        let refused = error(&[("CHANNEL_FALLBACK_AFTER", "2h")]);
        assert!(refused.contains("CHANNEL_FALLBACK_AFTER"), "{refused}");
    }
}
