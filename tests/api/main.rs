//! Integration tests: the real application on a free port, driven over HTTP.

mod auth;
mod cli;
mod compat;
mod fakes;
mod guard_state;
mod guards;
mod health;
mod helpers;
mod hygiene;
mod limits;
mod logs;
mod metrics;
mod monitoring;
mod openapi;
mod properties;
mod providers;
mod receipts;
mod redis_server;
mod reliability;
mod replicas;
mod send;
mod server_process;
mod shutdown;
mod store;
mod telegram_bot;
mod traces;
