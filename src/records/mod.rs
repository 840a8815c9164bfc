//! Message records and Telegram chat links, kept in the state store.
//!
//! A record holds what an operator needs to answer "did it arrive?": ids, channel,
//! provider, status, error code, the masked number and times. Never the text or the
//! code. Records live `MESSAGE_RETENTION`; chat links live `TELEGRAM_LINK_TTL` from
//! the last delivery (so a recycled number stops reaching the old owner), or until the
//! user unlinks (`/stop`) or blocks the bot.
//!
//! Each record is kept with a digest of the caller identity that sent it, and shown
//! only to that caller. Records kept without one (written before owners were kept)
//! are shown to nobody; they lapse with `MESSAGE_RETENTION`.
//!
//! A report that moves the status of a message's first leg is handed to the
//! [`StatusHook`], if one is set (the channel fallback): whatever brought the report
//! (a webhook or a poll), it comes through [`Records::apply`].

mod leg;
mod owner;
mod save;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use otp_relay_providers::callbacks::StatusUpdate;
use otp_relay_providers::{ChatDirectory, DeliveryStatus, Money, Phone, ProviderError};
use serde::{Deserialize, Serialize};

pub use leg::{FallbackLeg, LegState};

use crate::guards::digest;
use crate::store::{Store, StoreError};
use owner::owner_digest;

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
    /// The parts of a message the provider split and reports on one by one (Vonage SMS
    /// API); `status` is computed over them. Empty for a message of one piece.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartStatus>,
    /// What the message cost, once the provider said; absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Cost>)]
    pub cost: Option<Money>,
    /// The selector of the `ROUTES` rule that chose the providers (`+5511`, `BR`, `*`);
    /// absent when no rule matched or `ROUTES` is unset (every provider, in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "+5511")]
    pub route: Option<String>,
    /// The SMS sent when this message's channel did not report delivery in time, or
    /// reported failure (`CHANNEL_FALLBACK`); absent when none was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackLeg>,
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

/// One part of a multi-part message: the provider's id for it and its latest status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartStatus {
    pub id: String,
    #[schema(value_type = String)]
    pub status: DeliveryStatus,
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
        record_json(self)
    }
}

/// [`Kept`] written from borrowed parts, so that saving a record does not copy it first.
#[derive(Serialize)]
struct KeptRef<'a> {
    #[serde(flatten)]
    record: &'a MessageRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
}

impl KeptRef<'_> {
    fn to_json(&self) -> String {
        record_json(self)
    }
}

/// Room for a whole record's JSON (some 350 bytes with its owner): written into a
/// buffer grown from serde_json's default, it was reallocated three times per send.
const RECORD_JSON_CAPACITY: usize = 512;

fn record_json(record: &impl Serialize) -> String {
    let mut json = Vec::with_capacity(RECORD_JSON_CAPACITY);
    serde_json::to_writer(&mut json, record).expect("a record serializes");
    String::from_utf8(json).expect("serde_json writes UTF-8")
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

/// Whether a report may move a status from `from` to `to`: never back, and never from
/// one final status to another.
fn may_move(from: DeliveryStatus, to: DeliveryStatus) -> bool {
    if is_final(from) {
        to == from
    } else {
        progress(to) >= progress(from)
    }
}

impl MessageRecord {
    /// The record of a message whose parts the provider reports on one by one: the first
    /// part's id is `provider_message_id`, every part starts at the record's status.
    pub fn with_parts(mut self, more_part_ids: &[String]) -> MessageRecord {
        if let (Some(first), false) = (&self.provider_message_id, more_part_ids.is_empty()) {
            self.parts = std::iter::once(first)
                .chain(more_part_ids)
                .map(|id| PartStatus {
                    id: id.clone(),
                    status: self.status,
                })
                .collect();
        }
        self
    }

    /// The status of a message of several parts: a part that failed makes the message
    /// fail (the user cannot read the code); otherwise the message is as far as its
    /// least advanced part.
    fn status_over_parts(&self) -> Option<DeliveryStatus> {
        let failed = self
            .parts
            .iter()
            .map(|p| p.status)
            .find(|s| matches!(s, DeliveryStatus::Failed | DeliveryStatus::Undelivered));
        failed.or_else(|| {
            self.parts
                .iter()
                .map(|p| p.status)
                .min_by_key(|s| progress(*s))
        })
    }

    /// The cost of the leg `update` is about (the fallback SMS, or the message), with
    /// the provider that charged it, once stated.
    fn cost_reported_by(&self, update: &StatusUpdate) -> Option<(&str, &Money)> {
        match self.fallback.as_ref().filter(|leg| leg.is_about(update)) {
            Some(leg) => leg.provider.as_deref().zip(leg.cost.as_ref()),
            None => self.provider.as_deref().zip(self.cost.as_ref()),
        }
    }

    /// Applies a provider's report, unless it would move the status back or replace a
    /// final status with another (reports arrive out of order and are retried; the first
    /// final word stands). A repeat of the final status may still refine its details.
    fn apply(&mut self, update: &StatusUpdate, now: SystemTime) -> bool {
        if let Some(leg) = self.fallback.as_mut().filter(|leg| leg.is_about(update)) {
            return leg.apply(update, now);
        }
        // The first price stated is the price: a repeated report does not change it.
        let priced = self.cost.is_none() && update.cost.is_some();
        if priced {
            self.cost.clone_from(&update.cost);
            self.updated_at = timestamp(now);
        }
        if let Some(part) = self
            .parts
            .iter_mut()
            .find(|part| part.id == update.provider_message_id)
        {
            if !may_move(part.status, update.status) {
                return priced;
            }
            part.status = update.status;
            let overall = self.status_over_parts().unwrap_or(update.status);
            // The message moves when all its parts did (or one failed); a final status
            // stays (see `progress`).
            if overall != self.status && may_move(self.status, overall) {
                self.status = overall;
                self.provider_status = Some(update.raw_status.clone());
            }
            if update.error_code.is_some() {
                self.error_code.clone_from(&update.error_code);
            }
            self.updated_at = timestamp(now);
            return true;
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

/// Told when a report moved the status of a message's first leg.
#[async_trait]
pub trait StatusHook: Send + Sync {
    async fn status_moved(&self, record: &MessageRecord);
}

/// Records and links over the state store.
#[derive(Clone)]
pub struct Records {
    store: Arc<dyn Store>,
    retention: Duration,
    /// How long a Telegram chat link lives without a delivery (`TELEGRAM_LINK_TTL`).
    link_ttl: Duration,
    /// Set once the application is assembled; shared by every clone.
    hook: Arc<OnceLock<Arc<dyn StatusHook>>>,
}

fn message_key(id: &str) -> String {
    ["msg:", id].concat()
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
        // One allocation of the exact size: this runs on every send.
        ["msg-by-provider:", provider, ":", provider_message_id].concat()
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
        Records {
            store,
            retention,
            link_ttl: otp_relay_providers::telegram::DEFAULT_LINK_TTL,
            hook: Arc::default(),
        }
    }

    /// Hands every later move of a first leg's status to `hook` (for these records and
    /// every clone of them). Only the first hook set counts.
    pub fn set_status_hook(&self, hook: Arc<dyn StatusHook>) {
        let _ = self.hook.set(hook);
    }

    /// The same records with Telegram chat links that live `ttl` from the last delivery.
    pub fn with_link_ttl(mut self, ttl: Duration) -> Self {
        self.link_ttl = ttl;
        self
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
            let unpriced = kept.record.cost_reported_by(update).is_none();
            let first_leg = !kept
                .record
                .fallback
                .as_ref()
                .is_some_and(|leg| leg.is_about(update));
            let status = kept.record.status;
            if !kept.record.apply(update, SystemTime::now()) {
                return Ok(Some(kept.record));
            }
            if self.store.replace(&key, &current, &kept.to_json()).await? {
                // Only the one update that priced the record (the replace is atomic,
                // across replicas too) counts its cost: repeated reports do not.
                if unpriced {
                    if let Some((provider, cost)) = kept.record.cost_reported_by(update) {
                        crate::prometheus::count_cost(provider, cost);
                    }
                }
                if let Some(hook) = self.hook.get().filter(|_| first_leg) {
                    if kept.record.status != status {
                        hook.status_moved(&kept.record).await;
                    }
                }
                return Ok(Some(kept.record));
            }
        }
        Err(StoreError("the record kept changing; try again".into()))
    }

    /// Links `phone` to a Telegram chat (replacing an earlier link of either) for
    /// `TELEGRAM_LINK_TTL`.
    pub async fn link_chat(&self, phone: &Phone, chat_id: i64) -> Result<(), StoreError> {
        self.unlink_chat(chat_id).await?;
        self.put_link(phone, chat_id).await
    }

    async fn put_link(&self, phone: &Phone, chat_id: i64) -> Result<(), StoreError> {
        let key = chat_key(phone);
        let chat = chat_id.to_string();
        let owner = chat_owner_key(chat_id);
        self.store
            .put(
                &[
                    (key.as_str(), chat.as_str()),
                    (owner.as_str(), key.as_str()),
                ],
                Some(self.link_ttl),
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
        self.store.delete_if(&key, &chat_id.to_string()).await?;
        self.store.delete(&owner).await?;
        Ok(true)
    }
}

/// Adds a priced record's cost to `otp_relay_cost_total`.

#[async_trait]
impl ChatDirectory for Records {
    async fn chat_for(&self, phone: &Phone) -> Result<Option<i64>, ProviderError> {
        let linked = self.store.get(&chat_key(phone)).await.map_err(store_down)?;
        Ok(linked.and_then(|chat| chat.parse().ok()))
    }

    async fn renew(&self, phone: &Phone, chat_id: i64) -> Result<(), ProviderError> {
        // Only a link that still points at the chat the message went to.
        if self.chat_for(phone).await? == Some(chat_id) {
            self.put_link(phone, chat_id).await.map_err(store_down)?;
        }
        Ok(())
    }

    async fn forget(&self, phone: &Phone, chat_id: i64) -> Result<(), ProviderError> {
        if self.chat_for(phone).await? == Some(chat_id) {
            self.unlink_chat(chat_id).await.map_err(store_down)?;
        }
        Ok(())
    }
}

fn store_down(error: StoreError) -> ProviderError {
    ProviderError::Unavailable {
        detail: error.to_string(),
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
            parts: Vec::new(),
            route: None,
            fallback: None,
        }
    }

    #[test]
    fn records_from_before_routes_still_read_and_a_route_is_kept() {
        let before = r#"{"id":"01J","channel":"sms","provider":"twilio","provider_message_id":"SM1","status":"queued","provider_status":null,"error_code":null,"to":"+55119*****17","created_at":"2026-11-28T00:00:00Z","updated_at":"2026-11-28T00:00:00Z","owner":"abc"}"#;
        let kept = Kept::read(before).expect("an old record reads");
        assert_eq!(kept.record, record(DeliveryStatus::Queued));
        let routed = Kept {
            record: MessageRecord {
                route: Some("+5511".into()),
                ..record(DeliveryStatus::Queued)
            },
            owner: None,
        };
        let json = routed.to_json();
        assert!(json.contains(r#""route":"+5511""#), "{json}");
        assert_eq!(Kept::read(&json).unwrap().record, routed.record);
        assert!(!Kept::read(before).unwrap().to_json().contains("route"));
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

    #[tokio::test]
    async fn a_receipt_for_any_part_finds_the_record_whose_status_is_over_all_parts() {
        let store: Arc<dyn Store> = Arc::new(crate::store::memory::MemoryStore::default());
        let records = Records::new(store, Duration::from_secs(60));
        let saved = record(DeliveryStatus::Queued).with_parts(&["SM2".into(), "SM3".into()]);
        records.save(&saved, "ip:10.0.0.1").await.unwrap();
        use DeliveryStatus::*;
        for (part, reported, message) in [
            ("SM3", Delivered, Queued),
            ("SM1", Delivered, Queued),
            ("SM2", Sent, Sent),
            ("SM2", Delivered, Delivered),
        ] {
            assert_eq!(
                after_report(&records, part, reported).await,
                message,
                "{part}"
            );
        }

        // One failed part fails the message: the user cannot read the code.
        let mut split = record(DeliveryStatus::Queued);
        split.id = "01K".into();
        split.provider_message_id = Some("SM9".into());
        let split = split.with_parts(&["SM8".into()]);
        records.save(&split, "ip:10.0.0.1").await.unwrap();
        assert_eq!(
            after_report(&records, "SM8", Undelivered).await,
            Undelivered
        );
        assert_eq!(after_report(&records, "SM9", Delivered).await, Undelivered);
    }

    /// The record's status after the report that part `id` is `status`.
    async fn after_report(records: &Records, id: &str, status: DeliveryStatus) -> DeliveryStatus {
        let report = StatusUpdate {
            provider_message_id: id.into(),
            ..update(status)
        };
        records.apply(&report).await.unwrap().unwrap().status
    }

    #[test]
    fn a_record_is_written_as_the_kept_form_reads_it() {
        let mut saved = record(DeliveryStatus::Sent);
        saved.cost = Money::parse("0.0079", Some("USD"));
        saved = saved.with_parts(&["SM1".to_owned(), "SM2".to_owned()]);
        let written = KeptRef {
            record: &saved,
            owner: Some("abc"),
        }
        .to_json();
        let kept = Kept::read(&written).unwrap();
        assert_eq!(kept.record, saved);
        assert_eq!(kept.owner.as_deref(), Some("abc"));
        assert_eq!(written, kept.to_json());
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
        records.save(&saved, "key:aaaa").await.unwrap();
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
