//! What Vonage says a message cost and what is left on the account. Vonage accounts
//! are kept in euros: the Messages API states `usage.currency` (`EUR` is its only value
//! in vonage_messages_v1.yml), the SMS API and the balance call state no currency and
//! are in the account's, which Vonage's own balance snippets and CLI print as EUR
//! ("Get your current account balance", developer.vonage.com/account/code-snippets).
//!
//! - SMS API send: each part of the answer has `message-price` and `remaining-balance`
//!   as decimal strings (vonage_sms.yml, `Message`); the message costs their sum.
//! - Messages API status webhooks: `usage: {"currency":"EUR","price":"0.0333"}`, read in
//!   [`super::webhook`].
//! - Balance: `GET {sms_base}/account/get-balance` with Basic `key:secret` answers
//!   `{"value": 10.28, "autoReload": false}` (a JSON number).

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::VonageProvider;
use crate::http::{self, Reply};
use crate::money::decimal_text;
use crate::{Money, ProviderError, Receipt};

/// The currency of a Vonage account's prices and balance.
pub const CURRENCY: &str = "EUR";

impl VonageProvider {
    /// `GET account/get-balance`, which needs the key and secret (`None` without them).
    pub(super) fn balance_request(&self) -> Option<reqwest::RequestBuilder> {
        let (key, secret) = self.settings.key_pair()?;
        Some(
            self.client
                .get(format!(
                    "{}/account/get-balance",
                    self.settings.sms_base_url
                ))
                .basic_auth(key, Some(secret.expose_secret())),
        )
    }

    pub(super) async fn fetch_balance(&self) -> Result<Option<Money>, ProviderError> {
        match self.balance_request() {
            Some(request) => read_account_balance(http::exchange(request).await?),
            None => Ok(None),
        }
    }
}

/// The receipt with the SMS API's prices: the sum over parts, and the balance left after
/// the last part.
pub(super) fn with_sms_money(mut receipt: Receipt, body: &[u8]) -> Receipt {
    #[derive(Deserialize)]
    struct Reply {
        messages: Vec<Part>,
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "message-price")]
        price: Option<Box<RawValue>>,
        #[serde(rename = "remaining-balance")]
        balance: Option<Box<RawValue>>,
    }
    let Ok(reply) = serde_json::from_slice::<Reply>(body) else {
        return receipt;
    };
    let money = |raw: &Option<Box<RawValue>>| {
        raw.as_deref()
            .and_then(decimal_text)
            .and_then(|amount| Money::parse(&amount, Some(CURRENCY)))
    };
    // Parts Vonage refused carry no price: the message cost what the sent parts did.
    let prices: Vec<Money> = reply
        .messages
        .iter()
        .filter_map(|part| money(&part.price))
        .collect();
    receipt.cost = Money::sum(&prices);
    receipt.balance = reply.messages.last().and_then(|part| money(&part.balance));
    receipt
}

/// Reads the answer to `account/get-balance`. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_account_balance(reply: Reply) -> Result<Option<Money>, ProviderError> {
    match reply.status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(ProviderError::Unauthorized {
                detail: format!("HTTP {}", reply.status.as_u16()),
            })
        }
        status if status.is_server_error() => {
            return Err(ProviderError::Unavailable {
                detail: format!("HTTP {}", status.as_u16()),
            })
        }
        status => return Err(http::protocol_error(status, &reply.body)),
    }
    #[derive(Deserialize)]
    struct Balance {
        value: Box<RawValue>,
    }
    let balance = serde_json::from_slice::<Balance>(&reply.body)
        .map_err(|_| http::protocol_error(reply.status, &reply.body))?;
    Ok(decimal_text(&balance.value).and_then(|amount| Money::parse(&amount, Some(CURRENCY))))
}
