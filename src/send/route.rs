//! Stage 5: picks the providers the message may go to (`ROUTES`): those of the most
//! specific rule that matches the number, or every provider in `PROVIDERS` order when
//! no rule does.
//!
//! The dispatcher keeps the rules resolved, most specific first, so the first match is
//! the route; choosing one allocates nothing.

use otp_relay_providers::OutboundMessage;

use crate::dispatch::{Dispatcher, Route};

/// The route of `message`'s destination.
pub fn choose<'a>(dispatcher: &'a Dispatcher, message: &OutboundMessage) -> Route<'a> {
    dispatcher.route_for(&message.to)
}
