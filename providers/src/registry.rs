//! The providers otp-relay knows by name, read from the environment and built.

use std::sync::Arc;

use crate::settings::{Env, SettingError};
use crate::{ConsoleProvider, MessageProvider, ProviderContext};

/// Names accepted in `PROVIDERS`.
pub const KNOWN_PROVIDERS: &[&str] = &["console", "twilio", "vonage", "sendpulse", "telegram"];

/// One configured provider's settings, validated and ready to build.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    Console,
}

impl ProviderSettings {
    /// Reads the settings of the provider called `name` (as written in `PROVIDERS`).
    /// `Ok(None)` means the name is not a provider.
    pub fn from_env(name: &str, env: &Env<'_>) -> Result<Option<ProviderSettings>, SettingError> {
        let _ = env;
        Ok(match name {
            "console" => Some(ProviderSettings::Console),
            _ => None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            ProviderSettings::Console => "console",
        }
    }

    /// Whether the provider delivers real (paid) messages.
    pub fn is_real(&self) -> bool {
        !matches!(self, ProviderSettings::Console)
    }

    pub fn build(
        &self,
        context: &ProviderContext,
    ) -> Result<Arc<dyn MessageProvider>, SettingError> {
        let _ = context;
        Ok(match self {
            ProviderSettings::Console => Arc::new(ConsoleProvider::stdout()),
        })
    }
}
