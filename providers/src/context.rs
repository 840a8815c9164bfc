//! What every adapter is built with: the shared HTTP client, the public URLs of its
//! callbacks, and the directory of Telegram chats.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::{Phone, ProviderError};

/// Finds the Telegram chat linked to a phone number (users link theirs by sharing their
/// contact with the bot).
#[async_trait]
pub trait ChatDirectory: Send + Sync {
    /// The chat id linked to `phone`, if any. An error means the directory itself could
    /// not be read (a store outage), not that the number is unknown.
    async fn chat_for(&self, phone: &Phone) -> Result<Option<i64>, ProviderError>;

    /// A message reached `chat_id` for `phone`: the link starts its lifetime again.
    async fn renew(&self, phone: &Phone, chat_id: i64) -> Result<(), ProviderError>;

    /// The user behind `chat_id` can no longer be reached there (they blocked the bot):
    /// drop the link of `phone`, if it still points at that chat.
    async fn forget(&self, phone: &Phone, chat_id: i64) -> Result<(), ProviderError>;
}

/// A [`ChatDirectory`] in process memory, bounded in size.
pub struct MemoryChatDirectory {
    chats: RwLock<HashMap<String, i64>>,
    capacity: usize,
}

impl MemoryChatDirectory {
    pub fn new(capacity: usize) -> Self {
        MemoryChatDirectory {
            chats: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    /// Links `phone` to `chat_id`. Returns false when the directory is full.
    pub fn register(&self, phone: &Phone, chat_id: i64) -> bool {
        let mut chats = self.chats.write().expect("directory lock");
        if chats.len() >= self.capacity && !chats.contains_key(phone.e164()) {
            return false;
        }
        chats.insert(phone.e164().to_owned(), chat_id);
        true
    }

    /// Removes the link for `phone`.
    pub fn unregister(&self, phone: &Phone) {
        self.chats
            .write()
            .expect("directory lock")
            .remove(phone.e164());
    }
}

#[async_trait]
impl ChatDirectory for MemoryChatDirectory {
    async fn chat_for(&self, phone: &Phone) -> Result<Option<i64>, ProviderError> {
        Ok(self
            .chats
            .read()
            .expect("directory lock")
            .get(phone.e164())
            .copied())
    }

    /// Memory links do not expire: nothing to renew.
    async fn renew(&self, _phone: &Phone, _chat_id: i64) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn forget(&self, phone: &Phone, chat_id: i64) -> Result<(), ProviderError> {
        let mut chats = self.chats.write().expect("directory lock");
        if chats.get(phone.e164()) == Some(&chat_id) {
            chats.remove(phone.e164());
        }
        Ok(())
    }
}

/// Where each webhook is reachable from outside. The server owns its routes: it tells
/// each provider the URL of its webhook (by the name in [`crate::callbacks::Webhook::name`]),
/// for the provider to give with each send and, where the scheme signs it, to verify.
pub trait CallbackUrls: Send + Sync {
    /// The public URL of the webhook called `webhook`; `None` when the server is not
    /// reachable from outside (callbacks are then not asked for).
    fn url(&self, webhook: &str) -> Option<String>;

    /// The setting an operator changes to fix these URLs, named in errors and warnings.
    fn setting(&self) -> &'static str;

    /// A good value of that setting, shown in errors.
    fn example(&self) -> &'static str;
}

/// No public URL: providers ask for no callbacks (the CLI, tests).
pub struct NoCallbacks;

impl CallbackUrls for NoCallbacks {
    fn url(&self, _webhook: &str) -> Option<String> {
        None
    }

    fn setting(&self) -> &'static str {
        "the public URL"
    }

    fn example(&self) -> &'static str {
        "https://otp.example.com"
    }
}

/// Shared resources handed to every adapter when it is built.
#[derive(Clone)]
pub struct ProviderContext {
    /// The one pooled HTTP client (see [`crate::http::client`]).
    pub client: reqwest::Client,
    pub callback_urls: Arc<dyn CallbackUrls>,
    pub chats: Arc<dyn ChatDirectory>,
}

impl ProviderContext {
    /// The public URL of the webhook called `webhook`, when there is one.
    pub fn callback_url(&self, webhook: &str) -> Option<String> {
        self.callback_urls.url(webhook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_directory_links_and_unlinks_within_capacity() {
        let directory = MemoryChatDirectory::new(1);
        let first = Phone::parse("+5511966191717", None).unwrap();
        let second = Phone::parse("+14155552671", None).unwrap();
        assert!(directory.register(&first, 42));
        assert!(!directory.register(&second, 43), "full");
        assert_eq!(directory.chat_for(&first).await.unwrap(), Some(42));
        assert!(
            directory.register(&first, 44),
            "relinking an existing number fits"
        );
        directory.unregister(&first);
        assert_eq!(directory.chat_for(&first).await.unwrap(), None);
    }
}
