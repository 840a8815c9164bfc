//! The shared HTTP client and the helpers every adapter uses to read replies.

use std::time::Duration;

use reqwest::StatusCode;
use tracing::Instrument;

use crate::ProviderError;

/// `User-Agent` sent to every provider.
pub const USER_AGENT: &str = concat!("otp-relay/", env!("CARGO_PKG_VERSION"));

/// Most bytes of an unexpected reply kept for the log.
pub const MAX_REPLY_DETAIL: usize = 512;

/// The one client every adapter shares: pooled keep-alive connections, rustls, and a
/// whole-request timeout of `timeout` (`PROVIDER_TIMEOUT`). Connecting has its own,
/// shorter bound, so that a provider that cannot be reached is told apart from one that
/// took the request and did not answer (see [`transport_error`]).
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client builds with rustls and no system configuration")
}

/// Maps a failure to get any reply at all. The URL is dropped from the message: some
/// providers (the Telegram Bot API) carry the token in the path.
///
/// A connect timeout is a connect error (reqwest flags it both `is_connect` and
/// `is_timeout`): no byte of the request left, so it is [`ProviderError::Connect`] and
/// safe to retry. Only a timeout after the connection was made is
/// [`ProviderError::Timeout`], whose outcome is unknown.
pub fn transport_error(error: reqwest::Error) -> ProviderError {
    let error = error.without_url();
    if error.is_connect() {
        ProviderError::Connect {
            detail: error.to_string(),
        }
    } else if error.is_timeout() {
        ProviderError::Timeout
    } else {
        ProviderError::Unavailable {
            detail: error.to_string(),
        }
    }
}

/// Most bytes of a provider reply read; replies are small, and a runaway one must not
/// cost memory.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Reads a reply body, keeping at most [`MAX_REPLY_BYTES`] (a longer one is cut and
/// will fail to parse as the provider's shape).
pub async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        let room = MAX_REPLY_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_REPLY_BYTES {
            break;
        }
    }
    Ok(body)
}

/// A provider's answer: its status, `Retry-After` and (bounded) body.
#[derive(Debug)]
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Sends a request and reads the answer within [`MAX_REPLY_BYTES`]; failing to get one
/// is a [`transport_error`]. The call is a span of its own (a client span in a trace),
/// and carries the trace context to the provider as W3C `traceparent` when tracing is
/// on.
pub async fn exchange(request: reqwest::RequestBuilder) -> Result<Reply, ProviderError> {
    let (client, request) = request.build_split();
    // A request that cannot even be built (a credential a header cannot hold) never
    // left: our configuration's fault, not the provider's.
    let mut request = request.map_err(|error| ProviderError::Misconfigured {
        code: "request_invalid".into(),
        detail: error.without_url().to_string(),
    })?;
    // The host only: some providers (the Telegram Bot API) carry the token in the path.
    let span = tracing::info_span!(
        "provider call",
        otel.kind = "client",
        http.request.method = %request.method(),
        server.address = request.url().host_str().unwrap_or_default(),
        http.response.status_code = tracing::field::Empty,
    );
    inject_trace_context(&span, request.headers_mut());
    let response = client
        .execute(request)
        .instrument(span.clone())
        .await
        .map_err(transport_error)?;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    let retry_after = retry_after(response.headers());
    let body = match read_body(response).await {
        Ok(body) => body,
        // A 2xx is the provider's acceptance even when its body is lost on the way (the
        // connection dropped mid-body): an empty body reads as an unreadable acceptance,
        // never as a failure to fail over from, which would send a second code.
        Err(error) if status.is_success() => {
            tracing::warn!(status = status.as_u16(), %error, "accepted, but the reply body was lost");
            Vec::new()
        }
        Err(error) => return Err(error),
    };
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

/// Writes the trace context of `span` into `headers` (`traceparent`, `tracestate`),
/// through the process's propagator: none is set, and nothing is written, unless
/// traces are exported.
fn inject_trace_context(span: &tracing::Span, headers: &mut reqwest::header::HeaderMap) {
    use reqwest::header::{HeaderName, HeaderValue};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct Headers<'a>(&'a mut reqwest::header::HeaderMap);
    impl opentelemetry::propagation::Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Headers(headers))
    });
}

/// The receipt for a message a provider accepted (it answered 2xx, or its own success
/// marker) whose reply could not be read or carries no id: the message is with the
/// provider, so it is a receipt (no id, `queued`), never a failure that would send the
/// code a second time through another provider. Delivery reports cannot be matched to it.
pub fn unreadable_acceptance(provider: &str) -> crate::Receipt {
    crate::Receipt::new(provider, None, crate::DeliveryStatus::Queued, None)
}

/// A reply that is not of the shape the provider documents.
pub fn protocol_error(status: StatusCode, body: &[u8]) -> ProviderError {
    ProviderError::Protocol {
        status: status.as_u16(),
        detail: body_detail(body),
    }
}

/// A reply body made safe for an error detail: cut to [`MAX_REPLY_DETAIL`] bytes, scrubbed.
pub fn body_detail(body: &[u8]) -> String {
    let cut = &body[..body.len().min(MAX_REPLY_DETAIL)];
    scrub(&String::from_utf8_lossy(cut))
}

/// Whether the HTTP status alone decides what a failed reply means, whatever its body
/// says: 429 (throttled, not processed) and 5xx (outcome unknown).
pub fn status_decides(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The error for a failed reply that no rule of the provider's explained (each provider
/// checks its own documented errors first): 429 is [`ProviderError::RateLimited`] with
/// the reply's `Retry-After`, 5xx is [`ProviderError::Unavailable`] (both with `detail`),
/// anything else is a [`protocol_error`] showing `body`.
pub fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    detail: String,
    body: &[u8],
) -> ProviderError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        ProviderError::RateLimited {
            detail,
            retry_after,
        }
    } else if status.is_server_error() {
        ProviderError::Unavailable { detail }
    } else {
        protocol_error(status, body)
    }
}

/// Provider text made safe to log and return: runs of four or more digits (numbers,
/// codes) become `****`, and the text is cut to [`MAX_REPLY_DETAIL`] bytes.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REPLY_DETAIL));
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= 4 {
            out.push_str("****");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut out);
        if out.len() + c.len_utf8() > MAX_REPLY_DETAIL {
            break;
        }
        out.push(c);
    }
    flush(&mut digits, &mut out);
    out
}

/// The longest wait a provider's delay may ask for: a `Retry-After`, a Telegram
/// `FLOOD_WAIT_<s>` or `retry_after`. It only lengthens waits and `Retry-After` answers;
/// beyond an hour the number is noise, and unbounded it would overflow time arithmetic.
pub const MAX_PROVIDER_DELAY: Duration = Duration::from_secs(3600);

/// A provider's delay in seconds, clamped to [`MAX_PROVIDER_DELAY`]: the one door every
/// delay read from a provider goes through.
pub fn provider_delay(seconds: u64) -> Duration {
    Duration::from_secs(seconds.min(MAX_PROVIDER_DELAY.as_secs()))
}

/// A provider's delay written as whole seconds (`"30"`), clamped by [`provider_delay`];
/// `None` when it is not only digits.
pub fn delay_seconds(text: &str) -> Option<Duration> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for a u64 is still "a very long time".
    Some(text.parse().map_or(MAX_PROVIDER_DELAY, provider_delay))
}

/// A `Retry-After` header (RFC 9110 10.2.3): delta-seconds or an HTTP-date, clamped by
/// [`provider_delay`]. A date in the past means no wait.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, std::time::SystemTime::now())
}

/// A `Retry-After` value read at `now`.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(wait) = delay_seconds(value) {
        return Some(wait);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(now).unwrap_or_default();
    Some(wait.min(MAX_PROVIDER_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_numbers_and_codes_and_bounds_length() {
        assert_eq!(
            scrub("The 'To' number +5511966191717 is not valid; code 123456, ref 42"),
            "The 'To' number +**** is not valid; code ****, ref 42"
        );
        assert!(scrub(&"é".repeat(1000)).len() <= MAX_REPLY_DETAIL);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_clamps_both() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        for huge in ["18446744073709551615", "99999999999999999999999", "86400"] {
            assert_eq!(
                parse_retry_after(huge, now),
                Some(MAX_PROVIDER_DELAY),
                "{huge}"
            );
        }
        // 2015-10-21 07:28:00 GMT is `now`; two minutes later, a year later, earlier.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Fri, 21 Oct 2016 07:28:00 GMT", now),
            Some(MAX_PROVIDER_DELAY)
        );
        assert_eq!(
            parse_retry_after("Tue, 20 Oct 2015 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        for junk in ["", "-1", "1.5", "soon", "Wed, 99 Oct 2015 07:30:00 GMT"] {
            assert_eq!(parse_retry_after(junk, now), None, "{junk}");
        }
        assert_eq!(provider_delay(u64::MAX), MAX_PROVIDER_DELAY);
    }

    #[test]
    fn status_error_reads_429_and_5xx_from_the_status_and_the_rest_as_protocol() {
        let wait = Some(Duration::from_secs(7));
        assert_eq!(
            status_error(
                StatusCode::TOO_MANY_REQUESTS,
                wait,
                "slow down".into(),
                b"x"
            ),
            ProviderError::RateLimited {
                detail: "slow down".into(),
                retry_after: wait,
            }
        );
        for status in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY] {
            assert_eq!(
                status_error(status, wait, "down".into(), b"x"),
                ProviderError::Unavailable {
                    detail: "down".into()
                }
            );
            assert!(status_decides(status));
        }
        for status in [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::UNAUTHORIZED,
        ] {
            assert_eq!(
                status_error(status, wait, "ignored".into(), b"call 5511966191717"),
                ProviderError::Protocol {
                    status: status.as_u16(),
                    detail: "call ****".into(),
                }
            );
            assert!(!status_decides(status));
        }
        assert!(status_decides(StatusCode::TOO_MANY_REQUESTS));
    }

    #[test]
    fn protocol_error_keeps_status_and_a_bounded_body() {
        let error = protocol_error(StatusCode::OK, &[b'x'; 2000]);
        match error {
            ProviderError::Protocol { status, detail } => {
                assert_eq!(status, 200);
                assert_eq!(detail.len(), MAX_REPLY_DETAIL);
            }
            other => panic!("{other:?}"),
        }
    }
}
