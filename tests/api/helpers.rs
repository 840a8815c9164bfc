//! Starting the application for a test and looking at what it did.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use otp_relay::config::{Config, HttpLimits};
use otp_relay::followup::{FollowupSettings, Followups};
use otp_relay::startup::Application;
use otp_relay::telemetry::LogFormat;
use otp_relay_providers::{
    Channel, DeliveryStatus, MessageProvider, OutboundMessage, ProviderError, Receipt,
};

/// A message as a provider received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub to: String,
    pub channel: Channel,
    pub text: String,
    pub code: Option<String>,
    pub id: String,
}

/// A provider that keeps what it is given, and answers with a set failure if told to.
pub struct RecordingProvider {
    name: &'static str,
    received: Mutex<Vec<Received>>,
    failure: Option<ProviderError>,
}

impl RecordingProvider {
    pub fn accepting() -> Arc<Self> {
        Self::new("recorder", None)
    }

    pub fn failing_with(error: ProviderError) -> Arc<Self> {
        Self::new("recorder", Some(error))
    }

    pub fn new(name: &'static str, failure: Option<ProviderError>) -> Arc<Self> {
        Arc::new(RecordingProvider {
            name,
            received: Mutex::new(Vec::new()),
            failure,
        })
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

#[async_trait]
impl MessageProvider for RecordingProvider {
    fn name(&self) -> &'static str {
        self.name
    }

    fn channels(&self) -> &[Channel] {
        &Channel::ALL
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        self.received.lock().unwrap().push(Received {
            to: message.to.e164().to_owned(),
            channel: message.channel,
            text: message.text.clone(),
            code: message.code.clone(),
            id: message.id.clone(),
        });
        match &self.failure {
            Some(error) => Err(error.clone()),
            None => Ok(Receipt::new(
                self.name,
                Some(format!("rec-{}", message.id)),
                DeliveryStatus::Queued,
                Some("accepted".into()),
            )),
        }
    }
}

/// A running application and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// The recording provider, for apps started with one.
    pub provider: Option<Arc<RecordingProvider>>,
    /// The app's status and price lookups, to await them.
    pub followups: Followups,
}

impl TestApp {
    /// An application to start, by default on [`test_config`] alone and sending
    /// through an accepting [`RecordingProvider`]:
    /// `TestApp::builder().env(&[("DEDUPE_WINDOW", "60s")]).spawn().await`.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            vars: Vec::new(),
            providers: Providers::Recording(RecordingProvider::accepting()),
            http: None,
            followup: None,
        }
    }

    /// The recording provider the app sends through.
    pub fn recorder(&self) -> &RecordingProvider {
        self.provider
            .as_deref()
            .expect("this app has a recording provider")
    }

    /// `host:port`, for raw TCP clients.
    pub fn socket_address(&self) -> &str {
        self.address.trim_start_matches("http://")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Posts raw bytes as the QIAM extension does: `Content-Type: application/json`
    /// without a charset.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(body)
            .send()
            .await
            .expect("request failed")
    }

    /// The `/metrics` page as text.
    pub async fn metrics(&self) -> String {
        self.get_text("/metrics").await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.post_raw(path, body.to_string()).await
    }

    /// The body of a `GET`, as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request failed")
            .text()
            .await
            .expect("a readable body")
    }
}

/// Configuration for tests: the given variables over a base that listens on a free
/// loopback port, with the per-number limit and dedupe off (tests that exercise them
/// turn them on).
pub fn test_config(vars: &[(String, String)]) -> Config {
    let mut all: Vec<(String, String)> = [
        ("BIND_ADDR", "127.0.0.1:0"),
        ("RATE_LIMIT_PER_NUMBER", "off"),
        ("DEDUPE_WINDOW", "0s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    all.extend_from_slice(vars);
    let mut config = Config::from_vars(all).expect("test configuration is valid");
    // Background balance reads would hit every test's mock providers: only the tests of
    // balances turn them on.
    config.followup.balance_every = None;
    config
}

/// What a test app sends through.
enum Providers {
    /// One recording provider, the one the test looks at.
    Recording(Arc<RecordingProvider>),
    /// These, in priority order.
    Given(Vec<Arc<dyn MessageProvider>>),
    /// The adapters the variables configure, built as the binary builds them (their
    /// base URLs pointing at mock servers).
    Real,
}

/// The configuration and providers of an application a test starts; see
/// [`TestApp::builder`].
pub struct TestAppBuilder {
    vars: Vec<(String, String)>,
    providers: Providers,
    http: Option<HttpLimits>,
    followup: Option<FollowupSettings>,
}

impl TestAppBuilder {
    /// Adds configuration variables; a later value of a variable wins.
    pub fn env<K: AsRef<str>, V: AsRef<str>>(mut self, vars: &[(K, V)]) -> Self {
        self.vars.extend(
            vars.iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    /// Sends through `recorder` alone, which [`TestApp::recorder`] then returns.
    pub fn provider(mut self, recorder: Arc<RecordingProvider>) -> Self {
        self.providers = Providers::Recording(recorder);
        self
    }

    /// Sends through `providers`, in priority order.
    pub fn providers(mut self, providers: Vec<Arc<dyn MessageProvider>>) -> Self {
        self.providers = Providers::Given(providers);
        self
    }

    /// Sends through the adapters the variables configure, as the binary does.
    pub fn real_providers(mut self) -> Self {
        self.providers = Providers::Real;
        self
    }

    /// The HTTP server's limits, which no variable sets.
    pub fn http_limits(mut self, http: HttpLimits) -> Self {
        self.http = Some(http);
        self
    }

    /// The follow-up timing, which no variable sets.
    pub fn followups(mut self, followup: FollowupSettings) -> Self {
        self.followup = Some(followup);
        self
    }

    /// Builds the application and runs it in the background on a free port.
    pub async fn spawn(self) -> TestApp {
        let mut config = test_config(&self.vars);
        if let Some(http) = self.http {
            config.http = http;
        }
        if let Some(followup) = self.followup {
            config.followup = followup;
        }
        let (app, provider) = match self.providers {
            Providers::Recording(recorder) => (
                Application::build_with_providers(config, vec![recorder.clone()]),
                Some(recorder),
            ),
            Providers::Given(providers) => {
                (Application::build_with_providers(config, providers), None)
            }
            Providers::Real => (Application::build(config), None),
        };
        let app = app.expect("application builds");
        capture_logs();
        let address = format!("http://127.0.0.1:{}", app.port());
        let followups = app.followups();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            client: reqwest::Client::new(),
            provider,
            followups,
        }
    }
}

/// Every log line the test binary's applications wrote, at trace level.
pub fn captured_logs() -> String {
    let buffer = capture_logs().lock().unwrap();
    String::from_utf8_lossy(&buffer).into_owned()
}

/// The captured log lines without their timestamps, whose six-digit fractions would
/// match a search for digit runs.
pub fn captured_logs_without_timestamps() -> String {
    captured_logs()
        .lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(mut event) => {
                    event.as_object_mut().map(|e| e.remove("timestamp"));
                    event.to_string()
                }
                Err(_) => line.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the otp-relay binary with only `vars` in its environment.
pub async fn run_binary(args: &[&str], vars: &[(String, String)]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_otp-relay"))
        .args(args)
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs")
}

/// Starts the otp-relay binary as a server with only `vars` in its environment (JSON
/// logs at info added), and returns it with the port it says it listens on.
pub async fn serve_binary(vars: &[(&str, &str)]) -> (tokio::process::Child, u16) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_otp-relay"))
        .env_clear()
        .envs([
            ("BIND_ADDR", "127.0.0.1:0"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ])
        .envs(vars.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    // The port is in the startup event.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the binary started");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["fields"]["message"] == "otp-relay listening" {
            break event["fields"]["port"].as_u64().unwrap() as u16;
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

#[derive(Clone)]
struct SharedBuffer(&'static Mutex<Vec<u8>>);

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs, once, a subscriber that records every event of every level as JSON.
fn capture_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let writer = SharedBuffer(buffer);
        let subscriber =
            otp_relay::telemetry::subscriber(LogFormat::Json, "trace", move || writer.clone());
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        buffer
    })
}

/// Reads a problem+json answer, checking its media type and fixed members.
pub async fn problem(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.expect("problem is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["type"],
        format!("urn:otp-relay:problem:{code}"),
        "{body}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(body["retryable"].is_boolean(), "{body}");
    body
}

/// A provider that holds every send until released, and says when one arrives.
pub struct GatedProvider {
    pub arrived: tokio::sync::Notify,
    pub release: tokio::sync::Semaphore,
}

impl GatedProvider {
    pub fn new() -> Arc<Self> {
        Arc::new(GatedProvider {
            arrived: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        })
    }
}

#[async_trait]
impl MessageProvider for GatedProvider {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn channels(&self) -> &[Channel] {
        &Channel::ALL
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        self.arrived.notify_one();
        self.release.acquire().await.expect("gate open").forget();
        Ok(Receipt::new(
            "gated",
            Some(message.id.clone()),
            DeliveryStatus::Queued,
            None,
        ))
    }
}
