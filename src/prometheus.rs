//! Prometheus metrics: what operators graph and alert on.
//!
//! Labels are routes, codes, providers, channels and outcomes: never a number, an id or
//! a text. The recorder is process-wide; every application in the process reports to it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "otp_relay_http_requests_total";
pub const SEND_DURATION: &str = "otp_relay_send_duration_seconds";
pub const PROVIDER_ATTEMPTS: &str = "otp_relay_provider_attempts_total";
pub const PROVIDER_DURATION: &str = "otp_relay_provider_duration_seconds";
pub const CIRCUIT_STATE: &str = "otp_relay_circuit_state";
pub const REFUSALS: &str = "otp_relay_refusals_total";
pub const IDEMPOTENT_REPLAYS: &str = "otp_relay_idempotent_replays_total";
pub const IN_FLIGHT: &str = "otp_relay_sends_in_flight";
pub const STORE_ERRORS: &str = "otp_relay_store_errors_total";

/// Latency buckets, in seconds: from a fast local provider to the deadline.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails when another recorder is installed, which then records instead.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by route, status and outcome code"
    );
    describe_histogram!(
        SEND_DURATION,
        Unit::Seconds,
        "Whole send time by outcome code"
    );
    describe_counter!(
        PROVIDER_ATTEMPTS,
        "Provider attempts by provider, channel and outcome"
    );
    describe_histogram!(
        PROVIDER_DURATION,
        Unit::Seconds,
        "Provider attempt time by provider"
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit per provider: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(REFUSALS, "Sends refused by a guard, by reason");
    describe_counter!(
        IDEMPOTENT_REPLAYS,
        "Repeated requests answered from the first send"
    );
    describe_gauge!(IN_FLIGHT, "Sends in progress");
    describe_counter!(STORE_ERRORS, "Failed state store operations by backend");
}

/// Seconds as the histograms record them.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
