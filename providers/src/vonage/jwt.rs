//! Application JWTs for the Messages API: RS256, signed once per lifetime and reused.

use crate::ProviderError;
use crate::SettingError;
use jsonwebtoken::Algorithm;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::Header;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

/// Lifetime of an application JWT (the Vonage SDKs' default).
pub(super) const JWT_LIFETIME: Duration = Duration::from_secs(900);
/// A cached JWT is replaced once less than this is left, so none expires in flight.
pub(super) const JWT_RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Parses the key and signs once, so a bad key fails at startup rather than at a send.
pub(super) fn signing_key(pem: &SecretString) -> Result<EncodingKey, SettingError> {
    let invalid = || {
        SettingError::new(
            "VONAGE_PRIVATE_KEY",
            "is not an RSA private key in PEM form (the application's private.key)",
            "/run/secrets/vonage_private.key",
        )
    };
    let key = EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes()).map_err(|_| invalid())?;
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &json!({}), &key)
        .map_err(|_| invalid())?;
    Ok(key)
}

/// Where time comes from; injectable so tests can age a JWT without sleeping.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How Messages API requests authenticate (the SMS API carries key and secret in its form).
pub(super) enum MessagesAuth {
    Jwt(JwtSigner),
    Basic,
}

/// Signs application JWTs and keeps the current one until it nears expiry.
pub(super) struct JwtSigner {
    application_id: String,
    key: EncodingKey,
    clock: Clock,
    /// The one token in use and its `exp` (seconds since the epoch).
    current: Mutex<Option<(SecretString, u64)>>,
}

#[derive(Serialize)]
pub(super) struct Claims<'a> {
    application_id: &'a str,
    iat: u64,
    jti: String,
    exp: u64,
}

impl JwtSigner {
    pub(super) fn new(application_id: String, key: EncodingKey, clock: Clock) -> JwtSigner {
        JwtSigner {
            application_id,
            key,
            clock,
            current: Mutex::new(None),
        }
    }

    pub(super) fn token(&self) -> Result<SecretString, ProviderError> {
        let now = (self.clock)()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((token, exp)) = current.as_ref() {
            if now + JWT_RENEW_BEFORE.as_secs() < *exp {
                return Ok(token.clone());
            }
        }
        let claims = Claims {
            application_id: &self.application_id,
            iat: now,
            jti: ulid::Ulid::new().to_string(),
            exp: now + JWT_LIFETIME.as_secs(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map(SecretString::from)
            // The key signed at startup; this is not expected, and says nothing secret.
            .map_err(|e| ProviderError::Unauthorized {
                detail: format!("could not sign the application JWT: {e}"),
            })?;
        *current = Some((token.clone(), claims.exp));
        Ok(token)
    }
}
