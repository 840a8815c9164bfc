//! The HTTP API: routes, request decoding, responses and the error mapping. Sends go
//! through the send service (`crate::send`); nothing below this layer knows HTTP.

pub mod body;
pub mod caller;
pub mod compat;
pub mod error;
pub mod health;
pub mod messages;
pub mod openapi;
pub mod send;
pub mod state;
pub mod webhooks;
