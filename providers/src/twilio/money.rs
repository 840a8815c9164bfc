//! What Twilio says a message cost and what is left on the account.
//!
//! - Status callbacks carry no price. The Message resource does, once Twilio has it:
//!   `GET {base}/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json` answers `price`
//!   (a string, negative for a charge, `null` until known) and `price_unit` (ISO 4217,
//!   e.g. `USD`): "price ... may not be immediately available" (the Message resource,
//!   twilio_api_v2010.json, and twilio-python's `MessageInstance.price`).
//! - `GET {base}/2010-04-01/Accounts/{AccountSid}/Balance.json` answers
//!   `{"account_sid","balance":"0.05","currency":"USD"}` (the Balance resource);
//!   subaccounts carry no balance.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{delivery_status, read_reply, TwilioProvider};
use crate::callbacks::StatusUpdate;
use crate::http::{self, Reply};
use crate::money::decimal_text;
use crate::{Money, ProviderError};

impl TwilioProvider {
    /// `{base}/2010-04-01/Accounts/{AccountSid}`: the account's resources live below it.
    fn account_base(&self) -> &str {
        self.account_url.trim_end_matches(".json")
    }

    /// The Message resource of `sid`, as a status report with its price.
    pub(super) async fn fetch_message(
        &self,
        sid: &str,
    ) -> Result<Option<StatusUpdate>, ProviderError> {
        // Sids are `SM`/`MM` and hex; anything else cannot be one and is not sent along.
        if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let url = format!("{}/Messages/{sid}.json", self.account_base());
        let request = self.authorize(self.client.get(url));
        read_message_reply(http::exchange(request).await?)
    }

    pub(super) async fn fetch_balance(&self) -> Result<Option<Money>, ProviderError> {
        let url = format!("{}/Balance.json", self.account_base());
        let request = self.authorize(self.client.get(url));
        read_balance_reply(http::exchange(request).await?)
    }
}

/// Reads a Message resource: its status and, when Twilio has it, the price charged.
/// A 404 means Twilio does not know the message. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_message_reply(reply: Reply) -> Result<Option<StatusUpdate>, ProviderError> {
    if reply.status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let (status, body) = read_reply(reply)?;
    #[derive(Deserialize)]
    struct Message {
        sid: String,
        status: String,
        error_code: Option<u32>,
        price: Option<Box<RawValue>>,
        price_unit: Option<String>,
    }
    let message = serde_json::from_slice::<Message>(&body)
        .map_err(|_| http::protocol_error(status, &body))?;
    let cost = message
        .price
        .as_deref()
        .and_then(decimal_text)
        .and_then(|price| Money::charge(&price, message.price_unit.as_deref()));
    Ok(Some(StatusUpdate {
        provider: "twilio",
        provider_message_id: message.sid,
        status: delivery_status(&message.status),
        raw_status: message.status,
        error_code: message.error_code.map(|code| code.to_string()),
        cost,
    }))
}

/// Reads the Balance resource. Public for the fuzz targets.
#[doc(hidden)]
pub fn read_balance_reply(reply: Reply) -> Result<Option<Money>, ProviderError> {
    let (status, body) = read_reply(reply)?;
    #[derive(Deserialize)]
    struct Balance {
        balance: Option<Box<RawValue>>,
        currency: Option<String>,
    }
    let balance = serde_json::from_slice::<Balance>(&body)
        .map_err(|_| http::protocol_error(status, &body))?;
    Ok(balance
        .balance
        .as_deref()
        .and_then(decimal_text)
        .and_then(|amount| Money::parse(&amount, balance.currency.as_deref())))
}
