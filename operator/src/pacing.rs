//! Pacing of status writes: news at once, progress at most once per interval.
//!
//! A Job's status changes with every shard that starts or finishes; mirroring each change
//! would double the apiserver's write load of a large fleet for counts nobody reads at
//! that rate. So a status that differs from the stored one only in *progress* (counts and
//! the completed-shard ranges; see [`status::is_progress_only`]) is written at most once
//! per [`PROGRESS_INTERVAL`] per AnalysisJob, and the controller looks again when the
//! interval has passed so the last count always lands. Everything else — a phase change,
//! a condition, a failed shard, the first status — is news and is written at once, which
//! keeps the lag from the Job's completion to the AnalysisJob's `Succeeded` short.
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
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

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
        match self.writes.wait_left(key, now, PROGRESS_INTERVAL) {
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

/// At most one action per key and interval (e.g. looking for unschedulable shards).
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

    /// Whether `key` may act at `now`, at most once per `interval`; records the action
    /// when it may. Otherwise returns how long until it may.
    pub fn try_act(&self, key: &str, now: Instant, interval: Duration) -> Result<(), Duration> {
        if let Some(wait) = self.wait_left(key, now, interval) {
            return Err(wait);
        }
        self.record(key, now);
        Ok(())
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &str) {
        if let Ok(mut map) = self.last.lock() {
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
            Decision::Later(PROGRESS_INTERVAL - Duration::from_millis(300))
        );
        let later = start + PROGRESS_INTERVAL;
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
    fn throttle_allows_one_action_per_interval() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let interval = Duration::from_secs(60);
        assert_eq!(throttle.try_act("a", start, interval), Ok(()));
        assert_eq!(throttle.try_act("b", start, interval), Ok(()));
        let soon = start + Duration::from_secs(10);
        assert_eq!(
            throttle.try_act("a", soon, interval),
            Err(Duration::from_secs(50))
        );
        assert_eq!(throttle.try_act("a", start + interval, interval), Ok(()));
        throttle.forget("b");
        assert_eq!(throttle.try_act("b", soon, interval), Ok(()));
    }
}
