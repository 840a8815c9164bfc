//! Checks a request passes before anything is sent on its behalf: who is calling, where
//! the number is, how often, and whether this exact send already happened.

pub mod access;
pub mod idempotency;
pub mod number_policy;
pub mod rate;

use sha2::{Digest, Sha256};

/// A short hex digest, for store keys that must not hold numbers, keys or text.
pub fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        // A separator that cannot occur in the parts keeps ("ab","c") apart from ("a","bc").
        hasher.update([0u8]);
    }
    hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}
