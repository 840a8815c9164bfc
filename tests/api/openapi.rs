//! `/openapi.json` describes every route the app serves, and only those.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::TestApp;

/// Every route the app serves, as `METHOD path`.
const ROUTES: &[&str] = &[
    "POST /api/sms",
    "POST /v1/messages",
    "GET /v1/messages/{id}",
    "POST /webhooks/twilio",
    "POST /webhooks/vonage",
    "GET /webhooks/vonage",
    "POST /webhooks/telegram-gateway",
    "POST /webhooks/telegram-bot",
    "POST /v1/compat/authentik",
    "POST /v1/compat/keycloak-mfa-plugins",
    "GET /health/live",
    "GET /health/ready",
    "GET /metrics",
    "GET /openapi.json",
];

#[tokio::test]
async fn the_document_lists_every_route_and_each_exists() {
    let app = TestApp::builder().spawn().await;

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
        let path = path.replace("{id}", "01JD5X3QK8V7N2M4R6T8W0Y2Z4");
        let path = path.as_str();
        let request = match method {
            "GET" => app.client.get(app.url(path)),
            _ => app.client.post(app.url(path)).body("{}"),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        // A 404 problem other than "no route" (an unknown message, an unconfigured
        // webhook) still proves the route exists.
        let code = response
            .json::<Value>()
            .await
            .ok()
            .map(|b| b["code"].clone());
        assert!(
            status != 405 && !(status == 404 && code == Some(Value::from("not_found"))),
            "{route} answered {status}"
        );
    }

    let schemas = &document["components"]["schemas"];
    for name in [
        "SendRequest",
        "SendResponse",
        "Attempt",
        "Problem",
        "PartStatus",
    ] {
        assert!(schemas[name].is_object(), "schema {name}");
    }
    assert!(schemas["SendRequest"]["properties"]["mobile"].is_object());
    // The record's price: a decimal string and an ISO 4217 code (or null).
    let record = &schemas["MessageRecord"];
    assert!(record["properties"]["cost"].is_object(), "{record}");
    assert!(
        !record["required"]
            .as_array()
            .is_some_and(|required| required.contains(&Value::from("cost"))),
        "cost is absent until the provider states it"
    );
    // The channel fallback's leg, absent until one was sent.
    assert!(record["properties"]["fallback"].is_object(), "{record}");
    assert!(
        !record["required"]
            .as_array()
            .is_some_and(|required| required.contains(&Value::from("fallback"))),
        "fallback is absent until one is sent"
    );
    let leg = &schemas["FallbackLeg"];
    for field in [
        "reason",
        "channel",
        "provider",
        "provider_message_id",
        "status",
    ] {
        assert!(leg["properties"][field].is_object(), "{field}: {leg}");
    }
    let cost = &schemas["Cost"];
    assert_eq!(cost["properties"]["amount"]["type"], "string", "{cost}");
    assert!(cost["properties"]["currency"].is_object(), "{cost}");
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    // A 429 names the limit that refused it.
    let limit = &schemas["Problem"]["properties"]["limit"];
    assert!(
        limit.to_string().contains("#/components/schemas/Scope"),
        "{limit}"
    );
    assert_eq!(
        schemas["Scope"]["enum"],
        serde_json::json!(["number", "prefix", "client", "country", "global"])
    );

    // Webhooks acknowledge with exactly 200, as the providers document (the Telegram
    // Gateway repeats anything else up to 10 times).
    for webhook in ["twilio", "vonage", "telegram-gateway", "telegram-bot"] {
        let responses = &document["paths"][format!("/webhooks/{webhook}")]["post"]["responses"];
        assert!(responses["200"].is_object(), "{webhook}: {responses}");
        assert!(responses.get("204").is_none(), "{webhook}: {responses}");
    }
}
