//! How many token slots exist: the bound on the token cache.
//!
//! A slot holds one cached token (and the single-flight lock) per (client, token endpoint,
//! scope set). Callers choose the scope set, so without a bound a caller could grow the
//! cache with distinct scope strings. Each client keeps at most [`PER_CLIENT_SCOPE_SETS`]
//! slots, evicting its own least recently used idle slot to make room: a caller can only
//! ever push out tokens of a client it is allowed to use, never another client's, and the
//! whole cache is at most that many slots per configured client. A slot in use (a request
//! holds it) is never evicted; the cap is restored as soon as it is idle again.

use std::collections::HashMap;
use std::sync::Arc;

/// Distinct (token endpoint, scope set) slots kept per client. Real integrations ask for
/// one to a few scope sets; this leaves ample room and bounds what a caller can add.
pub const PER_CLIENT_SCOPE_SETS: usize = 16;

/// One client's slots by (token endpoint, normalised scope), with when each was last
/// asked for.
type ClientSlots<S> = HashMap<(String, String), (Arc<S>, u64)>;

/// The slots, per client.
pub struct SlotCache<S> {
    clients: HashMap<String, ClientSlots<S>>,
    /// A logical clock: increments on every lookup.
    tick: u64,
}

impl<S> Default for SlotCache<S> {
    fn default() -> Self {
        SlotCache {
            clients: HashMap::new(),
            tick: 0,
        }
    }
}

impl<S: Default> SlotCache<S> {
    /// The slot for `client`, `endpoint` and a normalised `scope`, made if missing.
    pub fn slot(&mut self, client: &str, endpoint: &str, scope: &str) -> Arc<S> {
        self.tick += 1;
        let tick = self.tick;
        let slots = self.clients.entry(client.to_owned()).or_default();
        let key = (endpoint.to_owned(), scope.to_owned());
        if let Some((slot, used)) = slots.get_mut(&key) {
            *used = tick;
            return slot.clone();
        }
        while slots.len() >= PER_CLIENT_SCOPE_SETS {
            // Only the map holds an idle slot; a request in flight holds another reference.
            let idle = slots
                .iter()
                .filter(|(_, (slot, _))| Arc::strong_count(slot) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone());
            match idle {
                Some(oldest) => {
                    slots.remove(&oldest);
                    tracing::debug!(client, "token cache full for this client: evicted its least recently used scope set");
                }
                None => break,
            }
        }
        let slot = Arc::new(S::default());
        slots.insert(key, (slot.clone(), tick));
        slot
    }

    /// Slots held for `client`.
    pub fn len_for(&self, client: &str) -> usize {
        self.clients.get(client).map_or(0, HashMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_scopes_of_one_client_never_exceed_its_cap_nor_touch_other_clients() {
        let mut cache = SlotCache::<u8>::default();
        let kept = cache.slot("other", "https://e/token", "system/Patient.read");
        drop(kept);
        for i in 0..5000 {
            cache.slot("open", "https://e/token", &format!("system/R{i}.read"));
            assert!(cache.len_for("open") <= PER_CLIENT_SCOPE_SETS);
        }
        assert_eq!(cache.len_for("other"), 1);
        assert_eq!(cache.len_for("open"), PER_CLIENT_SCOPE_SETS);
    }

    #[test]
    fn the_least_recently_used_idle_slot_goes_first_and_a_slot_in_use_stays() {
        let mut cache = SlotCache::<u8>::default();
        let in_use = cache.slot("c", "e", "system/InUse.read");
        let first = cache.slot("c", "e", "system/A.read");
        drop(first);
        for i in 0..PER_CLIENT_SCOPE_SETS - 2 {
            cache.slot("c", "e", &format!("system/R{i}.read"));
        }
        // Asked for again: now the most recently used.
        cache.slot("c", "e", "system/A.read");
        cache.slot("c", "e", "system/New.read");
        let again = cache.slot("c", "e", "system/A.read");
        assert_eq!(Arc::strong_count(&again), 2, "A was kept (same slot)");
        assert!(
            Arc::ptr_eq(&in_use, &cache.slot("c", "e", "system/InUse.read")),
            "a slot in use is never evicted"
        );
        // Every slot in use: the cache grows past the cap rather than drop one, and
        // shrinks back once they are idle.
        let held: Vec<_> = (0..PER_CLIENT_SCOPE_SETS + 4)
            .map(|i| cache.slot("d", "e", &format!("system/H{i}.read")))
            .collect();
        assert_eq!(cache.len_for("d"), PER_CLIENT_SCOPE_SETS + 4);
        drop(held);
        cache.slot("d", "e", "system/Later.read");
        assert_eq!(cache.len_for("d"), PER_CLIENT_SCOPE_SETS);
    }
}
