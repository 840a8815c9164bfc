//! Routes: which providers, in which order, take a message to a given destination
//! (`ROUTES`). A rule's selector is a calling-code prefix (`+5511`), a region (`BR`) or
//! `*`; the most specific selector that matches a number wins.
//!
//! Specificity: a prefix ranks by its digit count; a region by its calling code's digit
//! count plus one half, so that it is narrower than its whole calling code and wider
//! than any longer prefix (`+1` < `US` < `+1415`, `+55` < `BR` < `+5511`); `*` ranks
//! lowest. Two selectors that can match the same number never rank the same: prefixes of
//! one length exclude each other, as do regions, and a prefix and a region never tie.

use std::fmt;

use otp_relay_providers::{Phone, Region};

use super::{Dispatcher, Slot};

/// The most digits a prefix may have: a whole E.164 number's (ITU-T E.164 §6.2.1).
const MAX_PREFIX_DIGITS: usize = otp_relay_providers::phone::MAX_E164_DIGITS;

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Numbers whose E.164 digits start with these (`5511` for `+5511`).
    Prefix(Box<str>),
    /// Numbers the numbering plan places in this region, with the region's calling code.
    Region { region: Region, calling_code: u16 },
    /// Every number.
    Any,
}

impl Selector {
    /// Reads `+digits`, a region code (any case) or `*`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Selector::Any);
        }
        if let Some(digits) = text.strip_prefix('+') {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{text:?} is not `+` followed by digits"));
            }
            if digits.starts_with('0') {
                return Err(format!(
                    "{text:?} cannot match a number: no calling code starts with 0"
                ));
            }
            if digits.len() > MAX_PREFIX_DIGITS {
                return Err(format!(
                    "{text:?} has more digits than a phone number ({MAX_PREFIX_DIGITS})"
                ));
            }
            return Ok(Selector::Prefix(digits.into()));
        }
        let region = text.parse::<Region>().map_err(|_| {
            format!("{text:?} is neither a region code (BR), a calling-code prefix (+55) nor *")
        })?;
        let calling_code = region
            .calling_code()
            .ok_or_else(|| format!("{text:?} is a region with no phone numbers of its own"))?;
        Ok(Selector::Region {
            region,
            calling_code,
        })
    }

    /// How narrow the selector is, doubled to stay whole: a prefix ranks twice its
    /// digit count, a region twice its calling code's plus one, `*` zero.
    pub fn rank(&self) -> u32 {
        match self {
            Selector::Prefix(digits) => 2 * digits.len() as u32,
            Selector::Region { calling_code, .. } => 2 * digit_count(*calling_code) + 1,
            Selector::Any => 0,
        }
    }

    pub fn matches(&self, phone: &Phone) -> bool {
        match self {
            Selector::Prefix(digits) => phone.digits().starts_with(&**digits),
            Selector::Region { region, .. } => phone.region() == Some(*region),
            Selector::Any => true,
        }
    }
}

impl Selector {
    /// The selector as a log line beside `phone`'s masked form shows it: a prefix
    /// longer than the leading digits the mask keeps is cut to them (`+5521987` beside
    /// `+55219*****21` is `+55219*`), so that no log line tells more of a number than
    /// its mask does.
    pub fn beside(&self, phone: &Phone) -> Beside<'_> {
        Beside {
            selector: self,
            shown: phone.masked_lead(),
        }
    }
}

/// A selector as shown beside a masked number (see [`Selector::beside`]).
pub struct Beside<'a> {
    selector: &'a Selector,
    shown: usize,
}

impl fmt::Display for Beside<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.selector {
            Selector::Prefix(digits) if digits.len() > self.shown => {
                write!(f, "+{}*", &digits[..self.shown])
            }
            selector => selector.fmt(f),
        }
    }
}

fn digit_count(code: u16) -> u32 {
    code.checked_ilog10().map_or(1, |log| log + 1)
}

/// As written in `ROUTES`: `+5511`, `BR`, `*`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Prefix(digits) => write!(f, "+{digits}"),
            Selector::Region { region, .. } => write!(f, "{region}"),
            Selector::Any => f.write_str("*"),
        }
    }
}

/// One rule: the numbers it matches and the providers that take them, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub selector: Selector,
    pub providers: Vec<&'static str>,
}

/// The rules, most specific first: the first that matches a number is its route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    rules: Vec<RouteRule>,
}

impl RouteTable {
    /// The table of `rules`, in any order (each selector at most once).
    pub fn new(mut rules: Vec<RouteRule>) -> Self {
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.selector.rank()));
        RouteTable { rules }
    }

    /// Most specific first.
    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }
}

/// A route's rule, resolved to the dispatcher's slots.
pub(super) struct Planned {
    pub(super) selector: Selector,
    pub(super) order: Box<[usize]>,
}

/// The providers a send may use, in order: a rule's (with its selector), or every
/// provider in priority order when no rule matched or there are none. Borrowed from the
/// dispatcher, so that choosing one allocates nothing.
#[derive(Clone, Copy)]
pub struct Route<'a> {
    selector: Option<&'a Selector>,
    order: &'a [usize],
    dispatcher: &'a Dispatcher,
}

impl<'a> Route<'a> {
    /// The selector of the rule that matched; `None` for the providers' own order.
    pub fn selector(&self) -> Option<&'a Selector> {
        self.selector
    }

    /// Whether the rule's selector matches `phone`; the providers' own order matches
    /// every number.
    pub fn matches(&self, phone: &otp_relay_providers::Phone) -> bool {
        self.selector.is_none_or(|selector| selector.matches(phone))
    }

    pub(super) fn slots(&self) -> impl Iterator<Item = &'a Slot> + 'a {
        let slots = &self.dispatcher.slots;
        self.order.iter().map(|&i| &slots[i])
    }
}

/// A route names a provider the dispatcher was not given.
#[derive(Debug, thiserror::Error)]
#[error("ROUTES: the rule for {selector} names provider {provider:?}, which is not configured")]
pub struct UnknownRouteProvider {
    pub selector: String,
    pub provider: &'static str,
}

impl Dispatcher {
    /// Sends each destination a rule of `table` matches to that rule's providers only.
    pub fn with_routes(mut self, table: &RouteTable) -> Result<Self, UnknownRouteProvider> {
        self.plans = table
            .rules()
            .iter()
            .map(|rule| {
                let order = rule
                    .providers
                    .iter()
                    .map(|&name| {
                        self.slots
                            .iter()
                            .position(|slot| slot.provider.name() == name)
                            .ok_or_else(|| UnknownRouteProvider {
                                selector: rule.selector.to_string(),
                                provider: name,
                            })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Planned {
                    selector: rule.selector.clone(),
                    order,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// The routes of `ROUTES`, most specific first (none when it is unset).
    pub fn routes(&self) -> impl Iterator<Item = Route<'_>> {
        self.plans.iter().map(|plan| Route {
            selector: Some(&plan.selector),
            order: &plan.order,
            dispatcher: self,
        })
    }

    /// The route to `to`: the most specific rule that matches it, or every provider.
    pub fn route_for(&self, to: &Phone) -> Route<'_> {
        self.routes()
            .find(|route| route.matches(to))
            .unwrap_or_else(|| self.default_route())
    }

    /// Every provider in priority order: the route of a number no rule matches.
    pub fn default_route(&self) -> Route<'_> {
        Route {
            selector: None,
            order: &self.everyone,
            dispatcher: self,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(text: &str) -> Selector {
        Selector::parse(text).unwrap()
    }

    fn phone(number: &str) -> Phone {
        Phone::parse(number, None).unwrap()
    }

    #[test]
    fn a_region_ranks_between_its_calling_code_and_any_longer_prefix() {
        let ranks = |texts: &[&str]| texts.iter().map(|t| selector(t).rank()).collect();
        let ascending: Vec<u32> = ranks(&["*", "+1", "US", "+14", "+1415"]);
        assert!(ascending.windows(2).all(|w| w[0] < w[1]), "{ascending:?}");
        let ascending: Vec<u32> = ranks(&["*", "+5", "+55", "BR", "+551", "+5511"]);
        assert!(ascending.windows(2).all(|w| w[0] < w[1]), "{ascending:?}");
        // A three-digit calling code: its region ranks above a two-digit prefix.
        assert!(selector("PT").rank() > selector("+35").rank());
        assert!(selector("PT").rank() < selector("+3512").rank());
    }

    #[test]
    fn selectors_match_by_digits_region_or_anything() {
        let sao_paulo = phone("+5511966191717");
        let rio = phone("+5521987654321");
        let toronto = phone("+14165550123");
        assert!(selector("+5511").matches(&sao_paulo));
        assert!(!selector("+5511").matches(&rio));
        assert!(selector("br").matches(&rio));
        assert!(!selector("US").matches(&toronto), "+1 416 is Canada");
        assert!(selector("CA").matches(&toronto));
        assert!(selector("*").matches(&toronto));
    }

    #[test]
    fn beside_a_masked_number_a_prefix_shows_no_more_digits_than_the_mask() {
        let rio = phone("+5521987654321");
        assert_eq!(rio.masked(), "+55219*****21");
        let shown = |text: &str| selector(text).beside(&rio).to_string();
        assert_eq!(shown("+5521987"), "+55219*");
        assert_eq!(shown("+55219"), "+55219");
        assert_eq!(shown("+55"), "+55");
        assert_eq!(shown("BR"), "BR");
        assert_eq!(shown("*"), "*");
        assert_eq!(shown("+5521987654321"), "+55219*");
    }

    #[test]
    fn malformed_selectors_say_why() {
        for (text, problem) in [
            ("+", "not `+` followed by digits"),
            ("+55a", "not `+` followed by digits"),
            ("+0", "no calling code starts with 0"),
            ("+1234567890123456", "more digits than a phone number"),
            ("XX", "neither a region code"),
            ("BRA", "neither a region code"),
            ("", "neither a region code"),
        ] {
            let error = Selector::parse(text).unwrap_err();
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn the_table_keeps_the_most_specific_rule_first() {
        let rule = |text: &str| RouteRule {
            selector: selector(text),
            providers: vec!["twilio"],
        };
        let table = RouteTable::new(vec![rule("*"), rule("+55"), rule("+5511"), rule("BR")]);
        let order: Vec<String> = table
            .rules()
            .iter()
            .map(|r| r.selector.to_string())
            .collect();
        assert_eq!(order, ["+5511", "BR", "+55", "*"]);
    }
}
