//! The contract every provider adapter fulfils.

use async_trait::async_trait;

use crate::callbacks::StatusUpdate;
use crate::{Channel, Money, OutboundMessage, ProviderError, Receipt};

/// What a credentials probe found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The provider answered a harmless authenticated call; the text says what it was.
    Verified(String),
    /// The provider offers no call that checks credentials without sending a message.
    NotSupported,
}

/// What the server does after a send to learn a message's fate and price, beyond the
/// send's answer and the provider's callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followup {
    /// Nothing: the callbacks tell all there is.
    Nothing,
    /// No callback reports delivery: ask with [`MessageProvider::lookup`], backing off,
    /// until a final status or the message's time to live.
    PollUntilFinal,
    /// The callbacks carry no price: ask once with [`MessageProvider::lookup`] after a
    /// final status.
    PriceAfterFinal,
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

    /// What the server must do after a send on `channel` (see [`Followup`]).
    fn followup(&self, _channel: Channel) -> Followup {
        Followup::Nothing
    }

    /// Asks the provider what became of the message it knows as `provider_message_id`:
    /// its status and, when known, its price. `Ok(None)`: no such call, or the provider
    /// does not know the message (yet).
    async fn lookup(
        &self,
        _provider_message_id: &str,
    ) -> Result<Option<StatusUpdate>, ProviderError> {
        Ok(None)
    }

    /// What is left on the account, where the provider has a call that says.
    async fn balance(&self) -> Result<Option<Money>, ProviderError> {
        Ok(None)
    }
}
