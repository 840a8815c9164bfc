//! The shared reply reader keeps memory bounded whatever a provider sends.

use otp_relay_providers::http;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn a_runaway_reply_is_cut_at_the_limit() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 3 * http::MAX_REPLY_BYTES]),
        )
        .mount(&server)
        .await;
    let small = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"ok\":true}"))
        .mount(&small)
        .await;
    let client = http::client(std::time::Duration::from_secs(5));

    let big = http::read_body(client.get(server.uri()).send().await.unwrap())
        .await
        .unwrap();
    let whole = http::read_body(client.get(small.uri()).send().await.unwrap())
        .await
        .unwrap();

    assert_eq!(big.len(), http::MAX_REPLY_BYTES);
    assert_eq!(whole, b"{\"ok\":true}");
}

/// A listener whose accept queue is full drops new SYNs, so connecting to it hangs
/// until the client's connect timeout: nothing was sent, and the error must say so
/// (`Connect`, safe to retry), not `Timeout` (outcome unknown).
#[tokio::test]
async fn a_connect_timeout_is_a_connect_error_not_a_response_timeout() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    // Never accepted: this one connection fills the queue of a zero backlog.
    let _filler = tokio::net::TcpStream::connect(address).await.unwrap();
    // The whole-request timeout is longer than the connect timeout (3 s at most).
    let client = http::client(std::time::Duration::from_secs(30));

    let error = http::exchange(client.get(format!("http://{address}/")))
        .await
        .unwrap_err();

    assert!(
        matches!(error, otp_relay_providers::ProviderError::Connect { .. }),
        "{error:?}"
    );
    assert!(error.is_safe_to_retry() && error.never_reached_provider());
    drop(listener);
}

/// A provider that accepted (201) but whose connection dropped in the middle of the
/// body: still an answer with the 2xx status, so the adapter reads an acceptance and
/// the dispatcher never fails over to send a second code.
#[tokio::test]
async fn a_2xx_whose_body_is_cut_off_is_still_an_answer() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).unwrap();
        stream
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"sid\":")
            .unwrap();
        // Dropped here: the 100 promised bytes never come.
    });
    let client = http::client(std::time::Duration::from_secs(5));

    let reply = http::exchange(client.post(format!("http://{address}/")))
        .await
        .expect("a 2xx is an answer");

    assert_eq!(reply.status.as_u16(), 201);
    assert!(reply.body.is_empty());
    server.join().unwrap();
}
