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
