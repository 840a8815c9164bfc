//! The OAuth access token: fetched with the client credentials, cached until shortly
//! before it expires, refreshed by one task at a time.

use super::SendpulseProvider;
use crate::http;
use crate::http::protocol_error;
use crate::http::Reply;
use crate::ProviderError;
use reqwest::header::ACCEPT;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

/// How long before its expiry a cached token is replaced.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);

impl SendpulseProvider {
    /// A valid access token: the cached one unless it is stale or is `rejected` (the
    /// one a send just had refused), else a new one. One task fetches at a time; tasks
    /// that waited for that fetch take its result instead of fetching again.
    pub(super) async fn access_token(
        &self,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, ProviderError> {
        let seen = self.tokens.fetches.load(Ordering::Acquire);
        let mut slot = self.tokens.slot.lock().await;
        if let Some(cached) = &slot.token {
            let refused =
                rejected.is_some_and(|r| r.expose_secret() == cached.value.expose_secret());
            if !refused && Instant::now() < cached.refresh_at {
                return Ok(cached.value.clone());
            }
        }
        if self.tokens.fetches.load(Ordering::Acquire) != seen {
            if let Some(error) = &slot.last_error {
                return Err(error.clone());
            }
        }

        let fetched = self.fetch_token().await;
        self.tokens.fetches.fetch_add(1, Ordering::Release);
        match fetched {
            Ok((value, expires_in)) => {
                tracing::debug!(
                    expires_in = expires_in.as_secs(),
                    "fetched a SendPulse access token"
                );
                let now = Instant::now();
                slot.token = Some(CachedToken {
                    value: value.clone(),
                    // An absurd lifetime counts as none: the next send fetches again.
                    refresh_at: now
                        .checked_add(expires_in.saturating_sub(TOKEN_REFRESH_MARGIN))
                        .unwrap_or(now),
                });
                slot.last_error = None;
                Ok(value)
            }
            Err(error) => {
                slot.token = None;
                slot.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    pub(super) async fn fetch_token(&self) -> Result<(SecretString, Duration), ProviderError> {
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret.expose_secret(),
        });
        let request = self
            .client
            .post(&self.token_url)
            .header(ACCEPT, "application/json")
            .json(&body);
        let reply = http::exchange(request).await.map_err(before_sending)?;
        read_token_reply(reply, self.client_secret.expose_secret()).map_err(before_sending)
    }
}

/// Reads the answer to an access-token request: the token and its lifetime, or why
/// there is none. `client_secret` is masked in any error reply. Public for the fuzz
/// targets.
#[doc(hidden)]
pub fn read_token_reply(
    mut reply: Reply,
    client_secret: &str,
) -> Result<(SecretString, Duration), ProviderError> {
    if reply.status != StatusCode::OK {
        // An error reply that echoes the request must not carry the secret further.
        reply.redact(client_secret);
    }
    match reply.status.as_u16() {
        200 => {
            #[derive(Deserialize)]
            struct TokenReply {
                access_token: String,
                expires_in: u64,
            }
            match serde_json::from_slice::<TokenReply>(&reply.body) {
                Ok(token) if !token.access_token.is_empty() => Ok((
                    SecretString::from(token.access_token),
                    Duration::from_secs(token.expires_in),
                )),
                // The body may hold a token: it never goes into the detail.
                _ => Err(ProviderError::Protocol {
                    status: 200,
                    detail: "token reply lacks access_token or expires_in".to_owned(),
                }),
            }
        }
        400 | 401 | 403 => Err(ProviderError::Unauthorized {
            detail: format!("access token refused: {}", reply.detail()),
        }),
        429 | 500..=599 => Err(reply.error()),
        _ => Err(protocol_error(reply.status, &reply.body)),
    }
}

/// A failure to get a token: whatever the token endpoint did, the message itself was
/// not sent, so an outcome that would be unknown for a send (5xx, no answer in time) is
/// here a failure that provably never reached the provider.
pub(super) fn before_sending(error: ProviderError) -> ProviderError {
    match error {
        ProviderError::Unavailable { detail } => ProviderError::Connect {
            detail: format!("no access token, nothing sent: {detail}"),
        },
        ProviderError::Timeout => ProviderError::Connect {
            detail: "the token endpoint did not answer in time; nothing sent".to_owned(),
        },
        other => other,
    }
}

#[derive(Default)]
pub(super) struct TokenCache {
    slot: tokio::sync::Mutex<TokenSlot>,
    /// Finished fetches. Read before waiting for `slot`, it tells a waiter whether a
    /// fetch completed meanwhile.
    fetches: AtomicU64,
}

#[derive(Default)]
pub(super) struct TokenSlot {
    token: Option<CachedToken>,
    /// Why the latest fetch failed, handed to the tasks that waited for it.
    last_error: Option<ProviderError>,
}

pub(super) struct CachedToken {
    value: SecretString,
    refresh_at: Instant,
}
