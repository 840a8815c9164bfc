//! OpenTelemetry traces: one login followed from the caller's `traceparent` through
//! otp-relay to the provider, exported over OTLP/HTTP to a collector.

use std::time::Duration;

use serde_json::json;
use tokio::process::Child;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fakes::{mount_twilio, provider_vars, twilio_accepted, twilio_path};
use crate::helpers::serve_binary;

/// The caller's trace (W3C Trace Context's own example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The longest the exporter may take to deliver the spans.
const PATIENCE: Duration = Duration::from_secs(30);

async fn send_with_traceparent(port: u16) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/sms"))
        .header("Content-Type", "application/json")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .body(json!({"mobile": "+5511966191717", "totp": "Your code is 135246"}).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
}

/// Runs the binary with Twilio at `twilio` and `extra` variables.
async fn serve_with_twilio(twilio: &MockServer, extra: &[(&str, &str)]) -> (Child, u16) {
    let vars = provider_vars(&twilio.uri(), None);
    let mut vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    vars.extend_from_slice(extra);
    serve_binary(&vars).await
}

/// The `traceparent` Twilio received.
async fn traceparent_at(twilio: &MockServer) -> Option<String> {
    let requests = twilio.received_requests().await.unwrap_or_default();
    let request = requests
        .iter()
        .find(|r| r.url.path() == twilio_path())
        .expect("Twilio got the message");
    let header = request.headers.get("traceparent")?;
    Some(header.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_callers_trace_goes_on_to_the_provider_and_to_the_collector() {
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let endpoint = collector.uri();
    let dead_redis = format!("redis://127.0.0.1:{}", crate::server_process::free_port());
    let (_child, port) = serve_with_twilio(
        &twilio,
        // Export within 100 ms rather than the default 5 s.
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            // Store calls are traced too: nothing listens there, so each is a failed
            // call served from memory, and the send goes on.
            ("REDIS_URL", &dead_redis),
        ],
    )
    .await;

    send_with_traceparent(port).await;

    // The provider call is a new span of the caller's trace.
    let traceparent = traceparent_at(&twilio).await.expect("a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE_ID, "{traceparent}");
    assert_ne!(parts[2], CALLER_SPAN, "a span of otp-relay's own");

    // The collector gets otp-relay's spans in that trace, the provider call among them
    // (OTLP protobuf: ids as raw bytes, names as UTF-8).
    let trace_id: Vec<u8> = (0..TRACE_ID.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&TRACE_ID[i..i + 2], 16).unwrap())
        .collect();
    let exported = tokio::time::timeout(PATIENCE, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        loop {
            ticks.tick().await;
            let requests = collector.received_requests().await.unwrap_or_default();
            let bodies: Vec<&[u8]> = requests.iter().map(|r| r.body.as_slice()).collect();
            let found = |needle: &[u8]| {
                bodies
                    .iter()
                    .any(|body| body.windows(needle.len()).any(|w| w == needle))
            };
            // The HTTP call, the attempt it belongs to with its outcome, and the
            // shared-store calls.
            if found(&trace_id)
                && found(b"provider call")
                && found(b"provider attempt")
                && found(b"outcome")
                && found(b"store operation")
            {
                return requests;
            }
        }
    })
    .await
    .expect("the collector got the trace's spans");
    let request = &exported[0];
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/x-protobuf"
    );
    assert!(
        !exported
            .iter()
            .any(|r| r.body.windows(b"135246".len()).any(|w| w == b"135246")),
        "the code is in no span"
    );
}

#[tokio::test]
async fn without_an_otlp_endpoint_nothing_is_passed_to_providers() {
    let twilio = MockServer::start().await;
    mount_twilio(&twilio, twilio_accepted()).await;
    let (_child, port) = serve_with_twilio(&twilio, &[]).await;

    send_with_traceparent(port).await;

    assert_eq!(traceparent_at(&twilio).await, None);
}

#[tokio::test]
async fn a_bad_otlp_endpoint_stops_startup_naming_the_variable() {
    let vars = [
        ("BIND_ADDR", "127.0.0.1:0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    // Bounded: a binary that takes the value serves until it is killed.
    let output = tokio::time::timeout(PATIENCE, crate::helpers::run_binary(&[], &vars))
        .await
        .expect("the binary stopped at startup");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{stderr}");
}
