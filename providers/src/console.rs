//! The console provider: prints each message as one line instead of sending it.
//!
//! It is the embedded default so that otp-relay can be tried end to end with no
//! account anywhere: point the identity server at it, log in, read the code here.

use std::io::Write;

use async_trait::async_trait;

use crate::{Channel, DeliveryStatus, MessageProvider, OutboundMessage, ProviderError, Receipt};

type LineSink = Box<dyn Fn(&str) + Send + Sync>;

/// Prints messages; serves every channel.
pub struct ConsoleProvider {
    sink: LineSink,
}

impl ConsoleProvider {
    /// Prints to the process's standard output.
    pub fn stdout() -> Self {
        Self::with_sink(|line| {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not fail the send: the line is a courtesy.
            let _ = writeln!(out, "{line}");
        })
    }

    /// Hands each printed line to `sink` instead (for embedding and tests).
    pub fn with_sink(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        ConsoleProvider {
            sink: Box::new(sink),
        }
    }

    /// The line printed for a message: masked number, channel and the full text,
    /// which is the point of this provider.
    pub fn render(message: &OutboundMessage) -> String {
        format!(
            "[console] id={} to={} channel={} text={:?}",
            message.id,
            message.to.masked(),
            message.channel,
            message.text
        )
    }
}

#[async_trait]
impl MessageProvider for ConsoleProvider {
    fn name(&self) -> &'static str {
        "console"
    }

    fn channels(&self) -> &[Channel] {
        &Channel::ALL
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        (self.sink)(&Self::render(message));
        Ok(Receipt::new(
            self.name(),
            Some(format!("console-{}", message.id)),
            DeliveryStatus::Sent,
            Some("printed".to_owned()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::Phone;

    #[tokio::test]
    async fn prints_one_line_with_masked_number_and_full_text() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let captured = Arc::clone(&lines);
        let provider = ConsoleProvider::with_sink(move |line| {
            captured.lock().unwrap().push(line.to_owned());
        });
        let message = OutboundMessage {
            id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
            to: Phone::parse("+5511966191717", None).unwrap(),
            channel: Channel::Whatsapp,
            text: "Seu código SMS é 123456".into(),
            code: Some("123456".into()),
            ttl: Duration::from_secs(300),
        };

        let receipt = provider.send(&message).await.unwrap();

        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0],
            "[console] id=01HZZZZZZZZZZZZZZZZZZZZZZZ to=+55119*****17 channel=whatsapp text=\"Seu código SMS é 123456\""
        );
        assert_eq!(receipt.provider, "console");
        assert_eq!(receipt.status, DeliveryStatus::Sent);
        assert_eq!(
            receipt.provider_message_id.as_deref(),
            Some("console-01HZZZZZZZZZZZZZZZZZZZZZZZ")
        );
    }
}
