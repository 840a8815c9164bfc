//! Who is calling, read from the request: the access policy's verdict on its key and
//! address, as an extractor that handlers taking a [`Caller`] are protected by.

use std::future::{ready, Ready};
use std::net::IpAddr;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};

use crate::api::error::ApiError;
use crate::guards::access::{AccessDenied, AccessPolicy, Identity};

/// A caller that passed the access policy; handlers that take one are protected.
#[derive(Debug, Clone)]
pub struct Caller {
    pub ip: Option<IpAddr>,
    pub identity: Identity,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(policy) = req.app_data::<web::Data<AccessPolicy>>() else {
            // Wiring error: fail closed.
            return ready(Err(ApiError::Access(AccessDenied::AddressNotAllowed)));
        };
        let headers = req.headers();
        // A line that is not text cannot be read, so the client cannot be known.
        let forwarded_for: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        let rfc7239_forwarded = headers.contains_key(header::FORWARDED);
        let ip = policy.client_ip(
            req.peer_addr().map(|a| a.ip()),
            &forwarded_for,
            rfc7239_forwarded,
        );
        let key = presented_key(req).filter(|_| policy.has_keys());
        let key = key.as_deref();
        ready(
            policy
                .check(ip, key)
                .map(|()| Caller {
                    ip,
                    identity: match (key, ip) {
                        (Some(key), _) => Identity::Key(crate::guards::digest(&[key])),
                        (None, Some(ip)) => Identity::Address(ip),
                        (None, None) => Identity::Unknown,
                    },
                })
                .map_err(ApiError::Access),
        )
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, Basic auth whose password
/// is the key (authentik), a bare `Authorization: <key>` (keycloak-mfa-plugins), or
/// `X-API-Key: <key>`.
fn presented_key(req: &HttpRequest) -> Option<String> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let from_authorization = authorization.and_then(|value| match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(token.trim().to_owned())
        }
        Some((scheme, credentials)) if scheme.eq_ignore_ascii_case("basic") => {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials.trim())
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            decoded
                .split_once(':')
                .map(|(_, password)| password.to_owned())
        }
        Some(_) => None,
        None => Some(value.to_owned()),
    });
    from_authorization.or_else(|| {
        req.headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    })
}
