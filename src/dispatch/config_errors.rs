//! Failures that are our configuration's fault at a provider (a rejected callback URL,
//! sender or template): every message fails the same way until an operator acts, so
//! they are made loud (an error log, a metric) and kept for `/health/ready`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::prometheus;

/// A provider code is logged at most once per this interval: the metric counts every
/// occurrence, the log only needs to be seen.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Most distinct (provider, code) pairs remembered for log throttling. Codes come from
/// the adapters' fixed lists, so this is never reached in practice; it bounds the map.
const MAX_TRACKED: usize = 64;

/// The latest configuration error of one provider, as `/health/ready` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastConfigError {
    /// The provider's own code (`21609`, `CALLBACK_URL_INVALID`).
    pub code: String,
    /// What the provider said, scrubbed by the adapter.
    pub detail: String,
    /// RFC 3339.
    pub at: String,
}

/// The configuration errors seen per provider.
#[derive(Default)]
pub struct ConfigErrors {
    last: Mutex<HashMap<&'static str, LastConfigError>>,
    /// Whether `last` holds anything, so sends need not lock it to find out.
    any: AtomicBool,
    logged: Mutex<HashMap<(&'static str, String), Instant>>,
}

impl ConfigErrors {
    /// Counts, logs (throttled) and keeps `error` when it is a configuration error.
    pub fn note(&self, provider: &'static str, error: &otp_relay_providers::ProviderError) {
        let Some(code) = error.config_error_code() else {
            return;
        };
        prometheus::handle();
        metrics::counter!(
            prometheus::PROVIDER_CONFIG_ERRORS,
            "provider" => provider,
            "code" => code.to_owned()
        )
        .increment(1);
        let detail = match error {
            otp_relay_providers::ProviderError::Misconfigured { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        if self.due_for_log(provider, code, Instant::now()) {
            tracing::error!(
                provider,
                code,
                "the provider refuses our configuration; every message to it fails until \
                 this is fixed: {detail}"
            );
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.insert(
            provider,
            LastConfigError {
                code: code.to_owned(),
                detail,
                at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            },
        );
        self.any.store(true, Ordering::Relaxed);
    }

    /// Forgets `provider`'s configuration error once it accepts a message again: the
    /// operator fixed it. A plain atomic read when there is nothing to forget.
    pub fn cleared(&self, provider: &str) {
        if self.any.load(Ordering::Relaxed) {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            last.remove(provider);
            self.any.store(!last.is_empty(), Ordering::Relaxed);
        }
    }

    /// The latest configuration error of `provider`, if it had one.
    pub fn last(&self, provider: &str) -> Option<LastConfigError> {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(provider)
            .cloned()
    }

    fn due_for_log(&self, provider: &'static str, code: &str, now: Instant) -> bool {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let key = (provider, code.to_owned());
        match logged.get(&key) {
            Some(at) if now.duration_since(*at) < LOG_INTERVAL => false,
            _ => {
                if logged.len() >= MAX_TRACKED && !logged.contains_key(&key) {
                    logged.retain(|_, at| now.duration_since(*at) < LOG_INTERVAL);
                    if logged.len() >= MAX_TRACKED {
                        // Still full of fresh entries: log rather than forget to.
                        return true;
                    }
                }
                logged.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use otp_relay_providers::ProviderError;

    use super::*;

    #[test]
    fn a_code_is_logged_once_per_interval_and_the_last_one_is_kept() {
        let errors = ConfigErrors::default();
        let start = Instant::now();
        assert!(errors.due_for_log("twilio", "21609", start));
        assert!(!errors.due_for_log("twilio", "21609", start + LOG_INTERVAL / 2));
        assert!(errors.due_for_log("twilio", "21606", start), "another code");
        assert!(
            errors.due_for_log("vonage", "21609", start),
            "another provider"
        );
        assert!(errors.due_for_log("twilio", "21609", start + LOG_INTERVAL));

        errors.note(
            "twilio",
            &ProviderError::Misconfigured {
                code: "21609".into(),
                detail: "21609: Invalid StatusCallback".into(),
            },
        );
        errors.note("twilio", &ProviderError::Timeout);
        let last = errors.last("twilio").unwrap();
        assert_eq!(
            (last.code.as_str(), last.detail.as_str()),
            ("21609", "21609: Invalid StatusCallback")
        );
        assert_eq!(errors.last("vonage"), None);
    }
}
