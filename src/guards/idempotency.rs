//! One send per `Idempotency-Key`, or per caller and (number, text) within
//! `DEDUPE_WINDOW`.
//!
//! The first request claims the key in the store and sends; a repeat while it is in
//! flight waits for its answer (bounded by the request deadline); a repeat after it
//! finished gets the stored answer. Finished means answered with a success, or with a
//! failure a provider may have acted on (a timeout, a 5xx, a lost connection): sending
//! again could deliver the code twice, so that failure is replayed too. Only a failure
//! that provably reached no provider releases the key, so a repeat may try again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::digest;
use crate::store::{Claim, Store, StoreError, StoredAnswer};

/// Longest accepted `Idempotency-Key`.
pub const MAX_KEY_LENGTH: usize = 255;

/// Why a request cannot go ahead under its key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdempotencyError {
    #[error("the Idempotency-Key header must be 1 to 255 visible ASCII characters")]
    InvalidKey,
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    #[error("the first request with this key did not finish before the deadline")]
    StillInFlight,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the request should do.
pub enum Begin {
    /// Send, then call [`Ticket::remember`] or [`Ticket::release`].
    Proceed(Ticket),
    /// Answer with what the first request answered.
    Replay(StoredAnswer),
}

/// Which key a request falls under.
pub struct KeySource<'a> {
    /// The `Idempotency-Key` header, if sent.
    pub header: Option<&'a str>,
    /// Who is calling (keys and dedupe are per caller).
    pub caller: &'a str,
    pub e164: &'a str,
    pub channel: &'a str,
    pub text: &'a str,
}

/// The key, the request's fingerprint and how long its answer is remembered; `None`
/// when neither a header nor the dedupe window applies.
fn key_for(
    source: &KeySource<'_>,
    key_retention: Duration,
    dedupe_window: Duration,
) -> Result<Option<(String, String, Duration)>, IdempotencyError> {
    let fingerprint = || digest(&[source.e164, source.channel, source.text]);
    match source.header {
        Some(header) => {
            if header.is_empty()
                || header.len() > MAX_KEY_LENGTH
                || !header.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            {
                return Err(IdempotencyError::InvalidKey);
            }
            let key = format!("idem:key:{}", digest(&[source.caller, header]));
            Ok(Some((key, fingerprint(), key_retention)))
        }
        None if dedupe_window.is_zero() => Ok(None),
        None => {
            let fingerprint = fingerprint();
            Ok(Some((
                format!("idem:dedupe:{}", digest(&[source.caller, &fingerprint])),
                fingerprint,
                dedupe_window,
            )))
        }
    }
}

/// A claimed key, to settle once the send is over.
pub struct Ticket {
    store: Arc<dyn Store>,
    key: String,
    token: String,
    fingerprint: String,
    retention: Duration,
}

impl Ticket {
    /// Remembers the answer (a success, or a failure whose outcome is unknown) for
    /// repeats.
    pub async fn remember(self, answer: &StoredAnswer) {
        if let Err(error) = self
            .store
            .finish(
                &self.key,
                &self.token,
                &self.fingerprint,
                answer,
                self.retention,
            )
            .await
        {
            tracing::warn!(%error, "could not store the answer for repeats");
        }
    }

    /// Frees the key so a repeat may send: only for a send that provably went nowhere.
    pub async fn release(self) {
        if let Err(error) = self.store.release(&self.key, &self.token).await {
            tracing::warn!(%error, "could not release the idempotency key; it lapses by itself");
        }
    }
}

/// Claims the request's key, waits for a request in flight under it, or finds its
/// stored answer. `Ok(None)` when no key applies.
pub async fn begin(
    store: &Arc<dyn Store>,
    source: &KeySource<'_>,
    key_retention: Duration,
    dedupe_window: Duration,
    deadline: Instant,
) -> Result<Option<Begin>, IdempotencyError> {
    let Some((key, fingerprint, retention)) = key_for(source, key_retention, dedupe_window)? else {
        return Ok(None);
    };
    let token = ulid::Ulid::new().to_string();
    // The claim outlives the deadline a little, so a crashed holder frees it soon.
    let claim_ttl = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
    let mut poll = Duration::from_millis(5);
    loop {
        match store.claim(&key, &token, &fingerprint, claim_ttl).await? {
            Claim::Claimed => {
                return Ok(Some(Begin::Proceed(Ticket {
                    store: Arc::clone(store),
                    key,
                    token,
                    fingerprint,
                    retention,
                })))
            }
            Claim::Done { fingerprint: f, .. } | Claim::InFlight { fingerprint: f }
                if f != fingerprint =>
            {
                return Err(IdempotencyError::KeyReused)
            }
            Claim::Done { answer, .. } => return Ok(Some(Begin::Replay(answer))),
            Claim::InFlight { .. } => {}
        }
        // Wait for the request in flight, checking ever less often, until the deadline.
        loop {
            if Instant::now() + poll >= deadline {
                return Err(IdempotencyError::StillInFlight);
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(100));
            match store.peek(&key).await? {
                Some(Claim::Done { answer, .. }) => return Ok(Some(Begin::Replay(answer))),
                Some(_) => continue,
                // Released after a failure: try to claim it ourselves.
                None => break,
            }
        }
    }
}
