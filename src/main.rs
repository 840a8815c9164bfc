use std::process::ExitCode;

use otp_relay::config::Config;
use otp_relay::startup::Application;
use otp_relay::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("otp-relay: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format, &config.log_filter);
    let application = match Application::build(config) {
        Ok(application) => application,
        Err(error) => {
            tracing::error!("cannot start: {error}");
            eprintln!("otp-relay: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("server failed: {error}");
            ExitCode::from(1)
        }
    }
}
