//! What the logs may never hold: the code, the text, the full number.

use otp_relay_providers::ProviderError;
use serde_json::json;

use crate::helpers::{captured_logs_without_timestamps, RecordingProvider, TestApp};

#[tokio::test]
async fn logs_hold_neither_code_nor_text_nor_full_number() {
    let accepting = TestApp::builder().spawn().await;
    let failing = TestApp::builder()
        .provider(RecordingProvider::failing_with(
            ProviderError::InvalidRecipient {
                detail: "code 21211".into(),
            },
        ))
        .spawn()
        .await;
    let sent = json!({"mobile": "+55 21 98765-4321", "totp": "Seu codigo secreto 91827364 vale 5 minutos"});
    let refused = json!({"mobile": "+44 7911 123456", "totp": "Other secret words 56473829"});

    let ok = accepting.post_json("/api/sms", &sent).await;
    let failed = failing.post_json("/api/sms", &refused).await;

    assert_eq!(ok.status(), 200);
    assert_eq!(failed.status(), 422);
    let ok_id = ok.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed_id = failed.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let logs = captured_logs_without_timestamps();
    // The events were captured, so their absence below means something.
    for expected in [
        ok_id.as_str(),
        failed_id.as_str(),
        "+55219*****21",
        "+44791*****56",
    ] {
        assert!(logs.contains(expected), "{expected} should be logged");
    }
    for secret in [
        "91827364",
        "56473829",
        "secreto",
        "secret words",
        "5521987654321",
        "447911123456",
    ] {
        assert!(!logs.contains(secret), "the logs contain {secret:?}");
    }
}
