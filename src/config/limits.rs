//! Rates, countries, durations and counts that bound sends: `RATE_LIMIT_*`,
//! `ALLOWED_COUNTRIES`, `BLOCKED_COUNTRIES`, `ALLOW_NON_MOBILE`, `DEDUPE_WINDOW`,
//! `PROVIDER_TIMEOUT`, `REQUEST_DEADLINE`, `RETRY_MAX`, `CIRCUIT_*`, `MAX_IN_FLIGHT`.

use std::str::FromStr;
use std::time::Duration;

use otp_relay_providers::Env;

use super::var::{millis, parse_duration, DurationBounds, Var, DAY, HOUR, MINUTE, MS, SECOND};
use super::ConfigError;
use crate::guards::Limits;
use crate::store::rate::MIN_RATE_INTERVAL;
use crate::store::RateSpec;

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

/// The shortest and the longest period a rate may span. Redis counts in doubles, whose
/// whole numbers are exact up to 2^53 nanoseconds (104 days): well beyond the longest.
pub const RATE_PERIODS: (Duration, Duration) = (RATE_PERIOD_BOUNDS.min, RATE_PERIOD_BOUNDS.max);

/// `REQUEST_DEADLINE`: a login waits on it.
const REQUEST_DEADLINE_BOUNDS: DurationBounds = millis(100 * MS, 5 * MINUTE);
/// `PROVIDER_TIMEOUT`; it may also not exceed `REQUEST_DEADLINE`.
const PROVIDER_TIMEOUT_BOUNDS: DurationBounds = millis(100 * MS, 5 * MINUTE);
const CIRCUIT_COOLDOWN_BOUNDS: DurationBounds = millis(100 * MS, HOUR);
/// `DEDUPE_WINDOW`: 0 turns dedupe off.
const DEDUPE_WINDOW_BOUNDS: DurationBounds = millis(0, DAY);
/// The period of a rate limit (`N/PERIOD`).
const RATE_PERIOD_BOUNDS: DurationBounds = millis(SECOND, 31 * DAY);

pub(super) fn parse_limits(env: &Env<'_>) -> Result<Limits, ConfigError> {
    let allowed_countries = Var::new(env, "ALLOWED_COUNTRIES", "BR,PT").regions()?;
    let blocked_countries = Var::new(env, "BLOCKED_COUNTRIES", "KP,CU").regions()?;
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
    let request_deadline =
        Var::new(env, "REQUEST_DEADLINE", "10s").duration("10s", REQUEST_DEADLINE_BOUNDS)?;
    let timeout_var = Var::new(env, "PROVIDER_TIMEOUT", "5s");
    let provider_timeout = timeout_var.duration("5s", PROVIDER_TIMEOUT_BOUNDS)?;
    // An attempt cannot outlast the send it is part of.
    if provider_timeout > request_deadline {
        return Err(timeout_var.invalid(format!(
            "must not exceed REQUEST_DEADLINE ({})",
            humantime::format_duration(request_deadline)
        )));
    }
    Ok(Limits {
        rate_per_number: Var::new(env, "RATE_LIMIT_PER_NUMBER", "5/10m").rate(Some("5/10m"))?,
        rate_per_client: Var::new(env, "RATE_LIMIT_PER_CLIENT", "600/1m").rate(None)?,
        rate_global: Var::new(env, "RATE_LIMIT_GLOBAL", "100/1s").rate(None)?,
        allowed_countries,
        blocked_countries,
        allow_non_mobile: Var::new(env, "ALLOW_NON_MOBILE", "true").boolean(false)?,
        dedupe_window: Var::new(env, "DEDUPE_WINDOW", "60s")
            .duration("60s", DEDUPE_WINDOW_BOUNDS)?,
        provider_timeout,
        request_deadline,
        retry_max: Var::new(env, "RETRY_MAX", "1").number("1", 0, 10)?,
        circuit_failures: Var::new(env, "CIRCUIT_FAILURES", "5").number("5", 1, 1000)?,
        circuit_cooldown: Var::new(env, "CIRCUIT_COOLDOWN", "30s")
            .duration("30s", CIRCUIT_COOLDOWN_BOUNDS)?,
        max_in_flight: Var::new(env, "MAX_IN_FLIGHT", "1024").number("1024", 1, 1_000_000)?,
    })
}
