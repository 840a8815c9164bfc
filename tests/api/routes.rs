//! `ROUTES`: the most specific rule that matches a number chooses its providers and
//! their order, with failover and circuits among them only; the record, the logs and
//! `otp-relay check` show the route. Real adapters against mock providers.

use std::process::Output;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fakes::{
    mount_twilio, mount_vonage, twilio_accepted, twilio_path, vonage_accepted, vonage_error_500,
    TWILIO_SID,
};
use crate::helpers::{
    captured_logs_without_timestamps, problem, run_binary, test_config, RecordingProvider, TestApp,
};

const SAO_PAULO: &str = "+5511966191717";
const RIO: &str = "+5521987654321";
const SAN_FRANCISCO: &str = "+14155550123";
const NEW_YORK: &str = "+12125550123";
const TORONTO: &str = "+14165550123";
const LONDON: &str = "+447911123456";

/// Twilio, Vonage and SendPulse (SMS) and the Telegram Gateway, each on a mock server.
struct Fleet {
    twilio: MockServer,
    vonage: MockServer,
    sendpulse: MockServer,
    telegram: MockServer,
}

/// How a mock provider answers sends.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    Accept,
    /// A 5xx: may have been processed, so the next provider is tried.
    Fail,
    /// The Telegram Gateway's "no Telegram account" (the SMS fallback's trigger).
    NotOnTelegram,
}

impl Fleet {
    async fn accepting() -> Fleet {
        Fleet::answering(|_| Answer::Accept).await
    }

    /// Every provider accepts but `provider`, which answers `answer`.
    async fn with(provider: &str, answer: Answer) -> Fleet {
        Fleet::answering(|name| {
            if name == provider {
                answer
            } else {
                Answer::Accept
            }
        })
        .await
    }

    async fn answering(answer: impl Fn(&str) -> Answer) -> Fleet {
        let fleet = Fleet {
            twilio: MockServer::start().await,
            vonage: MockServer::start().await,
            sendpulse: MockServer::start().await,
            telegram: MockServer::start().await,
        };
        let failed = || ResponseTemplate::new(500).set_body_string("internal error");
        mount_twilio(
            &fleet.twilio,
            match answer("twilio") {
                Answer::Accept => twilio_accepted(),
                _ => failed(),
            },
        )
        .await;
        mount_vonage(
            &fleet.vonage,
            match answer("vonage") {
                Answer::Accept => vonage_accepted(),
                _ => vonage_error_500(),
            },
        )
        .await;
        Mock::given(method("POST"))
            .and(path("/oauth/access_token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "route-token", "token_type": "Bearer", "expires_in": 3600
            })))
            .mount(&fleet.sendpulse)
            .await;
        Mock::given(method("POST"))
            .and(path("/sms/send"))
            .respond_with(match answer("sendpulse") {
                Answer::Accept => ResponseTemplate::new(200).set_body_json(json!({
                    "result": true, "campaign_id": 2623085, "counters": {"exceptions": 0, "sends": 1}
                })),
                _ => failed(),
            })
            .mount(&fleet.sendpulse)
            .await;
        Mock::given(method("POST"))
            .and(path("/sendVerificationMessage"))
            .respond_with(match answer("telegram") {
                Answer::Accept => ResponseTemplate::new(200).set_body_json(json!({
                    "ok": true,
                    "result": {"request_id": "7d3c1f2a9b", "phone_number": SAO_PAULO,
                               "request_cost": 0.01,
                               "delivery_status": {"status": "sent", "updated_at": 1732752000}}
                })),
                Answer::NotOnTelegram => ResponseTemplate::new(400)
                    .set_body_json(json!({"ok": false, "error": "PHONE_NUMBER_NOT_FOUND"})),
                Answer::Fail => failed(),
            })
            .mount(&fleet.telegram)
            .await;
        fleet
    }

    /// Every provider's variables, with `PROVIDERS` and, when given, `ROUTES`.
    fn vars(&self, providers: &str, routes: Option<&str>) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = [
            ("PROVIDERS", providers),
            ("AUTH_DISABLED", "true"),
            ("TWILIO_ACCOUNT_SID", TWILIO_SID),
            ("TWILIO_AUTH_TOKEN", "fake-token"),
            ("TWILIO_FROM", "+14155550100"),
            ("TWILIO_BASE_URL", &self.twilio.uri()),
            ("VONAGE_API_KEY", "fake-key"),
            ("VONAGE_API_SECRET", "fake-secret"),
            ("VONAGE_FROM", "AcmeOTP"),
            ("VONAGE_SMS_BASE_URL", &self.vonage.uri()),
            ("SENDPULSE_CLIENT_ID", "sp-id"),
            ("SENDPULSE_CLIENT_SECRET", "sp-secret"),
            ("SENDPULSE_SENDER", "Acme"),
            ("SENDPULSE_BASE_URL", &self.sendpulse.uri()),
            ("TELEGRAM_GATEWAY_TOKEN", "gateway-token"),
            ("TELEGRAM_GATEWAY_BASE_URL", &self.telegram.uri()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(routes) = routes {
            vars.push(("ROUTES".into(), routes.into()));
        }
        vars
    }

    async fn app(&self, providers: &str, routes: Option<&str>, more: &[(&str, &str)]) -> TestApp {
        TestApp::builder()
            .env(&self.vars(providers, routes))
            .env(more)
            .real_providers()
            .spawn()
            .await
    }

    /// How many sends each provider received, in the order twilio, vonage, sendpulse,
    /// telegram (status and price lookups are not counted).
    async fn sends(&self) -> [usize; 4] {
        async fn posts(server: &MockServer, send_path: &str) -> usize {
            let requests = server.received_requests().await.unwrap_or_default();
            requests
                .iter()
                .filter(|r| r.method.as_str() == "POST" && r.url.path() == send_path)
                .count()
        }
        [
            posts(&self.twilio, &twilio_path()).await,
            posts(&self.vonage, "/sms/json").await,
            posts(&self.sendpulse, "/sms/send").await,
            posts(&self.telegram, "/sendVerificationMessage").await,
        ]
    }
}

async fn post(app: &TestApp, mobile: &str, channel: &str) -> reqwest::Response {
    app.post_json(
        "/v1/messages",
        &json!({"mobile": mobile, "totp": "482913", "channel": channel}),
    )
    .await
}

/// Sends by SMS to `mobile`; returns the provider that took it and the record's route.
async fn sent_via(app: &TestApp, mobile: &str) -> (String, Option<String>) {
    let response = post(app, mobile, "sms").await;
    assert_eq!(response.status(), 200, "{mobile}");
    let body: Value = response.json().await.unwrap();
    let record = record(app, &body).await;
    (
        body["provider"].as_str().unwrap().to_owned(),
        record["route"].as_str().map(str::to_owned),
    )
}

/// The message record of a send's answer, as `GET /v1/messages/{id}` shows it.
async fn record(app: &TestApp, answer: &Value) -> Value {
    let id = answer["id"].as_str().expect("the answer has an id");
    let response = app
        .client
        .get(app.url(&format!("/v1/messages/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn routed(provider: &str, route: &str) -> (String, Option<String>) {
    (provider.to_owned(), Some(route.to_owned()))
}

#[tokio::test]
async fn each_kind_of_selector_wins_where_it_is_the_most_specific_match() {
    let fleet = Fleet::accepting().await;
    let app = fleet
        .app(
            "twilio,vonage,sendpulse",
            Some("*=twilio; BR=vonage; +5511=sendpulse"),
            &[],
        )
        .await;

    assert_eq!(
        sent_via(&app, SAO_PAULO).await,
        routed("sendpulse", "+5511")
    );
    assert_eq!(sent_via(&app, RIO).await, routed("vonage", "BR"));
    assert_eq!(sent_via(&app, LONDON).await, routed("twilio", "*"));
    assert_eq!(fleet.sends().await, [1, 1, 1, 0]);
}

#[tokio::test]
async fn a_region_is_narrower_than_its_calling_code_and_wider_than_a_longer_prefix() {
    let fleet = Fleet::accepting().await;
    let app = fleet
        .app(
            "twilio,vonage,sendpulse",
            // Written from the most specific down, to show the order written is not it.
            Some("+5511=sendpulse;BR=vonage;+55=twilio;+1415=sendpulse;US=vonage;+1=twilio"),
            &[],
        )
        .await;

    assert_eq!(
        sent_via(&app, SAO_PAULO).await,
        routed("sendpulse", "+5511")
    );
    assert_eq!(sent_via(&app, RIO).await, routed("vonage", "BR"));
    assert_eq!(
        sent_via(&app, SAN_FRANCISCO).await,
        routed("sendpulse", "+1415")
    );
    assert_eq!(sent_via(&app, NEW_YORK).await, routed("vonage", "US"));
    // Canada shares +1 with the US: the region rule is not its.
    assert_eq!(sent_via(&app, TORONTO).await, routed("twilio", "+1"));
}

#[tokio::test]
async fn a_number_no_rule_matches_goes_to_every_provider_in_order_without_a_route() {
    let fleet = Fleet::with("twilio", Answer::Fail).await;
    let routed_app = fleet
        .app("twilio,vonage,sendpulse", Some("BR=sendpulse"), &[])
        .await;
    let unrouted_app = fleet.app("twilio,vonage,sendpulse", None, &[]).await;

    assert_eq!(
        sent_via(&routed_app, LONDON).await,
        ("vonage".to_owned(), None),
        "PROVIDERS order: twilio fails over to vonage"
    );
    assert_eq!(
        sent_via(&unrouted_app, RIO).await,
        ("vonage".to_owned(), None)
    );
    assert_eq!(fleet.sends().await, [2, 2, 0, 0]);
}

#[tokio::test]
async fn failover_runs_in_the_route_s_order_and_never_beyond_its_providers() {
    // SendPulse fails; the route lists it first, against the PROVIDERS order.
    let fleet = Fleet::with("sendpulse", Answer::Fail).await;
    let app = fleet
        .app(
            "twilio,vonage,sendpulse",
            Some("BR=sendpulse,vonage; +44=sendpulse"),
            &[],
        )
        .await;

    let response = post(&app, RIO, "sms").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "vonage");
    let tried: Vec<(&str, &str)> = body["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap(),
                a["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tried, [("sendpulse", "failed"), ("vonage", "sent")]);

    // The route's only provider fails: twilio and vonage, outside it, are not tried.
    let failed = post(&app, LONDON, "sms").await;
    let problem = problem(failed, 503, "no_provider_available").await;
    assert_eq!(
        problem["attempts"].as_array().unwrap().len(),
        1,
        "{problem}"
    );
    assert_eq!(record(&app, &problem).await["route"], "+44");
    assert_eq!(fleet.sends().await, [0, 1, 2, 0]);
}

#[tokio::test]
async fn a_provider_s_circuit_is_one_across_the_routes_that_list_it() {
    let fleet = Fleet::with("vonage", Answer::Fail).await;
    let app = fleet
        .app(
            "twilio,vonage,sendpulse",
            Some("BR=vonage,twilio; *=vonage,sendpulse"),
            &[("CIRCUIT_FAILURES", "1"), ("CIRCUIT_COOLDOWN", "1h")],
        )
        .await;

    assert_eq!(sent_via(&app, RIO).await, routed("twilio", "BR"));
    let response = post(&app, LONDON, "sms").await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "sendpulse");
    assert_eq!(body["attempts"][0]["provider"], "vonage");
    assert_eq!(body["attempts"][0]["code"], "circuit_open", "{body}");
    assert_eq!(fleet.sends().await, [1, 1, 1, 0]);
}

#[tokio::test]
async fn channels_are_filtered_within_the_route() {
    let fleet = Fleet::accepting().await;
    let app = fleet
        .app(
            "twilio,telegram",
            Some("BR=telegram,twilio; +5511=telegram"),
            &[],
        )
        .await;
    // Today's send with no provider for the channel, to compare with.
    let telegram_only = fleet.app("telegram", None, &[]).await;

    let by_sms: Value = post(&app, RIO, "sms").await.json().await.unwrap();
    assert_eq!(by_sms["provider"], "twilio");
    assert_eq!(
        by_sms["attempts"].as_array().unwrap().len(),
        1,
        "telegram does not send SMS: {by_sms}"
    );
    let by_telegram: Value = post(&app, RIO, "telegram").await.json().await.unwrap();
    assert_eq!(by_telegram["provider"], "telegram");

    // The route's only provider does not send SMS, though twilio, outside it, does.
    let routed = post(&app, SAO_PAULO, "sms").await;
    let unserved = post(&telegram_only, SAO_PAULO, "sms").await;
    let routed = problem(routed, 422, "channel_not_configured").await;
    let unserved = problem(unserved, 422, "channel_not_configured").await;
    let without_id = |mut body: Value| {
        body.as_object_mut().unwrap().remove("id");
        body
    };
    assert_eq!(without_id(routed), without_id(unserved));
    assert_eq!(fleet.sends().await, [1, 0, 0, 1]);
}

#[tokio::test]
async fn the_sms_fallback_of_a_recipient_not_on_telegram_stays_within_the_route() {
    let fleet = Fleet::with("telegram", Answer::NotOnTelegram).await;
    let app = fleet
        .app(
            "twilio,telegram",
            Some("BR=telegram; *=telegram,twilio"),
            &[],
        )
        .await;

    let falls_back: Value = post(&app, LONDON, "telegram").await.json().await.unwrap();
    assert_eq!(falls_back["provider"], "twilio", "{falls_back}");
    assert_eq!(falls_back["channel"], "sms");
    // Telegram's refusal stands, with its attempt: the message did reach a provider.
    let stays = problem(
        post(&app, RIO, "telegram").await,
        422,
        "recipient_not_registered",
    )
    .await;
    assert_eq!(stays["attempts"].as_array().unwrap().len(), 1, "{stays}");
    assert_eq!(fleet.sends().await, [1, 0, 0, 2]);
}

#[tokio::test]
async fn the_log_line_of_a_send_names_its_route_and_masks_the_number() {
    let fleet = Fleet::accepting().await;
    let app = fleet
        .app("twilio,vonage", Some("+5511=twilio; +5521987=vonage"), &[])
        .await;

    let short: Value = post(&app, SAO_PAULO, "sms").await.json().await.unwrap();
    let long: Value = post(&app, RIO, "sms").await.json().await.unwrap();

    let logs = captured_logs_without_timestamps();
    let logged = |answer: &Value| -> Value {
        let id = answer["id"].as_str().unwrap();
        let line = logs
            .lines()
            .find(|line| line.contains(id) && line.contains("message accepted by provider"))
            .expect("the send is logged");
        serde_json::from_str(line).unwrap()
    };
    let (short, long_event) = (logged(&short), logged(&long));
    assert_eq!(short["fields"]["route"], "+5511", "{short}");
    assert_eq!(short["fields"]["to"], "+55119*****17", "{short}");
    // A prefix longer than the masked number's visible digits shows no more than they.
    assert_eq!(long_event["fields"]["route"], "+55219*", "{long_event}");
    assert_eq!(long_event["fields"]["to"], "+55219*****21", "{long_event}");
    assert!(!logs.contains("5521987"), "the long prefix is logged whole");
    // The record, shown to the caller that sent the number, keeps the rule as written.
    assert_eq!(record(&app, &long).await["route"], "+5521987");
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn check_prints_the_effective_route_table() {
    let fleet = Fleet::accepting().await;

    let routed = run_binary(
        &["check"],
        &fleet.vars(
            "twilio,vonage,sendpulse",
            Some("*=twilio; br=Vonage,twilio; +55=sendpulse ; +5511=sendpulse"),
        ),
    )
    .await;
    let partial = run_binary(&["check"], &fleet.vars("twilio,vonage", Some("+1=vonage"))).await;
    let unset = run_binary(&["check"], &fleet.vars("twilio,vonage", None)).await;

    let table = |output: &Output| {
        stdout(output)
            .lines()
            .skip_while(|line| !line.starts_with("routes"))
            .take_while(|line| !line.is_empty())
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        table(&routed)[1..],
        [
            "+5511 sendpulse",
            "BR vonage, twilio",
            "+55 sendpulse",
            "* twilio"
        ],
        "{}",
        stdout(&routed)
    );
    assert_eq!(
        table(&partial)[1..],
        ["+1 vonage", "(no match) twilio, vonage (PROVIDERS order)"],
        "{}",
        stdout(&partial)
    );
    assert_eq!(
        table(&unset),
        ["routes: ROUTES unset, every number goes to twilio, vonage (PROVIDERS order)"]
    );
}

#[tokio::test]
async fn a_bad_rule_stops_startup_naming_routes() {
    let fleet = Fleet::accepting().await;
    let cases = [
        (
            "BR=vonage",
            "names \"vonage\", which is not in PROVIDERS (twilio)",
        ),
        ("BR=nexmo", "names \"nexmo\", which is not in PROVIDERS"),
        ("XX=twilio", "\"XX\" is neither a region code"),
        (
            "BR twilio",
            "the rule \"BR twilio\" is not SELECTOR=provider",
        ),
        ("+55a=twilio", "\"+55a\" is not `+` followed by digits"),
        ("=twilio", "\"\" is neither a region code"),
        ("BR=", "the rule for BR names no provider"),
        ("BR=twilio,Twilio", "the rule for BR lists \"twilio\" twice"),
        ("BR=twilio; br=twilio", "BR has more than one rule"),
        ("+55=twilio;+55=twilio", "+55 has more than one rule"),
        (";", "no rule"),
    ];
    for (routes, problem) in cases {
        let output = run_binary(&["check"], &fleet.vars("twilio", Some(routes))).await;

        assert_eq!(output.status.code(), Some(2), "{routes}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("ROUTES: "), "{routes}: {stderr}");
        assert!(stderr.contains(problem), "{routes}: {stderr}");
    }
}

#[tokio::test]
async fn providers_given_in_code_must_include_those_the_routes_name() {
    let fleet = Fleet::accepting().await;
    let vars = fleet.vars("twilio", Some("BR=twilio"));

    let built = otp_relay::startup::Application::build_with_providers(
        test_config(&vars),
        vec![RecordingProvider::accepting()],
    );

    let error = built.err().expect("refused").to_string();
    assert!(error.starts_with("ROUTES: "), "{error}");
    assert!(error.contains("\"twilio\""), "{error}");
}

#[tokio::test]
async fn the_openapi_document_shows_the_route_of_a_record() {
    let fleet = Fleet::accepting().await;
    let app = fleet.app("twilio", None, &[]).await;

    let document: Value = serde_json::from_str(&app.get_text("/openapi.json").await).unwrap();

    let route = &document["components"]["schemas"]["MessageRecord"]["properties"]["route"];
    assert!(route.is_object(), "{route}");
}
