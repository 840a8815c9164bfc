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
/// whole-request timeout of `timeout` (`PROVIDER_TIMEOUT`).
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
pub fn transport_error(error: reqwest::Error) -> ProviderError {
    let error = error.without_url();
    if error.is_timeout() {
        ProviderError::Timeout
    } else if error.is_connect() {
        ProviderError::Connect {
            detail: error.to_string(),
        }
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
    let mut request = request.map_err(transport_error)?;
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
    let body = read_body(response).await?;
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

/// A reply that is not of the shape the provider documents.
pub fn protocol_error(status: StatusCode, body: &[u8]) -> ProviderError {
    let cut = &body[..body.len().min(MAX_REPLY_DETAIL)];
    ProviderError::Protocol {
        status: status.as_u16(),
        detail: scrub(&String::from_utf8_lossy(cut)),
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

/// A `Retry-After` header given in seconds (the form providers use).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
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
