//! The contract every provider adapter fulfils.

use async_trait::async_trait;

use crate::{Channel, OutboundMessage, ProviderError, Receipt};

/// What a credentials probe found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The provider answered a harmless authenticated call; the text says what it was.
    Verified(String),
    /// The provider offers no call that checks credentials without sending a message.
    NotSupported,
}

/// A way to deliver a message: one provider, configured with its credentials.
///
/// Implementations must be cheap to call concurrently: the server holds one instance
/// per configured provider and shares it across every request.
#[async_trait]
pub trait MessageProvider: Send + Sync {
    /// Stable lower-case name, as written in `PROVIDERS` and reported to callers.
    fn name(&self) -> &'static str;

    /// The channels this provider, as configured, can deliver on.
    fn channels(&self) -> &[Channel];

    /// Whether this provider can deliver on `channel`.
    fn serves(&self, channel: Channel) -> bool {
        self.channels().contains(&channel)
    }

    /// Hands the message to the provider. One call is one attempt: no retries here.
    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError>;

    /// Checks the credentials with a call that sends nothing, where the provider has one.
    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        Ok(ProbeOutcome::NotSupported)
    }
}
