//! Stage 5: hands the message to the providers, within the send's deadline.
//!
//! Routing (which providers, in which order, and failover between them) is the
//! dispatcher's own job (`crate::dispatch`); this stage is the send's view of it: one
//! call, and the outcome logged with the number masked, never the text or the code.

use otp_relay_providers::OutboundMessage;
use tokio::time::Instant;

use crate::dispatch::{Delivery, DispatchError, Dispatcher};

/// Sends through the first provider that accepts the message.
pub async fn send(
    dispatcher: &Dispatcher,
    message: &OutboundMessage,
    deadline: Instant,
) -> Result<Delivery, DispatchError> {
    dispatcher.send(message, deadline).await
}

/// Logs where the message went, or why it went nowhere.
pub fn log(message: &OutboundMessage, result: &Result<Delivery, DispatchError>) {
    match result {
        Ok(delivery) => {
            let receipt = &delivery.receipt;
            tracing::info!(
                message_id = %message.id,
                to = %message.to.masked(),
                channel = %message.channel,
                provider = %receipt.provider,
                status = %receipt.status,
                "message accepted by provider"
            );
        }
        Err(error) => tracing::warn!(
            message_id = %message.id,
            to = %message.to.masked(),
            channel = %message.channel,
            "message not sent: {error}"
        ),
    }
}
