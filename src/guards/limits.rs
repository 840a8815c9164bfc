//! The limits and abuse controls a send is checked against.

use std::time::Duration;

use otp_relay_providers::Region;

use super::pumping::CountryRates;
use crate::store::RateSpec;

/// Limits and abuse controls (enforced by the guards and the dispatcher).
#[derive(Debug, Clone)]
pub struct Limits {
    pub rate_per_number: Option<RateSpec>,
    pub rate_per_client: Option<RateSpec>,
    pub rate_global: Option<RateSpec>,
    /// Sends per block of numbers sharing all but their last `prefix_digits` digits.
    pub rate_per_prefix: Option<RateSpec>,
    pub prefix_digits: usize,
    pub rate_per_country: CountryRates,
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
