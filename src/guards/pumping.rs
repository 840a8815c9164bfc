//! SMS-pumping guards: whom `RATE_LIMIT_PER_PREFIX` and `RATE_LIMIT_PER_COUNTRY` count
//! a send against.
//!
//! Pumping rings request codes for many numbers they earn from: consecutive numbers of
//! one block, or a wave to one country with high termination fees. The per-number limit
//! sees each number once and lets all of them through; these counters see the block and
//! the country.

use otp_relay_providers::{Phone, Region};

use crate::store::RateSpec;

/// The most and fewest trailing digits `RATE_LIMIT_PREFIX_DIGITS` may drop: one makes
/// blocks of ten numbers; beyond six, a block (a million numbers) is a region's worth.
pub const PREFIX_DIGITS: (usize, usize) = (1, 6);

/// `RATE_LIMIT_PER_COUNTRY`: a budget per destination region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountryRates {
    /// The regions named, with their rate (`None`: named `off`, unlimited even when
    /// `*` is set).
    pub regions: Vec<(Region, Option<RateSpec>)>,
    /// `*`: the rate each region not named gets, each counted on its own.
    pub others: Option<RateSpec>,
}

impl CountryRates {
    /// Whether no region is limited.
    pub fn is_off(&self) -> bool {
        self.others.is_none() && self.regions.iter().all(|(_, rate)| rate.is_none())
    }

    /// The counter a send to `phone` counts against, and its rate; `None` if the
    /// destination is unlimited.
    ///
    /// The destination is the region the numbering plan reports for the number, so
    /// calling codes shared by several regions are told apart (`+1 204` is CA, `+1 212`
    /// US). A number of no region (non-geographic codes such as +882) is counted by its
    /// calling code, under `*`.
    pub fn counter(&self, phone: &Phone) -> Option<(String, RateSpec)> {
        match phone.region() {
            Some(region) => {
                let rate = match self.regions.iter().find(|(named, _)| *named == region) {
                    Some((_, rate)) => *rate,
                    None => self.others,
                };
                rate.map(|rate| (region.to_string(), rate))
            }
            None => self
                .others
                .map(|rate| (format!("+{}", phone.country_code()), rate)),
        }
    }
}

/// The block of numbers `phone` belongs to: its E.164 form without its last `digits`
/// digits, but never less than `+` and the country code (a block does not span
/// countries).
pub fn prefix(phone: &Phone, digits: usize) -> &str {
    let e164 = phone.e164();
    let country = 1 + phone.country_code().to_string().len();
    &e164[..e164.len().saturating_sub(digits).max(country)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(text: &str) -> Phone {
        Phone::parse(text, None).unwrap()
    }

    fn rate(count: u32) -> Option<RateSpec> {
        Some(RateSpec {
            count,
            per: std::time::Duration::from_secs(3600),
        })
    }

    #[test]
    fn a_prefix_drops_the_last_digits_and_keeps_the_country_code() {
        assert_eq!(prefix(&phone("+5511966191717"), 3), "+5511966191");
        assert_eq!(prefix(&phone("+5511966191717"), 1), "+551196619171");
        assert_eq!(prefix(&phone("+5511966191799"), 3), "+5511966191");
        assert_ne!(prefix(&phone("+5511966192717"), 3), "+5511966191");
        // Niue: four-digit national numbers.
        assert_eq!(prefix(&phone("+6837012"), 6), "+683");
    }

    #[test]
    fn a_country_counter_is_the_region_the_numbering_plan_reports() {
        let rates = CountryRates {
            regions: vec![
                ("US".parse().unwrap(), rate(5)),
                ("PT".parse().unwrap(), None),
            ],
            others: rate(2),
        };
        let (key, spec) = rates.counter(&phone("+14155552671")).unwrap();
        assert_eq!((key.as_str(), spec), ("US", rate(5).unwrap()));
        // Canada shares +1 and has its own counter, under `*`.
        let (key, spec) = rates.counter(&phone("+12042345678")).unwrap();
        assert_eq!((key.as_str(), spec), ("CA", rate(2).unwrap()));
        // Named `off`: unlimited even with `*`.
        assert_eq!(rates.counter(&phone("+351912345678")), None);
        assert_eq!(rates.counter(&phone("+5511966191717")).unwrap().0, "BR");
        // Without `*`, regions not named are unlimited.
        let named_only = CountryRates {
            others: None,
            ..rates.clone()
        };
        assert_eq!(named_only.counter(&phone("+5511966191717")), None);
        assert!(!named_only.is_off());
        assert!(CountryRates::default().is_off());
        // International Freephone (+800) belongs to no region: its calling code is its
        // counter, under `*`.
        let freephone = phone("+80012345678");
        assert_eq!(freephone.region(), None);
        let (key, spec) = rates.counter(&freephone).unwrap();
        assert_eq!((key.as_str(), spec), ("+800", rate(2).unwrap()));
        assert_eq!(named_only.counter(&freephone), None);
    }
}
