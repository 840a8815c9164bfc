//! Liveness and readiness probes.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use crate::api::state::AppState;
use crate::dispatch::circuit::CircuitState;
use crate::prometheus;

/// The process is up and serving HTTP.
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "live" }))
}

/// Prometheus text format. Gauges that describe current state are read now.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    for (provider, circuit) in state.send.dispatcher().provider_states() {
        let value = match circuit {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen | CircuitState::Trial => 1.0,
            CircuitState::Open => 2.0,
        };
        metrics::gauge!(prometheus::CIRCUIT_STATE, "provider" => provider).set(value);
    }
    let in_flight = state.send.in_flight();
    metrics::gauge!(prometheus::IN_FLIGHT).set(in_flight as f64);
    metrics::gauge!(prometheus::MEMORY_STORE_BYTES).set(state.store.memory_bytes() as f64);
    let limit = state.config.store.memory_bytes as f64;
    metrics::gauge!(prometheus::MEMORY_STORE_LIMIT).set(limit);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(prometheus::handle().render())
}

/// Ready while the state store answers and serves (no operation of the shared store
/// failed lately: the replica would be counting limits on its own), and at least one
/// provider is usable: its circuit would admit a send now (closed, or half-open with no
/// trial out). The body shows each provider's circuit and the store, and under
/// `config_errors` the latest error each provider blamed on our configuration.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let circuits = state.send.dispatcher().provider_states();
    let usable = circuits.iter().any(|(_, c)| c.admits());
    let store = state.store.health().await;
    let store_ok = store.is_ready();
    let providers: Map<String, Value> = circuits
        .iter()
        .map(|(name, circuit)| (name.to_string(), json!(circuit.as_str())))
        .collect();
    // The latest error each provider blamed on our configuration: it fails every send
    // there until an operator fixes it, yet does not make the service unready.
    let config_errors: Map<String, Value> = circuits
        .iter()
        .filter_map(|(name, _)| {
            let last = state.send.dispatcher().last_config_error(name)?;
            Some((name.to_string(), json!(last)))
        })
        .collect();
    let mut body = json!({
        "status": if usable && store_ok { "ready" } else { "unavailable" },
        "providers": providers,
        "store": {
            "backend": state.store.backend(),
            "reachable": store.reachable,
            "degraded": store.degraded,
            "overloaded": store.overloaded,
        },
    });
    if !config_errors.is_empty() {
        body["config_errors"] = Value::Object(config_errors);
    }
    if usable && store_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
