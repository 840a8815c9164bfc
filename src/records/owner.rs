//! The owner digests records keep of their senders, computed once per identity.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::guards::digest;

/// What a record keeps of its sender: a digest, never the key or the address.
///
/// The same few callers send again and again, and a SHA-256 cost more than the rest of
/// saving a record: each thread keeps the digests of the last [`OWNER_DIGESTS`]
/// identities it saw.
pub(super) fn owner_digest(identity: &str) -> String {
    OWNER_DIGEST_CACHE.with_borrow_mut(|digests| {
        if let Some(known) = digests.get(identity) {
            return known.clone();
        }
        if digests.len() >= OWNER_DIGESTS {
            digests.clear();
        }
        let owner = digest(&["record-owner", identity]);
        digests.insert(identity.to_owned(), owner.clone());
        owner
    })
}

/// How many identities' digests each thread keeps (emptied when full).
const OWNER_DIGESTS: usize = 64;

thread_local! {
    static OWNER_DIGEST_CACHE: RefCell<HashMap<String, String>> = RefCell::default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_digests_are_the_digest_whichever_way_they_come() {
        for round in 0..3 {
            for n in 0..(OWNER_DIGESTS + 10) {
                let identity = format!("ip:10.0.{round}.{n}");
                assert_eq!(
                    owner_digest(&identity),
                    digest(&["record-owner", &identity])
                );
                assert_eq!(
                    owner_digest(&identity),
                    digest(&["record-owner", &identity])
                );
                let kept = OWNER_DIGEST_CACHE.with_borrow(HashMap::len);
                assert!(kept <= OWNER_DIGESTS, "{kept} digests kept");
            }
        }
    }
}
