//! Message records and Telegram chat links, kept in the state store.
//!
//! A record holds what an operator needs to answer "did it arrive?": ids, channel,
//! provider, status, error code, the masked number and times. Never the text or the
//! code. Records live `MESSAGE_RETENTION`; chat links live until the user unlinks.
//!
//! Each record is kept with a digest of the caller identity that sent it, and shown
//! only to that caller. Records kept without one (written before owners were kept)
//! are shown to nobody; they lapse with `MESSAGE_RETENTION`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use otp_relay_providers::callbacks::StatusUpdate;
use otp_relay_providers::{ChatDirectory, DeliveryStatus, Phone, ProviderError};
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
}

/// A record as kept in the store: the record and who sent it.
#[derive(Serialize, Deserialize)]
struct Kept {
    #[serde(flatten)]
    record: MessageRecord,
    /// The digest of the sender's identity; absent on records from before owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

impl Kept {
    fn read(json: &str) -> Result<Kept, StoreError> {
        serde_json::from_str(json).map_err(|_| StoreError("unreadable message record".into()))
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }
}

/// What a record keeps of its sender: a digest, never the key or the address.
fn owner_digest(identity: &str) -> String {
    digest(&["record-owner", identity])
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

/// Delivered, failed or undelivered: what happened to the message, for good.
fn is_final(status: DeliveryStatus) -> bool {
    progress(status) == 2
}

impl MessageRecord {
    /// Applies a provider's report, unless it would move the status back or replace a
    /// final status with another (reports arrive out of order and are retried; the first
    /// final word stands). A repeat of the final status may still refine its details.
    fn apply(&mut self, update: &StatusUpdate, now: SystemTime) -> bool {
        let allowed = if is_final(self.status) {
            update.status == self.status
        } else {
            progress(update.status) >= progress(self.status)
        };
        if !allowed {
            return false;
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

    /// Stores a new record sent by `owner` (a caller identity), indexed by our id and by
    /// the provider's.
    pub async fn save(&self, record: &MessageRecord, owner: &str) -> Result<(), StoreError> {
        let json = Kept {
            record: record.clone(),
            owner: Some(owner_digest(owner)),
        }
        .to_json();
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
        self.store.put(&entries, Some(self.retention)).await
    }

    /// The record `id`, if the caller identity `reader` sent it: to anyone else (and for
    /// a record with no owner) it does not exist.
    pub async fn get(&self, id: &str, reader: &str) -> Result<Option<MessageRecord>, StoreError> {
        let Some(json) = self.store.get(&message_key(id)).await? else {
            return Ok(None);
        };
        let kept = Kept::read(&json)?;
        let owned = kept
            .owner
            .is_some_and(|owner| owner == owner_digest(reader));
        Ok(owned.then_some(kept.record))
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
            let mut kept = Kept::read(&current)?;
            if !kept.record.apply(update, SystemTime::now()) {
                return Ok(Some(kept.record));
            }
            if self.store.replace(&key, &current, &kept.to_json()).await? {
                return Ok(Some(kept.record));
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
        }
    }

    fn update(status: DeliveryStatus) -> StatusUpdate {
        StatusUpdate {
            provider: "twilio",
            provider_message_id: "SM1".into(),
            status,
            raw_status: status.as_str().into(),
            error_code: None,
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
            records.save(&saved, "ip:10.0.0.1").await.unwrap();
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

    #[test]
    fn a_final_status_is_never_replaced_by_another_final_one() {
        let mut delivered = record(DeliveryStatus::Delivered);
        for other in [DeliveryStatus::Failed, DeliveryStatus::Undelivered] {
            assert!(!delivered.apply(&update(other), SystemTime::now()));
            assert_eq!(delivered.status, DeliveryStatus::Delivered);
        }
        // The same final word again may refine the provider's status (read after delivered).
        let mut read = update(DeliveryStatus::Delivered);
        read.raw_status = "read".into();
        assert!(delivered.apply(&read, SystemTime::now()));
        assert_eq!(delivered.provider_status.as_deref(), Some("read"));
    }

    #[tokio::test]
    async fn a_record_is_shown_only_to_its_sender() {
        let store: Arc<dyn Store> = Arc::new(crate::store::memory::MemoryStore::default());
        let records = Records::new(Arc::clone(&store), Duration::from_secs(60));
        let sent = record(DeliveryStatus::Sent);
        records.save(&sent, "key:aaaa").await.unwrap();
        assert_eq!(
            records.get("01J", "key:aaaa").await.unwrap(),
            Some(sent.clone())
        );
        assert_eq!(records.get("01J", "key:bbbb").await.unwrap(), None);
        // A report keeps the owner.
        records
            .apply(&update(DeliveryStatus::Delivered))
            .await
            .unwrap();
        let read = records.get("01J", "key:aaaa").await.unwrap().unwrap();
        assert_eq!(read.status, DeliveryStatus::Delivered);
        // The owner is kept as a digest only.
        let kept = store.get("msg:01J").await.unwrap().unwrap();
        assert!(!kept.contains("aaaa"), "{kept}");

        // A record from before owners were kept is shown to nobody.
        let legacy = serde_json::to_string(&record(DeliveryStatus::Sent)).unwrap();
        store
            .put(&[("msg:01K", legacy.as_str())], None)
            .await
            .unwrap();
        assert_eq!(records.get("01K", "key:aaaa").await.unwrap(), None);
    }
}
