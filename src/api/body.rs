//! Reading request bodies the way real callers write them.
//!
//! The QIAM extension writes its JSON with `DataOutputStream.writeBytes`, which keeps
//! only the low byte of each character: a pt_BR message arrives as ISO-8859-1 bytes,
//! which is not valid UTF-8. Bodies are read as UTF-8 when they are, and as Windows-1252
//! (the WHATWG reading of ISO-8859-1) when they are not.

use std::borrow::Cow;
use std::time::Duration;

use actix_web::{http::header, web, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] without buffering it,
/// and a body that takes longer than `timeout` to arrive (a client trickling bytes
/// must not hold a connection, and what it waits for, indefinitely).
pub async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    timeout: Duration,
) -> Result<web::BytesMut, ApiError> {
    let too_large = ApiError::BodyTooLarge {
        limit: MAX_BODY_BYTES,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large);
    }
    let read = async {
        let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::MalformedBody(format!("could not read the body: {e}")))?;
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(timeout))?
}

/// The body as text: UTF-8 if it is, Windows-1252 if it is not. A UTF-8 byte order
/// mark is dropped.
pub fn decode_text(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0
        }
    }
}

/// Parses JSON text. The error names only the kind of problem and where: serde's own
/// messages may quote the body, which can hold a code or a number.
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Syntax => "syntax error",
            Category::Eof => "unexpected end of input",
            Category::Data => "a field has the wrong type",
            Category::Io => "read error",
        };
        ApiError::MalformedBody(format!("{what} at line {} column {}", e.line(), e.column()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_utf8_is_kept_and_latin1_is_read_as_such() {
        assert_eq!(decode_text("Seu código é 1".as_bytes()), "Seu código é 1");
        assert_eq!(decode_text(b"Seu c\xf3digo \xe9 1"), "Seu código é 1");
        assert_eq!(decode_text(b"\xEF\xBB\xBF{}"), "{}");
    }

    #[test]
    fn json_errors_do_not_quote_the_body() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Strict {
            n: u32,
        }
        let err = parse_json::<Strict>(r#"{"n": "secret 123456"}"#).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("123456"), "{shown}");
        assert!(shown.contains("wrong type"), "{shown}");
    }
}
