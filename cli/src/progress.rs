//! `kubectl hepbatch watch`: the progress of an AnalysisJob as one line.
//!
//! [`Progress`] is read from the status alone; [`Progress::line`] adds the rate of
//! finished shards since the shards started and the time left at that rate. The exit
//! status follows the final phase ([`outcome`]). Pure: the time is a parameter.

use hepbatch_crds::{AnalysisJob, Phase};
use k8s_openapi::jiff::Timestamp;

use crate::status::human_duration;

/// The counts `watch` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The phase, once the operator wrote one.
    pub phase: Option<Phase>,
    /// Total shards.
    pub shards: i32,
    /// Shards that succeeded.
    pub succeeded: i32,
    /// Shards running now.
    pub running: i32,
    /// Shards that failed for good.
    pub failed: i32,
    /// Failed attempts that were run again.
    pub retries: i32,
    /// When the shards started.
    pub started: Option<Timestamp>,
}

impl Progress {
    /// The progress `analysis_job`'s status shows.
    pub fn of(analysis_job: &AnalysisJob) -> Progress {
        let Some(status) = &analysis_job.status else {
            return Progress::default();
        };
        Progress {
            phase: status.phase,
            shards: status.shards,
            succeeded: status.succeeded,
            running: status.active,
            failed: status.failed,
            retries: status.retries,
            started: status.start_time.as_ref().map(|t| t.0),
        }
    }

    /// Shards that finished, either way.
    pub fn finished(&self) -> i32 {
        self.succeeded + self.failed
    }

    /// Finished shards per minute since the start, once at least one finished.
    pub fn rate_per_minute(&self, now: Timestamp) -> Option<f64> {
        let elapsed = now.as_second() - self.started?.as_second();
        (elapsed > 0 && self.finished() > 0)
            .then(|| f64::from(self.finished()) * 60.0 / elapsed as f64)
    }

    /// Seconds left at the rate so far.
    pub fn eta_seconds(&self, now: Timestamp) -> Option<i64> {
        let rate = self.rate_per_minute(now)?;
        let left = f64::from((self.shards - self.finished()).max(0));
        // Rounded up to whole seconds; far below i64's range for any real fleet.
        Some((left / rate * 60.0).ceil() as i64)
    }

    /// `12/100 succeeded · 8 running · 1 failed · 2 retries · 4.0/min · 22m00s left`.
    pub fn line(&self, now: Timestamp) -> String {
        let phase = self.phase.map_or("Pending", Phase::as_str);
        let mut line = format!(
            "{phase}: {}/{} succeeded · {} running · {} failed · {} retries",
            self.succeeded, self.shards, self.running, self.failed, self.retries
        );
        if let Some(rate) = self.rate_per_minute(now) {
            line.push_str(&format!(" · {rate:.1}/min"));
        }
        if !self.phase.is_some_and(Phase::is_finished)
            && let Some(eta) = self.eta_seconds(now)
        {
            line.push_str(&format!(" · {} left", human_duration(eta)));
        }
        line
    }
}

/// How a watch ends: `Some(true)` succeeded, `Some(false)` failed, `None` not finished.
pub fn outcome(phase: Option<Phase>) -> Option<bool> {
    match phase? {
        Phase::Succeeded => Some(true),
        Phase::Failed => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    #[test]
    fn rate_and_time_left_follow_the_finished_shards() {
        let progress = Progress {
            phase: Some(Phase::Running),
            shards: 100,
            succeeded: 18,
            running: 8,
            failed: 2,
            retries: 3,
            started: Some(at(0)),
        };
        // 20 finished in 5 minutes: 4 per minute, 80 left: 20 minutes.
        assert_eq!(progress.rate_per_minute(at(300)), Some(4.0));
        assert_eq!(progress.eta_seconds(at(300)), Some(1200));
        assert_eq!(
            progress.line(at(300)),
            "Running: 18/100 succeeded · 8 running · 2 failed · 3 retries · 4.0/min · 20m00s left"
        );
    }

    #[test]
    fn no_rate_before_the_first_shard_finishes() {
        let progress = Progress {
            shards: 10,
            running: 10,
            started: Some(at(0)),
            ..Progress::default()
        };
        assert_eq!(progress.eta_seconds(at(60)), None);
        assert_eq!(
            progress.line(at(60)),
            "Pending: 0/10 succeeded · 10 running · 0 failed · 0 retries"
        );
    }

    #[test]
    fn a_finished_job_shows_no_time_left() {
        let progress = Progress {
            phase: Some(Phase::Succeeded),
            shards: 2,
            succeeded: 2,
            started: Some(at(0)),
            ..Progress::default()
        };
        assert!(!progress.line(at(60)).contains("left"));
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(Some(Phase::Succeeded)), Some(true));
        assert_eq!(outcome(Some(Phase::Failed)), Some(false));
        assert_eq!(outcome(Some(Phase::Running)), None);
        assert_eq!(outcome(Some(Phase::Unschedulable)), None);
        assert_eq!(outcome(None), None);
    }
}
