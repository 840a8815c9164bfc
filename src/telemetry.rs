//! Logging and tracing: structured events with request spans, as JSON or for humans,
//! and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the spans as OpenTelemetry traces
//! over OTLP/HTTP, continuing the caller's W3C `traceparent`.
//!
//! Events name messages by id and masked number only; the text and code are never
//! recorded at any level, nor put in a span.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{layer::SubscriberExt, EnvFilter, Registry};

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The variable that turns trace export on (the OpenTelemetry SDK's own name).
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{OTLP_ENDPOINT} must be an http:// or https:// URL")]
    InvalidEndpoint,
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Exports the spans it is given until it is shut down (which sends what is left).
pub struct Traces(SdkTracerProvider);

impl Traces {
    /// The exporter that the `OTEL_*` variables in `vars` ask for: none without
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`. The SDK reads the rest of the standard variables
    /// itself (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, ...).
    pub fn from_vars<K, V>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Option<Traces>, TelemetryError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut endpoint = None;
        let mut service_named = false;
        for (key, value) in vars {
            match key.as_ref() {
                OTLP_ENDPOINT if !value.as_ref().is_empty() => {
                    endpoint = Some(value.as_ref().to_owned())
                }
                "OTEL_SERVICE_NAME" => service_named = true,
                "OTEL_RESOURCE_ATTRIBUTES" if value.as_ref().contains("service.name=") => {
                    service_named = true
                }
                _ => {}
            }
        }
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        match reqwest::Url::parse(&endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => return Err(TelemetryError::InvalidEndpoint),
        }
        // The exporter reads the endpoint from the environment and adds /v1/traces.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        let mut resource = Resource::builder();
        if !service_named {
            resource = resource.with_service_name("otp-relay");
        }
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build();
        Ok(Some(Traces(provider)))
    }

    /// Sends the spans still queued and stops the exporter's thread.
    pub fn shutdown(self) {
        if let Err(error) = self.0.shutdown() {
            tracing::warn!(%error, "could not send the last traces");
        }
    }
}

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
    subscriber_with_traces(format, filter, writer, None)
}

/// [`subscriber`], with its spans also sent to `traces`.
fn subscriber_with_traces<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
    traces: Option<&Traces>,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = traces
        .map(|traces| tracing_opentelemetry::layer().with_tracer(traces.0.tracer("otp-relay")));
    let registry = Registry::default().with(filter).with(otel);
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

/// Installs the process-wide subscriber, writing to standard output and sending spans
/// to `traces`. With `traces`, the W3C trace context is read from requests and written
/// into provider calls.
pub fn init(format: LogFormat, filter: &str, traces: Option<&Traces>) {
    use tracing_subscriber::util::SubscriberInitExt;
    if traces.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    // Fails only when a subscriber is already installed, which then keeps logging.
    let _ = subscriber_with_traces(format, filter, std::io::stdout, traces).try_init();
}
