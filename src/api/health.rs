//! Liveness and readiness probes.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::startup::AppState;

/// The process is up and serving HTTP.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// The configuration loaded and at least one provider is usable.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let providers: Vec<&str> = state
        .dispatcher
        .providers()
        .iter()
        .map(|p| p.name())
        .collect();
    if providers.is_empty() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unavailable", "providers": providers }));
    }
    HttpResponse::Ok().json(json!({ "status": "ready", "providers": providers }))
}
