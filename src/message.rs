//! Turning what a caller sent into the text and code to deliver.

use std::collections::HashMap;

/// `MESSAGE_TEMPLATE`'s default.
pub const DEFAULT_TEMPLATE: &str = "Your verification code is {code}";

/// The longest text we accept: ten concatenated SMS segments, Twilio's own limit.
pub const MAX_TEXT_CHARS: usize = 1600;

/// Templates that render a bare code into a message, by locale.
#[derive(Debug, Clone)]
pub struct MessageTemplates {
    default: String,
    /// Keyed by lower-case locale with `_` (`pt_br`, `pt`).
    by_locale: HashMap<String, String>,
}

impl MessageTemplates {
    pub fn new(default: &str) -> Result<Self, String> {
        check_template(default)?;
        Ok(MessageTemplates {
            default: default.to_owned(),
            by_locale: HashMap::new(),
        })
    }

    /// Adds the template for a locale (`PT_BR` from `MESSAGE_TEMPLATE_PT_BR`).
    pub fn add_locale(&mut self, locale: &str, template: &str) -> Result<(), String> {
        check_template(template)?;
        self.by_locale
            .insert(locale_key(locale), template.to_owned());
        Ok(())
    }

    /// Renders `code` with the template for `locale`, falling back from `pt-BR` to `pt`
    /// to the default.
    pub fn render(&self, code: &str, locale: Option<&str>) -> String {
        let template = locale
            .map(locale_key)
            .and_then(|key| {
                self.by_locale.get(&key).or_else(|| {
                    let language = key.split('_').next().unwrap_or_default();
                    self.by_locale.get(language)
                })
            })
            .unwrap_or(&self.default);
        template.replace("{code}", code)
    }
}

fn check_template(template: &str) -> Result<(), String> {
    if !template.contains("{code}") {
        return Err("the template must contain the {code} placeholder".into());
    }
    if template.chars().count() > MAX_TEXT_CHARS {
        return Err(format!(
            "the template is longer than {MAX_TEXT_CHARS} characters"
        ));
    }
    Ok(())
}

fn locale_key(locale: &str) -> String {
    locale.trim().to_ascii_lowercase().replace('-', "_")
}

/// The text and code to deliver.
#[derive(Clone, PartialEq, Eq)]
pub struct Composed {
    pub text: String,
    pub code: Option<String>,
}

/// Why no message could be composed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("the message text is empty")]
    Empty,
    #[error("the message text is longer than {MAX_TEXT_CHARS} characters")]
    TooLong,
    #[error("the code must be 4 to 10 digits")]
    BadCode,
}

/// What the caller sent that bears on the text.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields<'a> {
    pub totp: Option<&'a str>,
    pub message: Option<&'a str>,
    pub code: Option<&'a str>,
    pub locale: Option<&'a str>,
}

/// Picks the text: an explicit `message` first, then `totp` (a bare code is rendered
/// through the template, anything else is the message itself), then a lone `code`
/// rendered through the template. The code is the explicit `code`, or the first run of
/// 4 to 8 digits in the text.
pub fn compose(
    fields: TextFields<'_>,
    templates: &MessageTemplates,
) -> Result<Composed, TextError> {
    let explicit_code = match non_empty(fields.code) {
        Some(code) if is_bare_code(code) => Some(code.to_owned()),
        Some(_) => return Err(TextError::BadCode),
        None => None,
    };
    let text = if let Some(message) = non_empty(fields.message) {
        message.to_owned()
    } else if let Some(totp) = non_empty(fields.totp) {
        if is_bare_code(totp) {
            let text = templates.render(totp, fields.locale);
            let code = explicit_code.unwrap_or_else(|| totp.to_owned());
            return finish(text, Some(code));
        }
        totp.to_owned()
    } else if let Some(code) = &explicit_code {
        templates.render(code, fields.locale)
    } else {
        return Err(TextError::Empty);
    };
    let code = explicit_code.or_else(|| extract_code(&text).map(str::to_owned));
    finish(text, code)
}

fn finish(text: String, code: Option<String>) -> Result<Composed, TextError> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(TextError::TooLong);
    }
    Ok(Composed { text, code })
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// A bare code: only 4 to 10 ASCII digits.
pub fn is_bare_code(text: &str) -> bool {
    (4..=10).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// The first run of 4 to 8 digits standing alone (not part of a longer run).
pub fn extract_code(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut start = None;
    for (i, b) in bytes.iter().chain(std::iter::once(&b' ')).enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if (4..=8).contains(&(i - s)) {
                    return Some(&text[s..i]);
                }
                start = None;
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> MessageTemplates {
        let mut t = MessageTemplates::new(DEFAULT_TEMPLATE).unwrap();
        t.add_locale("PT_BR", "Seu código é {code}").unwrap();
        t.add_locale("ES", "Tu código es {code}").unwrap();
        t
    }

    fn fields(totp: &str) -> TextFields<'_> {
        TextFields {
            totp: Some(totp),
            ..TextFields::default()
        }
    }

    #[test]
    fn a_bare_code_is_rendered_through_the_template() {
        let composed = compose(fields("32232"), &templates()).unwrap();
        assert_eq!(composed.text, "Your verification code is 32232");
        assert_eq!(composed.code.as_deref(), Some("32232"));
    }

    #[test]
    fn a_sentence_is_the_message_and_its_code_is_extracted() {
        let composed = compose(
            fields("Your SMS code is 123456 and is valid for 5 minutes."),
            &templates(),
        )
        .unwrap();
        assert_eq!(
            composed.text,
            "Your SMS code is 123456 and is valid for 5 minutes."
        );
        assert_eq!(composed.code.as_deref(), Some("123456"));
    }

    #[test]
    fn locale_picks_a_template_with_language_fallback() {
        let t = templates();
        assert_eq!(t.render("1234", Some("pt-BR")), "Seu código é 1234");
        assert_eq!(t.render("1234", Some("es-MX")), "Tu código es 1234");
        assert_eq!(
            t.render("1234", Some("de")),
            "Your verification code is 1234"
        );
    }

    #[test]
    fn explicit_message_and_code_win() {
        let composed = compose(
            TextFields {
                totp: Some("999999"),
                message: Some("Login code: 4242 (ref 12)"),
                code: Some("4242"),
                locale: None,
            },
            &templates(),
        )
        .unwrap();
        assert_eq!(composed.text, "Login code: 4242 (ref 12)");
        assert_eq!(composed.code.as_deref(), Some("4242"));
        let only_code = compose(
            TextFields {
                code: Some("5555"),
                ..TextFields::default()
            },
            &templates(),
        )
        .unwrap();
        assert_eq!(only_code.text, "Your verification code is 5555");
    }

    #[test]
    fn empty_long_and_bad_code_are_refused() {
        assert_eq!(
            compose(fields("   "), &templates()).err(),
            Some(TextError::Empty)
        );
        assert_eq!(
            compose(TextFields::default(), &templates()).err(),
            Some(TextError::Empty)
        );
        let long = "a".repeat(MAX_TEXT_CHARS + 1);
        assert_eq!(
            compose(fields(&long), &templates()).err(),
            Some(TextError::TooLong)
        );
        let exactly = "é".repeat(MAX_TEXT_CHARS);
        assert!(compose(fields(&exactly), &templates()).is_ok());
        let bad_code = TextFields {
            code: Some("12ab"),
            ..fields("hello")
        };
        assert_eq!(
            compose(bad_code, &templates()).err(),
            Some(TextError::BadCode)
        );
    }

    #[test]
    fn code_extraction_skips_runs_of_the_wrong_length() {
        assert_eq!(
            extract_code("ref 123 then 123456789 then 4821 ok"),
            Some("4821")
        );
        assert_eq!(extract_code("code:87654321"), Some("87654321"));
        assert_eq!(extract_code("valid for 5 minutes"), None);
    }

    #[test]
    fn templates_must_hold_the_placeholder() {
        assert!(MessageTemplates::new("no placeholder").is_err());
    }
}
