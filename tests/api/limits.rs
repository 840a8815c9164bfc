//! HTTP limits, driven with raw TCP clients: slow and idle clients are dropped within the
//! configured bounds and hold nothing that others need; oversized heads and bodies are
//! refused.
//!
//! No assertion is about time: each test waits for the server to act (a response, a
//! closed connection) and has only a generous guard against hanging forever.

use std::time::Duration;

use otp_relay::config::HttpLimits;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

/// Far longer than any configured bound here: only a hung test reaches it.
const GUARD: Duration = Duration::from_secs(60);

fn short(limits: impl FnOnce(&mut HttpLimits)) -> HttpLimits {
    let mut http = HttpLimits::default();
    limits(&mut http);
    http
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.socket_address()).await.unwrap()
}

/// Writes `bytes` one per second until the server closes the connection; returns how
/// many it wrote.
async fn trickle(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>) -> usize {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    for (sent, byte) in bytes.iter().enumerate() {
        interval.tick().await;
        if writer.write_all(&[*byte]).await.is_err() {
            return sent;
        }
    }
    bytes.len()
}

/// Reads until the server closes the connection (a reset counts as closed).
async fn read_until_closed(reader: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether the server has already closed `stream`, without waiting.
fn closed_by_server(stream: &TcpStream) -> bool {
    let mut buffer = [0u8; 4096];
    loop {
        match stream.try_read(&mut buffer) {
            Ok(0) => return true,
            // A 408 written before the close: read on.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_dropped() {
    let app = TestApp::builder()
        .http_limits(short(|h| h.header_timeout = Duration::from_secs(1)))
        .spawn()
        .await;
    let (mut reader, writer) = connect(&app).await.into_split();
    let head = b"POST /api/sms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let writing = tokio::spawn(trickle(writer, head.to_vec()));

    let answer = tokio::time::timeout(GUARD, read_until_closed(&mut reader))
        .await
        .expect("the server closes the connection");

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let sent = writing.await.unwrap();
    assert!(
        sent < head.len(),
        "the whole head got through ({sent} bytes)"
    );
}

#[tokio::test]
async fn a_client_trickling_its_body_is_dropped() {
    let app = TestApp::builder()
        .http_limits(short(|h| h.body_timeout = Duration::from_secs(1)))
        .spawn()
        .await;
    let (mut reader, mut writer) = connect(&app).await.into_split();
    let body = json!({"mobile": "+5511966191717", "totp": "Code 4821"}).to_string();
    let head = format!(
        "POST /api/sms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let writing = tokio::spawn(trickle(writer, body.clone().into_bytes()));

    let answer = tokio::time::timeout(GUARD, read_until_closed(&mut reader))
        .await
        .expect("the server closes the connection");

    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(writing.await.unwrap() < body.len());
    assert!(app.recorder().received().is_empty());
}

#[tokio::test]
async fn a_body_still_arriving_holds_no_send_slot() {
    // One send at a time, and a client that takes its time over its body.
    let app = TestApp::builder()
        .env(&[("MAX_IN_FLIGHT", "1")])
        .http_limits(HttpLimits::default())
        .spawn()
        .await;
    let mut slow = connect(&app).await;
    let head = "POST /api/sms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 64\r\nExpect: 100-continue\r\n\r\n";
    slow.write_all(head.as_bytes()).await.unwrap();
    // The server answers 100 Continue as it hands the request to the handler.
    let mut buffer = [0u8; 64];
    let n = tokio::time::timeout(GUARD, slow.read(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buffer[..n])
    );
    slow.write_all(b"{").await.unwrap();

    let response = app
        .post_json(
            "/api/sms",
            &json!({"mobile": "+5511966191717", "totp": "Code 5930"}),
        )
        .await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = TestApp::builder()
        .http_limits(short(|h| h.keep_alive = Duration::from_secs(1)))
        .spawn()
        .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();

    let answer = tokio::time::timeout(GUARD, read_until_closed(&mut stream))
        .await
        .expect("the server closes the idle connection");

    // One answer, then the close: the connection was kept for a while, not forever.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");
}

#[tokio::test]
async fn five_hundred_idle_connections_do_not_stop_a_send() {
    let app = TestApp::builder().spawn().await;
    let mut idle = Vec::new();
    for i in 0..500 {
        let mut stream = connect(&app).await;
        // Some say nothing at all, some stop in the middle of a request line.
        if i % 2 == 1 {
            stream.write_all(b"POST /api/s").await.unwrap();
        }
        idle.push(stream);
    }

    let response = tokio::time::timeout(
        GUARD,
        app.post_json(
            "/api/sms",
            &json!({"mobile": "+5511966191717", "totp": "Code 6071"}),
        ),
    )
    .await
    .expect("the send is answered");

    assert_eq!(response.status(), 200);
    assert_eq!(app.recorder().received().len(), 1);
    drop(idle);
}

#[tokio::test]
async fn past_max_connections_new_clients_wait_for_a_slot() {
    let per_worker = 4;
    let app = TestApp::builder()
        .http_limits(short(|h| {
            h.max_connections_per_worker = per_worker;
            h.header_timeout = Duration::from_secs(1);
        }))
        .spawn()
        .await;
    // actix runs one worker per available CPU, each with its own connection limit.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut idle = Vec::new();
    for _ in 0..workers * per_worker {
        idle.push(connect(&app).await);
    }

    let mut late = connect(&app).await;
    late.write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = tokio::time::timeout(GUARD, read_until_closed(&mut late))
        .await
        .expect("the late client is served once a slot frees");

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // It was served only after the server dropped an idle connection to free a slot.
    assert!(
        idle.iter().any(closed_by_server),
        "no idle connection was closed before the late client was served"
    );
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let app = TestApp::builder().spawn().await;
    let limit = HttpLimits::default().max_header_bytes;

    let mut big = connect(&app).await;
    let head = format!(
        "GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(limit)
    );
    big.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut big).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    assert!(answer.contains("headers_too_large"), "{answer:.400}");

    // Within the size, but more headers than actix parses.
    let mut many = connect(&app).await;
    let mut head = String::from("GET /health/live HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..100 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    many.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut many).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    // Just under the limit is served.
    let mut fits = connect(&app).await;
    let head = format!(
        "GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(limit / 2)
    );
    fits.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut fits).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    let app = TestApp::builder().spawn().await;
    let mut stream = connect(&app).await;
    let head = "POST /api/sms HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 20000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();

    // Not a byte of the body is sent: the answer comes from the declared length alone.
    let answer = tokio::time::timeout(GUARD, read_until_closed(&mut stream))
        .await
        .expect("answered and closed");

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}
