//! The command line: run the server, or the operator's tools around it.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use otp_relay_providers::ProbeOutcome;

use crate::api::send::HttpAnswers;
use crate::config::Config;
use crate::dispatch::routes::Selector;
use crate::dispatch::Attempt;
use crate::guards::access::Identity;
use crate::records::Records;
use crate::send::{self, Outcome, SendError};
use crate::startup::{
    build_providers, provider_context, standalone_send_service, Application, StartupError,
};
use crate::telemetry;

/// Delivers one-time passcodes for identity servers. Configured by environment
/// variables (see .env.example).
#[derive(Debug, Parser)]
#[command(name = "otp-relay", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Load the configuration, print the effective settings with secrets masked, and
    /// check each provider's credentials with a call that sends nothing.
    Check,
    /// Send one message through the configured providers, to test credentials.
    Send {
        /// Destination number, e.g. +5511966191717.
        #[arg(long)]
        to: String,
        /// The message text.
        #[arg(long)]
        text: String,
        /// sms, whatsapp or telegram; DEFAULT_CHANNEL when absent.
        #[arg(long)]
        channel: Option<String>,
        /// The bare code, for providers that send codes (Telegram Gateway, templates).
        #[arg(long)]
        code: Option<String>,
    },
    /// Exit 0 when the server on BIND_ADDR answers /health/live (for container health
    /// checks; needs no curl).
    Healthcheck,
    /// Telegram bot administration.
    #[command(subcommand)]
    Telegram(TelegramCommand),
}

#[derive(Debug, Subcommand)]
pub enum TelegramCommand {
    /// Point the bot's webhook at PUBLIC_BASE_URL/webhooks/telegram-bot with
    /// TELEGRAM_WEBHOOK_SECRET.
    SetWebhook,
}

/// Runs the command line, returning the process's exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("otp-relay: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Check => check(config).await,
        Command::Send {
            to,
            text,
            channel,
            code,
        } => send(config, to, text, channel, code).await,
        Command::Healthcheck => healthcheck(&config).await,
        Command::Telegram(TelegramCommand::SetWebhook) => set_webhook(&config).await,
    }
}

async fn serve(config: Config) -> ExitCode {
    let traces = match telemetry::Traces::from_vars(std::env::vars()) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("otp-relay: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_filter, traces.as_ref());
    let application = match Application::build(config) {
        Ok(application) => application,
        Err(error) => {
            tracing::error!("cannot start: {error}");
            eprintln!("otp-relay: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    let shed = crate::resident::shed_startup_pages();
    tracing::debug!(
        bytes = shed,
        "dropped the executable's pages that starting touched"
    );
    let result = application.run_until_stopped().await;
    if let Some(traces) = traces {
        // Shutting down waits for the last export: off the runtime's thread.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server failed: {error}");
            ExitCode::from(1)
        }
    }
}

async fn check(config: Config) -> ExitCode {
    println!("effective configuration (secrets masked):\n{config:#?}\n");
    print_routes(&config);
    let providers = match cli_providers(&config) {
        Ok(providers) => providers,
        Err(error) => {
            println!("FAIL cannot build providers: {error}");
            return ExitCode::from(1);
        }
    };
    let mut failed = false;
    for provider in &providers {
        match provider.probe().await {
            Ok(ProbeOutcome::Verified(what)) => println!("ok   {}: {what}", provider.name()),
            Ok(ProbeOutcome::NotSupported) => println!(
                "--   {}: no call checks credentials without sending",
                provider.name()
            ),
            Err(error) => {
                failed = true;
                println!("FAIL {}: {} ({error})", provider.name(), error.code());
            }
        }
    }
    // What is left on each account: informative, a failure here fails nothing.
    for (name, balance) in crate::followup::refresh_balances(&providers).await {
        match balance {
            Ok(Some(money)) => println!("ok   {name}: balance {money}"),
            Ok(None) => println!("--   {name}: no balance call"),
            Err(error) => println!("--   {name}: balance unknown: {} ({error})", error.code()),
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `otp-relay send`: one message through the send service, as the server would send
/// it (policy, idempotency/dedupe, rate limits, record), under the fixed caller `cli`.
/// Exit codes: 0 sent (or answered as the same send before), 2 an unusable request,
/// 1 refused or not sent.
async fn send(
    config: Config,
    to: String,
    text: String,
    channel: Option<String>,
    code: Option<String>,
) -> ExitCode {
    let request = send::Request {
        mobile: Some(to),
        message: Some(text),
        channel,
        code,
        ..send::Request::default()
    };
    let service = match standalone_send_service(config) {
        Ok(service) => service,
        Err(error) => {
            eprintln!("otp-relay: cannot build the send service: {error}");
            return ExitCode::from(1);
        }
    };
    let context = send::Context {
        caller: Identity::Cli,
        idempotency_key: None,
        received_at: tokio::time::Instant::now(),
    };
    // Answers are rendered as the HTTP API's, so that whatever is stored for repeats
    // reads the same whichever entrance stored it.
    match service.send(request, context, &HttpAnswers).await {
        Ok(Outcome::Sent { sent, .. }) => {
            print_attempts(&sent.delivery.attempts);
            let receipt = &sent.delivery.receipt;
            println!(
                "sent {} to {} via {} ({}, provider id {})",
                sent.id,
                sent.to,
                receipt.provider,
                receipt.status,
                receipt.provider_message_id.as_deref().unwrap_or("-")
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::Replayed(answer)) => {
            println!(
                "not sent again: the same message went to this number within DEDUPE_WINDOW; \
                 its answer was {} {}",
                answer.status, answer.body
            );
            if answer.status < 400 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            if let SendError::Dispatch { error, .. } = &error {
                print_attempts(error.attempts());
            }
            let what = match error {
                SendError::Dispatch { .. } => "not sent",
                _ => "refused",
            };
            eprintln!("otp-relay: {what}: {error} ({})", error.code());
            if error.is_invalid_request() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The effective route table: each rule, most specific first, and where a number that
/// no rule matches goes.
fn print_routes(config: &Config) {
    let everyone = config
        .providers
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ");
    let rules = config.routes.rules();
    if rules.is_empty() {
        println!("routes: ROUTES unset, every number goes to {everyone} (PROVIDERS order)\n");
        return;
    }
    println!("routes (the first rule that matches a number is its route):");
    for rule in rules {
        let selector = rule.selector.to_string();
        println!("  {selector:<16} {}", rule.providers.join(", "));
    }
    if !rules.iter().any(|rule| rule.selector == Selector::Any) {
        println!("  {:<16} {everyone} (PROVIDERS order)", "(no match)");
    }
    println!();
}

fn print_attempts(attempts: &[Attempt]) {
    for attempt in attempts {
        println!(
            "{:<10} {:<8} {}",
            attempt.provider,
            attempt.outcome,
            attempt.code.unwrap_or("")
        );
    }
}

/// The providers, with the Telegram links read from the configured store.
fn cli_providers(
    config: &Config,
) -> Result<Vec<std::sync::Arc<dyn otp_relay_providers::MessageProvider>>, StartupError> {
    let store = crate::store::open(&config.store).map_err(StartupError::Store)?;
    let records = Records::new(store, config.message_retention);
    build_providers(
        config,
        &provider_context(config, std::sync::Arc::new(records)),
    )
    .map(|providers| providers.list)
}

async fn set_webhook(config: &Config) -> ExitCode {
    use otp_relay_providers::{ProviderSettings, TelegramMode, TelegramProvider};
    let Some(settings) = config.providers.iter().find_map(|p| match p {
        ProviderSettings::Telegram(s) if s.mode == TelegramMode::Bot => Some(s),
        _ => None,
    }) else {
        eprintln!("otp-relay: set PROVIDERS to include telegram and TELEGRAM_MODE=bot");
        return ExitCode::from(2);
    };
    let context = provider_context(
        config,
        std::sync::Arc::new(otp_relay_providers::MemoryChatDirectory::new(1)),
    );
    let bot_webhook = otp_relay_providers::telegram::webhook::BOT_WEBHOOK;
    let (Some(url), Some(secret)) = (context.callback_url(bot_webhook), &settings.webhook_secret)
    else {
        eprintln!("otp-relay: PUBLIC_BASE_URL and TELEGRAM_WEBHOOK_SECRET are both required");
        return ExitCode::from(2);
    };
    let bot = match TelegramProvider::new(settings.clone(), &context) {
        Ok(bot) => bot,
        Err(error) => {
            eprintln!("otp-relay: {error}");
            return ExitCode::from(2);
        }
    };
    match bot.set_webhook(&url, secret).await {
        Ok(description) => {
            println!("webhook set to {url}: {description}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("otp-relay: setWebhook failed: {error}");
            ExitCode::from(1)
        }
    }
}

async fn healthcheck(config: &Config) -> ExitCode {
    let mut address = config.bind_addr;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{address}/health/live");
    let client = otp_relay_providers::http::client(Duration::from_secs(2));
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("otp-relay: {url} answered {}", response.status());
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("otp-relay: {url} did not answer: {}", error.without_url());
            ExitCode::from(1)
        }
    }
}
