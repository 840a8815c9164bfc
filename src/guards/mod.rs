//! Checks a request passes before anything is sent on its behalf: who is calling, where
//! the number is, how often, and whether this exact send already happened.

pub mod access;
pub mod idempotency;
mod limits;
pub mod number_policy;
pub mod pumping;
pub mod rate;

pub use limits::Limits;

use sha2::{Digest, Sha256};

/// A short hex digest, for store keys that must not hold numbers, keys or text.
pub fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        // A separator that cannot occur in the parts keeps ("ab","c") apart from ("a","bc").
        hasher.update([0u8]);
    }
    hex(&hasher.finalize()[..16])
}

/// Lower-case hex of `bytes` (one `format!` per byte cost more than the hash itself).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_first_half_of_sha256_in_lower_hex() {
        // sha256("+5511966191717\0"), first 16 bytes.
        let full = Sha256::digest(b"+5511966191717\0");
        let expected: String = full[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest(&["+5511966191717"]), expected);
        assert_eq!(digest(&["+5511966191717"]).len(), 32);
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
