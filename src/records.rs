//! Message records and Telegram chat links, kept in the state store.
//!
//! A record holds what an operator needs to answer "did it arrive?": ids, channel,
//! provider, status, error code, the masked number and times. Never the text or the
//! code. Records live `MESSAGE_RETENTION`; chat links live until the user unlinks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use otp_relay_providers::callbacks::StatusUpdate;
use otp_relay_providers::{ChatDirectory, DeliveryStatus, Money, Phone, ProviderError};
use serde::{Deserialize, Serialize};

use crate::guards::digest;
use crate::store::{Store, StoreError};

/// What is known of one sent (or refused) message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageRecord {
    pub id: String,
    pub channel: String,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    /// `queued`, `sent`, `delivered`, `failed` or `undelivered`.
    #[schema(value_type = String)]
    pub status: DeliveryStatus,
    /// The provider's word for the status, when it said one.
    pub provider_status: Option<String>,
    pub error_code: Option<String>,
    /// The destination, masked.
    pub to: String,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// What the message cost, once the provider said; absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Cost>)]
    pub cost: Option<Money>,
}

/// A message's price, as the provider stated it (the OpenAPI shape of [`Money`]).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Cost {
    /// A decimal number as text, exactly as the provider wrote it (summed digit-exact
    /// over the parts of a long SMS).
    #[schema(example = "0.0666")]
    amount: String,
    /// ISO 4217 code; `null` when the provider does not name one (Telegram Gateway
    /// counts in credits).
    #[schema(example = "EUR")]
    currency: Option<String>,
}

/// RFC 3339 time, to the second.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Where a status stands: a later report may move it forward, never back.
fn progress(status: DeliveryStatus) -> u8 {
    match status {
        DeliveryStatus::Queued => 0,
        DeliveryStatus::Sent => 1,
        DeliveryStatus::Delivered | DeliveryStatus::Failed | DeliveryStatus::Undelivered => 2,
    }
}

impl MessageRecord {
    /// Applies a provider's report, unless it would move a final status back.
    fn apply(&mut self, update: &StatusUpdate, now: SystemTime) -> bool {
        // The first price stated is the price: a repeated report does not change it.
        let priced = self.cost.is_none() && update.cost.is_some();
        if priced {
            self.cost.clone_from(&update.cost);
        }
        if progress(update.status) < progress(self.status) {
            if priced {
                self.updated_at = timestamp(now);
            }
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

/// Records and links over the state store.
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn Store>,
    retention: Duration,
}

fn message_key(id: &str) -> String {
    format!("msg:{id}")
}

/// The index key of a provider's message id. Ids are the providers' own tokens (`SM…`,
/// UUIDs, numbers): kept as they are when short and plain, hashed otherwise, so that
/// whatever a provider sends cannot make a long or odd key.
fn provider_key(provider: &str, provider_message_id: &str) -> String {
    let plain = provider_message_id.len() <= MAX_PLAIN_ID_LEN
        && provider_message_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("msg-by-provider:{provider}:{provider_message_id}")
    } else {
        format!(
            "msg-by-provider:{provider}:#{}",
            digest(&[provider_message_id])
        )
    }
}

/// Longest provider message id used as it is in a key.
const MAX_PLAIN_ID_LEN: usize = 64;

fn chat_key(phone: &Phone) -> String {
    format!("chat:{}", digest(&[phone.e164()]))
}

fn chat_owner_key(chat_id: i64) -> String {
    format!("chat-owner:{chat_id}")
}

/// Bounds the retries of a record update that raced with another.
const UPDATE_ATTEMPTS: usize = 5;

impl Records {
    pub fn new(store: Arc<dyn Store>, retention: Duration) -> Self {
        Records { store, retention }
    }

    /// Stores a new record, indexed by our id and by the provider's.
    pub async fn save(&self, record: &MessageRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).expect("a record serializes");
        let key = message_key(&record.id);
        let index = match (&record.provider, &record.provider_message_id) {
            (Some(provider), Some(provider_id)) => Some(provider_key(provider, provider_id)),
            _ => None,
        };
        // Both in one store operation (one Redis round trip).
        let mut entries = vec![(key.as_str(), json.as_str())];
        if let Some(index) = &index {
            entries.push((index.as_str(), record.id.as_str()));
        }
        self.store.put(&entries, Some(self.retention)).await?;
        // A record is saved once, when its send ends: its price counts now.
        count_cost(record);
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let Some(json) = self.store.get(&message_key(id)).await? else {
            return Ok(None);
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|_| StoreError("unreadable message record".into()))
    }

    /// Applies a provider's status report to the record it is about. Returns the record
    /// as it stands afterwards, or `None` when no record matches.
    pub async fn apply(&self, update: &StatusUpdate) -> Result<Option<MessageRecord>, StoreError> {
        let index = provider_key(update.provider, &update.provider_message_id);
        let Some(id) = self.store.get(&index).await? else {
            return Ok(None);
        };
        let key = message_key(&id);
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(current) = self.store.get(&key).await? else {
                return Ok(None);
            };
            let mut record: MessageRecord = serde_json::from_str(&current)
                .map_err(|_| StoreError("unreadable message record".into()))?;
            let unpriced = record.cost.is_none();
            if !record.apply(update, SystemTime::now()) {
                return Ok(Some(record));
            }
            let updated = serde_json::to_string(&record).expect("a record serializes");
            if self.store.replace(&key, &current, &updated).await? {
                // Only the one update that priced the record (the replace is atomic,
                // across replicas too) counts its cost: repeated reports do not.
                if unpriced {
                    count_cost(&record);
                }
                return Ok(Some(record));
            }
        }
        Err(StoreError("the record kept changing; try again".into()))
    }

    /// Links `phone` to a Telegram chat (replacing an earlier link of either).
    pub async fn link_chat(&self, phone: &Phone, chat_id: i64) -> Result<(), StoreError> {
        self.unlink_chat(chat_id).await?;
        let key = chat_key(phone);
        let chat = chat_id.to_string();
        let owner = chat_owner_key(chat_id);
        self.store
            .put(
                &[
                    (key.as_str(), chat.as_str()),
                    (owner.as_str(), key.as_str()),
                ],
                None,
            )
            .await
    }

    /// Removes the link of a Telegram chat, if any.
    pub async fn unlink_chat(&self, chat_id: i64) -> Result<bool, StoreError> {
        let owner = chat_owner_key(chat_id);
        let Some(key) = self.store.get(&owner).await? else {
            return Ok(false);
        };
        // Only drop the number's link if it still points at this chat.
        self.store.replace(&key, &chat_id.to_string(), "").await?;
        self.store.delete(&owner).await?;
        Ok(true)
    }
}

/// Adds a priced record's cost to `otp_relay_cost_total`.
fn count_cost(record: &MessageRecord) {
    if let (Some(cost), Some(provider)) = (&record.cost, &record.provider) {
        crate::prometheus::count_cost(provider, cost);
    }
}

#[async_trait]
impl ChatDirectory for Records {
    async fn chat_for(&self, phone: &Phone) -> Result<Option<i64>, ProviderError> {
        let linked =
            self.store
                .get(&chat_key(phone))
                .await
                .map_err(|e| ProviderError::Unavailable {
                    detail: e.to_string(),
                })?;
        Ok(linked.and_then(|chat| chat.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: DeliveryStatus) -> MessageRecord {
        MessageRecord {
            id: "01J".into(),
            channel: "sms".into(),
            provider: Some("twilio".into()),
            provider_message_id: Some("SM1".into()),
            status,
            provider_status: None,
            error_code: None,
            to: "+55119*****17".into(),
            created_at: "2026-11-28T00:00:00Z".into(),
            updated_at: "2026-11-28T00:00:00Z".into(),
            cost: None,
        }
    }

    fn update(status: DeliveryStatus) -> StatusUpdate {
        StatusUpdate {
            provider: "twilio",
            provider_message_id: "SM1".into(),
            status,
            raw_status: status.as_str().into(),
            error_code: None,
            cost: None,
        }
    }

    #[tokio::test]
    async fn a_report_finds_its_record_whatever_the_provider_id_looks_like() {
        let store: Arc<dyn Store> = Arc::new(crate::store::memory::MemoryStore::default());
        let records = Records::new(store, Duration::from_secs(60));
        let odd_ids = [
            "SM1".to_owned(),
            "0A0000001B2C3D4E".to_owned(),
            "id with spaces:and#colons".to_owned(),
            "x".repeat(MAX_PLAIN_ID_LEN + 1),
        ];
        for (n, provider_id) in odd_ids.iter().enumerate() {
            let mut saved = record(DeliveryStatus::Sent);
            saved.id = format!("01J{n}");
            saved.provider_message_id = Some(provider_id.clone());
            records.save(&saved).await.unwrap();
            let mut report = update(DeliveryStatus::Delivered);
            report.provider_message_id = provider_id.clone();
            let applied = records.apply(&report).await.unwrap();
            assert_eq!(
                applied.map(|r| (r.id, r.status)),
                Some((saved.id, DeliveryStatus::Delivered)),
                "{provider_id:?}"
            );
        }
        // Kept as they are only when short and plain; a hashed key cannot collide with one.
        assert_eq!(provider_key("twilio", "SM1"), "msg-by-provider:twilio:SM1");
        let hashed = provider_key("twilio", "a b");
        assert!(hashed.starts_with("msg-by-provider:twilio:#"), "{hashed}");
        assert!(!provider_key("twilio", &"x".repeat(500)).contains("xxx"));
    }

    #[test]
    fn a_final_status_is_never_moved_back() {
        let mut delivered = record(DeliveryStatus::Delivered);
        assert!(!delivered.apply(&update(DeliveryStatus::Sent), SystemTime::now()));
        assert_eq!(delivered.status, DeliveryStatus::Delivered);

        let mut queued = record(DeliveryStatus::Queued);
        assert!(queued.apply(&update(DeliveryStatus::Sent), SystemTime::now()));
        assert!(queued.apply(&update(DeliveryStatus::Undelivered), SystemTime::now()));
        assert_eq!(queued.status, DeliveryStatus::Undelivered);
        assert_eq!(queued.provider_status.as_deref(), Some("undelivered"));
    }

    #[tokio::test]
    async fn a_repeated_priced_report_counts_the_cost_once() {
        let store: Arc<dyn Store> = Arc::new(crate::store::memory::MemoryStore::default());
        let records = Records::new(store, Duration::from_secs(60));
        let mut saved = record(DeliveryStatus::Sent);
        // A provider name and currency of this test's own: the recorder is process-wide.
        saved.provider = Some("counted-once".into());
        records.save(&saved).await.unwrap();
        let mut report = update(DeliveryStatus::Delivered);
        report.provider = "counted-once";
        report.cost = Money::parse("0.5", Some("XTS"));

        for _ in 0..3 {
            let applied = records.apply(&report).await.unwrap().unwrap();
            assert_eq!(applied.cost, Money::parse("0.5", Some("XTS")));
        }

        let rendered = crate::prometheus::handle().render();
        assert!(
            rendered
                .contains(r#"otp_relay_cost_total{provider="counted-once",currency="XTS"} 0.5"#),
            "{rendered}"
        );
    }

    #[test]
    fn the_first_price_stays_even_on_a_late_or_repeated_report() {
        let price = |amount: &str| Money::parse(amount, Some("EUR"));
        let mut delivered = record(DeliveryStatus::Delivered);
        let mut late = update(DeliveryStatus::Sent);
        late.cost = price("0.0333");
        assert!(delivered.apply(&late, SystemTime::now()), "priced");
        assert_eq!(delivered.status, DeliveryStatus::Delivered, "status kept");
        assert_eq!(delivered.cost, price("0.0333"));

        let mut again = update(DeliveryStatus::Delivered);
        again.cost = price("0.05");
        delivered.apply(&again, SystemTime::now());
        assert_eq!(delivered.cost, price("0.0333"), "not replaced");
        assert!(!delivered.apply(&late, SystemTime::now()), "nothing new");
    }
}
