//! Who may send: `AUTH_API_KEYS`, `AUTH_ALLOWED_CIDRS`, `AUTH_DISABLED`,
//! `TRUSTED_PROXIES`, and the refusal to start a real provider with none of them.

use otp_relay_providers::Env;
use secrecy::SecretString;

use super::var::Var;
use super::ConfigError;
use crate::guards::access::AccessPolicy;

/// A real provider sends paid messages: an open endpoint would let anyone spend the
/// account, so one of the access settings must be chosen on purpose.
pub(super) fn check_access_is_configured(
    providers: &[&str],
    access: &AccessPolicy,
) -> Result<(), ConfigError> {
    let real: Vec<&str> = providers
        .iter()
        .copied()
        .filter(|p| *p != "console")
        .collect();
    if !real.is_empty() && !access.is_configured() {
        return Err(ConfigError::NoAccessControl {
            providers: real.join(","),
        });
    }
    Ok(())
}

pub(super) fn parse_access(env: &Env<'_>) -> Result<AccessPolicy, ConfigError> {
    let keys_var = Var::new(env, "AUTH_API_KEYS", "k3y-one,k3y-two");
    let api_keys: Vec<SecretString> = keys_var
        .list()
        .into_iter()
        .map(|key| SecretString::from(key.to_owned()))
        .collect();
    if keys_var.value.is_some() && api_keys.is_empty() {
        return Err(ConfigError::Invalid {
            var: "AUTH_API_KEYS",
            value: None,
            problem: "lists no key".into(),
            example: "k3y-one,k3y-two",
        });
    }
    let allowed_cidrs =
        Var::new(env, "AUTH_ALLOWED_CIDRS", "10.0.0.0/8,192.168.1.20").networks()?;
    let disabled = Var::new(env, "AUTH_DISABLED", "true").boolean(false)?;
    let trusted_proxies = Var::new(env, "TRUSTED_PROXIES", "10.0.0.1,172.16.0.0/12").networks()?;
    Ok(AccessPolicy::new(
        api_keys,
        allowed_cidrs,
        disabled,
        trusted_proxies,
    ))
}
