//! `/openapi.json` describes every route the app serves, and only those.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::spawn_app;

/// Every route the app serves, as `METHOD path`.
const ROUTES: &[&str] = &[
    "POST /api/sms",
    "POST /v1/messages",
    "POST /v1/compat/authentik",
    "POST /v1/compat/keycloak-mfa-plugins",
    "GET /health/live",
    "GET /health/ready",
    "GET /metrics",
    "GET /openapi.json",
];

#[tokio::test]
async fn the_document_lists_every_route_and_each_exists() {
    let app = spawn_app(&[]).await;

    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();

    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let served: BTreeSet<String> = ROUTES.iter().map(|r| r.to_string()).collect();
    assert_eq!(documented, served);

    for route in ROUTES {
        let (method, path) = route.split_once(' ').unwrap();
        let request = match method {
            "GET" => app.client.get(app.url(path)),
            _ => app.client.post(app.url(path)).body("{}"),
        };
        let status = request.send().await.unwrap().status().as_u16();
        assert!(status != 404 && status != 405, "{route} answered {status}");
    }

    let schemas = &document["components"]["schemas"];
    for name in ["SendRequest", "SendResponse", "Attempt", "Problem"] {
        assert!(schemas[name].is_object(), "schema {name}");
    }
    assert!(schemas["SendRequest"]["properties"]["mobile"].is_object());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
}
