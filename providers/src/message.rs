//! What is sent (an [`OutboundMessage`]) and what the provider said about it (a [`Receipt`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Phone;

/// The medium a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Whatsapp,
    Telegram,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Sms, Channel::Whatsapp, Channel::Telegram];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Telegram => "telegram",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not one of `sms`, `whatsapp`, `telegram`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel; expected one of sms, whatsapp, telegram")]
pub struct UnknownChannel;

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sms" => Ok(Channel::Sms),
            "whatsapp" => Ok(Channel::Whatsapp),
            "telegram" => Ok(Channel::Telegram),
            _ => Err(UnknownChannel),
        }
    }
}

/// Where a message is in its life, in the one vocabulary every provider is mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Queued,
    Sent,
    Delivered,
    Failed,
    Undelivered,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Undelivered => "undelivered",
        }
    }

    /// Final statuses are never replaced by a later, less final one.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryStatus::Delivered | DeliveryStatus::Failed | DeliveryStatus::Undelivered
        )
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message to deliver, already validated by the server.
///
/// `Debug` masks the number and hides the text and code: they must never reach a log.
#[derive(Clone)]
pub struct OutboundMessage {
    /// otp-relay's own id for the message; providers that take a client reference get it.
    pub id: String,
    pub to: Phone,
    pub channel: Channel,
    /// The full text to deliver.
    pub text: String,
    /// The bare one-time code, for providers that send codes rather than text.
    pub code: Option<String>,
    /// How long the code is worth delivering.
    pub ttl: Duration,
}

impl fmt::Debug for OutboundMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundMessage")
            .field("id", &self.id)
            .field("to", &self.to)
            .field("channel", &self.channel)
            .field("text", &"<redacted>")
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A provider's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub provider: String,
    /// The provider's id for the message, used to match delivery callbacks.
    pub provider_message_id: Option<String>,
    pub status: DeliveryStatus,
    /// The provider's own word for the status, kept for operators.
    pub raw_status: Option<String>,
    /// The ids of the other parts of a message the provider split and reports on part by
    /// part (the Vonage SMS API gives each SMS part its own id and delivery receipt).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub part_ids: Vec<String>,
    /// What the provider says the message cost, as the decimal it wrote, if it said
    /// (Telegram Gateway `request_cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    /// The account balance left after this message, if the provider said (Telegram
    /// Gateway `remaining_balance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_balance: Option<String>,
}

impl Receipt {
    /// A receipt with the fields every provider fills; parts, cost and balance empty.
    pub fn new(
        provider: &str,
        provider_message_id: Option<String>,
        status: DeliveryStatus,
        raw_status: Option<String>,
    ) -> Receipt {
        Receipt {
            provider: provider.to_owned(),
            provider_message_id,
            status,
            raw_status,
            part_ids: Vec::new(),
            cost: None,
            remaining_balance: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_parses_case_insensitively_and_rejects_others() {
        assert_eq!("WhatsApp".parse::<Channel>(), Ok(Channel::Whatsapp));
        assert_eq!(" sms ".parse::<Channel>(), Ok(Channel::Sms));
        assert_eq!("pigeon".parse::<Channel>(), Err(UnknownChannel));
    }

    #[test]
    fn debug_hides_text_and_code_and_masks_number() {
        let message = OutboundMessage {
            id: "01J0000000000000000000000".into(),
            to: Phone::parse("+5511966191717", None).unwrap(),
            channel: Channel::Sms,
            text: "Your code is 918273".into(),
            code: Some("918273".into()),
            ttl: Duration::from_secs(300),
        };
        let printed = format!("{message:?}");
        assert!(!printed.contains("918273"), "{printed}");
        assert!(!printed.contains("5511966191717"), "{printed}");
        assert!(printed.contains("+55119*****17"), "{printed}");
    }
}
