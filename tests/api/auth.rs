//! Caller access: API keys, allowed networks, trusted proxies.

use crate::helpers::{problem, TestApp};

const BODY: &str = r#"{"mobile": "+5511966191717", "totp": "Your code is 246810"}"#;

async fn send(app: &TestApp, headers: &[(&str, &str)]) -> reqwest::Response {
    send_body(app, headers, BODY.to_owned()).await
}

async fn send_body(app: &TestApp, headers: &[(&str, &str)], body: String) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/sms"))
        .header("Content-Type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn api_keys_are_required_and_checked() {
    let app = TestApp::builder()
        .env(&[("AUTH_API_KEYS", "first-key, second-key")])
        .spawn()
        .await;

    let missing = send(&app, &[]).await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    problem(missing, 401, "unauthorized").await;
    problem(
        send(&app, &[("Authorization", "Bearer wrong-key")]).await,
        401,
        "unauthorized",
    )
    .await;
    problem(
        send(&app, &[("X-API-Key", "first-key-but-longer")]).await,
        401,
        "unauthorized",
    )
    .await;
    assert!(app.recorder().received().is_empty());

    assert_eq!(
        send(&app, &[("Authorization", "Bearer first-key")])
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&app, &[("Authorization", "bearer second-key")])
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&app, &[("X-API-Key", "second-key")]).await.status(),
        200
    );
    assert_eq!(app.recorder().received().len(), 3);
}

#[tokio::test]
async fn allowed_networks_admit_callers_without_headers() {
    let allowed = TestApp::builder()
        .env(&[("AUTH_ALLOWED_CIDRS", "127.0.0.0/8")])
        .spawn()
        .await;
    let elsewhere = TestApp::builder()
        .env(&[("AUTH_ALLOWED_CIDRS", "10.0.0.0/8,192.168.7.7")])
        .spawn()
        .await;

    assert_eq!(send(&allowed, &[]).await.status(), 200);
    problem(send(&elsewhere, &[]).await, 403, "forbidden").await;
    assert!(elsewhere.recorder().received().is_empty());
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let behind_proxy = TestApp::builder()
        .env(&[
            ("AUTH_ALLOWED_CIDRS", "10.0.0.0/8"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ])
        .spawn()
        .await;
    let no_proxy = TestApp::builder()
        .env(&[("AUTH_ALLOWED_CIDRS", "10.0.0.0/8")])
        .spawn()
        .await;

    assert_eq!(
        send(&behind_proxy, &[("X-Forwarded-For", "10.20.30.40")])
            .await
            .status(),
        200
    );
    problem(
        send(
            &behind_proxy,
            &[("X-Forwarded-For", "10.20.30.40, 203.0.113.5")],
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // The header means nothing from a peer that is not a trusted proxy.
    problem(
        send(&no_proxy, &[("X-Forwarded-For", "10.20.30.40")]).await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn access_can_be_disabled_on_purpose() {
    let app = TestApp::builder()
        .env(&[("AUTH_DISABLED", "true"), ("AUTH_API_KEYS", "unused")])
        .spawn()
        .await;

    assert_eq!(send(&app, &[]).await.status(), 200);
}

#[tokio::test]
async fn a_forwarded_for_line_written_by_the_client_does_not_count() {
    let app = TestApp::builder()
        .env(&[
            ("AUTH_ALLOWED_CIDRS", "10.0.0.0/8"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ])
        .spawn()
        .await;

    // The client's own line first, then the one the proxy appended: two header lines.
    let spoofed = send(
        &app,
        &[
            ("X-Forwarded-For", "10.1.2.3"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    )
    .await;
    problem(spoofed, 403, "forbidden").await;
    let honest = send(
        &app,
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-For", "10.1.2.3"),
        ],
    )
    .await;
    assert_eq!(honest.status(), 200);
    assert_eq!(app.recorder().received().len(), 1);
}

#[tokio::test]
async fn an_unreadable_hop_is_not_taken_for_the_proxy() {
    // The proxy's own network is allowed: a hop mistaken for the proxy would get in.
    let app = TestApp::builder()
        .env(&[
            ("AUTH_ALLOWED_CIDRS", "127.0.0.0/8"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ])
        .spawn()
        .await;

    for hop in ["junk", "203.0.113.9:4711", "[2001:db8::1]:4711", ""] {
        problem(
            send(&app, &[("X-Forwarded-For", hop)]).await,
            403,
            "forbidden",
        )
        .await;
    }
    // RFC 7239 `Forwarded` is not read: from a proxy, it means an unknown client.
    problem(
        send(&app, &[("Forwarded", "for=127.0.0.1")]).await,
        403,
        "forbidden",
    )
    .await;
    assert!(app.recorder().received().is_empty());
    // The proxy itself, forwarding no one.
    assert_eq!(send(&app, &[]).await.status(), 200);
}

#[tokio::test]
async fn ipv4_callers_of_a_dual_stack_listener_match_ipv4_networks() {
    // Bound to [::], an IPv4 peer arrives as ::ffff:127.0.0.1.
    let app = TestApp::builder()
        .env(&[
            ("BIND_ADDR", "[::]:0"),
            ("AUTH_ALLOWED_CIDRS", "127.0.0.0/8"),
        ])
        .spawn()
        .await;
    let behind_proxy = TestApp::builder()
        .env(&[
            ("BIND_ADDR", "[::]:0"),
            ("AUTH_ALLOWED_CIDRS", "10.0.0.0/8"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ])
        .spawn()
        .await;
    assert!(app.address.starts_with("http://127.0.0.1:"), "over IPv4");

    assert_eq!(send(&app, &[]).await.status(), 200);
    assert_eq!(
        send(&behind_proxy, &[("X-Forwarded-For", "::ffff:10.1.2.3")])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn ipv6_clients_share_the_per_client_limit_of_their_64() {
    let app = TestApp::builder()
        .env(&[
            ("AUTH_DISABLED", "true"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("RATE_LIMIT_PER_CLIENT", "1/1h"),
        ])
        .spawn()
        .await;
    let app = &app;
    let from = |client: &'static str, number: &'static str| {
        let body = format!(r#"{{"mobile": "{number}", "totp": "Code 5555"}}"#);
        async move { send_body(app, &[("X-Forwarded-For", client)], body).await }
    };

    assert_eq!(
        from("2001:db8:1:2::a", "+5511966191717").await.status(),
        200
    );
    problem(
        from("2001:db8:1:2:ffff::b", "+5511966191718").await,
        429,
        "rate_limited",
    )
    .await;
    assert_eq!(
        from("2001:db8:1:3::a", "+5511966191719").await.status(),
        200,
        "another /64 has its own allowance"
    );
}
