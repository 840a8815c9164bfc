//! Prometheus metrics: what operators graph and alert on.
//!
//! Labels are routes, codes, providers, channels and outcomes: never a number, an id or
//! a text. The recorder is process-wide; every application in the process reports to it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::thread::LocalKey;
use std::time::Duration;

use metrics::{Counter, Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "otp_relay_http_requests_total";
pub const SEND_DURATION: &str = "otp_relay_send_duration_seconds";
pub const PROVIDER_ATTEMPTS: &str = "otp_relay_provider_attempts_total";
pub const PROVIDER_DURATION: &str = "otp_relay_provider_duration_seconds";
pub const CIRCUIT_STATE: &str = "otp_relay_circuit_state";
pub const REFUSALS: &str = "otp_relay_refusals_total";
pub const IDEMPOTENT_REPLAYS: &str = "otp_relay_idempotent_replays_total";
pub const IN_FLIGHT: &str = "otp_relay_sends_in_flight";
pub const STORE_ERRORS: &str = "otp_relay_store_errors_total";
pub const PROVIDER_CONFIG_ERRORS: &str = "otp_relay_provider_config_errors_total";
pub const STORE_EVICTIONS: &str = "otp_relay_store_evictions_total";
pub const MEMORY_STORE_BYTES: &str = "otp_relay_memory_store_bytes";
pub const MEMORY_STORE_LIMIT: &str = "otp_relay_memory_store_limit_bytes";
pub const COST_TOTAL: &str = "otp_relay_cost_total";
pub const PROVIDER_BALANCE: &str = "otp_relay_provider_balance";
pub const FOLLOWUPS: &str = "otp_relay_followups_total";
pub const CHANNEL_FALLBACKS: &str = "otp_relay_channel_fallbacks_total";

/// Latency buckets, in seconds: from a fast local provider to the deadline.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Names the thread that folds histogram samples, so that it can be found.
const UPKEEP_THREAD: &str = "metrics-upkeep";

/// The process's recorder, installed on first use, with its upkeep running.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails when another recorder is installed, which then records instead.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    });
    static UPKEEP: OnceLock<()> = OnceLock::new();
    UPKEEP.get_or_init(|| start_upkeep(handle));
    handle
}

/// Histogram samples wait in a queue until they are folded into buckets, which only a
/// scrape or an upkeep does: unscraped, the queue grew by about 40 bytes per send,
/// without end. A thread of its own folds them, away from the request workers.
/// Returns once the thread runs (and so carries its name), so the recorder is never
/// handed out before its upkeep exists.
fn start_upkeep(handle: &'static PrometheusHandle) {
    let (started, running) = std::sync::mpsc::sync_channel::<()>(1);
    let spawned = std::thread::Builder::new()
        .name(UPKEEP_THREAD.into())
        .spawn(move || {
            let _ = started.send(());
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    match spawned {
        Ok(_) => {
            let _ = running.recv();
        }
        Err(error) => tracing::error!(%error, "could not start the metrics upkeep thread"),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by route, status and outcome code"
    );
    describe_histogram!(
        SEND_DURATION,
        Unit::Seconds,
        "Whole send time by outcome code"
    );
    describe_counter!(
        PROVIDER_ATTEMPTS,
        "Provider attempts by provider, channel and outcome"
    );
    describe_histogram!(
        PROVIDER_DURATION,
        Unit::Seconds,
        "Provider attempt time by provider"
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit per provider: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(REFUSALS, "Sends refused by a guard, by reason");
    describe_counter!(
        IDEMPOTENT_REPLAYS,
        "Repeated requests answered from the first send"
    );
    describe_gauge!(IN_FLIGHT, "Sends in progress");
    describe_counter!(
        STORE_ERRORS,
        "Failed state store operations (served from per-replica memory instead), by backend \
         and operation"
    );
    describe_counter!(
        PROVIDER_CONFIG_ERRORS,
        "Sends a provider refused because of our configuration, by provider and its code"
    );
    describe_counter!(
        STORE_EVICTIONS,
        "Entries the in-process store dropped, by kind and whether they were still live (live guard state is never dropped)"
    );
    describe_gauge!(
        MEMORY_STORE_BYTES,
        Unit::Bytes,
        "What the in-process store holds, as it weighs entries against its limit"
    );
    describe_gauge!(
        MEMORY_STORE_LIMIT,
        Unit::Bytes,
        "The in-process store's memory budget (MEMORY_STORE_MIB)"
    );
    describe_gauge!(
        COST_TOTAL,
        "Money spent on messages, by provider and currency, as the providers priced them (only grows)"
    );
    describe_gauge!(
        PROVIDER_BALANCE,
        "What is left on each provider account, by currency, as last read"
    );
    describe_counter!(
        CHANNEL_FALLBACKS,
        "Channel fallbacks by SMS, by reason (timeout, failed) and outcome (sent, failed, \
         not_scheduled)"
    );
    describe_counter!(
        FOLLOWUPS,
        "Status and price lookups after a send, by provider and outcome"
    );
}

/// The `currency` label of an amount: its ISO 4217 code, or `unknown` when the provider
/// names none (Telegram Gateway credits).
fn currency_label(money: &otp_relay_providers::Money) -> String {
    money
        .currency
        .clone()
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Adds a message's cost to `otp_relay_cost_total`. The `metrics` facade counts only
/// whole numbers, so the total is a gauge that only ever grows (`rate()` works the same).
pub fn count_cost(provider: &str, cost: &otp_relay_providers::Money) {
    handle();
    metrics::gauge!(
        COST_TOTAL,
        "provider" => provider.to_owned(),
        "currency" => currency_label(cost)
    )
    .increment(cost.as_f64());
}

/// Sets `otp_relay_provider_balance` to what a provider says is left.
pub fn set_balance(provider: &str, balance: &otp_relay_providers::Money) {
    handle();
    metrics::gauge!(
        PROVIDER_BALANCE,
        "provider" => provider.to_owned(),
        "currency" => currency_label(balance)
    )
    .set(balance.as_f64());
}

/// Seconds as the histograms record them.
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// The most labels a cached handle has.
const MAX_LABELS: usize = 3;

/// Labels as a cache key: fixed strings, unused places empty.
type Labels = [(&'static str, &'static str); MAX_LABELS];

/// `labels` in a fixed-size key.
fn label_key(labels: &[(&'static str, &'static str)]) -> Labels {
    assert!(labels.len() <= MAX_LABELS, "at most {MAX_LABELS} labels");
    let mut key = [("", ""); MAX_LABELS];
    key[..labels.len()].copy_from_slice(labels);
    key
}

/// A metric's name and labels: one cached handle each.
type HandleKey = (&'static str, Labels);

// Handles, looked up in the recorder once per thread and label set. Registering a
// handle builds and hashes its key and searches the recorder's shared registry: on
// every request that cost more than the count itself. The label values are fixed
// strings (routes, codes, provider names), so each map stays small.
// The maps hash with foldhash (hashlink's default) rather than SipHash: their keys are
// our own fixed strings, not a caller's, and SipHash over a key's seven strings cost
// about as much as the rest of the lookup.
type Handles<K, H> = HashMap<K, H, hashlink::DefaultHashBuilder>;

thread_local! {
    static COUNTERS: RefCell<Handles<HandleKey, Counter>> = RefCell::default();
    static HISTOGRAMS: RefCell<Handles<HandleKey, Histogram>> = RefCell::default();
    static HTTP_COUNTERS: RefCell<Handles<(String, u16, &'static str), Counter>> =
        RefCell::default();
}

/// The handle of `name` with `labels` in `cache`, made by `make` the first time.
fn cached<H: Clone + 'static>(
    cache: &'static LocalKey<RefCell<Handles<HandleKey, H>>>,
    name: &'static str,
    labels: &[(&'static str, &'static str)],
    make: fn(&'static str, Vec<Label>) -> H,
) -> H {
    cache.with_borrow_mut(|handles| {
        handles
            .entry((name, label_key(labels)))
            .or_insert_with(|| {
                // The recorder first: a handle made before it is installed counts nowhere.
                handle();
                make(
                    name,
                    labels.iter().map(|&(k, v)| Label::new(k, v)).collect(),
                )
            })
            .clone()
    })
}

/// The counter `name` with `labels`.
pub fn counter(name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
    cached(&COUNTERS, name, labels, |name, labels| {
        metrics::counter!(name, labels)
    })
}

/// The histogram `name` with `labels`.
pub fn histogram(name: &'static str, labels: &[(&'static str, &'static str)]) -> Histogram {
    cached(&HISTOGRAMS, name, labels, |name, labels| {
        metrics::histogram!(name, labels)
    })
}

/// Counts one HTTP request by route, status and outcome code.
pub fn count_http_request(route: String, status: u16, code: &'static str) {
    HTTP_COUNTERS.with_borrow_mut(|counters| {
        counters
            .entry((route, status, code))
            .or_insert_with_key(|(route, status, code)| {
                handle();
                metrics::counter!(
                    HTTP_REQUESTS,
                    "route" => route.clone(),
                    "status" => status.to_string(),
                    "code" => *code
                )
            })
            .increment(1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn one_upkeep_thread_folds_histogram_samples_without_a_scrape() {
        handle();
        handle();
        let tasks = std::fs::read_dir("/proc/self/task").unwrap();
        let names: Vec<String> = tasks
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect();
        let upkeep = names.iter().filter(|name| *name == UPKEEP_THREAD).count();
        assert_eq!(upkeep, 1, "threads: {names:?}");
    }

    #[test]
    fn cached_handles_count_into_the_installed_recorder() {
        const NAME: &str = "otp_relay_test_cached_total";
        const HTTP_ROUTE: &str = "/test/cached";
        for _ in 0..3 {
            counter(NAME, &[("provider", "twilio"), ("outcome", "sent")]).increment(2);
            count_http_request(HTTP_ROUTE.to_owned(), 200, "ok");
        }
        counter(NAME, &[("provider", "vonage"), ("outcome", "sent")]).increment(1);
        // From another thread: its own cache, the same recorder.
        std::thread::spawn(|| {
            counter(NAME, &[("provider", "twilio"), ("outcome", "sent")]).increment(10)
        })
        .join()
        .unwrap();
        let rendered = handle().render();
        for expected in [
            r#"otp_relay_test_cached_total{provider="twilio",outcome="sent"} 16"#,
            r#"otp_relay_test_cached_total{provider="vonage",outcome="sent"} 1"#,
            r#"otp_relay_http_requests_total{route="/test/cached",status="200",code="ok"} 3"#,
        ] {
            assert!(
                rendered.contains(expected),
                "missing {expected}\n{rendered}"
            );
        }
    }
}
