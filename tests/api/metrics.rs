//! `/metrics`: the counters and histograms operators rely on, with safe labels.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn sends_and_failures_show_up_with_their_labels() {
    let app = TestApp::builder()
        .env(&[
            ("RATE_LIMIT_PER_NUMBER", "1/1h"),
            ("BLOCKED_COUNTRIES", "CU"),
        ])
        .spawn()
        .await;
    let send = |mobile: &str, text: &str| {
        let body = json!({"mobile": mobile, "totp": text}).to_string();
        app.post_raw("/api/sms", body)
    };

    assert_eq!(send("+5511987650001", "Code 7411").await.status(), 200);
    assert_eq!(send("+5511987650001", "Code 7412").await.status(), 429);
    assert_eq!(send("not a number", "Code 7413").await.status(), 422);
    assert_eq!(send("+53 5 234 5678", "Code 7414").await.status(), 403);
    let metrics = app.metrics().await;

    for expected in [
        r#"otp_relay_http_requests_total{route="/api/sms",status="200",code="ok"}"#,
        r#"otp_relay_http_requests_total{route="/api/sms",status="429",code="rate_limited"}"#,
        r#"otp_relay_http_requests_total{route="/api/sms",status="422",code="invalid_mobile"}"#,
        r#"otp_relay_provider_attempts_total{provider="recorder",channel="sms",outcome="sent"}"#,
        r#"otp_relay_provider_duration_seconds_bucket{provider="recorder",le="0.005"}"#,
        r#"otp_relay_send_duration_seconds_bucket{outcome="ok",le="0.005"}"#,
        r#"otp_relay_send_duration_seconds_count{outcome="rate_limited"}"#,
        r#"otp_relay_refusals_total{reason="rate_limit_number"}"#,
        r#"otp_relay_refusals_total{reason="country_not_allowed"}"#,
        r#"otp_relay_circuit_state{provider="recorder"} 0"#,
        "otp_relay_sends_in_flight 0",
        "# TYPE otp_relay_http_requests_total counter",
        // The memory store's fill and its limit (the default 8 MiB), for sizing it.
        "# TYPE otp_relay_memory_store_bytes gauge",
        "\notp_relay_memory_store_bytes ",
        "otp_relay_memory_store_limit_bytes 8388608",
    ] {
        assert!(metrics.contains(expected), "missing {expected}\n{metrics}");
    }
    assert!(
        !metrics.contains("5511987650001") && !metrics.contains("+5511"),
        "no numbers as labels"
    );
}
