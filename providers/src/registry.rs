//! The providers otp-relay knows by name, read from the environment and built.

use std::sync::Arc;

use crate::callbacks::Webhook;
use crate::settings::{Env, SettingError};
use crate::telegram::webhook::{BotWebhook, GatewayWebhook};
use crate::twilio::webhook::TwilioWebhook;
use crate::vonage::webhook::VonageWebhook;
use crate::{
    ConsoleProvider, MessageProvider, ProviderContext, SendpulseProvider, SendpulseSettings,
    TelegramBot, TelegramMode, TelegramProvider, TelegramSettings, TwilioProvider, TwilioSettings,
    VonageProvider, VonageSettings,
};

/// Names accepted in `PROVIDERS`.
pub const KNOWN_PROVIDERS: &[&str] = &["console", "twilio", "vonage", "sendpulse", "telegram"];

/// One configured provider's settings, validated and ready to build.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    Console,
    Twilio(TwilioSettings),
    Vonage(VonageSettings),
    Sendpulse(SendpulseSettings),
    Telegram(TelegramSettings),
}

impl ProviderSettings {
    /// Reads the settings of the provider called `name` (as written in `PROVIDERS`).
    /// `Ok(None)` means the name is not a provider.
    pub fn from_env(name: &str, env: &Env<'_>) -> Result<Option<ProviderSettings>, SettingError> {
        Ok(Some(match name {
            "console" => ProviderSettings::Console,
            "twilio" => ProviderSettings::Twilio(TwilioSettings::from_env(env)?),
            "vonage" => ProviderSettings::Vonage(VonageSettings::from_env(env)?),
            "sendpulse" => ProviderSettings::Sendpulse(SendpulseSettings::from_env(env)?),
            "telegram" => ProviderSettings::Telegram(TelegramSettings::from_env(env)?),
            _ => return Ok(None),
        }))
    }

    pub fn name(&self) -> &'static str {
        match self {
            ProviderSettings::Console => "console",
            ProviderSettings::Twilio(_) => "twilio",
            ProviderSettings::Vonage(_) => "vonage",
            ProviderSettings::Sendpulse(_) => "sendpulse",
            ProviderSettings::Telegram(_) => "telegram",
        }
    }

    /// Whether the provider delivers real (paid) messages.
    pub fn is_real(&self) -> bool {
        !matches!(self, ProviderSettings::Console)
    }

    pub fn build(
        &self,
        context: &ProviderContext,
    ) -> Result<Arc<dyn MessageProvider>, SettingError> {
        Ok(match self {
            ProviderSettings::Console => Arc::new(ConsoleProvider::stdout()),
            ProviderSettings::Twilio(s) => Arc::new(TwilioProvider::new(s.clone(), context)?),
            ProviderSettings::Vonage(s) => Arc::new(VonageProvider::new(s.clone(), context)?),
            ProviderSettings::Sendpulse(s) => Arc::new(SendpulseProvider::new(s.clone(), context)?),
            ProviderSettings::Telegram(s) => {
                TelegramProvider::new(s.clone(), context)?.into_provider()
            }
        })
    }
}

impl ProviderSettings {
    /// The webhooks this provider takes callbacks on, as configured: each needs the
    /// secret its scheme verifies with (and Twilio's, the public URL it signs).
    pub fn webhooks(&self, context: &ProviderContext) -> Vec<Arc<dyn Webhook>> {
        let mut webhooks: Vec<Arc<dyn Webhook>> = Vec::new();
        match self {
            ProviderSettings::Console | ProviderSettings::Sendpulse(_) => {}
            ProviderSettings::Twilio(s) => {
                if context
                    .callback_url(crate::twilio::webhook::WEBHOOK)
                    .is_some()
                {
                    webhooks.push(Arc::new(TwilioWebhook::new(s.auth_token.clone())));
                }
            }
            ProviderSettings::Vonage(s) => {
                if let Some(secret) = &s.signature_secret {
                    webhooks.push(Arc::new(VonageWebhook::new(
                        secret.clone(),
                        s.signature_method,
                    )));
                }
            }
            ProviderSettings::Telegram(s) => {
                if let Some(token) = &s.gateway_token {
                    webhooks.push(Arc::new(GatewayWebhook::new(token.clone())));
                }
                if let (TelegramMode::Bot, Some(secret)) = (s.mode, &s.webhook_secret) {
                    webhooks.push(Arc::new(BotWebhook::new(secret.clone())));
                }
            }
        }
        webhooks
    }
}

/// The configured providers, each built once.
pub struct Providers {
    /// In priority order.
    pub list: Vec<Arc<dyn MessageProvider>>,
    /// The Telegram bot, when `telegram` runs in bot mode: the same one that sends codes
    /// answers the users who link their chat.
    pub telegram_bot: Option<Arc<TelegramBot>>,
    /// Every configured webhook, each named once.
    pub webhooks: Vec<Arc<dyn Webhook>>,
}

/// Builds every provider of `settings`, in order.
pub fn build_all(
    settings: &[ProviderSettings],
    context: &ProviderContext,
) -> Result<Providers, SettingError> {
    let mut telegram_bot = None;
    let list = settings
        .iter()
        .map(|settings| match settings {
            ProviderSettings::Telegram(s) => {
                let telegram = TelegramProvider::new(s.clone(), context)?;
                if let Some(bot) = telegram.bot() {
                    telegram_bot = Some(Arc::clone(bot));
                }
                Ok(telegram.into_provider())
            }
            other => other.build(context),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let webhooks = settings.iter().flat_map(|s| s.webhooks(context)).collect();
    Ok(Providers {
        list,
        telegram_bot,
        webhooks,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The `telegram` provider's settings read from `pairs`.
    fn telegram(pairs: &[(&str, &str)]) -> ProviderSettings {
        ProviderSettings::from_env("telegram", &Env::new(&vars(pairs)))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn every_known_name_reads_its_own_variables() {
        let vars = vars(&[
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_FROM", "+14155552671"),
            ("VONAGE_API_KEY", "key"),
            ("VONAGE_API_SECRET", "secret"),
            ("VONAGE_FROM", "Acme"),
            ("SENDPULSE_CLIENT_ID", "id"),
            ("SENDPULSE_CLIENT_SECRET", "secret"),
            ("SENDPULSE_SENDER", "Acme"),
            ("TELEGRAM_GATEWAY_TOKEN", "gateway-token"),
        ]);
        let env = Env::new(&vars);
        for name in KNOWN_PROVIDERS {
            let settings = ProviderSettings::from_env(name, &env)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap_or_else(|| panic!("{name} is known"));
            assert_eq!(settings.name(), *name);
            assert_eq!(settings.is_real(), *name != "console");
        }
        assert!(ProviderSettings::from_env("pigeon", &env)
            .unwrap()
            .is_none());
        let empty = BTreeMap::new();
        let error = ProviderSettings::from_env("twilio", &Env::new(&empty)).unwrap_err();
        assert_eq!(error.var, "TWILIO_ACCOUNT_SID");
    }

    #[test]
    fn the_telegram_bot_that_sends_is_the_one_that_answers_the_webhook() {
        let settings = telegram(&[
            ("TELEGRAM_MODE", "bot"),
            ("TELEGRAM_BOT_TOKEN", "123456789:AAH-token"),
        ]);
        let context = ProviderContext {
            client: reqwest::Client::new(),
            callback_urls: Arc::new(crate::NoCallbacks),
            chats: Arc::new(crate::MemoryChatDirectory::new(1)),
        };
        let built = build_all(&[ProviderSettings::Console, settings], &context).unwrap();
        let bot = built.telegram_bot.expect("bot mode has a bot");
        assert_eq!(built.list.len(), 2);
        assert_eq!(built.list[1].name(), "telegram");
        assert!(std::ptr::addr_eq(
            Arc::as_ptr(&built.list[1]),
            Arc::as_ptr(&bot)
        ));

        let settings = telegram(&[("TELEGRAM_GATEWAY_TOKEN", "gateway-token")]);
        assert!(build_all(&[settings], &context)
            .unwrap()
            .telegram_bot
            .is_none());
    }

    /// Hands every webhook `https://otp.example.com/hooks/{name}`.
    struct Urls;

    impl crate::CallbackUrls for Urls {
        fn url(&self, webhook: &str) -> Option<String> {
            Some(format!("https://otp.example.com/hooks/{webhook}"))
        }
        fn setting(&self) -> &'static str {
            "TEST_URL"
        }
        fn example(&self) -> &'static str {
            "https://otp.example.com"
        }
    }

    fn webhook_names(
        settings: &[ProviderSettings],
        urls: Arc<dyn crate::CallbackUrls>,
    ) -> Vec<&'static str> {
        let context = ProviderContext {
            client: reqwest::Client::new(),
            callback_urls: urls,
            chats: Arc::new(crate::MemoryChatDirectory::new(1)),
        };
        build_all(settings, &context)
            .unwrap()
            .webhooks
            .iter()
            .map(|webhook| webhook.name())
            .collect()
    }

    #[test]
    fn each_configured_webhook_is_built_once_under_its_own_name() {
        let env_vars = vars(&[
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_FROM", "+14155552671"),
            ("VONAGE_API_KEY", "key"),
            ("VONAGE_API_SECRET", "secret"),
            ("VONAGE_FROM", "Acme"),
            ("VONAGE_SIGNATURE_SECRET", "signature-secret"),
            ("SENDPULSE_CLIENT_ID", "id"),
            ("SENDPULSE_CLIENT_SECRET", "secret"),
            ("SENDPULSE_SENDER", "Acme"),
            ("TELEGRAM_MODE", "bot"),
            ("TELEGRAM_BOT_TOKEN", "123456789:AAH-token"),
            ("TELEGRAM_WEBHOOK_SECRET", "bot-secret"),
            ("TELEGRAM_GATEWAY_TOKEN", "gateway-token"),
        ]);
        let env = Env::new(&env_vars);
        let all: Vec<ProviderSettings> = KNOWN_PROVIDERS
            .iter()
            .map(|name| ProviderSettings::from_env(name, &env).unwrap().unwrap())
            .collect();
        assert_eq!(
            webhook_names(&all, Arc::new(Urls)),
            ["twilio", "vonage", "telegram-gateway", "telegram-bot"]
        );
        // Twilio signs the public URL: without one its callbacks cannot be verified.
        assert_eq!(
            webhook_names(&all, Arc::new(crate::NoCallbacks)),
            ["vonage", "telegram-gateway", "telegram-bot"]
        );
        // Without their secrets, none.
        let twilio = ProviderSettings::from_env("twilio", &env).unwrap().unwrap();
        let unsigned = vars(&[
            ("VONAGE_API_KEY", "key"),
            ("VONAGE_API_SECRET", "secret"),
            ("VONAGE_FROM", "Acme"),
            ("TELEGRAM_BOT_TOKEN", "123456789:AAH-token"),
            ("TELEGRAM_MODE", "bot"),
        ]);
        let unsigned_env = Env::new(&unsigned);
        let vonage = ProviderSettings::from_env("vonage", &unsigned_env)
            .unwrap()
            .unwrap();
        let telegram = ProviderSettings::from_env("telegram", &unsigned_env)
            .unwrap()
            .unwrap();
        assert_eq!(
            webhook_names(&[vonage, telegram], Arc::new(Urls)),
            Vec::<&str>::new()
        );
        assert_eq!(webhook_names(&[twilio], Arc::new(Urls)), ["twilio"]);
    }
}
