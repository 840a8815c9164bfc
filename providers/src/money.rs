//! Money as providers state it: what a message cost, what is left on the account.
//!
//! Amounts stay decimal text from end to end, never an `f64`: a provider's `0.0333` is
//! kept as written, and parts are summed digit-exact (`0.03330000 + 0.03330000 =
//! 0.06660000`). Only metrics, which are floats anyway, convert.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Most significant digits an amount may have (well within `u128`).
const MAX_DIGITS: usize = 30;

/// An amount of money, and its ISO 4217 currency when the provider names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// A plain decimal: optional `-`, digits, optional `.` and digits (`"0.0666"`).
    pub amount: String,
    /// Upper-case ISO 4217 code; `None` when the provider does not say.
    pub currency: Option<String>,
}

impl Money {
    /// `amount` (decimal text, or a JSON number's text: an exponent is spelled out) in
    /// `currency`. `None` when the amount is not a decimal number. A currency that is
    /// not three letters counts as unnamed.
    pub fn parse(amount: &str, currency: Option<&str>) -> Option<Money> {
        Some(Money {
            amount: Decimal::parse(amount)?.to_string(),
            currency: currency_code(currency),
        })
    }

    /// What a message was charged, as a cost: the amount without its sign (Twilio writes
    /// charges as negative prices, `"-0.00750"`).
    pub fn charge(amount: &str, currency: Option<&str>) -> Option<Money> {
        let mut decimal = Decimal::parse(amount)?;
        decimal.negative = false;
        Some(Money {
            amount: decimal.to_string(),
            currency: currency_code(currency),
        })
    }

    /// The exact sum of `parts`, all in the currency of the first; `None` when there are
    /// none, one is not a decimal, or the currencies differ.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Money>) -> Option<Money> {
        let mut parts = parts.into_iter();
        let first = parts.next()?;
        let mut total = Decimal::parse(&first.amount)?;
        for part in parts {
            if part.currency != first.currency {
                return None;
            }
            total = total.add(&Decimal::parse(&part.amount)?)?;
        }
        Some(Money {
            amount: total.to_string(),
            currency: first.currency.clone(),
        })
    }

    /// The amount as a float, for metrics only.
    pub fn as_f64(&self) -> f64 {
        self.amount.parse().unwrap_or(0.0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.currency {
            Some(currency) => write!(f, "{} {currency}", self.amount),
            None => f.write_str(&self.amount),
        }
    }
}

fn currency_code(currency: Option<&str>) -> Option<String> {
    let code = currency?.trim();
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

/// The text of a JSON number or string holding a decimal, as written (no `f64` on the
/// way): what providers' price fields are, in one shape or the other.
pub(crate) fn decimal_text(raw: &RawValue) -> Option<String> {
    let text = raw.get().trim();
    let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner,
        None => text,
    };
    Decimal::parse(text).map(|_| text.to_owned())
}

/// A signed decimal: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    mantissa: u128,
    scale: u32,
}

impl Decimal {
    /// `-12.345`, `+0.5`, `.5`, `7`, `1.5e-3`; nothing else (no spaces inside, no `NaN`).
    fn parse(text: &str) -> Option<Decimal> {
        let text = text.trim();
        let (negative, text) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (number, exponent) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
            None => (text, 0),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        if !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let digits = format!("{whole}{fraction}");
        let significant = digits.trim_start_matches('0');
        if significant.len() > MAX_DIGITS {
            return None;
        }
        let mut mantissa: u128 = if significant.is_empty() {
            0
        } else {
            significant.parse().ok()?
        };
        let mut scale = i64::try_from(fraction.len()).ok()? - i64::from(exponent);
        if mantissa == 0 && scale < 0 {
            // Zero has no digits to shift: a huge exponent must not loop for ever.
            scale = 0;
        }
        while scale < 0 {
            mantissa = mantissa.checked_mul(10)?;
            scale += 1;
        }
        let scale = u32::try_from(scale)
            .ok()
            .filter(|s| *s as usize <= MAX_DIGITS)?;
        Some(Decimal {
            negative: negative && mantissa != 0,
            mantissa,
            scale,
        })
    }

    fn rescaled(&self, scale: u32) -> Option<u128> {
        self.mantissa
            .checked_mul(10u128.checked_pow(scale - self.scale)?)
    }

    fn add(&self, other: &Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let (a, b) = (self.rescaled(scale)?, other.rescaled(scale)?);
        let (negative, mantissa) = match (self.negative, other.negative) {
            (x, y) if x == y => (x, a.checked_add(b)?),
            (x, _) if a >= b => (x, a - b),
            (_, y) => (y, b - a),
        };
        Some(Decimal {
            negative: negative && mantissa != 0,
            mantissa,
            scale,
        })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = format!(
            "{:0>width$}",
            self.mantissa,
            width = self.scale as usize + 1
        );
        let (whole, fraction) = digits.split_at(digits.len() - self.scale as usize);
        let sign = if self.negative { "-" } else { "" };
        if fraction.is_empty() {
            write!(f, "{sign}{whole}")
        } else {
            write!(f, "{sign}{whole}.{fraction}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_with_any_exponent_is_zero_at_once() {
        for text in ["0e2147483647", "0.0e99999", "-0E999999999"] {
            assert_eq!(Money::parse(text, None).expect(text).to_string(), "0");
        }
    }

    #[test]
    fn amounts_keep_the_providers_digits() {
        for (text, kept) in [
            ("0.03330000", "0.03330000"),
            ("0.0666", "0.0666"),
            ("-0.00750", "-0.00750"),
            ("+3.14159265", "3.14159265"),
            (".5", "0.5"),
            ("7", "7"),
            ("1.5e-3", "0.0015"),
            ("2E2", "200"),
            ("-0.0", "0.0"),
        ] {
            assert_eq!(Money::parse(text, None).unwrap().amount, kept, "{text}");
        }
        for bad in [
            "", "-", ".", "abc", "1.2.3", "1,5", "NaN", "1e", "0x10", "1 2",
        ] {
            assert_eq!(Money::parse(bad, None), None, "{bad:?}");
        }
        assert_eq!(Money::parse(&"9".repeat(31), None), None, "too many digits");
    }

    #[test]
    fn parts_sum_digit_exact_where_floats_would_not() {
        let part = |amount: &str| Money::parse(amount, Some("EUR")).unwrap();
        let total = Money::sum(&[part("0.03330000"), part("0.03330000")]).unwrap();
        assert_eq!(total, Money::parse("0.06660000", Some("EUR")).unwrap());
        // 0.1 + 0.2 is 0.30000000000000004 in f64.
        assert_eq!(
            Money::sum(&[part("0.1"), part("0.2")]).unwrap().amount,
            "0.3"
        );
        assert_eq!(
            Money::sum(&[part("1.5"), part("-2")]).unwrap().amount,
            "-0.5"
        );
        assert_eq!(Money::sum(&[]), None);
        let dollars = Money::parse("1", Some("usd")).unwrap();
        assert_eq!(Money::sum(&[part("1"), dollars]), None, "currencies differ");
    }

    #[test]
    fn charges_lose_their_sign_and_currencies_are_codes() {
        let charge = Money::charge("-0.00750", Some("usd")).unwrap();
        assert_eq!(charge.amount, "0.00750");
        assert_eq!(charge.currency.as_deref(), Some("USD"));
        assert_eq!(charge.to_string(), "0.00750 USD");
        assert_eq!(Money::parse("1", Some("credits")).unwrap().currency, None);
        assert_eq!(Money::parse("1", Some(" ")).unwrap().currency, None);
    }

    #[test]
    fn json_numbers_and_strings_give_their_text() {
        let raw = |json: &str| serde_json::from_str::<Box<RawValue>>(json).unwrap();
        assert_eq!(decimal_text(&raw("0.01")).as_deref(), Some("0.01"));
        assert_eq!(decimal_text(&raw("\"0.0333\"")).as_deref(), Some("0.0333"));
        assert_eq!(decimal_text(&raw("null")), None);
        assert_eq!(decimal_text(&raw("\"free\"")), None);
    }
}
