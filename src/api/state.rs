//! What every handler shares.

use std::sync::Arc;

use otp_relay_providers::callbacks::Webhook;
use otp_relay_providers::TelegramBot;

use crate::api::webhooks::WebhookUrls;
use crate::config::Config;
use crate::followup::Followups;
use crate::records::Records;
use crate::send::SendService;
use crate::store::Store;

/// The HTTP layer's shared state: the send service every send route goes through, and
/// what the other routes read (records, store health, webhooks).
pub struct AppState {
    pub config: Arc<Config>,
    pub send: SendService,
    pub store: Arc<dyn Store>,
    pub records: Records,
    /// The configured providers' webhooks, and the public URLs they were given.
    pub webhooks: Vec<Arc<dyn Webhook>>,
    pub webhook_urls: WebhookUrls,
    /// The Telegram bot, for answering its webhook (bot mode only).
    pub telegram_bot: Option<Arc<TelegramBot>>,
    /// Status and price lookups after reports.
    pub followups: Followups,
}
