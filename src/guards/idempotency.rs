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
use crate::store::{Claim, ClaimAndCount, RateLimit, Settle, Store, StoreError, StoredAnswer};

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
    /// A limit counted with the claim refuses the send: `limit` is its place in the
    /// list given; the key was left free and nothing was counted.
    Limited { limit: usize, retry_after: Duration },
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
        let (key, token, fingerprint) = (&self.key, &self.token, &self.fingerprint);
        let finished = self
            .store
            .finish(key, token, fingerprint, answer, self.retention)
            .await;
        self.settled(true, finished);
    }

    /// Frees the key so a repeat may send: only for a send that provably went nowhere.
    pub async fn release(self) {
        let released = self.store.release(&self.key, &self.token).await;
        self.settled(false, released);
    }

    /// The claim, settled with `answer` kept for repeats (as [`Ticket::remember`]) or,
    /// with `None`, released (as [`Ticket::release`]), for a store operation that
    /// settles it along with something else ([`Store::put_and_settle`]).
    pub fn settle<'a>(&'a self, answer: Option<&'a StoredAnswer>) -> Settle<'a> {
        Settle {
            key: &self.key,
            token: &self.token,
            fingerprint: &self.fingerprint,
            answer: answer.map(|answer| (answer, self.retention)),
        }
    }

    /// Logs a settlement that failed (`remembered`: whether it kept an answer).
    pub fn settled(&self, remembered: bool, result: Result<(), StoreError>) {
        match result {
            Ok(()) => {}
            Err(error) if remembered => {
                tracing::warn!(%error, "could not store the answer for repeats");
            }
            Err(error) => tracing::warn!(
                %error,
                "could not release the idempotency key; it lapses by itself"
            ),
        }
    }
}

/// Claims the request's key, waits for a request in flight under it, or finds its
/// stored answer. `Ok(None)` when no key applies. With `limits`, the claim counts the
/// send against them in the same store operation, and only claims the key when every
/// limit admits the send.
pub async fn begin(
    store: &Arc<dyn Store>,
    source: &KeySource<'_>,
    key_retention: Duration,
    dedupe_window: Duration,
    deadline: Instant,
    limits: Option<&[RateLimit<'_>]>,
) -> Result<Option<Begin>, IdempotencyError> {
    let Some((key, fingerprint, retention)) = key_for(source, key_retention, dedupe_window)? else {
        return Ok(None);
    };
    let token = ulid::Ulid::new().to_string();
    // The claim outlives the deadline a little, so a crashed holder frees it soon.
    let claim_ttl = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
    let mut poll = Duration::from_millis(5);
    loop {
        let claimed = match limits {
            Some(limits) => {
                store
                    .claim_and_acquire(&key, &token, &fingerprint, claim_ttl, limits)
                    .await?
            }
            None => match store.claim(&key, &token, &fingerprint, claim_ttl).await? {
                Claim::Claimed => ClaimAndCount::Claimed,
                held => ClaimAndCount::Held(held),
            },
        };
        match claimed {
            ClaimAndCount::Claimed => {
                return Ok(Some(Begin::Proceed(Ticket {
                    store: Arc::clone(store),
                    key,
                    token,
                    fingerprint,
                    retention,
                })))
            }
            ClaimAndCount::Limited { limit, retry_after } => {
                return Ok(Some(Begin::Limited { limit, retry_after }))
            }
            ClaimAndCount::Held(
                Claim::Done { fingerprint: f, .. } | Claim::InFlight { fingerprint: f },
            ) if f != fingerprint => return Err(IdempotencyError::KeyReused),
            ClaimAndCount::Held(Claim::Done { answer, .. }) => {
                return Ok(Some(Begin::Replay(answer)))
            }
            ClaimAndCount::Held(_) => {}
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
