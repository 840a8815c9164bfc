//! Logging: structured events with request spans, as JSON or for humans.
//!
//! Events name messages by id and masked number only; the text and code are never
//! recorded at any level.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{layer::SubscriberExt, EnvFilter, Registry};

use crate::config::LogFormat;

/// Builds the subscriber for `format`, keeping events `filter` lets through and
/// writing them with `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = Registry::default().with(filter);
    match format {
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            ),
        ),
        LogFormat::Pretty => {
            Box::new(registry.with(tracing_subscriber::fmt::layer().with_writer(writer)))
        }
    }
}

/// Installs the process-wide subscriber, writing to standard output.
pub fn init(format: LogFormat, filter: &str) {
    use tracing_subscriber::util::SubscriberInitExt;
    // Fails only when a subscriber is already installed, which then keeps logging.
    let _ = subscriber(format, filter, std::io::stdout).try_init();
}
