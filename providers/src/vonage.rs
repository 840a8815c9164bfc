//! Vonage: SMS through the SMS API, or SMS and WhatsApp through the Messages API
//! (`VONAGE_API=sms|messages`).
//!
//! Wire facts that matter:
//!
//! - **SMS API**: `POST {VONAGE_SMS_BASE_URL}/sms/json`, form-urlencoded (UTF-8) with the
//!   credentials in the body: `api_key`, `api_secret`, `from`, `to` (digits, no `+`),
//!   `text`, `type=unicode` only when the text has a character outside GSM 03.38 (basic
//!   table plus extension table, see [`is_gsm7`]), `ttl` in milliseconds, `client-ref`
//!   (our id) and `callback` (`{PUBLIC_BASE_URL}/webhooks/vonage`) when a public URL is
//!   set. The reply is **HTTP 200 even on failure**: one `messages[]` entry per SMS part,
//!   each with its own `message-id` and, later, its own delivery receipt. A part with
//!   `status: "0"` was accepted: then the message is with Vonage (a failover would send
//!   the code twice), so the receipt keeps every accepted part's id. Only when no part
//!   was accepted is the reply an error, whose `error-text` is kept (scrubbed) in the
//!   detail. A 200 whose body cannot be read is an acceptance without an id (Vonage
//!   answers 200 to failures too, but an error always comes as readable JSON with a
//!   non-zero status). The secret travels in the form, so it is masked in any reply
//!   before the reply can become an error.
//! - **Messages API**: `POST {VONAGE_MESSAGES_BASE_URL}/v1/messages`, JSON
//!   `{message_type, channel, to, from, text, client_ref}` with `to`/`from` as digits
//!   without `+` (plus `ttl` in seconds for SMS). WhatsApp may open a conversation only
//!   with an approved template, and codes go in an authentication template, which has a
//!   copy-code (or one-tap) button: Vonage sends such interactive templates as
//!   `message_type: "custom"` with `custom: {type: "template", template: {name, language:
//!   {policy: "deterministic", code}, components: [body parameter = code, button
//!   (sub_type url, index 0) parameter = code]}}`
//!   (<https://developer.vonage.com/en/messages/code-snippets/whatsapp/send-authentication-template>;
//!   the Node SDK's `WhatsAppCustom` sends the same `custom` object through as is; the
//!   button `index` is the string `"0"`, as Meta's Cloud API examples write it),
//!   so `VONAGE_WHATSAPP_TEMPLATE` (`name` or `name:language`, default `en_US`) is
//!   required with whatsapp. Auth is `Bearer` with an RS256 JWT
//!   (`application_id`, `iat`, `jti`, `exp`) signed with the application's private key,
//!   reused until shortly before it expires, or `Basic key:secret` when no application is
//!   configured. Success is `202 {message_uuid}` (any 2xx is an acceptance, even without
//!   a readable uuid); errors are RFC 7807 problems whose `type` ends in `#<code>`
//!   (`...#1170`, the catalogue in the spec's `x-errors`), with `Retry-After` on 429. A 4xx
//!   other than 429 is a refusal of this request, never transient (see [`problem_error`]).
//! - Failures of our account (no credit, barred, sender or template not allowed) are
//!   `account_unusable` in both APIs: another provider may still deliver.
//!   There is no per-message callback here: this adapter does not send the optional
//!   `webhook_url` override, so status webhooks go where the Vonage application's
//!   Status URL points (set it to `{PUBLIC_BASE_URL}/webhooks/vonage`).
//! - Probe: `GET {VONAGE_SMS_BASE_URL}/account/get-balance` with Basic key:secret.

mod money;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::{self, scrub, Reply};

use crate::settings::{Env, SettingError};
use crate::{
    Channel, DeliveryStatus, MessageProvider, OutboundMessage, ProbeOutcome, ProviderContext,
    ProviderError, Receipt,
};
pub use money::read_account_balance;

const NAME: &str = "vonage";
const DEFAULT_SMS_BASE_URL: &str = "https://rest.nexmo.com";
const DEFAULT_MESSAGES_BASE_URL: &str = "https://api.nexmo.com";
/// Template language when `VONAGE_WHATSAPP_TEMPLATE` names none: WhatsApp has no bare
/// `en` for authentication templates created in English (US), the usual first one.
const DEFAULT_TEMPLATE_LOCALE: &str = "en_US";
/// Lifetime of an application JWT (the Vonage SDKs' default).
const JWT_LIFETIME: Duration = Duration::from_secs(900);
/// A cached JWT is replaced once less than this is left, so none expires in flight.
const JWT_RENEW_BEFORE: Duration = Duration::from_secs(60);

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
    pub signature_method: crate::callbacks::vonage::SignatureMethod,
    pub whatsapp_template: Option<WhatsappTemplate>,
    pub sms_base_url: String,
    pub messages_base_url: String,
}

/// The variable of the key pair that is missing, if one is.
fn missing_key_half(key: &Option<String>, secret: &Option<SecretString>) -> Option<&'static str> {
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

    fn key_pair(&self) -> Option<(&str, &SecretString)> {
        Some((self.api_key.as_deref()?, self.api_secret.as_ref()?))
    }
}

/// A configured sender, with the `+` of an international number dropped (Vonage wants
/// digits only).
fn sender(value: &str) -> String {
    match value.strip_prefix('+') {
        Some(digits) if is_digits(digits) => digits.to_owned(),
        _ => value.to_owned(),
    }
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `name` or `name:locale`.
fn parse_template(value: &str) -> Result<WhatsappTemplate, SettingError> {
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
fn read_private_key(value: &str) -> Result<SecretString, SettingError> {
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

/// Parses the key and signs once, so a bad key fails at startup rather than at a send.
fn signing_key(pem: &SecretString) -> Result<EncodingKey, SettingError> {
    let invalid = || {
        SettingError::new(
            "VONAGE_PRIVATE_KEY",
            "is not an RSA private key in PEM form (the application's private.key)",
            "/run/secrets/vonage_private.key",
        )
    };
    let key = EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes()).map_err(|_| invalid())?;
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &json!({}), &key)
        .map_err(|_| invalid())?;
    Ok(key)
}

/// Where time comes from; injectable so tests can age a JWT without sleeping.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How Messages API requests authenticate (the SMS API carries key and secret in its form).
enum MessagesAuth {
    Jwt(JwtSigner),
    Basic,
}

/// Signs application JWTs and keeps the current one until it nears expiry.
struct JwtSigner {
    application_id: String,
    key: EncodingKey,
    clock: Clock,
    /// The one token in use and its `exp` (seconds since the epoch).
    current: Mutex<Option<(SecretString, u64)>>,
}

#[derive(Serialize)]
struct Claims<'a> {
    application_id: &'a str,
    iat: u64,
    jti: String,
    exp: u64,
}

impl JwtSigner {
    fn token(&self) -> Result<SecretString, ProviderError> {
        let now = (self.clock)()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((token, exp)) = current.as_ref() {
            if now + JWT_RENEW_BEFORE.as_secs() < *exp {
                return Ok(token.clone());
            }
        }
        let claims = Claims {
            application_id: &self.application_id,
            iat: now,
            jti: ulid::Ulid::new().to_string(),
            exp: now + JWT_LIFETIME.as_secs(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(SecretString::from)
            // The key signed at startup; this is not expected, and says nothing secret.
            .map_err(|e| ProviderError::Unauthorized {
                detail: format!("could not sign the application JWT: {e}"),
            })?;
        *current = Some((token.clone(), claims.exp));
        Ok(token)
    }
}

/// Sends through Vonage's SMS API or Messages API.
pub struct VonageProvider {
    settings: VonageSettings,
    client: reqwest::Client,
    callback_url: Option<String>,
    auth: MessagesAuth,
}

impl VonageProvider {
    /// Builds the provider on the shared client; checks the credentials the API needs.
    pub fn new(
        settings: VonageSettings,
        context: &ProviderContext,
    ) -> Result<VonageProvider, SettingError> {
        Self::with_clock(settings, context, Arc::new(SystemTime::now))
    }

    /// As [`VonageProvider::new`], with the clock that dates the JWTs.
    pub fn with_clock(
        settings: VonageSettings,
        context: &ProviderContext,
        clock: Clock,
    ) -> Result<VonageProvider, SettingError> {
        let application = settings
            .application_id
            .as_ref()
            .zip(settings.private_key.as_ref());
        let auth = match (settings.api, application) {
            (VonageApi::Messages, Some((id, pem))) => MessagesAuth::Jwt(JwtSigner {
                application_id: id.clone(),
                key: signing_key(pem)?,
                clock,
                current: Mutex::new(None),
            }),
            _ if settings.key_pair().is_some() => MessagesAuth::Basic,
            _ => {
                return Err(SettingError::new(
                    "VONAGE_API_KEY",
                    "key and secret (or, for the Messages API, an application) are required",
                    "abcd1234",
                ))
            }
        };
        Ok(VonageProvider {
            callback_url: context.callback_url(NAME),
            client: context.client.clone(),
            settings,
            auth,
        })
    }

    async fn send_sms_api(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        let (key, secret) = self.settings.key_pair().expect("checked in new");
        let ttl_ms = message
            .ttl
            .as_millis()
            .clamp(20_000, 604_800_000)
            .to_string();
        let mut form = vec![
            ("api_key", key),
            ("api_secret", secret.expose_secret()),
            ("from", &self.settings.from),
            ("to", message.to.digits()),
            ("text", &message.text),
        ];
        if !is_gsm7(&message.text) {
            form.push(("type", "unicode"));
        }
        form.push(("ttl", &ttl_ms));
        form.push(("client-ref", &message.id));
        if let Some(callback) = &self.callback_url {
            form.push(("callback", callback));
        }
        let request = self
            .client
            .post(format!("{}/sms/json", self.settings.sms_base_url))
            .form(&form);
        read_sms_api_reply(http::exchange(request).await?, secret.expose_secret())
    }

    async fn send_messages_api(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        let to = message.to.digits();
        let from = &self.settings.from;
        let body = match (message.channel, &self.settings.whatsapp_template) {
            (Channel::Whatsapp, Some(template)) => {
                let code = message
                    .code
                    .as_deref()
                    .filter(|c| !c.is_empty())
                    .ok_or(ProviderError::CodeRequired)?;
                // Authentication templates carry the code twice: in the body text and
                // as the URL parameter of the copy-code button (index 0).
                json!({
                    "message_type": "custom",
                    "channel": "whatsapp",
                    "to": to,
                    "from": from,
                    "custom": {
                        "type": "template",
                        "template": {
                            "name": template.name,
                            "language": {"policy": "deterministic", "code": template.locale},
                            "components": [
                                {
                                    "type": "body",
                                    "parameters": [{"type": "text", "text": code}],
                                },
                                {
                                    "type": "button",
                                    "sub_type": "url",
                                    "index": "0",
                                    "parameters": [{"type": "text", "text": code}],
                                },
                            ],
                        },
                    },
                    "client_ref": message.id,
                })
            }
            (Channel::Whatsapp, None) => json!({
                "message_type": "text",
                "channel": "whatsapp",
                "to": to,
                "from": from,
                "text": message.text,
                "client_ref": message.id,
            }),
            _ => json!({
                "message_type": "text",
                "channel": "sms",
                "to": to,
                "from": from,
                "text": message.text,
                "client_ref": message.id,
                "ttl": message.ttl.as_secs().clamp(20, 604_800),
            }),
        };
        let request = self
            .client
            .post(format!("{}/v1/messages", self.settings.messages_base_url))
            .json(&body);
        let request = match &self.auth {
            MessagesAuth::Jwt(signer) => request.bearer_auth(signer.token()?.expose_secret()),
            MessagesAuth::Basic => {
                let (key, secret) = self.settings.key_pair().expect("checked in new");
                request.basic_auth(key, Some(secret.expose_secret()))
            }
        };
        read_messages_api_reply(http::exchange(request).await?)
    }
}

#[async_trait]
impl MessageProvider for VonageProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn channels(&self) -> &[Channel] {
        &self.settings.channels
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, ProviderError> {
        if !self.serves(message.channel) {
            return Err(ProviderError::Rejected {
                detail: format!("vonage is not configured for {}", message.channel),
            });
        }
        tracing::debug!(
            to = %message.to.masked(),
            channel = %message.channel,
            api = ?self.settings.api,
            "sending through vonage"
        );
        let result = match self.settings.api {
            VonageApi::Sms => self.send_sms_api(message).await,
            VonageApi::Messages => self.send_messages_api(message).await,
        };
        if let Err(error) = &result {
            tracing::debug!(to = %message.to.masked(), code = error.code(), "vonage send failed");
        }
        result
    }

    /// Reads the account balance, which needs the key and secret.
    async fn probe(&self) -> Result<ProbeOutcome, ProviderError> {
        let Some(request) = self.balance_request() else {
            return Ok(ProbeOutcome::NotSupported);
        };
        read_balance_reply(http::exchange(request).await?)
    }

    async fn balance(&self) -> Result<Option<crate::Money>, ProviderError> {
        self.fetch_balance().await
    }
}

/// Reads the SMS API's answer to a send (always HTTP 200; each part has a status).
/// `secret` is the API secret the form carried: masked in any reply before it can reach
/// an error detail. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_sms_api_reply(reply: Reply, secret: &str) -> Result<Receipt, ProviderError> {
    let Reply {
        status,
        retry_after,
        body,
    } = reply;
    // The secret travels in the form: a reply that echoes it (a proxy's error page)
    // must not carry it into an error detail.
    let body = redact(body, secret);
    // Any 2xx is an answer to read (a proxy may say 202): only the reply's own statuses
    // tell a refusal, so a 2xx never fails over to send a second code.
    if !status.is_success() {
        return Err(unexpected_status(status, retry_after, &body));
    }
    let Ok(reply) = serde_json::from_slice::<SmsReply>(&body) else {
        // Errors come as readable JSON with a non-zero status: a 200 that cannot be
        // read is Vonage's acceptance.
        tracing::warn!("vonage answered 200 with a reply that cannot be read");
        return Ok(http::unreadable_acceptance(NAME));
    };
    let (accepted, failed): (Vec<&SmsPart>, Vec<&SmsPart>) =
        reply.messages.iter().partition(|part| part.status == "0");
    let Some(first) = accepted.first() else {
        return match failed.first() {
            Some(failed) => Err(sms_error(failed)),
            None => Ok(http::unreadable_acceptance(NAME)),
        };
    };
    if let Some(failed) = failed.first() {
        // Some parts went out: the message is with Vonage, so this is no failure to
        // fail over (the user would get the code twice), only a partial one to log.
        tracing::warn!(
            status = %scrub(&failed.status),
            "vonage accepted only some parts of the message"
        );
    }
    let mut ids = accepted.iter().filter_map(|part| part.message_id.clone());
    let mut receipt = receipt(ids.next(), &first.status);
    receipt.part_ids = ids.collect();
    Ok(money::with_sms_money(receipt, &body))
}

/// Reads the Messages API's answer to a send: `202 {message_uuid}` or an RFC 7807
/// problem. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_messages_api_reply(reply: Reply) -> Result<Receipt, ProviderError> {
    let Reply {
        status,
        retry_after,
        body,
    } = reply;
    if status.is_success() {
        return match serde_json::from_slice::<Accepted>(&body) {
            Ok(accepted) => Ok(receipt(Some(accepted.message_uuid), "accepted")),
            Err(_) => {
                tracing::warn!(
                    status = status.as_u16(),
                    "vonage accepted the message but its reply has no readable message_uuid"
                );
                Ok(http::unreadable_acceptance(NAME))
            }
        };
    }
    match serde_json::from_slice::<Problem>(&body) {
        Ok(problem) => Err(problem_error(status, retry_after, &problem)),
        Err(_) => Err(unexpected_status(status, retry_after, &body)),
    }
}

/// Reads the answer to the balance probe. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_balance_reply(reply: Reply) -> Result<ProbeOutcome, ProviderError> {
    let Reply {
        status,
        retry_after,
        body,
    } = reply;
    if status != StatusCode::OK {
        return Err(match status.as_u16() {
            401 | 403 => ProviderError::Unauthorized {
                detail: format!("HTTP {}", status.as_u16()),
            },
            _ => unexpected_status(status, retry_after, &body),
        });
    }
    let balance: Balance =
        serde_json::from_slice(&body).map_err(|_| http::protocol_error(status, &body))?;
    Ok(ProbeOutcome::Verified(format!(
        "account balance {:.2} EUR",
        balance.value
    )))
}

/// `body` with every occurrence of `secret` masked.
fn redact(body: Vec<u8>, secret: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(&body);
    if secret.is_empty() || !text.contains(secret) {
        return body;
    }
    text.replace(secret, "[redacted]").into_bytes()
}

fn receipt(id: Option<String>, raw_status: &str) -> Receipt {
    // Vonage accepted it; delivery is reported later by webhook.
    Receipt::new(
        NAME,
        id,
        DeliveryStatus::Queued,
        Some(raw_status.to_owned()),
    )
}

/// A non-success reply that is not in the provider's documented error shape.
fn unexpected_status(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ProviderError {
    match http::protocol_error(status, body) {
        ProviderError::Protocol { detail, .. } if status == StatusCode::TOO_MANY_REQUESTS => {
            ProviderError::RateLimited {
                detail: format!("HTTP 429 {detail}"),
                retry_after,
            }
        }
        ProviderError::Protocol { detail, .. } if status.is_server_error() => {
            ProviderError::Unavailable {
                detail: format!("HTTP {} {detail}", status.as_u16()),
            }
        }
        other => other,
    }
}

#[derive(Deserialize)]
struct SmsReply {
    messages: Vec<SmsPart>,
}

#[derive(Deserialize)]
struct SmsPart {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text")]
    error_text: Option<String>,
}

/// Maps an SMS API part status (see the SMS API's error table, `x-errors` in its spec)
/// onto a `ProviderError`; only called when no part of the message was accepted.
fn sms_error(part: &SmsPart) -> ProviderError {
    let detail = scrub(&format!(
        "status {}: {}",
        part.status,
        part.error_text.as_deref().unwrap_or("")
    ));
    match part.status.as_str() {
        // Throttled / too many binds: nothing was sent (no part was accepted).
        "1" | "10" => ProviderError::RateLimited {
            detail,
            retry_after: None,
        },
        "5" => ProviderError::Unavailable { detail },
        // Our configuration: 15 the sender id is not authorised, 23 the callback URL we
        // sent is too long or has illegal characters.
        code @ ("15" | "23") => ProviderError::Misconfigured {
            code: code.to_owned(),
            detail,
        },
        "6" | "33" => ProviderError::InvalidRecipient { detail },
        "7" => ProviderError::RecipientOptedOut { detail },
        // Bad credentials, bad signature, signature and secret both sent.
        "4" | "14" | "32" => ProviderError::Unauthorized { detail },
        // Our account: barred, out of credit, not provisioned for the SMS API, still in
        // demo mode (whitelisted destinations only).
        "8" | "9" | "11" | "29" => ProviderError::AccountUnusable { detail },
        _ => ProviderError::Rejected { detail },
    }
}

#[derive(Deserialize)]
struct Accepted {
    message_uuid: String,
}

/// An RFC 7807 problem as the Messages API sends it.
#[derive(Deserialize)]
struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    invalid_parameters: Vec<InvalidParameter>,
}

#[derive(Deserialize)]
struct InvalidParameter {
    name: Option<String>,
    reason: Option<String>,
}

/// Maps a Messages API problem onto a `ProviderError`: by its code where the code says
/// more than the HTTP status, otherwise by the status.
fn problem_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    problem: &Problem,
) -> ProviderError {
    let fragment = problem.kind.rsplit_once('#').map_or("", |(_, f)| f);
    let code = fragment.parse::<u16>().ok().filter(|c| *c < 10_000);
    // The code stays as is (scrub would mask a four-digit code); the texts are scrubbed.
    let label = match code {
        Some(code) => format!(" {code}"),
        None if !fragment.is_empty() => format!(" {}", scrub(fragment)),
        None => String::new(),
    };
    let mut texts = String::new();
    for text in [problem.title.as_deref(), problem.detail.as_deref()]
        .into_iter()
        .flatten()
    {
        write!(texts, ": {text}").unwrap();
    }
    for parameter in &problem.invalid_parameters {
        let name = parameter.name.as_deref().unwrap_or("?");
        let reason = parameter.reason.as_deref().unwrap_or("");
        write!(texts, "; {name}: {reason}").unwrap();
    }
    let detail = format!("HTTP {}{label}{}", status.as_u16(), scrub(&texts));

    let misconfigured = |code: u16, detail: String| ProviderError::Misconfigured {
        code: code.to_string(),
        detail,
    };
    // The catalogue is the Messages API spec's `x-errors` (1000-1490).
    let error = match code {
        Some(1000 | 1241 | 1472) => ProviderError::RateLimited {
            detail,
            retry_after,
        },
        // Platform or destination trouble that may clear: the outcome is unknown.
        Some(1030 | 1100 | 1180 | 1220 | 1230 | 1331) => ProviderError::Unavailable { detail },
        // The number: invalid message (unknown prefix), invalid or inactive recipient.
        Some(1040 | 1170 | 1190 | 1430) => ProviderError::InvalidRecipient { detail },
        // Barred, or the user sent STOP.
        Some(1050 | 1240) => ProviderError::RecipientOptedOut { detail },
        // Not a user of the channel (WhatsApp), or a device that cannot receive it: SMS
        // may still reach them.
        Some(1300 | 1310) => ProviderError::RecipientNotRegistered { detail },
        // Our account: barred, provider quota, not enabled for REST, demo-mode
        // destination list, no number pool, daily limit (10DLC).
        Some(1060 | 1070 | 1080 | 1160 | 1242 | 1460) => ProviderError::AccountUnusable { detail },
        // Fraud Defender country or network block: set on our account for this
        // destination; another provider may reach it.
        Some(1474 | 1475) => ProviderError::RegionNotEnabled { detail },
        // Our configuration: invalid template, illegal sender, facility not enabled,
        // unsupported channel, invalid sender, message type not for the channel, free
        // text outside the 24 h window (a template is needed), originating number on a
        // Do-Not-Originate list, entity/header/content id required by the destination's
        // regulator.
        Some(
            code @ (1022 | 1120 | 1140 | 1340 | 1400 | 1420 | 1440 | 1476 | 1480 | 1481 | 1482),
        ) => misconfigured(code, detail),
        _ => match status.as_u16() {
            429 => ProviderError::RateLimited {
                detail,
                retry_after,
            },
            401 | 403 => ProviderError::Unauthorized { detail },
            // Low balance: ours, not the message's; another provider may do.
            402 => ProviderError::AccountUnusable { detail },
            500.. => ProviderError::Unavailable { detail },
            _ => ProviderError::Rejected { detail },
        },
    };
    // A 4xx other than 429 is this request refused: whatever its code says, repeating it
    // will not help, and it says nothing about the provider's health (the circuit counts
    // only transient failures).
    match error {
        ProviderError::RateLimited { detail, .. } | ProviderError::Unavailable { detail }
            if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS =>
        {
            ProviderError::Rejected { detail }
        }
        other => other,
    }
}

#[derive(Deserialize)]
struct Balance {
    value: f64,
}

/// The GSM 03.38 default alphabet, indexed by its 7-bit code. 0x1B is the escape to the
/// extension table, not a character of its own.
pub const GSM7_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The GSM 03.38 extension table (each sent as escape + one code, counting two).
pub const GSM7_EXTENSION: [char; 10] = ['\u{c}', '^', '{', '}', '\\', '[', '~', ']', '|', '€'];

/// Whether `text` can go as a plain GSM-7 SMS; otherwise it needs `type=unicode`.
pub fn is_gsm7(text: &str) -> bool {
    text.chars()
        .all(|c| c != '\u{1b}' && (GSM7_BASIC.contains(&c) || GSM7_EXTENSION.contains(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_tables_hold_every_character_once() {
        let mut all: Vec<char> = GSM7_BASIC.iter().chain(&GSM7_EXTENSION).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 128 + 10);
        assert_eq!(GSM7_BASIC[0x00], '@');
        assert_eq!(GSM7_BASIC[0x1C], 'Æ');
        assert_eq!(GSM7_BASIC[0x40], '¡');
        assert_eq!(GSM7_BASIC[0x60], '¿');
        assert_eq!(GSM7_BASIC[0x7F], 'à');
    }

    #[test]
    fn gsm7_accepts_both_tables_and_refuses_the_rest() {
        assert!(is_gsm7("Your code is 123456. Valid 5 min; é è à ñ Ø ß Δ Ω"));
        assert!(is_gsm7("{[~^|\\]} cost 5€\u{c}"));
        assert!(is_gsm7(""));
        // pt_BR: ó and á are not in GSM 03.38 (ò and à are), nor is lower-case ç.
        assert!(!is_gsm7("Seu código SMS é 123456 e válido por 5 minutos."));
        assert!(!is_gsm7("ç"));
        assert!(!is_gsm7("`"));
        assert!(!is_gsm7("🙂"));
        assert!(!is_gsm7("\u{1b}"), "the escape alone is no character");
        assert!(!is_gsm7("\t"));
    }

    #[test]
    fn problem_detail_keeps_the_code_and_scrubs_the_texts() {
        let problem = Problem {
            kind: "https://developer.vonage.com/api-errors/messages#1170".into(),
            title: Some("Invalid recipient".into()),
            detail: Some("The `to` 5511966191717 is invalid".into()),
            invalid_parameters: vec![],
        };
        let error = problem_error(StatusCode::UNPROCESSABLE_ENTITY, None, &problem);
        assert_eq!(
            error,
            ProviderError::InvalidRecipient {
                detail: "HTTP 422 1170: Invalid recipient: The `to` **** is invalid".into()
            }
        );
    }
}
