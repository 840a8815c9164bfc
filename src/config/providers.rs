//! Which providers send, in order: `PROVIDERS`, each provider's own variables read by
//! the providers crate.

use std::collections::HashSet;

use otp_relay_providers::registry::KNOWN_PROVIDERS;
use otp_relay_providers::{Env, ProviderSettings};

use super::var::Var;
use super::ConfigError;

/// Each named provider's settings, read from its own variables.
pub(super) fn provider_settings(
    names: &[&'static str],
    env: &Env<'_>,
) -> Result<Vec<ProviderSettings>, ConfigError> {
    names
        .iter()
        .map(|name| {
            ProviderSettings::from_env(name, env)?.ok_or_else(|| ConfigError::Invalid {
                var: "PROVIDERS",
                value: Some(name.to_string()),
                problem: format!("provider {name:?} is not available in this build"),
                example: "console",
            })
        })
        .collect()
}

/// The `PROVIDERS` list, lower-cased, each a known provider and none twice; the
/// console alone or not at all.
pub(super) fn parse_provider_names(env: &Env<'_>) -> Result<Vec<&'static str>, ConfigError> {
    let var = Var::new(env, "PROVIDERS", "twilio,vonage");
    let names = var.list();
    if names.is_empty() {
        return Ok(vec!["console"]);
    }
    let mut seen = HashSet::new();
    names
        .into_iter()
        .map(|name| {
            let lower = name.to_ascii_lowercase();
            let known = KNOWN_PROVIDERS
                .iter()
                .copied()
                .find(|k| *k == lower)
                .ok_or_else(|| {
                    var.invalid(format!(
                        "unknown provider {name:?}; known providers are {}",
                        KNOWN_PROVIDERS.join(", ")
                    ))
                })?;
            if !seen.insert(known) {
                return Err(var.invalid(format!("provider {name:?} is listed twice")));
            }
            Ok(known)
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|names| {
            // Behind a failing real provider the console would "deliver" to the logs: the
            // login succeeds, the user gets nothing, the code sits in the output.
            if names.len() > 1 && names.contains(&"console") {
                return Err(var.invalid(
                    "console prints messages instead of sending them and cannot be listed \
                     beside a real provider; list only real providers, or console alone",
                ));
            }
            Ok(names)
        })
}
