//! otp-relay: delivers one-time passcodes for identity servers.
//!
//! The binary is a thin shell over [`startup::Application`]; everything is here so the
//! integration tests can run the real application on a free port.

pub mod api;
pub mod channel_fallback;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod followup;
pub mod guards;
pub mod message;
pub mod prometheus;
pub mod records;
pub mod send;
pub mod startup;
pub mod store;
pub mod telemetry;
