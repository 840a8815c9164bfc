//! Phone numbers, parsed once into E.164 and masked whenever they are shown.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{LazyLock, Mutex, PoisonError};

use phonenumber::country::Id;
use phonenumber::PhoneNumber;

/// An ISO 3166-1 alpha-2 region, as used for national number formats and country policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region(Id);

impl Region {
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// The region's country calling code (`55` for `BR`, `1` for `US` and `CA`), or
    /// `None` for a region the numbering plan has no numbers for.
    pub fn calling_code(&self) -> Option<u16> {
        phonenumber::metadata::DATABASE
            .by_id(self.as_str())
            .map(|meta| meta.country_code())
    }
}

/// The text is not a two-letter region code known to the numbering plan database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO 3166-1 alpha-2 region code known to the numbering plan")]
pub struct UnknownRegion;

impl FromStr for Region {
    type Err = UnknownRegion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let code = s.trim().to_ascii_uppercase();
        if code.len() != 2 {
            return Err(UnknownRegion);
        }
        Id::from_str(&code).map(Region).map_err(|_| UnknownRegion)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a phone number we can deliver to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("the number is empty")]
    Empty,
    #[error("the number contains characters other than digits, spaces, '+', '-', '.', '/' and parentheses")]
    BadCharacters,
    #[error("the number is not valid with a country code, and no default region is configured to read it as a national number")]
    NoCountryCode,
    #[error("the number is not a valid phone number")]
    Invalid,
}

/// The kind of line a number belongs to, as far as the numbering plan tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Mobile,
    /// Some regions (the US, for one) do not tell mobile from fixed numbers apart.
    FixedOrMobile,
    Fixed,
    PremiumRate,
    SharedCost,
    Other,
}

/// The most digits an E.164 number has, country code included (ITU-T E.164 §6.2.1).
pub const MAX_E164_DIGITS: usize = 15;

/// Loads the numbering plan database and compiles what parsing every number needs.
///
/// The `phonenumber` crate does this on first use, which took about 300 ms: without
/// this call at start-up the first sends after a start (all those arriving meanwhile)
/// would wait for it.
pub fn warm_up() {
    // Not through the cache: this number is no caller's.
    let _ = Phone::parse_uncached("+5511966191717", None);
}

/// Parse results kept for numbers read again: the numbering plan's parser and its
/// regular expressions cost about 30,000 instructions a number, a lookup here about
/// 500, and the same numbers come back (a user signing in again, asking for a new
/// code, a retried request).
static PARSED: LazyLock<ParseCache> = LazyLock::new(|| ParseCache::new(PARSE_CACHE_ENTRIES));

/// How many parse results [`PARSED`] keeps (a few hundred KiB at most).
const PARSE_CACHE_ENTRIES: usize = 1024;

/// The longest input whose parse result is kept: longer ones are parsed every time,
/// so that the cache's size stays bounded by its entry count.
const PARSE_CACHE_MAX_INPUT: usize = 64;

/// Valid numbers by the text they were read from, with the default region they were
/// read in. Bounded: when full, it starts over empty (cheaper than tracking recency,
/// and a number in use is back at its next send).
struct ParseCache {
    capacity: usize,
    entries: Mutex<HashMap<String, (Option<Region>, Phone)>>,
}

impl ParseCache {
    fn new(capacity: usize) -> Self {
        ParseCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, input: &str, default_region: Option<Region>) -> Option<Phone> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(input) {
            Some((region, phone)) if *region == default_region => Some(phone.clone()),
            _ => None,
        }
    }

    fn put(&self, input: &str, default_region: Option<Region>, phone: &Phone) {
        if input.len() > PARSE_CACHE_MAX_INPUT {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(input) {
            entries.clear();
        }
        entries.insert(input.to_owned(), (default_region, phone.clone()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl From<phonenumber::Type> for LineKind {
    fn from(kind: phonenumber::Type) -> Self {
        use phonenumber::Type;
        match kind {
            Type::Mobile => LineKind::Mobile,
            Type::FixedLineOrMobile => LineKind::FixedOrMobile,
            Type::FixedLine => LineKind::Fixed,
            Type::PremiumRate => LineKind::PremiumRate,
            Type::SharedCost => LineKind::SharedCost,
            _ => LineKind::Other,
        }
    }
}

/// A valid phone number in E.164 form (`+5511966191717`).
///
/// It has no `Display`: the full number is only reachable through [`Phone::e164`], so
/// that formatting a `Phone` into a log line shows the masked form.
#[derive(Clone)]
pub struct Phone {
    e164: String,
    number: PhoneNumber,
    /// Worked out once while parsing: each costs regular expression matches against
    /// the numbering plan, and every send asks for both.
    region: Option<Region>,
    line_kind: LineKind,
}

impl Phone {
    /// Parses what a caller sent: E.164, international with spaces and dashes, `00`
    /// international prefix, bare country code and number (`5511...`), or a national
    /// format read in `default_region`.
    pub fn parse(input: &str, default_region: Option<Region>) -> Result<Phone, PhoneError> {
        Phone::parse_with(&PARSED, input, default_region)
    }

    /// [`Phone::parse`] through `cache`: a valid number's result is kept there.
    fn parse_with(
        cache: &ParseCache,
        input: &str,
        default_region: Option<Region>,
    ) -> Result<Phone, PhoneError> {
        let input = input.trim();
        if let Some(phone) = cache.get(input, default_region) {
            return Ok(phone);
        }
        let phone = Phone::parse_uncached(input, default_region)?;
        cache.put(input, default_region, &phone);
        Ok(phone)
    }

    /// [`Phone::parse`] without the cache.
    fn parse_uncached(input: &str, default_region: Option<Region>) -> Result<Phone, PhoneError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(PhoneError::Empty);
        }
        if !input
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '/' | '(' | ')'))
        {
            return Err(PhoneError::BadCharacters);
        }
        let digits: String = input.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Err(PhoneError::Invalid);
        }
        let explicit_international = input.starts_with('+');
        let candidates: Vec<(Option<Id>, String)> = if explicit_international {
            vec![(None, format!("+{digits}"))]
        } else if let Some(rest) = digits.strip_prefix("00") {
            vec![(None, format!("+{rest}"))]
        } else {
            match default_region {
                // A national format first, then the same digits read as country code + number.
                Some(region) => vec![
                    (Some(region.0), digits.clone()),
                    (None, format!("+{digits}")),
                ],
                None => vec![(None, format!("+{digits}"))],
            }
        };
        for (region, text) in candidates {
            let Ok(number) = phonenumber::parse(region, &text) else {
                continue;
            };
            let Some(phone) = Phone::valid(number) else {
                continue;
            };
            // Found by fuzzing: the numbering plan accepts some overlong national
            // numbers (German fixed lines), and some national readings (`(090096 96432`
            // in BR) give an E.164 form that is not valid on its own, which a provider
            // would refuse and which would not normalize to itself.
            if phone.e164.len() > MAX_E164_DIGITS + 1 {
                continue;
            }
            if phone.e164 == text {
                return Ok(phone);
            }
            let again = phonenumber::parse(None, &phone.e164)
                .ok()
                .and_then(Phone::valid);
            if let Some(again) = again.filter(|again| again.e164 == phone.e164) {
                return Ok(again);
            }
        }
        if !explicit_international && default_region.is_none() && !digits.starts_with("00") {
            return Err(PhoneError::NoCountryCode);
        }
        Err(PhoneError::Invalid)
    }

    /// The number, if the numbering plan says it is valid, with what the policy checks
    /// need to know about it.
    ///
    /// Same answers as `phonenumber::is_valid`, `Formatter` in E.164 mode,
    /// `Country::id` and `PhoneNumber::number_type`, for a third of the work: validity is
    /// "the number has a type", and that type is the line kind. (`is_valid` reads the
    /// national number with its leading zeros, `number_type` without; the two only
    /// differ for numbers that have leading zeros, which are checked the long way.)
    fn valid(number: PhoneNumber) -> Option<Phone> {
        use phonenumber::metadata::DATABASE;
        let kind = number.number_type(&DATABASE);
        let valid = if number.national().zeros() == 0 {
            kind != phonenumber::Type::Unknown
        } else {
            phonenumber::is_valid(&number)
        };
        if !valid {
            return None;
        }
        let region = number
            .metadata(&DATABASE)
            .and_then(|meta| meta.id().parse::<Id>().ok())
            .map(Region);
        // What `Formatter` writes in E.164 mode for a valid number.
        let e164 = format!("+{}{}", number.code().value(), number.national());
        Some(Phone {
            e164,
            number,
            region,
            line_kind: LineKind::from(kind),
        })
    }

    /// The number as `+` and digits.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The number's digits without the leading `+`, as some APIs want it.
    pub fn digits(&self) -> &str {
        &self.e164[1..]
    }

    /// The country calling code (`55` for Brazil).
    pub fn country_code(&self) -> u16 {
        self.number.code().value()
    }

    /// The region the number belongs to, when the numbering plan says.
    pub fn region(&self) -> Option<Region> {
        self.region
    }

    /// What kind of line the number is.
    pub fn line_kind(&self) -> LineKind {
        self.line_kind
    }

    /// The number with its middle hidden (`+55119*****17`), safe for logs and records.
    pub fn masked(&self) -> String {
        mask_digits(self.digits())
    }

    /// How many leading digits [`Phone::masked`] shows (`5` for `+55119*****17`).
    pub fn masked_lead(&self) -> usize {
        masked_lead(self.digits().chars().count())
    }
}

/// How many of `count` digits [`mask_digits`] leaves visible at the start.
fn masked_lead(count: usize) -> usize {
    (count.saturating_sub(2) / 2).min(5)
}

/// Masks a string of digits for display: at most five leading digits stay visible, and
/// never more than half of the digits before the last two; the last two stay visible
/// when there are six or more. The hidden part is always five stars, so the length is
/// not revealed either.
pub fn mask_digits(digits: &str) -> String {
    let count = digits.chars().count();
    let lead = masked_lead(count);
    let tail = if count >= 6 { 2 } else { 0 };
    // Byte offsets of those characters: one allocation, the result's (every send masks
    // its number twice, for its record and its log).
    let ascii = digits.is_ascii();
    let offset = |chars: usize| {
        if ascii {
            chars
        } else {
            digits
                .char_indices()
                .nth(chars)
                .map_or(digits.len(), |(i, _)| i)
        }
    };
    let (head, end) = (&digits[..offset(lead)], &digits[offset(count - tail)..]);
    let mut masked = String::with_capacity(head.len() + end.len() + 6);
    masked.push('+');
    masked.push_str(head);
    masked.push_str("*****");
    masked.push_str(end);
    masked
}

impl PartialEq for Phone {
    fn eq(&self, other: &Self) -> bool {
        self.e164 == other.e164
    }
}

impl Eq for Phone {}

impl std::hash::Hash for Phone {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.e164.hash(state);
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn br() -> Option<Region> {
        Some("BR".parse().unwrap())
    }

    #[test]
    fn accepts_every_form_the_identity_server_sends() {
        for input in [
            "+5511966191717",
            "+55 11 96619-1717",
            "005511966191717",
            "5511966191717",
            " +55 (11) 96619-1717 ",
        ] {
            assert_eq!(
                Phone::parse(input, None).map(|p| p.e164().to_owned()),
                Ok("+5511966191717".to_owned()),
                "{input}"
            );
        }
        for input in ["(11) 96619-1717", "11966191717", "5511966191717"] {
            assert_eq!(
                Phone::parse(input, br()).map(|p| p.e164().to_owned()),
                Ok("+5511966191717".to_owned()),
                "{input} with BR"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        assert_eq!(
            Phone::parse("abc", None).err(),
            Some(PhoneError::BadCharacters)
        );
        assert_eq!(Phone::parse("   ", None).err(), Some(PhoneError::Empty));
        assert_eq!(Phone::parse("+123", None).err(), Some(PhoneError::Invalid));
        assert_eq!(
            Phone::parse("(11) 96619-1717", None).err(),
            Some(PhoneError::NoCountryCode)
        );
    }

    fn assert_invalid(input: &str, region: Option<Region>) {
        assert_eq!(
            Phone::parse(input, region).err(),
            Some(PhoneError::Invalid),
            "{input}"
        );
    }

    #[test]
    fn refuses_numbers_longer_than_e164_allows() {
        // Found by the `phone` fuzz target: the numbering plan took this as a valid
        // German number of 17 digits.
        assert_invalid("76271113-2871116", Some("DE".parse().unwrap()));
        assert_invalid("+49762711132871116", None);
    }

    #[test]
    fn refuses_national_readings_whose_e164_form_is_invalid() {
        // Found by the `phone` fuzz target: read in BR as +559009696432, which is not a
        // valid number on its own (and so did not normalize to itself).
        assert_invalid("(090096 96432", br());
        assert_invalid("+559009696432", None);
    }

    #[test]
    fn knows_region_and_line_kind() {
        let phone = Phone::parse("+5511966191717", None).unwrap();
        assert_eq!(phone.country_code(), 55);
        assert_eq!(phone.region().map(|r| r.to_string()), Some("BR".into()));
        assert_eq!(phone.line_kind(), LineKind::Mobile);
        assert_eq!(phone.digits(), "5511966191717");
    }

    #[test]
    fn masks_the_middle_and_hides_the_length() {
        let phone = Phone::parse("+5511966191717", None).unwrap();
        assert_eq!(phone.masked(), "+55119*****17");
        assert_eq!(format!("{phone:?}"), "+55119*****17");
        assert_eq!(mask_digits("14155552671"), "+1415*****71");
        assert_eq!(mask_digits("1234"), "+1*****");
        assert_eq!(mask_digits(""), "+*****");
        assert_eq!(mask_digits("١٢٣٤٥٦٧٨"), "+١٢٣*****٧٨");
    }

    /// `Phone::valid` works out validity, E.164 form, region and line kind its own way;
    /// these must be what the library's own calls say, across regions that share a
    /// calling code, numbers with leading zeros and lines of every kind.
    #[test]
    fn precomputed_facts_match_the_library() {
        use phonenumber::metadata::DATABASE;
        use phonenumber::Mode;
        let inputs = [
            "+5511966191717",
            "+551133334444",
            "+5511123",
            "+14155552671",
            "+12042345678",
            "+16715551234",
            "+19005551234",
            "+18005551234",
            "+447400123456",
            "+441481123456",
            "+441534123456",
            "+448712345678",
            "+449012345678",
            "+390612345678",
            "+393123456789",
            "+39800123456",
            "+79123456789",
            "+77012345678",
            "+4930123456",
            "+4915112345678",
            "+33612345678",
            "+33891234567",
            "+2250123456789",
            "+2252123456789",
            "+80012345678",
            "+8821234567890",
            "+34901123456",
            "+61491570156",
            "+999123456789",
            "+1",
        ];
        let (mut valid, mut with_zeros) = (0, 0);
        for input in inputs {
            let Ok(number) = phonenumber::parse(None, input) else {
                continue;
            };
            let expected = phonenumber::is_valid(&number);
            let phone = Phone::valid(number.clone());
            assert_eq!(phone.is_some(), expected, "validity of {input}");
            let Some(phone) = phone else { continue };
            valid += 1;
            if number.national().zeros() > 0 {
                with_zeros += 1;
            }
            assert_eq!(
                phone.e164,
                number.format().mode(Mode::E164).to_string(),
                "{input}"
            );
            assert_eq!(phone.region, number.country().id().map(Region), "{input}");
            assert_eq!(
                phone.line_kind,
                LineKind::from(number.number_type(&DATABASE)),
                "{input}"
            );
        }
        assert!(valid >= 20, "only {valid} of the inputs were valid numbers");
        assert!(
            with_zeros >= 1,
            "no valid number with leading zeros was checked"
        );
    }

    #[test]
    fn cached_results_are_the_parsers_own() {
        let cache = ParseCache::new(8);
        let inputs = [
            ("+5511966191717", None),
            (" +55 (11) 96619-1717 ", None),
            ("(11) 96619-1717", br()),
            ("11966191717", br()),
            ("+14155552671", None),
        ];
        for _ in 0..2 {
            for (input, region) in inputs {
                let cached = Phone::parse_with(&cache, input, region).unwrap();
                let fresh = Phone::parse_uncached(input, region).unwrap();
                assert_eq!(cached.e164(), fresh.e164(), "{input}");
                assert_eq!(cached.region(), fresh.region(), "{input}");
                assert_eq!(cached.line_kind(), fresh.line_kind(), "{input}");
                assert_eq!(cached.country_code(), fresh.country_code(), "{input}");
            }
        }
        assert_eq!(cache.len(), inputs.len());
        // The same text read in another default region is not the cached reading.
        assert_eq!(
            Phone::parse_with(&cache, "11966191717", None).err(),
            Some(PhoneError::NoCountryCode)
        );
        assert_eq!(
            Phone::parse_with(&cache, "(11) 96619-1717", Some("US".parse().unwrap())).err(),
            Some(PhoneError::Invalid)
        );
        // Refusals are not kept.
        assert!(Phone::parse_with(&cache, "+123", None).is_err());
        assert_eq!(cache.len(), inputs.len());
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = ParseCache::new(4);
        for n in 0..10 {
            let input = format!("+55119661917{n:02}");
            Phone::parse_with(&cache, &input, None).unwrap();
            assert!(cache.len() <= 4, "{} entries", cache.len());
        }
        // A valid number padded past the longest input kept is parsed, not kept.
        let long = format!("+55{}11966191717", " ".repeat(PARSE_CACHE_MAX_INPUT));
        let cache = ParseCache::new(4);
        assert_eq!(
            Phone::parse_with(&cache, &long, None).map(|p| p.e164().to_owned()),
            Ok("+5511966191717".to_owned())
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn region_codes_parse_case_insensitively() {
        assert_eq!(
            "br".parse::<Region>().map(|r| r.to_string()),
            Ok("BR".into())
        );
        assert_eq!("XX".parse::<Region>(), Err(UnknownRegion));
        assert_eq!("BRA".parse::<Region>(), Err(UnknownRegion));
    }

    #[test]
    fn regions_know_their_calling_code() {
        let code = |r: &str| r.parse::<Region>().unwrap().calling_code();
        assert_eq!(code("BR"), Some(55));
        assert_eq!(code("US"), Some(1));
        assert_eq!(code("CA"), Some(1));
        assert_eq!(code("GB"), Some(44));
        assert_eq!(code("AG"), Some(1));
    }
}
