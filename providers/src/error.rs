//! How a send can fail, in terms the dispatcher can act on.

use std::time::Duration;

/// A failed attempt at one provider.
///
/// Each variant says whether the failure is transient (the same request may succeed
/// later or elsewhere) or permanent, and whether the provider provably did not process
/// the request (only then is retrying the same provider free of the risk of a
/// duplicate message). `detail` texts come from the provider and must never contain a
/// credential, the message text or an unmasked number: adapters build them with that
/// in mind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider says the recipient is not a number it can deliver to.
    #[error("recipient rejected by the provider: {detail}")]
    InvalidRecipient { detail: String },
    /// The recipient has not linked this channel (e.g. never started the Telegram bot).
    #[error("recipient is not registered on this channel: {detail}")]
    RecipientNotRegistered { detail: String },
    /// The account may not send to the recipient's region.
    #[error("the provider account cannot send to this region: {detail}")]
    RegionNotEnabled { detail: String },
    /// The recipient has opted out of messages from this sender.
    #[error("recipient opted out: {detail}")]
    RecipientOptedOut { detail: String },
    /// The provider refused the credentials.
    #[error("the provider refused the credentials: {detail}")]
    Unauthorized { detail: String },
    /// Our account or its configuration at this provider cannot send: balance exhausted,
    /// account suspended or inactive, sender (From, sender id, messaging service) invalid
    /// or not allowed, template missing or not approved. Another provider does not share
    /// the problem.
    #[error("the provider account cannot send: {detail}")]
    AccountUnusable { detail: String },
    /// Our own configuration at this provider is wrong: the callback URL we sent, the
    /// sender, the template, a parameter we chose. `code` is the provider's own code
    /// (`21609`, `23`, `CALLBACK_URL_INVALID`), taken from a fixed list in the adapter,
    /// so it is safe as a metric label. Every message fails the same way until an
    /// operator fixes it; another provider does not share the problem.
    #[error("the provider refuses our configuration ({code}): {detail}")]
    Misconfigured { code: String, detail: String },
    /// The provider asked us to slow down; the request was not processed.
    #[error("rate limited by the provider: {detail}")]
    RateLimited {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The provider had a server-side failure; whether it processed the request is unknown.
    #[error("the provider is unavailable: {detail}")]
    Unavailable { detail: String },
    /// The provider could not be reached at all; nothing was sent.
    #[error("could not connect to the provider: {detail}")]
    Connect { detail: String },
    /// No answer within the attempt's time; whether it processed the request is unknown.
    #[error("the provider did not answer in time")]
    Timeout,
    /// The provider refused the message for another reason that retrying will not fix.
    #[error("the provider rejected the message: {detail}")]
    Rejected { detail: String },
    /// The provider needs a bare code (4 to 8 digits) and the message has none.
    #[error("this provider sends codes, and the message has no 4 to 8 digit code")]
    CodeRequired,
    /// The provider answered something we could not understand. `detail` holds at most
    /// 512 bytes of the reply, scrubbed of digit runs.
    #[error("unexpected answer from the provider (HTTP {status}): {detail}")]
    Protocol { status: u16, detail: String },
}

impl ProviderError {
    /// The same error with every occurrence of each of `hidden` (four characters or
    /// more) in its detail replaced by `[redacted]`: the dispatcher's safety net against
    /// a provider that echoes the message text or the number into its error.
    pub fn redacted(mut self, hidden: &[&str]) -> ProviderError {
        if let Some(detail) = self.detail_mut() {
            for text in hidden.iter().filter(|text| text.chars().count() >= 4) {
                if detail.contains(text) {
                    *detail = detail.replace(text, "[redacted]");
                }
            }
        }
        self
    }

    fn detail_mut(&mut self) -> Option<&mut String> {
        match self {
            ProviderError::InvalidRecipient { detail }
            | ProviderError::RecipientNotRegistered { detail }
            | ProviderError::RegionNotEnabled { detail }
            | ProviderError::RecipientOptedOut { detail }
            | ProviderError::Unauthorized { detail }
            | ProviderError::AccountUnusable { detail }
            | ProviderError::Misconfigured { detail, .. }
            | ProviderError::RateLimited { detail, .. }
            | ProviderError::Unavailable { detail }
            | ProviderError::Connect { detail }
            | ProviderError::Rejected { detail }
            | ProviderError::Protocol { detail, .. } => Some(detail),
            ProviderError::Timeout | ProviderError::CodeRequired => None,
        }
    }

    /// Stable machine-readable code, reported to callers and used in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::InvalidRecipient { .. } => "invalid_recipient",
            ProviderError::RecipientNotRegistered { .. } => "recipient_not_registered",
            ProviderError::RegionNotEnabled { .. } => "region_not_enabled",
            ProviderError::RecipientOptedOut { .. } => "recipient_opted_out",
            ProviderError::Unauthorized { .. } => "unauthorized",
            ProviderError::AccountUnusable { .. } => "account_unusable",
            ProviderError::Misconfigured { .. } => "provider_misconfigured",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::Connect { .. } => "connect_failed",
            ProviderError::Timeout => "timeout",
            ProviderError::Rejected { .. } => "rejected",
            ProviderError::CodeRequired => "code_required",
            ProviderError::Protocol { .. } => "protocol",
        }
    }

    /// The same request may succeed if tried again later or at another provider.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::Connect { .. }
                | ProviderError::Timeout
        )
    }

    /// Trying again will not help at this provider.
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    /// The provider provably did not process the request, so repeating it at the same
    /// provider cannot deliver the message twice.
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. } | ProviderError::Connect { .. }
        )
    }

    /// The message provably never reached the provider: it could not be connected to,
    /// it throttled the request before processing it, or the adapter refused it before
    /// calling out. Only such failures may give back a rate-limit allowance or release
    /// an `Idempotency-Key`; any other failure may have sent the code.
    pub fn never_reached_provider(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Connect { .. }
                | ProviderError::CodeRequired
        )
    }

    /// A permanent failure here that another provider might not have (account or
    /// registration specific, not a property of the number itself).
    pub fn another_provider_may_succeed(&self) -> bool {
        self.is_transient()
            || matches!(
                self,
                ProviderError::RecipientNotRegistered { .. }
                    | ProviderError::RegionNotEnabled { .. }
                    | ProviderError::Unauthorized { .. }
                    | ProviderError::AccountUnusable { .. }
                    | ProviderError::Misconfigured { .. }
                    | ProviderError::CodeRequired
                    | ProviderError::Protocol { .. }
            )
    }

    /// The failure is about the recipient (the caller's input), not the provider or the
    /// account: the caller can fix it, so it answers 422 rather than 502.
    pub fn is_recipient_problem(&self) -> bool {
        matches!(
            self,
            ProviderError::InvalidRecipient { .. }
                | ProviderError::RecipientNotRegistered { .. }
                | ProviderError::RecipientOptedOut { .. }
                | ProviderError::CodeRequired
        )
    }

    /// The provider's own code when the failure is our configuration's fault (see
    /// [`ProviderError::Misconfigured`]).
    pub fn config_error_code(&self) -> Option<&str> {
        match self {
            ProviderError::Misconfigured { code, .. } => Some(code),
            _ => None,
        }
    }

    /// How long the provider asked us to wait, if it said; never more than
    /// [`crate::http::MAX_PROVIDER_DELAY`], whoever built the error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => {
                retry_after.map(|wait| wait.min(crate::http::MAX_PROVIDER_DELAY))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_the_given_texts_only() {
        let error = ProviderError::Rejected {
            detail: "body 'Your code is ****' refused for Acme".into(),
        };
        assert_eq!(
            error.redacted(&["Your code is ****", "", "Ac"]),
            ProviderError::Rejected {
                detail: "body '[redacted]' refused for Acme".into()
            }
        );
        assert_eq!(
            ProviderError::Timeout.redacted(&["x"]),
            ProviderError::Timeout
        );
    }

    #[test]
    fn transient_and_retry_safety_follow_what_the_provider_processed() {
        let limited = ProviderError::RateLimited {
            detail: "slow down".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(limited.is_transient() && limited.is_safe_to_retry());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));

        let unknown_outcome = ProviderError::Unavailable {
            detail: "502".into(),
        };
        assert!(unknown_outcome.is_transient() && !unknown_outcome.is_safe_to_retry());
        assert!(
            ProviderError::Timeout.is_transient() && !ProviderError::Timeout.is_safe_to_retry()
        );

        let bad_number = ProviderError::InvalidRecipient {
            detail: "21211".into(),
        };
        assert!(bad_number.is_permanent() && !bad_number.another_provider_may_succeed());
        assert_eq!(bad_number.code(), "invalid_recipient");

        let region = ProviderError::RegionNotEnabled {
            detail: "21408".into(),
        };
        assert!(region.is_permanent() && region.another_provider_may_succeed());

        let account = ProviderError::AccountUnusable {
            detail: "BALANCE_NOT_ENOUGH".into(),
        };
        assert_eq!(account.code(), "account_unusable");
        assert!(account.is_permanent() && !account.is_safe_to_retry());
        assert!(account.another_provider_may_succeed());
        assert!(!account.is_recipient_problem());
        assert_eq!(account.retry_after(), None);

        let ours = ProviderError::Misconfigured {
            code: "21609".into(),
            detail: "invalid StatusCallback".into(),
        };
        assert_eq!(ours.code(), "provider_misconfigured");
        assert_eq!(ours.config_error_code(), Some("21609"));
        assert!(ours.is_permanent() && ours.another_provider_may_succeed());
        assert!(!ours.is_recipient_problem() && !ours.never_reached_provider());
        assert_eq!(account.config_error_code(), None);
    }
}
