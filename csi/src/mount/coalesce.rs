//! Concurrent readers of the mount table share one read.
//!
//! Every publish, unpublish and lookup reads mountinfo, whose cost grows with the number of
//! mounts; under many concurrent requests the reads, not the mounts, would use the CPU. A
//! caller may share any read that *started after it asked*: that read sees every mount
//! operation completed before the call, exactly as a read of its own would. So at most one
//! read runs at a time, and everybody who asked while it ran shares the next one.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// One read in flight at a time; callers share the first read that starts after they ask.
#[derive(Debug)]
pub struct Coalesced<T> {
    state: Mutex<State<T>>,
    finished: Condvar,
}

#[derive(Debug)]
struct State<T> {
    /// Reads started so far; the number of the latest one.
    started: u64,
    /// Whether read number `started` is still running.
    in_flight: bool,
    /// The newest successful read and its number.
    latest: Option<(u64, Arc<T>)>,
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Coalesced<T> {
    /// Nothing read yet.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                started: 0,
                in_flight: false,
                latest: None,
            }),
            finished: Condvar::new(),
        }
    }

    /// The result of a read that started after this call: shared with other callers when
    /// one is due anyway, done by this caller (with `read`) otherwise. A failed read is
    /// returned to the caller that did it; the others try again.
    pub fn get<E>(&self, read: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Whatever is in flight started before this call; the next read is the first one
        // that may be shared.
        let needed = state.started + 1;
        loop {
            if let Some((number, table)) = &state.latest
                && *number >= needed
            {
                return Ok(table.clone());
            }
            if !state.in_flight {
                state.started += 1;
                state.in_flight = true;
                let number = state.started;
                drop(state);
                let result = read().map(Arc::new);
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.in_flight = false;
                if let Ok(table) = &result {
                    state.latest = Some((number, table.clone()));
                }
                self.finished.notify_all();
                return result;
            }
            state = self
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    #[test]
    fn a_caller_sees_every_change_made_before_it_asked() {
        let shared = Arc::new(Coalesced::new());
        let world = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (shared, world, reads) = (shared.clone(), world.clone(), reads.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let before = world.fetch_add(1, Ordering::SeqCst) + 1;
                        let seen = shared
                            .get(|| {
                                reads.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_micros(200));
                                Ok::<_, ()>(world.load(Ordering::SeqCst))
                            })
                            .unwrap();
                        assert!(*seen >= before, "saw {seen}, changed to {before} before");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let reads = reads.load(Ordering::SeqCst);
        assert!(
            reads < 16 * 50,
            "{reads} reads for 800 calls: nothing was shared"
        );
    }

    #[test]
    fn a_failed_read_goes_to_its_caller_and_the_next_one_reads_again() {
        let shared = Coalesced::new();
        assert_eq!(shared.get(|| Err::<u32, _>("broken")), Err("broken"));
        assert_eq!(*shared.get(|| Ok::<_, &str>(7)).unwrap(), 7);
        assert_eq!(*shared.get(|| Ok::<_, &str>(8)).unwrap(), 8);
    }
}
