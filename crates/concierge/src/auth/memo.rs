//! The last verified bearer token of one client connection.
//!
//! A client sends the same token on every request of a connection. Comparing
//! it byte for byte with the previous one costs far less than digesting it
//! for the shared cache: SHA-256 of a 600-byte RS256 token is about 20k
//! instructions on a CPU without SHA extensions, more than a third of a
//! proxied request. The memo lives as long as the connection (whose read
//! buffers hold the token anyway), keeps one copy of one token, and every
//! hit is checked exactly like a shared-cache hit: expiry, the verifying key
//! still published, the route's accepted providers.
//!
//! The memo points at the shared cache's entry without owning it: an entry
//! the cache dropped (evicted, or the whole verifier replaced by a reload)
//! is gone from the memo too, and a long-lived connection keeps no retired
//! provider, and no key refresher, alive.

use std::sync::{Arc, Mutex, Weak};

use super::jwt::CachedIdentity;

#[derive(Default)]
pub struct TokenMemo {
    last: Mutex<Option<Memo>>,
}

struct Memo {
    /// Which verifier (configuration generation) verified the token.
    verifier: u64,
    token: Box<[u8]>,
    entry: Weak<CachedIdentity>,
}

impl TokenMemo {
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry remembered for exactly `token`, if `verifier` made it.
    /// Never waits: concurrent HTTP/2 streams that find the memo busy go to
    /// the shared cache instead.
    pub(super) fn get(&self, verifier: u64, token: &[u8]) -> Option<Arc<CachedIdentity>> {
        let last = self.last.try_lock().ok()?;
        let memo = last.as_ref()?;
        if memo.verifier == verifier && *memo.token == *token {
            memo.entry.upgrade()
        } else {
            None
        }
    }

    pub(super) fn remember(&self, verifier: u64, token: &[u8], entry: &Arc<CachedIdentity>) {
        let entry = Arc::downgrade(entry);
        if let Ok(mut last) = self.last.try_lock() {
            match last.as_mut() {
                // Same length: reuse the allocation.
                Some(memo) if memo.token.len() == token.len() => {
                    memo.token.copy_from_slice(token);
                    memo.verifier = verifier;
                    memo.entry = entry;
                }
                _ => {
                    *last = Some(Memo {
                        verifier,
                        token: token.into(),
                        entry,
                    });
                }
            }
        }
    }

    /// Forgets the token (it failed a check).
    pub(super) fn forget(&self) {
        if let Ok(mut last) = self.last.try_lock() {
            *last = None;
        }
    }
}
