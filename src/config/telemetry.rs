//! Logging: `LOG_FORMAT` and `RUST_LOG`.

use otp_relay_providers::Env;

use super::var::Var;
use super::ConfigError;
use crate::telemetry::LogFormat;

/// `LOG_FORMAT` (pretty in debug builds, else JSON) and `RUST_LOG`.
pub(super) fn parse_logging(env: &Env<'_>) -> Result<(LogFormat, String), ConfigError> {
    let default_format = if cfg!(debug_assertions) {
        "pretty"
    } else {
        "json"
    };
    let log_format = Var::new(env, "LOG_FORMAT", "json").parse_with(default_format, |v| match v
        .to_ascii_lowercase()
        .as_str()
    {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        _ => Err("expected json or pretty".into()),
    })?;
    let log_filter = Var::new(env, "RUST_LOG", "info,otp_relay=debug").parse_with("info", |v| {
        tracing_subscriber::EnvFilter::try_new(v)
            .map(|_| v.to_owned())
            .map_err(|e| format!("not a log filter: {e}"))
    })?;
    Ok((log_format, log_filter))
}
