//! Per-key mutual exclusion (per target, per repository instance) for blocking code.
//!
//! A set of held keys under one mutex plus a condition variable: locking a key waits until
//! no one holds it. Keys are forgotten as soon as they are released, so the set never grows
//! beyond the operations in flight.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Condvar, Mutex};

/// Locks keyed by `K`.
#[derive(Debug)]
pub struct KeyedLocks<K: Eq + Hash + Clone> {
    held: Mutex<HashSet<K>>,
    released: Condvar,
}

impl<K: Eq + Hash + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            held: Mutex::new(HashSet::new()),
            released: Condvar::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Blocks until `key` is free, then holds it until the guard is dropped.
    pub fn lock(&self, key: K) -> KeyGuard<'_, K> {
        // A poisoned set is still consistent: insert/remove cannot panic half-way.
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while held.contains(&key) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(key.clone());
        KeyGuard { locks: self, key }
    }
}

/// Holds one key of a [`KeyedLocks`].
#[derive(Debug)]
pub struct KeyGuard<'a, K: Eq + Hash + Clone> {
    locks: &'a KeyedLocks<K>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.key);
        self.locks.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_holder_per_key_at_a_time() {
        let locks = Arc::new(KeyedLocks::<u8>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside) = (locks.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let _guard = locks.lock(1);
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let _a = locks.lock(1);
        let _b = locks.lock(2);
    }
}
