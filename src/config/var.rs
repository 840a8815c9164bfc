//! The one way configuration reads a variable: [`Var`], with its parsers for durations
//! within bounds, bounded numbers, booleans, rates and lists.

use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use otp_relay_providers::{Env, Region};

use super::ConfigError;
use crate::store::RateSpec;

pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("not a duration: {e}"))
}

/// The sensible range of a duration setting. Every duration read from the environment
/// has one: beyond it a value is a typo (`10d` for `10s`), and unbounded durations would
/// overflow the time arithmetic they feed.
#[derive(Debug, Clone, Copy)]
pub(super) struct DurationBounds {
    pub(super) min: Duration,
    pub(super) max: Duration,
}

impl DurationBounds {
    const fn new(min: Duration, max: Duration) -> Self {
        DurationBounds { min, max }
    }

    pub(super) fn check(self, duration: Duration) -> Result<Duration, String> {
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

pub(super) const MS: u64 = 1;
pub(super) const SECOND: u64 = 1000 * MS;
pub(super) const MINUTE: u64 = 60 * SECOND;
pub(super) const HOUR: u64 = 60 * MINUTE;
pub(super) const DAY: u64 = 24 * HOUR;

pub(super) const fn millis(min: u64, max: u64) -> DurationBounds {
    DurationBounds::new(Duration::from_millis(min), Duration::from_millis(max))
}

/// Reads one variable through the providers' [`Env`] (trimmed; absent or blank means
/// the default), with the server's errors: they show the value unless it is secret.
pub(super) struct Var<'a> {
    pub(super) name: &'static str,
    pub(super) value: Option<&'a str>,
    pub(super) example: &'static str,
}

impl<'a> Var<'a> {
    pub(super) fn new(env: &Env<'a>, name: &'static str, example: &'static str) -> Self {
        let value = env.get(name);
        Var {
            name,
            value,
            example,
        }
    }

    pub(super) fn invalid(&self, problem: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            var: self.name,
            value: self.value.map(str::to_owned),
            problem: problem.into(),
            example: self.example,
        }
    }

    pub(super) fn parse_with<T>(
        &self,
        default: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(self.value.unwrap_or(default)).map_err(|problem| self.invalid(problem))
    }

    pub(super) fn optional<T>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.value
            .map(|v| parse(v).map_err(|problem| self.invalid(problem)))
            .transpose()
    }

    /// A duration within `bounds` (see [`DurationBounds`]).
    pub(super) fn duration(
        &self,
        default: &str,
        bounds: DurationBounds,
    ) -> Result<Duration, ConfigError> {
        self.parse_with(default, |text| bounds.check(parse_duration(text)?))
    }

    pub(super) fn number<T: FromStr + PartialOrd + Copy + std::fmt::Display>(
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

    pub(super) fn boolean(&self, default: bool) -> Result<bool, ConfigError> {
        match self.value.map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(_) => Err(self.invalid("expected true or false")),
        }
    }

    pub(super) fn rate(&self, default: Option<&str>) -> Result<Option<RateSpec>, ConfigError> {
        match self.value.or(default) {
            None => Ok(None),
            Some(v) => rate_or_off(v).map_err(|problem| self.invalid(problem)),
        }
    }

    pub(super) fn list(&self) -> Vec<&'a str> {
        self.value
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn regions(&self) -> Result<Vec<Region>, ConfigError> {
        self.list()
            .into_iter()
            .map(|code| {
                code.parse::<Region>()
                    .map_err(|e| self.invalid(format!("{code:?} is {e}")))
            })
            .collect()
    }

    pub(super) fn networks(&self) -> Result<Vec<IpNet>, ConfigError> {
        self.list()
            .into_iter()
            .map(|item| parse_network(item).map_err(|problem| self.invalid(problem)))
            .collect()
    }
}

/// `off` or `none` (no limit), else a rate `COUNT/PERIOD`.
pub(super) fn rate_or_off(text: &str) -> Result<Option<RateSpec>, String> {
    if is_off(text) {
        return Ok(None);
    }
    text.parse().map(Some)
}

pub(super) fn is_off(text: &str) -> bool {
    text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("none")
}

/// A CIDR block, or a single address meaning just that address.
fn parse_network(item: &str) -> Result<IpNet, String> {
    item.parse::<IpNet>()
        .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{item:?} is not an address or CIDR block"))
}
