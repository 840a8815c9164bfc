use std::process::ExitCode;

use clap::Parser;
use otp_relay::cli::{self, Cli};

// One thread: the HTTP server runs its own worker threads (`WORKERS`); this one only
// starts it, waits for signals, and runs the short CLI commands.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    cli::run(Cli::parse()).await
}
