//! The send endpoint: what real callers post, and what it refuses.

use serde_json::json;

use crate::helpers::{problem, TestApp};

/// Exactly what the QIAM extension writes: Gson pretty-printing, `used: false`.
const QIAM_ENGLISH: &str = "{\n  \"mobile\": \"+5511966191717\",\n  \"totp\": \"Your SMS code is 123456 and is valid for 5 minutes.\",\n  \"used\": false\n}";

#[tokio::test]
async fn the_qiam_english_body_is_sent_once_with_its_text_and_code() {
    let app = TestApp::builder().spawn().await;

    let response = app.post_raw("/api/sms", QIAM_ENGLISH).await;

    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let received = app.recorder().received();
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.to, "+5511966191717");
    assert_eq!(
        message.text,
        "Your SMS code is 123456 and is valid for 5 minutes."
    );
    assert_eq!(message.code.as_deref(), Some("123456"));
    assert_eq!(body["id"], message.id.as_str());
    assert_eq!(message.id.len(), 26, "a ULID");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["channel"], "sms");
    assert_eq!(body["provider"], "recorder");
    assert_eq!(body["provider_message_id"], format!("rec-{}", message.id));
    assert_eq!(
        body["attempts"],
        json!([{"provider": "recorder", "outcome": "sent", "code": null}])
    );
}

#[tokio::test]
async fn a_pt_br_body_in_latin1_bytes_reaches_the_provider_as_unicode() {
    let app = TestApp::builder().spawn().await;
    // "é" and "á" as the single bytes DataOutputStream.writeBytes leaves of them.
    let mut body = b"{\n  \"mobile\": \"+5511966191717\",\n  \"totp\": \"Seu codigo SMS ".to_vec();
    body.extend_from_slice(b"\xe9 654321 e v\xe1lido por 5 minutos.\",\n  \"used\": false\n}");
    assert!(
        std::str::from_utf8(&body).is_err(),
        "the body must be invalid UTF-8"
    );

    let response = app.post_raw("/api/sms", body).await;

    assert_eq!(response.status().as_u16(), 200);
    let received = app.recorder().received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].text,
        "Seu codigo SMS é 654321 e válido por 5 minutos."
    );
    assert_eq!(received[0].code.as_deref(), Some("654321"));
}

#[tokio::test]
async fn gson_unicode_escapes_are_decoded() {
    let app = TestApp::builder().spawn().await;
    let body = "{\n  \"mobile\": \"+5511966191717\",\n  \"totp\": \"code \\u003d 778899 \\u003cvalid\\u003e \\u0026 \\u0027ok\\u0027\",\n  \"used\": false\n}";

    let response = app.post_raw("/api/sms", body).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        app.recorder().received()[0].text,
        "code = 778899 <valid> & 'ok'"
    );
}

#[tokio::test]
async fn a_bare_code_is_rendered_through_the_template() {
    let app = TestApp::builder()
        .env(&[("MESSAGE_TEMPLATE", "Login code {code}. Do not share it.")])
        .spawn()
        .await;

    let response = app
        .post_json(
            "/api/sms",
            &json!({"mobile": "+5511966191717", "totp": "32232", "used": false}),
        )
        .await;

    assert_eq!(response.status().as_u16(), 200);
    let received = app.recorder().received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].text, "Login code 32232. Do not share it.");
    assert_eq!(received[0].code.as_deref(), Some("32232"));
}

#[tokio::test]
async fn every_mobile_form_is_normalized_to_e164() {
    let international = TestApp::builder().spawn().await;
    let national = TestApp::builder()
        .env(&[("DEFAULT_REGION", "BR")])
        .spawn()
        .await;
    let cases = [
        (&international, "+5511966191717"),
        (&international, "+55 11 96619-1717"),
        (&international, "005511966191717"),
        (&international, "5511966191717"),
        (&national, "(11) 96619-1717"),
        (&national, "11 96619 1717"),
    ];
    for (app, mobile) in cases {
        let before = app.recorder().received().len();
        let response = app
            .post_json("/api/sms", &json!({"mobile": mobile, "totp": "Code 4321"}))
            .await;
        assert_eq!(response.status().as_u16(), 200, "{mobile}");
        let received = app.recorder().received();
        assert_eq!(received.len(), before + 1, "{mobile}");
        assert_eq!(received[before].to, "+5511966191717", "{mobile}");
    }
}

#[tokio::test]
async fn the_canonical_path_takes_channel_message_code_and_ttl() {
    let app = TestApp::builder().spawn().await;

    let response = app
        .post_json(
            "/v1/messages",
            &json!({
                "mobile": "+14155552671",
                "message": "Your Acme code: 5150",
                "code": "5150",
                "channel": "whatsapp",
                "ttl": 120,
                "extra": {"ignored": true}
            }),
        )
        .await;

    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["channel"], "whatsapp");
    let received = app.recorder().received();
    assert_eq!(received[0].to, "+14155552671");
    assert_eq!(received[0].channel, otp_relay_providers::Channel::Whatsapp);
    assert_eq!(received[0].text, "Your Acme code: 5150");
    assert_eq!(received[0].code.as_deref(), Some("5150"));
}

#[tokio::test]
async fn refused_bodies_get_problem_details_and_send_nothing() {
    let app = TestApp::builder().spawn().await;
    let big_text = "x".repeat(20 * 1024);
    let cases: Vec<(String, u16, &str)> = vec![
        (
            "{\"mobile\": \"+5511966191717\", \"totp\": ".into(),
            400,
            "malformed_json",
        ),
        ("not json at all".into(), 400, "malformed_json"),
        ("{\"totp\": \"123456\"}".into(), 400, "missing_mobile"),
        (
            "{\"mobile\": \"abc\", \"totp\": \"123456\"}".into(),
            422,
            "invalid_mobile",
        ),
        (
            "{\"mobile\": \"+123\", \"totp\": \"123456\"}".into(),
            422,
            "invalid_mobile",
        ),
        (
            json!({"mobile": "+5511966191717", "totp": big_text}).to_string(),
            413,
            "body_too_large",
        ),
        (
            "{\"mobile\": \"+5511966191717\", \"totp\": \"\"}".into(),
            422,
            "invalid_text",
        ),
        (
            "{\"mobile\": \"+5511966191717\"}".into(),
            422,
            "invalid_text",
        ),
        (
            json!({"mobile": "+5511966191717", "totp": "y".repeat(1601)}).to_string(),
            422,
            "invalid_text",
        ),
        (
            "{\"mobile\": \"+5511966191717\", \"totp\": \"1234\", \"channel\": \"fax\"}".into(),
            422,
            "invalid_channel",
        ),
        (
            "{\"mobile\": \"+5511966191717\", \"totp\": \"1234\", \"ttl\": 0}".into(),
            422,
            "invalid_ttl",
        ),
    ];
    for (body, status, code) in cases {
        let response = app.post_raw("/api/sms", body.clone()).await;
        let problem = problem(response, status, code).await;
        assert_eq!(problem["retryable"], false, "{body:.80}");
    }
    assert!(app.recorder().received().is_empty());
}

#[tokio::test]
async fn a_body_streamed_past_the_limit_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::builder().spawn().await;
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    // Chunked, with no Content-Length: the limit must hold while reading the stream.
    let head = "POST /api/sms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..40 {
        let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
        // The server may answer and close before the whole body is written.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;

    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let app = TestApp::builder().spawn().await;

    let response = app.client.get(app.url("/nowhere")).send().await.unwrap();
    problem(response, 404, "not_found").await;

    let response = app.client.get(app.url("/api/sms")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = TestApp::builder().spawn().await;

    let ok = app.post_raw("/api/sms", QIAM_ENGLISH).await;
    let refused = app.post_raw("/api/sms", "{}").await;

    for response in [ok, refused] {
        let id = response
            .headers()
            .get("x-request-id")
            .expect("x-request-id");
        assert!(!id.is_empty());
    }
}

mod provider_failures {
    use std::time::Duration;

    use otp_relay_providers::ProviderError;
    use serde_json::json;

    use crate::helpers::{problem, RecordingProvider, TestApp};

    const BODY: &str = r#"{"mobile": "+5511966191717", "totp": "Your code is 135790"}"#;

    async fn answer_for(error: ProviderError) -> reqwest::Response {
        let app = TestApp::builder()
            .provider(RecordingProvider::failing_with(error))
            .spawn()
            .await;
        app.post_raw("/api/sms", BODY).await
    }

    #[tokio::test]
    async fn a_recipient_problem_is_422_with_the_provider_code() {
        let response = answer_for(ProviderError::InvalidRecipient {
            detail: "21211".into(),
        })
        .await;
        let body = problem(response, 422, "invalid_recipient").await;
        assert_eq!(
            body["attempts"],
            json!([{"provider": "recorder", "outcome": "failed", "code": "invalid_recipient"}])
        );
        assert_eq!(body["id"].as_str().map(str::len), Some(26));
    }

    #[tokio::test]
    async fn another_permanent_rejection_is_502() {
        let response = answer_for(ProviderError::Rejected {
            detail: "blocked content".into(),
        })
        .await;
        problem(response, 502, "provider_rejected").await;
    }

    #[tokio::test]
    async fn a_wait_longer_than_the_deadline_is_503_with_the_providers_retry_after() {
        let provider = RecordingProvider::failing_with(ProviderError::RateLimited {
            detail: "slow down".into(),
            retry_after: Some(Duration::from_secs(30)),
        });
        let app = TestApp::builder().provider(provider.clone()).spawn().await;

        let response = app.post_raw("/api/sms", BODY).await;

        assert_eq!(response.headers()["retry-after"], "30");
        let body = problem(response, 503, "no_provider_available").await;
        assert_eq!(body["retryable"], true);
        assert_eq!(
            provider.received().len(),
            1,
            "no retry that cannot finish in time"
        );
    }

    #[tokio::test]
    async fn a_failure_another_provider_may_overcome_moves_to_the_next() {
        let down = RecordingProvider::new(
            "first",
            Some(ProviderError::Unavailable {
                detail: "503".into(),
            }),
        );
        let up = RecordingProvider::new("second", None);
        let app = TestApp::builder()
            .providers(vec![down.clone(), up.clone()])
            .spawn()
            .await;

        let response = app.post_raw("/api/sms", BODY).await;

        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["provider"], "second");
        assert_eq!(
            body["attempts"],
            json!([
                {"provider": "first", "outcome": "failed", "code": "unavailable"},
                {"provider": "second", "outcome": "sent", "code": null}
            ])
        );
        assert_eq!(down.received().len(), 1);
        assert_eq!(up.received().len(), 1);
    }
}
