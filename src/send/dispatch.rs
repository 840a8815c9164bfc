//! Stage 6: hands the message to the providers of its route, within the send's deadline.
//!
//! Failover between the route's providers, retries and circuits are the dispatcher's own
//! job (`crate::dispatch`); this stage is the send's view of it: one call, and the
//! outcome logged with the route's selector and the number masked, never the text or
//! the code.

use otp_relay_providers::OutboundMessage;
use tokio::time::Instant;

use crate::dispatch::{Delivery, DispatchError, Dispatcher, Route};

/// Sends through the first of the route's providers that accepts the message.
pub async fn send(
    dispatcher: &Dispatcher,
    route: Route<'_>,
    message: &OutboundMessage,
    deadline: Instant,
) -> Result<Delivery, DispatchError> {
    dispatcher.send(route, message, deadline).await
}

/// Logs where the message went, or why it went nowhere, and by which route (the
/// selector of the rule that matched, no more of it than the masked number shows;
/// absent for the `PROVIDERS` order).
pub fn log(message: &OutboundMessage, route: Route<'_>, result: &Result<Delivery, DispatchError>) {
    // Allocates nothing: the masked number is only made if the event is recorded.
    let route = route
        .selector()
        .map(|selector| tracing::field::display(selector.beside(&message.to)));
    match result {
        Ok(delivery) => {
            let receipt = &delivery.receipt;
            tracing::info!(
                message_id = %message.id,
                to = %message.to.masked(),
                channel = %message.channel,
                route,
                provider = %receipt.provider,
                status = %receipt.status,
                "message accepted by provider"
            );
        }
        Err(error) => tracing::warn!(
            message_id = %message.id,
            to = %message.to.masked(),
            channel = %message.channel,
            route,
            "message not sent: {error}"
        ),
    }
}
