//! Rates, countries, durations and counts that bound sends: `RATE_LIMIT_*`
//! (`RATE_LIMIT_PER_COUNTRY` as `REGION=RATE` rules),
//! `ALLOWED_COUNTRIES`, `BLOCKED_COUNTRIES`, `ALLOW_NON_MOBILE`, `DEDUPE_WINDOW`,
//! `PROVIDER_TIMEOUT`, `REQUEST_DEADLINE`, `RETRY_MAX`, `CIRCUIT_*`, `MAX_IN_FLIGHT`.

use std::str::FromStr;
use std::time::Duration;

use otp_relay_providers::{Env, Region};

use super::var::{
    is_off, millis, parse_duration, rate_or_off, DurationBounds, Var, DAY, HOUR, MINUTE, MS, SECOND,
};
use super::ConfigError;
use crate::guards::pumping::{CountryRates, PREFIX_DIGITS};
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
        rate_per_prefix: Var::new(env, "RATE_LIMIT_PER_PREFIX", "30/10m").rate(None)?,
        prefix_digits: Var::new(env, "RATE_LIMIT_PREFIX_DIGITS", "3").number(
            "3",
            PREFIX_DIGITS.0,
            PREFIX_DIGITS.1,
        )?,
        rate_per_country: country_rates(&Var::new(
            env,
            "RATE_LIMIT_PER_COUNTRY",
            "BR=500/1h,*=100/1h",
        ))?,
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

/// `RATE_LIMIT_PER_COUNTRY`: comma-separated `REGION=RATE` rules, `*` for each region
/// not named; a rate of `off` leaves a region unlimited, and so does the whole variable
/// `off`. A region named twice is a typo and stops startup, like an unknown one.
fn country_rates(var: &Var<'_>) -> Result<CountryRates, ConfigError> {
    let mut rates = CountryRates::default();
    if var.value.is_some_and(is_off) {
        return Ok(rates);
    }
    let mut others_named = false;
    for rule in var.list() {
        let (region, rate) = rule
            .split_once('=')
            .ok_or_else(|| var.invalid(format!("{rule:?} is not REGION=COUNT/PERIOD")))?;
        let (region, rate) = (region.trim(), rate.trim());
        let rate =
            rate_or_off(rate).map_err(|problem| var.invalid(format!("{region}: {problem}")))?;
        if region == "*" {
            if others_named {
                return Err(var.invalid("`*` is given twice"));
            }
            others_named = true;
            rates.others = rate;
            continue;
        }
        let region: Region = region
            .parse()
            .map_err(|e| var.invalid(format!("{region:?} is {e} (or `*`)")))?;
        if rates.regions.iter().any(|(named, _)| *named == region) {
            return Err(var.invalid(format!("{region} is given twice")));
        }
        rates.regions.push((region, rate));
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn limits(vars: &[(&str, &str)]) -> Result<Limits, String> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .map(|c| c.limits)
            .map_err(|e| e.to_string())
    }

    fn rate(count: u32, secs: u64) -> RateSpec {
        RateSpec {
            count,
            per: Duration::from_secs(secs),
        }
    }

    fn region(code: &str) -> Region {
        code.parse().unwrap()
    }

    #[test]
    fn the_pumping_guards_are_off_unless_set() {
        let l = limits(&[]).unwrap();
        assert_eq!(l.rate_per_prefix, None);
        assert_eq!(l.prefix_digits, 3);
        assert!(l.rate_per_country.is_off());
        for off in ["off", "none", " "] {
            let l = limits(&[
                ("RATE_LIMIT_PER_COUNTRY", off),
                ("RATE_LIMIT_PER_PREFIX", off),
            ]);
            let l = l.unwrap();
            assert!(l.rate_per_country.is_off(), "{off:?}");
            assert_eq!(l.rate_per_prefix, None, "{off:?}");
        }
        let no_rules = limits(&[("RATE_LIMIT_PER_COUNTRY", ",")]).unwrap();
        assert!(no_rules.rate_per_country.is_off());
    }

    #[test]
    fn prefix_and_country_rates_are_parsed() {
        let l = limits(&[
            ("RATE_LIMIT_PER_PREFIX", "30/10m"),
            ("RATE_LIMIT_PREFIX_DIGITS", "4"),
            (
                "RATE_LIMIT_PER_COUNTRY",
                "BR=500/1h, pt = 20/1m ,US=off,*=100/1h",
            ),
        ])
        .unwrap();
        assert_eq!(l.rate_per_prefix, Some(rate(30, 600)));
        assert_eq!(l.prefix_digits, 4);
        assert_eq!(
            l.rate_per_country,
            CountryRates {
                regions: vec![
                    (region("BR"), Some(rate(500, 3600))),
                    (region("PT"), Some(rate(20, 60))),
                    (region("US"), None),
                ],
                others: Some(rate(100, 3600)),
            }
        );
        let named_only = limits(&[("RATE_LIMIT_PER_COUNTRY", "BR=5/1h")]).unwrap();
        assert_eq!(named_only.rate_per_country.others, None);
        for digits in ["1", "6"] {
            let l = limits(&[("RATE_LIMIT_PREFIX_DIGITS", digits)]).unwrap();
            assert_eq!(l.prefix_digits.to_string(), digits);
        }
    }

    #[test]
    fn bad_pumping_settings_stop_startup_naming_the_variable() {
        for (var, value, problem) in [
            ("RATE_LIMIT_PREFIX_DIGITS", "0", "between 1 and 6"),
            ("RATE_LIMIT_PREFIX_DIGITS", "7", "between 1 and 6"),
            ("RATE_LIMIT_PREFIX_DIGITS", "three", "not a whole number"),
            ("RATE_LIMIT_PER_PREFIX", "30", "COUNT/DURATION"),
            ("RATE_LIMIT_PER_PREFIX", "0/10m", "at least 1"),
            (
                "RATE_LIMIT_PER_COUNTRY",
                "ZZ=5/1h",
                "\"ZZ\" is not an ISO 3166-1",
            ),
            ("RATE_LIMIT_PER_COUNTRY", "Brazil=5/1h", "\"Brazil\" is not"),
            (
                "RATE_LIMIT_PER_COUNTRY",
                "BR",
                "\"BR\" is not REGION=COUNT/PERIOD",
            ),
            (
                "RATE_LIMIT_PER_COUNTRY",
                "BR=",
                "BR: expected COUNT/DURATION",
            ),
            (
                "RATE_LIMIT_PER_COUNTRY",
                "BR=5/1y",
                "BR: the period must be",
            ),
            (
                "RATE_LIMIT_PER_COUNTRY",
                "*=5",
                "*: expected COUNT/DURATION",
            ),
            (
                "RATE_LIMIT_PER_COUNTRY",
                "BR=5/1h,br=6/1h",
                "BR is given twice",
            ),
            (
                "RATE_LIMIT_PER_COUNTRY",
                "*=5/1h,*=6/1h",
                "`*` is given twice",
            ),
            ("RATE_LIMIT_PER_COUNTRY", "BR=5/1h;*=1/1h", "BR: "),
        ] {
            let message = limits(&[(var, value)]).expect_err(value);
            assert!(
                message.starts_with(&format!("{var}: ")) && message.contains(problem),
                "{var}={value}: {message}"
            );
            assert!(message.contains("for example"), "{message}");
        }
    }
}
