//! Pacing of status writes: news at once, progress at most once per interval.
//!
//! A Job's status changes with every shard that starts or finishes; mirroring each change
//! would double the apiserver's write load of a large fleet for counts nobody reads at
//! that rate. So a status that differs from the stored one only in *progress* (counts and
//! the completed-shard ranges; see [`status::is_progress_only`]) is written at most once
//! per *progress interval* per AnalysisJob, and the controller looks again when the
//! interval has passed so the last count always lands. Everything else — a phase change,
//! a condition, a failed shard, the first status — is news and is written at once, which
//! keeps the lag from the Job's completion to the AnalysisJob's `Succeeded` short.
//!
//! The progress interval is [`MIN_PROGRESS_INTERVAL`] for a small fleet and stretches with
//! the number of unfinished AnalysisJobs being paced, so that progress writes of the whole
//! fleet stay below [`PROGRESS_WRITES_PER_SECOND`] (up to [`MAX_PROGRESS_INTERVAL`]): the
//! apiserver's write load then grows with the number of shards that start and finish,
//! which the Job controller already pays for, and not with the number of AnalysisJobs.
//!
//! The memory of last writes is per process: after a restart the first progress write
//! simply happens at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hepbatch_crds::AnalysisJobStatus;

use crate::status;

/// Least time between two progress-only status writes of one AnalysisJob: about the pace
/// at which a person watching `kubectl get aj -w` can read counts. At 500 AnalysisJobs a
/// 1 s pace still cost the apiserver a third more requests than the plain Jobs.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Progress-only status writes per second the whole fleet aims to stay below: 50
/// AnalysisJobs or fewer get [`MIN_PROGRESS_INTERVAL`], 300 get 30 s. (A fleet of 500
/// Jobs of 20 one-second shards makes the apiserver serve about 400 requests a second.)
pub const PROGRESS_WRITES_PER_SECOND: u32 = 10;

/// Most time between two progress-only status writes of one AnalysisJob, however large
/// the fleet: counts are never older than this while they change.
pub const MAX_PROGRESS_INTERVAL: Duration = Duration::from_secs(60);

/// The progress interval when `paced` unfinished AnalysisJobs share the write budget.
pub fn progress_interval(paced: usize) -> Duration {
    let spread = Duration::from_secs(1)
        .checked_mul(u32::try_from(paced).unwrap_or(u32::MAX))
        .map_or(MAX_PROGRESS_INTERVAL, |d| d / PROGRESS_WRITES_PER_SECOND);
    spread.clamp(MIN_PROGRESS_INTERVAL, MAX_PROGRESS_INTERVAL)
}

/// What to do with a newly derived status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed.
    Keep,
    /// Write it now.
    Write,
    /// Progress only, written too recently: look again after this long.
    Later(Duration),
}

/// Remembers when each AnalysisJob's status was last written.
#[derive(Debug, Default)]
pub struct StatusPacer {
    writes: Throttle,
}

impl StatusPacer {
    /// Decides about the status `new` of the AnalysisJob `key` whose stored status is `old`.
    pub fn decide(
        &self,
        key: &str,
        old: Option<&AnalysisJobStatus>,
        new: &AnalysisJobStatus,
        now: Instant,
    ) -> Decision {
        let Some(old) = old else {
            return Decision::Write;
        };
        if old == new {
            return Decision::Keep;
        }
        if !status::is_progress_only(old, new) {
            return Decision::Write;
        }
        let interval = progress_interval(self.writes.len());
        match self.writes.wait_left(key, now, interval) {
            Some(wait) => Decision::Later(wait),
            None => Decision::Write,
        }
    }

    /// Records a write of `key`'s status at `now`.
    pub fn wrote(&self, key: &str, now: Instant) {
        self.writes.record(key, now);
    }

    /// Forgets `key` (finished or deleted), keeping the memory bounded by the live fleet.
    pub fn forget(&self, key: &str) {
        self.writes.forget(key);
    }
}

/// When each key last acted, to allow at most one action per key and interval.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Mutex<HashMap<String, Instant>>,
}

impl Throttle {
    /// How long until `key` may act again at `now`, or `None` when it may act.
    pub fn wait_left(&self, key: &str, now: Instant, interval: Duration) -> Option<Duration> {
        let last = self.last.lock().ok()?.get(key).copied()?;
        let elapsed = now.duration_since(last);
        (elapsed < interval).then(|| interval - elapsed)
    }

    /// Records that `key` acted at `now`.
    pub fn record(&self, key: &str, now: Instant) {
        if let Ok(mut map) = self.last.lock() {
            map.insert(key.to_owned(), now);
        }
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &str) {
        if let Ok(mut map) = self.last.lock() {
            map.remove(key);
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.last.lock().map_or(0, |map| map.len())
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When each key may act next (e.g. look at its waiting shards again).
#[derive(Debug, Default)]
pub struct NotBefore {
    at: Mutex<HashMap<String, Instant>>,
}

impl NotBefore {
    /// How long until `key` may act at `now`, or `None` when it may.
    pub fn wait_left(&self, key: &str, now: Instant) -> Option<Duration> {
        let at = self.at.lock().ok()?.get(key).copied()?;
        (at > now).then(|| at - now)
    }

    /// Lets `key` act again only from `at` on.
    pub fn set(&self, key: &str, at: Instant) {
        if let Ok(mut map) = self.at.lock() {
            map.insert(key.to_owned(), at);
        }
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &str) {
        if let Ok(mut map) = self.at.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use hepbatch_crds::Phase;

    use super::*;

    fn running(succeeded: i32) -> AnalysisJobStatus {
        AnalysisJobStatus {
            phase: Some(Phase::Running),
            shards: 10,
            succeeded,
            ..AnalysisJobStatus::default()
        }
    }

    #[test]
    fn news_is_written_at_once_and_progress_is_paced() {
        let pacer = StatusPacer::default();
        let start = Instant::now();
        assert_eq!(pacer.decide("a", None, &running(0), start), Decision::Write);
        pacer.wrote("a", start);
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(0), start),
            Decision::Keep
        );
        let soon = start + Duration::from_millis(300);
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(3), soon),
            Decision::Later(MIN_PROGRESS_INTERVAL - Duration::from_millis(300))
        );
        let later = start + MIN_PROGRESS_INTERVAL;
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(3), later),
            Decision::Write
        );
        let mut done = running(10);
        done.phase = Some(Phase::Succeeded);
        assert_eq!(
            pacer.decide("a", Some(&running(9)), &done, soon),
            Decision::Write,
            "a phase change is news"
        );
        pacer.forget("a");
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(3), soon),
            Decision::Write
        );
    }

    #[test]
    fn progress_interval_stretches_with_the_fleet_within_bounds() {
        assert_eq!(progress_interval(0), MIN_PROGRESS_INTERVAL);
        assert_eq!(progress_interval(50), MIN_PROGRESS_INTERVAL);
        assert_eq!(progress_interval(300), Duration::from_secs(30));
        assert_eq!(progress_interval(500), Duration::from_secs(50));
        assert_eq!(progress_interval(10_000), MAX_PROGRESS_INTERVAL);
        assert_eq!(progress_interval(usize::MAX), MAX_PROGRESS_INTERVAL);
    }

    #[test]
    fn a_large_fleet_waits_longer_between_progress_writes() {
        let pacer = StatusPacer::default();
        let start = Instant::now();
        for i in 0..500 {
            pacer.wrote(&format!("aj-{i}"), start);
        }
        let later = start + MIN_PROGRESS_INTERVAL;
        assert_eq!(
            pacer.decide("aj-0", Some(&running(0)), &running(3), later),
            Decision::Later(Duration::from_secs(45))
        );
        let mut done = running(10);
        done.phase = Some(Phase::Succeeded);
        assert_eq!(
            pacer.decide("aj-0", Some(&running(9)), &done, later),
            Decision::Write,
            "news is never paced"
        );
    }

    #[test]
    fn throttle_tells_how_long_until_the_next_action() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let interval = Duration::from_secs(60);
        assert_eq!(throttle.wait_left("a", start, interval), None);
        throttle.record("a", start);
        let soon = start + Duration::from_secs(10);
        assert_eq!(
            throttle.wait_left("a", soon, interval),
            Some(Duration::from_secs(50))
        );
        assert_eq!(throttle.wait_left("a", start + interval, interval), None);
        assert_eq!(throttle.len(), 1);
        throttle.forget("a");
        assert!(throttle.is_empty());
    }

    #[test]
    fn not_before_holds_a_key_back_until_its_time() {
        let gate = NotBefore::default();
        let start = Instant::now();
        assert_eq!(gate.wait_left("a", start), None);
        gate.set("a", start + Duration::from_secs(600));
        assert_eq!(
            gate.wait_left("a", start + Duration::from_secs(60)),
            Some(Duration::from_secs(540))
        );
        assert_eq!(gate.wait_left("a", start + Duration::from_secs(600)), None);
        gate.set("b", start + Duration::from_secs(60));
        gate.forget("b");
        assert_eq!(gate.wait_left("b", start), None);
    }
}
