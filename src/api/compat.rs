//! Other identity servers' SMS payloads, each on its own path, turned into a send
//! request and served like the native one.
//!
//! - `POST /v1/compat/authentik`: authentik's generic SMS provider posts
//!   `{"From","To","Body","Message"}` (Body is the code, Message the full text), with
//!   `Authorization: Bearer <key>` or Basic auth whose password is the key.
//! - `POST /v1/compat/keycloak-mfa-plugins`: netzbegruenung's keycloak-mfa-plugins SMS
//!   authenticator posts `{"text","to","from"}` as JSON, or the same fields
//!   form-urlencoded, with the key as the whole `Authorization` header.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::api::body::parse_json;
use crate::api::caller::Caller;
use crate::api::error::ApiError;
use crate::api::send::{serve_send, Scalar, SendRequest};
use crate::api::state::AppState;

/// authentik's generic provider body.
#[derive(Debug, Deserialize)]
struct AuthentikBody {
    #[serde(rename = "To")]
    to: Option<Scalar>,
    #[serde(rename = "Body")]
    body: Option<Scalar>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Public for the fuzz targets.
#[doc(hidden)]
pub fn authentik_dialect(_: &HttpRequest, text: &str) -> Result<SendRequest, ApiError> {
    let body: AuthentikBody = parse_json(text)?;
    let code = body.body.map(Scalar::into_string);
    Ok(match body.message.filter(|m| !m.trim().is_empty()) {
        // The message carries the code; keep the code for providers that send codes.
        Some(message) => SendRequest {
            mobile: body.to,
            message: Some(message),
            code: code
                .filter(|c| crate::message::is_bare_code(c))
                .map(Scalar::Text),
            ..SendRequest::default()
        },
        None => SendRequest {
            mobile: body.to,
            totp: code.map(Scalar::Text),
            ..SendRequest::default()
        },
    })
}

/// keycloak-mfa-plugins' default attribute names.
#[derive(Debug, Deserialize)]
struct MfaPluginsBody {
    to: Option<Scalar>,
    text: Option<String>,
}

/// Public for the fuzz targets.
#[doc(hidden)]
pub fn mfa_plugins_dialect(req: &HttpRequest, text: &str) -> Result<SendRequest, ApiError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body: MfaPluginsBody = if is_form {
        web::Query::<MfaPluginsBody>::from_query(text)
            .map_err(|_| ApiError::MalformedBody("not a form with `to` and `text`".into()))?
            .into_inner()
    } else {
        parse_json(text)?
    };
    Ok(SendRequest {
        mobile: body.to,
        totp: body.text.map(Scalar::Text),
        ..SendRequest::default()
    })
}

/// `POST /v1/compat/authentik`.
pub async fn authentik(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve_send(req, caller, payload, state, authentik_dialect).await
}

/// `POST /v1/compat/keycloak-mfa-plugins`.
pub async fn keycloak_mfa_plugins(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve_send(req, caller, payload, state, mfa_plugins_dialect).await
}
