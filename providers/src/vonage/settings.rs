//! Vonage settings: the `VONAGE_*` variables, read and checked once at startup.

use super::jwt::signing_key;
use crate::Channel;
use crate::Env;
use crate::SettingError;
use secrecy::SecretString;

pub(super) const DEFAULT_SMS_BASE_URL: &str = "https://rest.nexmo.com";
pub(super) const DEFAULT_MESSAGES_BASE_URL: &str = "https://api.nexmo.com";
/// Template language when `VONAGE_WHATSAPP_TEMPLATE` names none: WhatsApp has no bare
/// `en` for authentication templates created in English (US), the usual first one.
pub(super) const DEFAULT_TEMPLATE_LOCALE: &str = "en_US";

/// Which Vonage API sends the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VonageApi {
    /// The SMS API (`/sms/json`): SMS only, key and secret.
    Sms,
    /// The Messages API (`/v1/messages`): SMS and WhatsApp, JWT or key and secret.
    Messages,
}

/// An approved WhatsApp template: its name and language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsappTemplate {
    pub name: String,
    /// BCP 47 with an underscore, as WhatsApp writes it (`en`, `en_US`, `pt_BR`).
    pub locale: String,
}

/// Vonage settings, read from `VONAGE_*` variables.
#[derive(Debug, Clone)]
pub struct VonageSettings {
    pub api: VonageApi,
    pub api_key: Option<String>,
    pub api_secret: Option<SecretString>,
    /// Sender: a number as digits without `+`, or an alphanumeric sender id (SMS only).
    pub from: String,
    pub channels: Vec<Channel>,
    pub application_id: Option<String>,
    /// The application's private key, as PEM text.
    pub private_key: Option<SecretString>,
    /// For verifying Vonage's signed webhooks (used by the webhook handler, not here).
    pub signature_secret: Option<SecretString>,
    /// `VONAGE_SIGNATURE_METHOD`: how SMS API receipts are signed (default `md5hash`).
    pub signature_method: super::webhook::SignatureMethod,
    pub whatsapp_template: Option<WhatsappTemplate>,
    pub sms_base_url: String,
    pub messages_base_url: String,
}

/// The variable of the key pair that is missing, if one is.
pub(super) fn missing_key_half(
    key: &Option<String>,
    secret: &Option<SecretString>,
) -> Option<&'static str> {
    if key.is_none() {
        Some("VONAGE_API_KEY")
    } else if secret.is_none() {
        Some("VONAGE_API_SECRET")
    } else {
        None
    }
}

impl VonageSettings {
    /// Reads and validates the `VONAGE_*` variables. With the Messages API and an
    /// application, the private key is loaded (PEM text or file) and test-signed here, so
    /// a bad key stops startup. `VONAGE_APPLICATION_ID`/`VONAGE_PRIVATE_KEY` are ignored
    /// by the SMS API.
    pub fn from_env(env: &Env<'_>) -> Result<VonageSettings, SettingError> {
        let api = match env
            .get("VONAGE_API")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("sms") => VonageApi::Sms,
            Some("messages") => VonageApi::Messages,
            Some(_) => {
                return Err(SettingError::new(
                    "VONAGE_API",
                    "must be sms (the SMS API) or messages (the Messages API)",
                    "messages",
                ))
            }
        };
        let channels = env.channels(
            "VONAGE_CHANNEL",
            Channel::Sms,
            &[Channel::Sms, Channel::Whatsapp],
            "sms,whatsapp",
        )?;
        if api == VonageApi::Sms && channels.contains(&Channel::Whatsapp) {
            return Err(SettingError::new(
                "VONAGE_CHANNEL",
                "whatsapp needs VONAGE_API=messages (the SMS API sends only sms)",
                "sms",
            ));
        }
        let from = sender(env.required("VONAGE_FROM", "14155550100")?);
        if channels.contains(&Channel::Whatsapp) && !is_digits(&from) {
            return Err(SettingError::new(
                "VONAGE_FROM",
                "WhatsApp sends from a number: give it as digits with the country code",
                "14155550100",
            ));
        }
        let whatsapp_template = env
            .get("VONAGE_WHATSAPP_TEMPLATE")
            .map(parse_template)
            .transpose()?;
        if whatsapp_template.is_none() && channels.contains(&Channel::Whatsapp) {
            return Err(SettingError::new(
                "VONAGE_WHATSAPP_TEMPLATE",
                "is required when VONAGE_CHANNEL includes whatsapp: outside the 24 h window \
                 WhatsApp drops free text, so codes go in an approved authentication template",
                "otp_code:pt_BR",
            ));
        }
        if whatsapp_template.is_some() && !channels.contains(&Channel::Whatsapp) {
            return Err(SettingError::new(
                "VONAGE_WHATSAPP_TEMPLATE",
                "is set but VONAGE_CHANNEL does not include whatsapp",
                "otp_code:pt_BR",
            ));
        }

        let api_key = env.get("VONAGE_API_KEY").map(str::to_owned);
        let api_secret = env.optional_secret("VONAGE_API_SECRET");
        let (mut application_id, mut private_key) = (None, None);
        match api {
            VonageApi::Sms => {
                env.required("VONAGE_API_KEY", "abcd1234")?;
                env.required("VONAGE_API_SECRET", "abcdef0123456789")?;
            }
            VonageApi::Messages => {
                let app = env.get("VONAGE_APPLICATION_ID");
                let key_var = env.get("VONAGE_PRIVATE_KEY");
                if app.is_some() || key_var.is_some() {
                    // An application is meant: both halves or nothing.
                    application_id = Some(
                        env.required(
                            "VONAGE_APPLICATION_ID",
                            "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab",
                        )?
                        .to_owned(),
                    );
                    let pem = read_private_key(
                        env.required("VONAGE_PRIVATE_KEY", "/run/secrets/vonage_private.key")?,
                    )?;
                    signing_key(&pem)?;
                    private_key = Some(pem);
                } else if let Some(var) = missing_key_half(&api_key, &api_secret) {
                    return Err(SettingError::new(
                        var,
                        "is required by the Messages API unless VONAGE_APPLICATION_ID and \
                         VONAGE_PRIVATE_KEY are set",
                        "abcd1234",
                    ));
                }
            }
        }
        if api_key.is_some() != api_secret.is_some() {
            let var = missing_key_half(&api_key, &api_secret).unwrap_or("VONAGE_API_KEY");
            return Err(SettingError::new(
                var,
                "is required when the other half of the key pair is set",
                "abcd1234",
            ));
        }

        Ok(VonageSettings {
            api,
            api_key,
            api_secret,
            from,
            channels,
            application_id,
            private_key,
            signature_secret: env.optional_secret("VONAGE_SIGNATURE_SECRET"),
            signature_method: match env.get("VONAGE_SIGNATURE_METHOD") {
                None => Default::default(),
                Some(method) => method.parse().map_err(|_| {
                    SettingError::new(
                        "VONAGE_SIGNATURE_METHOD",
                        "expected md5hash, md5, sha1, sha256 or sha512",
                        "sha256",
                    )
                })?,
            },
            whatsapp_template,
            sms_base_url: env.base_url("VONAGE_SMS_BASE_URL", DEFAULT_SMS_BASE_URL)?,
            messages_base_url: env
                .base_url("VONAGE_MESSAGES_BASE_URL", DEFAULT_MESSAGES_BASE_URL)?,
        })
    }

    pub(super) fn key_pair(&self) -> Option<(&str, &SecretString)> {
        Some((self.api_key.as_deref()?, self.api_secret.as_ref()?))
    }
}

/// A configured sender, with the `+` of an international number dropped (Vonage wants
/// digits only).
pub(super) fn sender(value: &str) -> String {
    match value.strip_prefix('+') {
        Some(digits) if is_digits(digits) => digits.to_owned(),
        _ => value.to_owned(),
    }
}

pub(super) fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `name` or `name:locale`.
pub(super) fn parse_template(value: &str) -> Result<WhatsappTemplate, SettingError> {
    let (name, locale) = value
        .split_once(':')
        .map_or((value, DEFAULT_TEMPLATE_LOCALE), |(n, l)| {
            (n.trim(), l.trim())
        });
    let locale_ok = !locale.is_empty()
        && locale
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '_' || c == '-');
    if name.is_empty() || !locale_ok {
        return Err(SettingError::new(
            "VONAGE_WHATSAPP_TEMPLATE",
            "must be a template name, optionally followed by :locale",
            "otp_code:pt_BR",
        ));
    }
    Ok(WhatsappTemplate {
        name: name.to_owned(),
        locale: locale.to_owned(),
    })
}

/// `VONAGE_PRIVATE_KEY` is the PEM itself (escaped `\n` allowed, for one-line env files)
/// or the path of a PEM file.
pub(super) fn read_private_key(value: &str) -> Result<SecretString, SettingError> {
    if value.starts_with("-----BEGIN") {
        return Ok(SecretString::from(value.replace("\\n", "\n")));
    }
    std::fs::read_to_string(value)
        .map(SecretString::from)
        .map_err(|e| {
            SettingError::new(
                "VONAGE_PRIVATE_KEY",
                format!("is neither PEM text nor a readable file ({e})"),
                "/run/secrets/vonage_private.key",
            )
        })
}
