//! A message's channel fallback, as its record shows it: the SMS sent when the first
//! channel did not report delivery in time (or reported failure), and what became of
//! it. Its delivery reports find the record through the SMS provider's message id.

use std::time::SystemTime;

use otp_relay_providers::callbacks::StatusUpdate;
use otp_relay_providers::{Channel, DeliveryStatus, Money};
use serde::{Deserialize, Serialize};

use super::{may_move, message_key, provider_key, timestamp, Kept, Records, UPDATE_ATTEMPTS};
use crate::dispatch::{Delivery, DispatchError};
use crate::store::StoreError;

/// Where one send through the dispatcher left a leg of a message: the provider that took
/// it and how it stands, or the provider that refused it last and why.
pub struct LegState {
    pub channel: String,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub status: DeliveryStatus,
    pub provider_status: Option<String>,
    pub error_code: Option<String>,
    pub cost: Option<Money>,
}

impl LegState {
    /// The leg after `result`, a send asked for on `channel`.
    pub fn of(result: &Result<Delivery, DispatchError>, channel: Channel) -> LegState {
        match result {
            Ok(delivery) => LegState {
                channel: delivery.channel.as_str().to_owned(),
                provider: Some(delivery.receipt.provider.clone()),
                provider_message_id: delivery.receipt.provider_message_id.clone(),
                status: delivery.receipt.status,
                provider_status: delivery.receipt.raw_status.clone(),
                error_code: None,
                cost: delivery.receipt.cost.clone(),
            },
            Err(error) => {
                let last = error.attempts().last();
                LegState {
                    channel: channel.as_str().to_owned(),
                    provider: last.map(|a| a.provider.to_owned()),
                    provider_message_id: None,
                    status: DeliveryStatus::Failed,
                    provider_status: None,
                    error_code: Some(last.and_then(|a| a.code).unwrap_or("not_sent").to_owned()),
                    cost: None,
                }
            }
        }
    }
}

/// The second leg of a message: the same code sent once more, by SMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FallbackLeg {
    /// Why it was sent: `timeout` (no delivery report in time) or `failed` (the first
    /// channel reported failure).
    pub reason: String,
    /// `sms`.
    pub channel: String,
    /// The provider that took it (or refused it last).
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    /// `queued`, `sent`, `delivered`, `failed` or `undelivered`.
    #[schema(value_type = String)]
    pub status: DeliveryStatus,
    /// The provider's word for the status, when it said one.
    pub provider_status: Option<String>,
    pub error_code: Option<String>,
    /// RFC 3339: when it was sent.
    pub created_at: String,
    pub updated_at: String,
    /// What the SMS cost, once its provider said (in its answer, a report or a lookup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<super::Cost>)]
    pub cost: Option<Money>,
}

impl FallbackLeg {
    /// The leg of an SMS sent (or not) for `reason` at `at`.
    pub fn new(reason: &str, sent: LegState, at: String) -> FallbackLeg {
        FallbackLeg {
            reason: reason.to_owned(),
            channel: sent.channel,
            provider: sent.provider,
            provider_message_id: sent.provider_message_id,
            status: sent.status,
            provider_status: sent.provider_status,
            error_code: sent.error_code,
            created_at: at.clone(),
            updated_at: at,
            cost: sent.cost,
        }
    }

    /// Whether `update` is a report about this leg.
    pub(super) fn is_about(&self, update: &StatusUpdate) -> bool {
        self.provider.as_deref() == Some(update.provider)
            && self.provider_message_id.as_deref() == Some(update.provider_message_id.as_str())
    }

    /// Applies a report about this leg, with the record's rules: never back, the first
    /// final word stands, and the first price stated is the price.
    pub(super) fn apply(&mut self, update: &StatusUpdate, now: SystemTime) -> bool {
        let priced = self.cost.is_none() && update.cost.is_some();
        if priced {
            self.cost.clone_from(&update.cost);
            self.updated_at = timestamp(now);
        }
        if !may_move(self.status, update.status) {
            return priced;
        }
        self.status = update.status;
        self.provider_status = Some(update.raw_status.clone());
        if update.error_code.is_some() {
            self.error_code.clone_from(&update.error_code);
        }
        self.updated_at = timestamp(now);
        true
    }
}

impl Records {
    /// Whether record `id` already shows its fallback leg (false when there is no such
    /// record).
    pub async fn has_fallback_leg(&self, id: &str) -> Result<bool, StoreError> {
        let Some(current) = self.store.get(&message_key(id)).await? else {
            return Ok(false);
        };
        Ok(Kept::read(&current)?.record.fallback.is_some())
    }

    /// Adds the fallback leg to record `id` and indexes the leg's provider id, so that
    /// its delivery reports find the record; counts the leg's price when its provider's
    /// answer stated one. Returns whether the record was there.
    pub async fn save_fallback_leg(&self, id: &str, leg: &FallbackLeg) -> Result<bool, StoreError> {
        let key = message_key(id);
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(current) = self.store.get(&key).await? else {
                return Ok(false);
            };
            let mut kept = Kept::read(&current)?;
            kept.record.fallback = Some(leg.clone());
            if self.store.replace(&key, &current, &kept.to_json()).await? {
                if let (Some(provider), Some(provider_id)) =
                    (&leg.provider, &leg.provider_message_id)
                {
                    let index = provider_key(provider, provider_id);
                    self.store
                        .put(&[(index.as_str(), id)], Some(self.retention))
                        .await?;
                }
                // Saved once, by the one replica that took the fallback.
                if let (Some(provider), Some(cost)) = (&leg.provider, &leg.cost) {
                    crate::prometheus::count_cost(provider, cost);
                }
                return Ok(true);
            }
        }
        Err(StoreError("the record kept changing; try again".into()))
    }
}
