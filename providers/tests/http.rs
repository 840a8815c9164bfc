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
