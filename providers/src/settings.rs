//! Reading a provider's settings from environment variables, with errors that name the
//! variable and show a good value.

use std::collections::BTreeMap;

use secrecy::SecretString;

use crate::Channel;

/// A provider variable that is missing or cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}; for example {var}={example}")]
pub struct SettingError {
    pub var: &'static str,
    pub problem: String,
    pub example: &'static str,
}

impl SettingError {
    pub fn new(var: &'static str, problem: impl Into<String>, example: &'static str) -> Self {
        SettingError {
            var,
            problem: problem.into(),
            example,
        }
    }
}

/// The environment, as a map of variable names to values.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    vars: &'a BTreeMap<String, String>,
}

impl<'a> Env<'a> {
    pub fn new(vars: &'a BTreeMap<String, String>) -> Self {
        Env { vars }
    }

    /// The value, trimmed; blank counts as absent.
    pub fn get(&self, var: &str) -> Option<&'a str> {
        self.vars
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn required(
        &self,
        var: &'static str,
        example: &'static str,
    ) -> Result<&'a str, SettingError> {
        self.get(var)
            .ok_or_else(|| SettingError::new(var, "is required", example))
    }

    pub fn secret(
        &self,
        var: &'static str,
        example: &'static str,
    ) -> Result<SecretString, SettingError> {
        self.required(var, example)
            .map(|v| SecretString::from(v.to_owned()))
    }

    pub fn optional_secret(&self, var: &str) -> Option<SecretString> {
        self.get(var).map(|v| SecretString::from(v.to_owned()))
    }

    /// An `http(s)` base URL without a trailing slash, or `default`.
    pub fn base_url(
        &self,
        var: &'static str,
        default: &'static str,
    ) -> Result<String, SettingError> {
        let value = self.get(var).unwrap_or(default);
        let url = reqwest::Url::parse(value)
            .map_err(|e| SettingError::new(var, format!("not a URL ({e})"), default))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(SettingError::new(
                var,
                "must be an http or https URL",
                default,
            ));
        }
        Ok(value.trim_end_matches('/').to_owned())
    }

    /// A comma list of channels out of `allowed`, or `default`.
    pub fn channels(
        &self,
        var: &'static str,
        default: Channel,
        allowed: &[Channel],
        example: &'static str,
    ) -> Result<Vec<Channel>, SettingError> {
        let Some(value) = self.get(var) else {
            return Ok(vec![default]);
        };
        let mut channels = Vec::new();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let channel: Channel = name.parse().map_err(|_| {
                SettingError::new(var, format!("{name:?} is not a channel"), example)
            })?;
            if !allowed.contains(&channel) {
                return Err(SettingError::new(
                    var,
                    format!("this provider cannot send on {channel}"),
                    example,
                ));
            }
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        if channels.is_empty() {
            return Err(SettingError::new(var, "lists no channel", example));
        }
        Ok(channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_values_and_names_the_variable_on_error() {
        let map = vars(&[
            ("A_URL", "https://x.test/"),
            ("A_CHANNEL", "sms, whatsapp"),
            ("BLANK", " "),
        ]);
        let env = Env::new(&map);
        assert_eq!(
            env.base_url("A_URL", "https://d.test").unwrap(),
            "https://x.test"
        );
        assert_eq!(
            env.base_url("B_URL", "https://d.test").unwrap(),
            "https://d.test"
        );
        assert_eq!(env.get("BLANK"), None);
        assert_eq!(
            env.channels(
                "A_CHANNEL",
                Channel::Sms,
                &[Channel::Sms, Channel::Whatsapp],
                "sms"
            )
            .unwrap(),
            vec![Channel::Sms, Channel::Whatsapp]
        );
        let error = env
            .channels("A_CHANNEL", Channel::Sms, &[Channel::Sms], "sms")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "A_CHANNEL: this provider cannot send on whatsapp; for example A_CHANNEL=sms"
        );
        assert_eq!(
            env.required("MISSING", "abc").unwrap_err().to_string(),
            "MISSING: is required; for example MISSING=abc"
        );
    }
}
