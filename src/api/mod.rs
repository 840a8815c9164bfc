//! The HTTP API: routes, request decoding, responses and the error mapping.

pub mod body;
pub mod compat;
pub mod error;
pub mod health;
pub mod messages;
pub mod openapi;
pub mod send;
pub mod webhooks;
