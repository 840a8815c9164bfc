//! Integration tests: the real application on a free port, driven over HTTP.

mod auth;
mod health;
mod helpers;
mod logs;
mod providers;
mod send;
