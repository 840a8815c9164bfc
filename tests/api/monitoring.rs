//! The dashboard and the alerting rules against a real Prometheus: Debian's
//! `prometheus` scrapes a test instance driven through mock providers, evaluates every
//! expression of deploy/grafana/otp-relay.json and loads deploy/prometheus/alerts.yml.
//! This keeps them true to the metrics the binary really exports.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::process::{Child, Command};
use wiremock::matchers::body_string_contains;
use wiremock::{Mock, MockServer};

use crate::fakes::{
    mount_twilio, mount_vonage, provider_vars, twilio_accepted, twilio_error, vonage_accepted,
};
use crate::helpers::TestApp;
use crate::server_process::{free_port, spawn_or_skip, wait_for_line};

const DASHBOARD: &str = include_str!("../../deploy/grafana/otp-relay.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");
const ALERTS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/alerts.yml");

/// Metrics whose panels must evaluate but may be empty here: evictions only happen
/// under memory pressure, and channel fallbacks only with Telegram or WhatsApp and
/// CHANNEL_FALLBACK, neither of which this traffic has.
const AWAITED_METRICS: &[&str] = &[
    "otp_relay_store_evictions_total",
    "otp_relay_channel_fallbacks_total",
];

/// The longest any wait on Prometheus may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// How often a condition on Prometheus is checked again.
const POLL: Duration = Duration::from_millis(200);

/// The number whose sends Twilio fails with a 500, so they fail over to Vonage.
const FAILOVER_MOBILE: &str = "+5511987659999";

/// The number whose sends Twilio refuses for our configuration (21606, a sender that
/// cannot send SMS), so they fail over to Vonage too. Not 21609, whose count another
/// test checks in the process's one recorder.
const MISCONFIGURED_MOBILE: &str = "+5511987658888";

#[tokio::test]
async fn every_dashboard_expression_evaluates_in_prometheus_and_the_alert_rules_load() {
    let twilio = MockServer::start().await;
    let vonage = MockServer::start().await;
    Mock::given(body_string_contains(&FAILOVER_MOBILE[1..]))
        .respond_with(twilio_error(500, 20500, "Internal Server Error"))
        .with_priority(1)
        .mount(&twilio)
        .await;
    Mock::given(body_string_contains(&MISCONFIGURED_MOBILE[1..]))
        .respond_with(twilio_error(
            400,
            21606,
            "The From phone number is not a valid, SMS-capable number",
        ))
        .with_priority(1)
        .mount(&twilio)
        .await;
    mount_twilio(&twilio, twilio_accepted()).await;
    mount_vonage(&vonage, vonage_accepted()).await;
    // Nothing listens there: every store operation fails and is served from memory,
    // which the store panels show.
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let app = TestApp::builder()
        .env(&provider_vars(&twilio.uri(), Some(&vonage.uri())))
        .env(&[("BLOCKED_COUNTRIES", "CU"), ("REDIS_URL", &redis_url)])
        .real_providers()
        .spawn()
        .await;

    let Some(prometheus) = Prometheus::start(app.socket_address()).await else {
        return;
    };
    prometheus
        .wait_for("the first scrape", "up{job=\"otp-relay\"} == 1")
        .await;

    // Two rounds, each scraped before the next, so every counter rises between
    // samples: rates are above zero and latency quantiles are numbers.
    for round in 1..=2 {
        let done = drive_traffic(&app, round).await;
        prometheus
            .wait_for(
                &format!("a scrape after round {round}"),
                &format!("timestamp(up{{job=\"otp-relay\"}}) > {done}"),
            )
            .await;
    }

    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    check_variables(&prometheus, &dashboard).await;
    let mut checked = 0;
    let mut awaited = std::collections::BTreeSet::new();
    for (title, expr) in expressions(&dashboard) {
        let expr = substitute(&expr, &dashboard);
        let samples = prometheus
            .query(&expr)
            .await
            .unwrap_or_else(|error| panic!("panel {title:?}: {expr}\n{error}"));
        let awaits: Vec<&str> = AWAITED_METRICS
            .iter()
            .copied()
            .filter(|metric| expr.contains(metric))
            .collect();
        if !awaits.is_empty() {
            awaited.extend(awaits);
            continue;
        }
        let numbers: Vec<f64> = samples
            .iter()
            .filter_map(|sample| sample["value"][1].as_str()?.parse().ok())
            .filter(|value: &f64| value.is_finite())
            .collect();
        assert!(
            !numbers.is_empty(),
            "panel {title:?} shows no data: {expr}\n{samples:?}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} expressions checked for data");
    assert_eq!(
        awaited.len(),
        AWAITED_METRICS.len(),
        "every awaited metric has its panel: {awaited:?}"
    );

    let rules = prometheus.healthy_rules().await;
    let defined = ALERTS.matches("- alert:").count();
    assert_eq!(rules, defined, "every rule in alerts.yml is loaded");
}

/// Successes, failovers (one for a configuration error), a refusal and an idempotent
/// replay; returns the Unix time after the last answer.
async fn drive_traffic(app: &TestApp, round: u32) -> f64 {
    let send = |mobile: &str, key: Option<String>| {
        let body = json!({"mobile": mobile, "totp": format!("Your code is 48{round}1")});
        let mut request = app
            .client
            .post(app.url("/v1/messages"))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        async move { request.send().await.expect("request").status().as_u16() }
    };
    for n in 0..3 {
        assert_eq!(send(&format!("+55119876500{round}{n}"), None).await, 200);
    }
    assert_eq!(send(FAILOVER_MOBILE, None).await, 200, "failed over");
    assert_eq!(send(MISCONFIGURED_MOBILE, None).await, 200, "failed over");
    assert_eq!(send("+53 5 234 5678", None).await, 403, "country refused");
    let key = format!("monitoring-{round}");
    for _ in 0..2 {
        assert_eq!(send("+5511987650100", Some(key.clone())).await, 200);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Every (panel title, expression) of the dashboard, rows' nested panels included.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, found: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            walk(&panel["panels"], found);
            for target in panel["targets"].as_array().into_iter().flatten() {
                let title = panel["title"].as_str().unwrap_or_default();
                let expr = target["expr"].as_str().expect("every target has an expr");
                found.push((title.to_owned(), expr.to_owned()));
            }
        }
    }
    let mut found = Vec::new();
    walk(&dashboard["panels"], &mut found);
    found
}

/// `expr` as Grafana sends it with every template variable at "All" (its regex
/// `.*`) and the built-in intervals set to what a short test history can fill.
fn substitute(expr: &str, dashboard: &Value) -> String {
    let mut expr = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let name = variable["name"].as_str().unwrap();
        expr = expr
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    assert!(!expr.contains('$'), "an unknown variable in {expr}");
    expr
}

/// Each query variable (`label_values(metric, label)`) lists values.
async fn check_variables(prometheus: &Prometheus, dashboard: &Value) {
    let mut checked = 0;
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().unwrap();
        let (metric, label) = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.split_once(','))
            .unwrap_or_else(|| panic!("not label_values(metric, label): {query}"));
        let values = prometheus.label_values(label.trim(), metric.trim()).await;
        assert!(!values.is_empty(), "variable {query} lists nothing");
        if label.trim() == "provider" {
            for provider in ["twilio", "vonage"] {
                assert!(values.iter().any(|v| v == provider), "{values:?}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 2, "the instance and provider variables");
}

/// Debian's Prometheus on a free loopback port, scraping one target every second
/// with the alerting rules loaded; stopped and its data removed when dropped.
struct Prometheus {
    address: String,
    client: reqwest::Client,
    dir: PathBuf,
    child: Child,
}

impl Prometheus {
    /// Starts one, or returns `None` (after saying so) where `prometheus` is not
    /// installed. With `REQUIRE_PROMETHEUS=1` (as in CI) a missing binary fails.
    async fn start(target: &str) -> Option<Prometheus> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "otp-relay-prometheus-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{ALERTS_PATH:?}]\n\
             scrape_configs:\n  - job_name: otp-relay\n    static_configs:\n      - targets: [{target:?}]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("write the configuration");
        let child = spawn_or_skip(
            Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true),
            "prometheus",
            "REQUIRE_PROMETHEUS",
        );
        let Some(mut child) = child else {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        };
        // Wait for the server to say it is ready, rather than for a while.
        let stderr = child.stderr.take().expect("piped stderr");
        let ready = "Server is ready to receive web requests";
        match tokio::time::timeout(PATIENCE, wait_for_line(stderr, ready)).await {
            Ok(Ok(())) => {}
            Ok(Err(log)) => panic!("prometheus did not start:\n{}", log.join("\n")),
            Err(_) => panic!("prometheus was not ready within {PATIENCE:?}"),
        }
        Some(Prometheus {
            address: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            dir,
            child,
        })
    }

    /// The `data` of an API answer, or Prometheus' error.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.address), params)
            .expect("a valid URL");
        let answer: Value = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match answer["status"].as_str() {
            Some("success") => Ok(answer["data"].clone()),
            _ => Err(answer.to_string()),
        }
    }

    /// The samples of an instant query at the present time.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The values `label` takes on the series of `metric`.
    async fn label_values(&self, label: &str, metric: &str) -> Vec<String> {
        let data = self
            .api(
                &format!("/api/v1/label/{label}/values"),
                &[("match[]", metric)],
            )
            .await
            .unwrap_or_else(|error| panic!("label_values({metric}, {label}): {error}"));
        serde_json::from_value(data).expect("a list of values")
    }

    /// Polls Prometheus until `check` returns something, within `PATIENCE`.
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let mut ticks = tokio::time::interval(POLL);
        tokio::time::timeout(PATIENCE, async {
            loop {
                ticks.tick().await;
                if let Some(found) = check().await {
                    return found;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("Prometheus never showed {what}"))
    }

    /// Waits until `expr` returns a sample.
    async fn wait_for(&self, what: &str, expr: &str) {
        self.until(what, || async {
            let samples = self.query(expr).await.unwrap_or_else(|e| panic!("{e}"));
            (!samples.is_empty()).then_some(())
        })
        .await
    }

    /// Waits until every loaded rule has been evaluated, fails on any unhealthy one,
    /// and returns how many there are.
    async fn healthy_rules(&self) -> usize {
        self.until("the alerting rules evaluated", || async {
            let data = self.api("/api/v1/rules", &[]).await.unwrap();
            let rules: Vec<Value> = data["groups"]
                .as_array()?
                .iter()
                .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            for rule in &rules {
                assert_ne!(rule["health"], "err", "unhealthy rule: {rule}");
            }
            let evaluated = rules.iter().all(|rule| rule["health"] == "ok");
            (evaluated && !rules.is_empty()).then_some(rules.len())
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
