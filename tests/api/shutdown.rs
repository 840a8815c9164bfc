//! The binary itself: a SIGTERM or a SIGINT (Ctrl-C) stops it accepting connections,
//! and a send in flight still gets its answer before the process exits 0.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::oneshot;

use crate::fakes::TWILIO_SID;
use crate::helpers::serve_binary;

/// A one-request Twilio stand-in: says when the request arrived, answers 201 when told.
async fn held_twilio() -> (String, oneshot::Receiver<()>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (arrived_tx, arrived) = oneshot::channel();
    let (release, release_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        // Read up to the end of the form body (the last field is ValidityPeriod).
        while !String::from_utf8_lossy(&request).contains("ValidityPeriod=") {
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buffer[..n]);
        }
        arrived_tx.send(()).unwrap();
        release_rx.await.unwrap();
        let body = format!(
            r#"{{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","account_sid":"{TWILIO_SID}"}}"#
        );
        let reply = format!(
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(reply.as_bytes()).await.unwrap();
    });
    (address, arrived, release)
}

#[tokio::test]
async fn sigterm_finishes_the_send_in_flight_then_exits() {
    stop_with_a_send_in_flight("-TERM").await;
}

#[tokio::test]
async fn sigint_finishes_the_send_in_flight_then_exits() {
    stop_with_a_send_in_flight("-INT").await;
}

/// Starts the binary, holds a send at the provider, sends `signal` (a `kill` option),
/// and checks that the listener closes, the send is answered 200 and the exit is 0.
async fn stop_with_a_send_in_flight(signal: &str) {
    let (twilio, arrived, release) = held_twilio().await;
    let (mut child, port) = serve_binary(&[
        ("PROVIDERS", "twilio"),
        ("AUTH_DISABLED", "true"),
        ("TWILIO_ACCOUNT_SID", TWILIO_SID),
        ("TWILIO_AUTH_TOKEN", "fake-token"),
        ("TWILIO_FROM", "+14155550100"),
        ("TWILIO_BASE_URL", &twilio),
    ])
    .await;
    let url = format!("http://127.0.0.1:{port}");

    let in_flight = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{url}/api/sms"))
            .header("Content-Type", "application/json")
            .body(r#"{"mobile": "+5511966191717", "totp": "Your code is 135246"}"#)
            .send(),
    );
    arrived.await.unwrap();
    let status = Command::new("kill")
        .args([signal, &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());

    // New connections are refused while the send in flight goes on. Nothing announces
    // the listener's closing, so try until it is refused (bounded).
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the listener closed");
    release.send(()).unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the send in flight was answered");
    assert_eq!(response.status(), 200);
    let exit = child.wait().await.unwrap();
    assert!(exit.success(), "{exit:?}");
}
