//! Saving a new message record: the record and its index by provider id in one store
//! operation, and with it, for a send with an idempotency key, the claim's settlement.

use super::owner::owner_digest;
use super::{message_key, provider_key, KeptRef, MessageRecord, Records};
use crate::store::{PutAndSettle, Settle, StoreError};

impl Records {
    /// Stores a new record sent by `owner` (a caller identity), indexed by our id and by
    /// the provider's id of each part.
    pub async fn save(&self, record: &MessageRecord, owner: &str) -> Result<(), StoreError> {
        let saved = Saved::of(record, owner);
        // All in one store operation (one Redis round trip).
        self.store
            .put(&saved.entries(&record.id), Some(self.retention))
            .await?;
        count_cost(record);
        Ok(())
    }

    /// [`Records::save`], and the send's idempotency claim settled in the same store
    /// operation (one Redis round trip on a single server).
    pub async fn save_and_settle(
        &self,
        record: &MessageRecord,
        owner: &str,
        claim: &Settle<'_>,
    ) -> PutAndSettle {
        let saved = Saved::of(record, owner);
        let entries = saved.entries(&record.id);
        let done = self
            .store
            .put_and_settle(&entries, Some(self.retention), claim)
            .await;
        if done.put.is_ok() {
            count_cost(record);
        }
        done
    }
}

/// A new record as stored: its key and JSON, and its index keys by provider id.
struct Saved {
    key: String,
    json: String,
    indexes: Vec<String>,
}

impl Saved {
    fn of(record: &MessageRecord, owner: &str) -> Saved {
        let owner = owner_digest(owner);
        let json = KeptRef {
            record,
            owner: Some(&owner),
        }
        .to_json();
        let provider_ids = record
            .provider_message_id
            .iter()
            .chain(record.parts.iter().map(|part| &part.id).skip(1));
        let indexes: Vec<String> = match &record.provider {
            Some(provider) => provider_ids
                .map(|provider_id| provider_key(provider, provider_id))
                .collect(),
            None => Vec::new(),
        };
        Saved {
            key: message_key(&record.id),
            json,
            indexes,
        }
    }

    /// Every entry to write: the record, then each index entry (naming record `id`).
    fn entries<'a>(&'a self, id: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut entries = Vec::with_capacity(1 + self.indexes.len());
        entries.push((self.key.as_str(), self.json.as_str()));
        entries.extend(self.indexes.iter().map(|index| (index.as_str(), id)));
        entries
    }
}

/// A record is saved once, when its send ends: its price counts now.
fn count_cost(record: &MessageRecord) {
    if let (Some(provider), Some(cost)) = (&record.provider, &record.cost) {
        crate::prometheus::count_cost(provider, cost);
    }
}
