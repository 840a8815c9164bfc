//! Message provider adapters for otp-relay.
//!
//! This crate knows how to put a one-time passcode on a provider's wire and how to
//! read the provider's answer. It knows nothing of the HTTP API that otp-relay
//! serves: the server hands it an [`OutboundMessage`] and gets back a [`Receipt`] or a
//! [`ProviderError`] that says whether trying again (or elsewhere) could help.
//!
//! One module per provider; the shared vocabulary lives in [`message`], [`phone`] and
//! [`error`]. [`callbacks`] verifies and reads what providers send back: delivery
//! reports and Telegram bot updates.

pub mod callbacks;
pub mod console;
pub mod context;
pub mod error;
pub mod http;
pub mod message;
pub mod money;
pub mod phone;
pub mod provider;
pub mod registry;
pub mod sendpulse;
pub mod settings;
pub mod telegram;
pub mod text;
pub mod twilio;
pub mod vonage;

pub use console::ConsoleProvider;
pub use context::{CallbackUrls, ChatDirectory, MemoryChatDirectory, NoCallbacks, ProviderContext};
pub use error::ProviderError;
pub use message::{Channel, DeliveryStatus, OutboundMessage, Receipt};
pub use money::Money;
pub use phone::{LineKind, Phone, PhoneError, Region};
pub use provider::{Followup, MessageProvider, ProbeOutcome};
pub use registry::{ProviderSettings, Providers};
pub use sendpulse::{SendpulseProvider, SendpulseSettings};
pub use settings::{Env, SettingError};
pub use telegram::{
    TelegramBot, TelegramGateway, TelegramMode, TelegramProvider, TelegramSettings,
};
pub use twilio::{TwilioProvider, TwilioSettings};
pub use vonage::{VonageProvider, VonageSettings};
