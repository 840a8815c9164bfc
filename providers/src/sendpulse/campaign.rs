//! What SendPulse says became of an SMS, what it cost, and what is left on the account.
//!
//! SendPulse sends no delivery callback for SMS: each send is a campaign, polled with
//! `GET {base}/sms/campaigns/info/{id}` (sendpulse_sms.yml, `getSmsCampaignInfo`; the
//! PHP SDK's `getSmsCampaignInfo`). Its `data` holds the campaign's `currency` and
//! `company_price`, and per phone `task_phones_info[]`: `phone`, `status`,
//! `status_explain`, `money_spent`. The spec names two phone statuses, `2` Delivered and
//! `12` Not delivered; any other is a message still on its way. The body is an object
//! `{"result":true,"data":{..}}` in the SDKs and an array of such objects in the spec:
//! both are read.
//!
//! The balance: `GET {base}/user/balance/detail` answers
//! `{"balance":{"main":"9.36","bonus":..,"currency":"USD"},..}` (SendPulse's Go and C#
//! SDKs read `balance.main` and `balance.currency`).

use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{SendpulseProvider, NAME};
use crate::callbacks::StatusUpdate;
use crate::http::{self, Reply};
use crate::money::decimal_text;
use crate::{DeliveryStatus, Money, ProviderError};

/// The phone statuses of a campaign that are final.
const DELIVERED: i64 = 2;
const NOT_DELIVERED: i64 = 12;

impl SendpulseProvider {
    pub(super) async fn fetch_campaign(
        &self,
        campaign_id: &str,
    ) -> Result<Option<StatusUpdate>, ProviderError> {
        // Campaign ids are numbers; anything else cannot be one and is not sent along.
        if campaign_id.is_empty() || !campaign_id.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let url = format!("{}/sms/campaigns/info/{campaign_id}", self.base_url);
        let reply = self.get_authorized(&url).await?;
        read_campaign_reply(&reply, campaign_id)
    }

    pub(super) async fn fetch_balance(&self) -> Result<Option<Money>, ProviderError> {
        let url = format!("{}/user/balance/detail", self.base_url);
        read_balance_reply(&self.get_authorized(&url).await?)
    }

    /// A GET with the access token, fetched again once when SendPulse refuses it.
    async fn get_authorized(&self, url: &str) -> Result<Reply, ProviderError> {
        let get = |token: &SecretString| {
            self.client
                .get(url)
                .bearer_auth(token.expose_secret())
                .header(ACCEPT, "application/json")
        };
        let token = self.access_token(None).await?;
        let reply = http::exchange(get(&token)).await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        let fresh = self.access_token(Some(&token)).await?;
        http::exchange(get(&fresh)).await
    }
}

/// Reads a campaign's info as a report on its (one) phone. `None` while SendPulse lists
/// no phone yet, or does not know the campaign (404). Public for the fuzz targets.
#[doc(hidden)]
pub fn read_campaign_reply(
    reply: &Reply,
    campaign_id: &str,
) -> Result<Option<StatusUpdate>, ProviderError> {
    if reply.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !reply.status.is_success() {
        return Err(reply.error());
    }
    #[derive(Deserialize)]
    struct Info {
        data: Option<Campaign>,
    }
    #[derive(Deserialize)]
    struct Campaign {
        currency: Option<String>,
        company_price: Option<Box<RawValue>>,
        #[serde(default)]
        task_phones_info: Vec<PhoneInfo>,
    }
    #[derive(Deserialize)]
    struct PhoneInfo {
        status: Option<i64>,
        status_explain: Option<String>,
        money_spent: Option<Box<RawValue>>,
    }
    // Not an untagged enum: serde buffers those, and raw values cannot be buffered.
    let listed = reply.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let campaign = if listed {
        serde_json::from_slice::<Vec<Info>>(&reply.body)
            .ok()
            .and_then(|infos| infos.into_iter().find_map(|info| info.data))
    } else {
        serde_json::from_slice::<Info>(&reply.body)
            .ok()
            .and_then(|info| info.data)
    }
    .ok_or_else(|| http::protocol_error(reply.status, &reply.body))?;
    let Some(phone) = campaign.task_phones_info.first() else {
        return Ok(None);
    };
    let code = phone.status.unwrap_or(0);
    let status = match code {
        DELIVERED => DeliveryStatus::Delivered,
        NOT_DELIVERED => DeliveryStatus::Undelivered,
        _ => DeliveryStatus::Queued,
    };
    // The price is what the finished campaign spent on the phone (or, unsaid, the
    // campaign's price): read once the status is final, when it no longer changes.
    let cost = status
        .is_final()
        .then(|| {
            let spent = phone
                .money_spent
                .as_deref()
                .or(campaign.company_price.as_deref())?;
            Money::charge(&decimal_text(spent)?, campaign.currency.as_deref())
        })
        .flatten();
    let raw_status = phone
        .status_explain
        .as_deref()
        .map(http::scrub)
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| code.to_string());
    Ok(Some(StatusUpdate {
        provider: NAME,
        provider_message_id: campaign_id.to_owned(),
        status,
        raw_status,
        error_code: (status == DeliveryStatus::Undelivered).then(|| code.to_string()),
        cost,
    }))
}

/// Reads the balance detail: the main balance in its currency. Public for the fuzz
/// targets.
#[doc(hidden)]
pub fn read_balance_reply(reply: &Reply) -> Result<Option<Money>, ProviderError> {
    if !reply.status.is_success() {
        return Err(reply.error());
    }
    #[derive(Deserialize)]
    struct Detail {
        balance: Option<Balance>,
    }
    #[derive(Deserialize)]
    struct Balance {
        main: Option<Box<RawValue>>,
        currency: Option<String>,
    }
    let detail = serde_json::from_slice::<Detail>(&reply.body)
        .map_err(|_| http::protocol_error(reply.status, &reply.body))?;
    Ok(detail.balance.and_then(|balance| {
        Money::parse(
            &decimal_text(balance.main.as_deref()?)?,
            balance.currency.as_deref(),
        )
    }))
}
