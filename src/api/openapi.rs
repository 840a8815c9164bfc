//! `GET /openapi.json`: the API described in OpenAPI 3, generated from the request and
//! response types. The functions below only carry each route's description.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::OpenApi;

use crate::api::error::Problem;
use crate::api::send::{SendRequest, SendResponse};
use crate::dispatch::Attempt;
use crate::records::MessageRecord;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "otp-relay",
        description = "Delivers one-time passcodes for identity servers through Twilio, Vonage, SendPulse and Telegram."
    ),
    paths(
        api_sms, v1_messages, get_message, compat_authentik, compat_keycloak_mfa_plugins,
        webhook_twilio, webhook_vonage, webhook_vonage_get, webhook_telegram_gateway, webhook_telegram_bot,
        health_live, health_ready, metrics, openapi_json
    ),
    components(schemas(SendRequest, SendResponse, Attempt, Problem, MessageRecord)),
    modifiers(&SecuritySchemes),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub struct ApiDoc;

/// Callers authenticate with a key (or by address, which OpenAPI cannot express).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The document, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the document serializes")
    })
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// Send a one-time passcode (QIAM/Keycloak "API Sms MFA" compatible).
///
/// Takes what the QIAM extension sends as it is: pretty-printed JSON, ISO-8859-1 bytes,
/// Gson escapes. An optional `Idempotency-Key` header makes repeats one send.
#[utoipa::path(
    post, path = "/api/sms", tag = "send",
    request_body(content = SendRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key from the same caller: one send")),
    responses(
        (status = 200, description = "A provider accepted the message; `Idempotent-Replayed: true` on repeats", body = SendResponse),
        (status = 400, description = "Malformed body, missing mobile, bad Idempotency-Key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Address or country not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within 5 s", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 16 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 431, description = "Request line and headers over 8 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid number, text, channel, ttl or number type; recipient refused", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited; `limit` names the limit (number, prefix, client, country, global); see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider rejected the message", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No provider available, overloaded, or store unavailable; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "REQUEST_DEADLINE passed", body = Problem, content_type = "application/problem+json"),
    )
)]
#[allow(dead_code)]
fn api_sms() {}

/// Send a one-time passcode (canonical path; same handler and answers as `/api/sms`).
#[utoipa::path(
    post, path = "/v1/messages", tag = "send",
    request_body(content = SendRequest, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key from the same caller: one send")),
    responses(
        (status = 200, description = "A provider accepted the message", body = SendResponse),
        (status = "4XX", description = "Refused; see /api/sms for each status", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "Not sent; see /api/sms for each status", body = Problem, content_type = "application/problem+json"),
    )
)]
#[allow(dead_code)]
fn v1_messages() {}

/// The latest known status of a sent message.
#[utoipa::path(
    get, path = "/v1/messages/{id}", tag = "send",
    params(("id" = String, Path, description = "The id a send answered with")),
    responses(
        (status = 200, description = "The record", body = MessageRecord),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such message, sent by another caller, or older than MESSAGE_RETENTION", body = Problem, content_type = "application/problem+json"),
    )
)]
#[allow(dead_code)]
fn get_message() {}

/// Twilio status callback (form), `X-Twilio-Signature` over `PUBLIC_BASE_URL/webhooks/twilio`.
#[utoipa::path(post, path = "/webhooks/twilio", tag = "webhooks", security(()),
    responses((status = 200, description = "Acknowledged (empty body)"), (status = 401, description = "Bad or missing signature", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Twilio or PUBLIC_BASE_URL not configured", body = Problem, content_type = "application/problem+json")))]
#[allow(dead_code)]
fn webhook_twilio() {}

/// Vonage SMS API receipt (signed parameters) or Messages API status (signed JWT).
#[utoipa::path(post, path = "/webhooks/vonage", tag = "webhooks", security(()),
    responses((status = 200, description = "Acknowledged (empty body)"), (status = 401, description = "Bad, missing or stale signature", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Vonage or VONAGE_SIGNATURE_SECRET not configured", body = Problem, content_type = "application/problem+json")))]
#[allow(dead_code)]
fn webhook_vonage() {}

/// Vonage SMS API receipt sent as a `GET` (signed parameters in the query string), as the
/// dashboard may be set to.
#[utoipa::path(get, path = "/webhooks/vonage", tag = "webhooks", security(()),
    responses((status = 200, description = "Acknowledged (empty body)"), (status = 401, description = "Bad, missing or stale signature", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Vonage or VONAGE_SIGNATURE_SECRET not configured", body = Problem, content_type = "application/problem+json")))]
#[allow(dead_code)]
fn webhook_vonage_get() {}

/// Telegram Gateway delivery report, `X-Request-Timestamp` + `X-Request-Signature`.
#[utoipa::path(post, path = "/webhooks/telegram-gateway", tag = "webhooks", security(()),
    responses((status = 200, description = "Acknowledged (empty body)"), (status = 401, description = "Bad, missing or stale signature", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Telegram gateway not configured", body = Problem, content_type = "application/problem+json")))]
#[allow(dead_code)]
fn webhook_telegram_gateway() {}

/// Telegram Bot API update, `X-Telegram-Bot-Api-Secret-Token`: /start, contact, /stop.
#[utoipa::path(post, path = "/webhooks/telegram-bot", tag = "webhooks", security(()),
    responses((status = 200, description = "Handled"), (status = 401, description = "Bad or missing secret", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Bot mode or TELEGRAM_WEBHOOK_SECRET not configured", body = Problem, content_type = "application/problem+json")))]
#[allow(dead_code)]
fn webhook_telegram_bot() {}

/// authentik's generic SMS provider body: `{"From","To","Body","Message"}`.
#[utoipa::path(
    post, path = "/v1/compat/authentik", tag = "compat",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 200, description = "Sent", body = SendResponse),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "Not sent", body = Problem, content_type = "application/problem+json"),
    )
)]
#[allow(dead_code)]
fn compat_authentik() {}

/// keycloak-mfa-plugins' body: `{"text","to","from"}`, as JSON or form.
#[utoipa::path(
    post, path = "/v1/compat/keycloak-mfa-plugins", tag = "compat",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses(
        (status = 200, description = "Sent", body = SendResponse),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
        (status = "5XX", description = "Not sent", body = Problem, content_type = "application/problem+json"),
    )
)]
#[allow(dead_code)]
fn compat_keycloak_mfa_plugins() {}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health/live", tag = "operations", security(()),
    responses((status = 200, description = "Live")))]
#[allow(dead_code)]
fn health_live() {}

/// Readiness: the state store answers and a provider's circuit admits a send (closed, or
/// half-open with no trial out).
#[utoipa::path(get, path = "/health/ready", tag = "operations", security(()),
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
#[allow(dead_code)]
fn health_ready() {}

/// Prometheus metrics, text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Metrics", content_type = "text/plain")))]
#[allow(dead_code)]
fn metrics() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
#[allow(dead_code)]
fn openapi_json() {}
