//! Pacing of status writes: news at once, progress at most once per interval.
//!
//! A Job's status changes with every shard that starts or finishes; mirroring each change
//! would double the apiserver's write load of a large fleet for counts nobody reads at
//! that rate. So a status that differs from the stored one only in *progress* (counts,
//! the completed-shard ranges and the Job's start, `Pending` → `Running`; see
//! [`status::is_progress_only`]) is written one *progress interval* after it first
//! differed (so at most once per interval), and the controller looks again when it is due
//! so the last count always lands. Everything else — any other phase change, a
//! condition, a failed shard, the first status — is news and is written at once
//! (but for the two kinds below), which keeps the lag from the Job's completion to the
//! AnalysisJob's `Succeeded` short.
//!
//! The progress interval is [`MIN_PROGRESS_INTERVAL`] for a small fleet and stretches with
//! the number of unfinished AnalysisJobs being paced, so that progress writes of the whole
//! fleet stay below [`PROGRESS_WRITES_PER_SECOND`] (up to [`MAX_PROGRESS_INTERVAL`]): the
//! apiserver's write load then grows with the number of shards that start and finish,
//! which the Job controller already pays for, and not with the number of AnalysisJobs.
//! It also stretches with the Job's age, to a [`AGE_SHARE`]th of it: counts are never
//! older than a tenth of the time the fleet has run, so a long fleet writes its progress
//! a few more times, not once per interval. Progress that counts new failed attempts is
//! the exception: it waits [`MIN_PROGRESS_INTERVAL`] at most, so failures show at once.
//!
//! Two kinds of news wait briefly because what follows usually carries them anyway:
//! - the Job's success or failure criteria being met ([`status::only_announces_the_end`])
//!   waits up to [`END_ANNOUNCEMENT_HOLD`] for the `Complete` or `Failed` that follows
//!   once the last pods have terminated, so both land in one write;
//! - a first status that would say `Pending` is not written in the first
//!   [`FIRST_STATUS_GRACE`] of the Job's life ([`first_status_wait`]): the Job
//!   controller's first status of the Job, which usually follows within a second, says
//!   `Running`.
//!
//! The memory of last writes is per process: after a restart the first progress write
//! simply happens one interval later.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hepbatch_crds::{AnalysisJobStatus, Phase};
use prometheus_client::encoding::EncodeLabelValue;

use crate::status;

/// Least time between two progress-only status writes of one AnalysisJob: about the pace
/// at which a person watching `kubectl get aj -w` can read counts (why not less:
/// docs/operator.md, "Pacing of status writes and concurrent reconciles").
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Progress-only status writes per second the whole fleet aims to stay below: 25
/// AnalysisJobs or fewer get [`MIN_PROGRESS_INTERVAL`], 150 get 30 s.
pub const PROGRESS_WRITES_PER_SECOND: u32 = 5;

/// Most time between two progress-only status writes of one AnalysisJob, however large
/// the fleet: counts are never older than this while they change.
pub const MAX_PROGRESS_INTERVAL: Duration = Duration::from_secs(60);

/// The progress interval is at least the Job's age divided by this (see the module
/// documentation).
pub const AGE_SHARE: u32 = 10;

/// How long the news that the Job met its success or failure criteria waits for the
/// `Complete` or `Failed` that follows, to share one status write with it.
pub const END_ANNOUNCEMENT_HOLD: Duration = Duration::from_secs(2);

/// How long after the Job's creation a first status saying `Pending` waits for the Job
/// controller's first status of the Job.
pub const FIRST_STATUS_GRACE: Duration = Duration::from_secs(5);

/// How long to wait before writing the first status `new` of an AnalysisJob whose Job is
/// `job_age` old, or `None` to write it now (see [`FIRST_STATUS_GRACE`]).
pub fn first_status_wait(new: &AnalysisJobStatus, job_age: Duration) -> Option<Duration> {
    (new.phase == Some(Phase::Pending) && job_age < FIRST_STATUS_GRACE)
        .then(|| FIRST_STATUS_GRACE - job_age)
}

/// The progress interval when `paced` unfinished AnalysisJobs share the write budget, of
/// a Job `age` old.
pub fn progress_interval(paced: usize, age: Duration) -> Duration {
    let spread = Duration::from_secs(1)
        .checked_mul(u32::try_from(paced).unwrap_or(u32::MAX))
        .map_or(MAX_PROGRESS_INTERVAL, |d| d / PROGRESS_WRITES_PER_SECOND);
    spread
        .max(age / AGE_SHARE)
        .clamp(MIN_PROGRESS_INTERVAL, MAX_PROGRESS_INTERVAL)
}

/// How a newly derived status differs from the stored one; also the label of the
/// operator's status-write metric.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum StatusChange {
    /// There was no status yet.
    First,
    /// A phase, a condition or a failed shard changed: written at once.
    News,
    /// Only the Job's success or failure criteria were met
    /// ([`status::only_announces_the_end`]): held for [`END_ANNOUNCEMENT_HOLD`].
    EndAnnounced,
    /// Only counts and completed-shard ranges changed ([`status::is_progress_only`]):
    /// paced.
    Progress,
}

impl StatusChange {
    /// How `new` differs from `old`, or `None` when it does not.
    pub fn between(old: Option<&AnalysisJobStatus>, new: &AnalysisJobStatus) -> Option<Self> {
        let Some(old) = old else {
            return Some(StatusChange::First);
        };
        if old == new {
            None
        } else if status::is_progress_only(old, new) {
            Some(StatusChange::Progress)
        } else if status::only_announces_the_end(old, new) {
            Some(StatusChange::EndAnnounced)
        } else {
            Some(StatusChange::News)
        }
    }
}

/// What to do with a newly derived status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed.
    Keep,
    /// Write it now; it changed this way.
    Write(StatusChange),
    /// Progress, or an announcement of the end, not due yet: look again after this long.
    Later(Duration),
}

/// Remembers which AnalysisJobs' statuses are paced and when their unwritten progress is
/// due.
///
/// Progress is paced on the trailing edge: the first unwritten change is written one
/// interval later (with whatever the counts are then), not at once. A fleet that waits
/// for nodes and then runs its shards in a burst so writes its counts once or not at all
/// before the news of its end, which carries them anyway.
#[derive(Debug, Default)]
pub struct StatusPacer {
    /// One entry per AnalysisJob whose status was written and that has not finished:
    /// when its unwritten progress is due, if it has any.
    paced: Mutex<HashMap<String, Option<Instant>>>,
}

/// What the pacer remembers of one AnalysisJob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pace {
    /// Nothing: no status written by this process yet, or finished.
    #[default]
    Unpaced,
    /// Its status was written and nothing of it is unwritten.
    Written,
    /// Unwritten progress (or an announced end) is due at this instant.
    Due(Instant),
}

/// Decides about the status `new` of an AnalysisJob whose stored status is `old` and
/// whose pacer memory is `pace`, with progress paced at `interval`
/// ([`progress_interval`]); returns the decision and what to remember afterwards. The
/// first progress-only change starts the interval after which it is due.
pub fn decide(
    pace: Pace,
    interval: Duration,
    old: Option<&AnalysisJobStatus>,
    new: &AnalysisJobStatus,
    now: Instant,
) -> (Decision, Pace) {
    let change = match StatusChange::between(old, new) {
        None => {
            let pace = if pace == Pace::Unpaced {
                Pace::Unpaced
            } else {
                Pace::Written
            };
            return (Decision::Keep, pace);
        }
        Some(change @ (StatusChange::First | StatusChange::News)) => {
            return (Decision::Write(change), pace);
        }
        Some(change) => change,
    };
    let wait = match change {
        StatusChange::Progress if counts_new_failures(old, new) => {
            interval.min(MIN_PROGRESS_INTERVAL)
        }
        StatusChange::Progress => interval,
        _ => END_ANNOUNCEMENT_HOLD,
    };
    let at = match pace {
        Pace::Due(at) => at.min(now + wait),
        Pace::Unpaced | Pace::Written => now + wait,
    };
    let decision = if at <= now {
        Decision::Write(change)
    } else {
        Decision::Later(at - now)
    };
    (decision, Pace::Due(at))
}

/// Whether `new` counts failed attempts that `old` did not: such progress is paced at
/// [`MIN_PROGRESS_INTERVAL`] whatever the fleet's size and age, so a failure shows within
/// seconds.
fn counts_new_failures(old: Option<&AnalysisJobStatus>, new: &AnalysisJobStatus) -> bool {
    old.is_some_and(|old| new.failed + new.retries > old.failed + old.retries)
}

impl StatusPacer {
    /// Decides about the status `new` of the AnalysisJob `key` whose stored status is
    /// `old` ([`decide`]) and remembers the outcome.
    pub fn decide(
        &self,
        key: &str,
        old: Option<&AnalysisJobStatus>,
        new: &AnalysisJobStatus,
        now: Instant,
    ) -> Decision {
        let (pace, paced) = self.pace(key);
        let interval = progress_interval(paced, Duration::ZERO);
        let (decision, pace) = decide(pace, interval, old, new, now);
        self.set(key, pace);
        decision
    }

    /// What is remembered of `key`, and how many AnalysisJobs are paced.
    pub fn pace(&self, key: &str) -> (Pace, usize) {
        let Ok(paced) = self.paced.lock() else {
            return (Pace::Unpaced, 0);
        };
        let pace = match paced.get(key) {
            None => Pace::Unpaced,
            Some(None) => Pace::Written,
            Some(Some(at)) => Pace::Due(*at),
        };
        (pace, paced.len())
    }

    /// Remembers `pace` for `key` ([`Pace::Unpaced`] forgets it).
    pub fn set(&self, key: &str, pace: Pace) {
        if let Ok(mut paced) = self.paced.lock() {
            match pace {
                Pace::Unpaced => paced.remove(key),
                Pace::Written => paced.insert(key.to_owned(), None),
                Pace::Due(at) => paced.insert(key.to_owned(), Some(at)),
            };
        }
    }

    /// Records a write of `key`'s status: nothing of it is unwritten any more.
    pub fn wrote(&self, key: &str) {
        if let Ok(mut paced) = self.paced.lock() {
            paced.insert(key.to_owned(), None);
        }
    }

    /// Forgets `key` (finished or deleted), keeping the memory bounded by the live fleet.
    pub fn forget(&self, key: &str) {
        if let Ok(mut paced) = self.paced.lock() {
            paced.remove(key);
        }
    }

    /// Whether no AnalysisJob is paced.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.paced.lock().map_or(true, |paced| paced.is_empty())
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn running(succeeded: i32) -> AnalysisJobStatus {
        AnalysisJobStatus {
            phase: Some(Phase::Running),
            shards: 10,
            succeeded,
            ..AnalysisJobStatus::default()
        }
    }

    fn succeeded() -> AnalysisJobStatus {
        AnalysisJobStatus {
            phase: Some(Phase::Succeeded),
            ..running(10)
        }
    }

    #[test]
    fn new_failures_wait_the_least_interval_however_old_the_fleet() {
        let now = Instant::now();
        let long = MAX_PROGRESS_INTERVAL;
        let retried = |retries| AnalysisJobStatus {
            retries,
            ..running(5)
        };
        let (decision, _) = decide(Pace::Written, long, Some(&retried(1)), &running(6), now);
        assert_eq!(decision, Decision::Later(long), "counts alone wait");
        let (decision, _) = decide(Pace::Written, long, Some(&retried(1)), &retried(2), now);
        assert_eq!(decision, Decision::Later(MIN_PROGRESS_INTERVAL));
    }

    #[test]
    fn news_is_written_at_once_and_progress_one_interval_after_it_changed() {
        let pacer = StatusPacer::default();
        let start = Instant::now();
        assert_eq!(
            pacer.decide("a", None, &running(0), start),
            Decision::Write(StatusChange::First)
        );
        pacer.wrote("a");
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(0), start),
            Decision::Keep
        );
        let changed = start + Duration::from_secs(100);
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(3), changed),
            Decision::Later(MIN_PROGRESS_INTERVAL),
            "even long after the last write, progress waits one interval"
        );
        let soon = changed + Duration::from_secs(2);
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(4), soon),
            Decision::Later(MIN_PROGRESS_INTERVAL - Duration::from_secs(2)),
            "more progress does not postpone the write"
        );
        let due = changed + MIN_PROGRESS_INTERVAL;
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(5), due),
            Decision::Write(StatusChange::Progress)
        );
        pacer.wrote("a");
        assert_eq!(
            pacer.decide("a", Some(&running(5)), &running(6), due),
            Decision::Later(MIN_PROGRESS_INTERVAL)
        );
        assert_eq!(
            pacer.decide("a", Some(&running(6)), &succeeded(), due),
            Decision::Write(StatusChange::News),
            "a phase change is news"
        );
        pacer.forget("a");
        assert!(pacer.is_empty());
    }

    #[test]
    fn the_decision_says_what_to_remember() {
        let now = Instant::now();
        let (decision, pace) = decide(
            Pace::Unpaced,
            MIN_PROGRESS_INTERVAL,
            Some(&running(1)),
            &running(1),
            now,
        );
        assert_eq!((decision, pace), (Decision::Keep, Pace::Unpaced));
        let (decision, pace) = decide(
            Pace::Due(now),
            MIN_PROGRESS_INTERVAL,
            Some(&running(1)),
            &running(1),
            now,
        );
        assert_eq!(
            (decision, pace),
            (Decision::Keep, Pace::Written),
            "progress that went back leaves nothing due"
        );
        let (decision, pace) = decide(
            Pace::Written,
            MIN_PROGRESS_INTERVAL,
            Some(&running(1)),
            &running(2),
            now,
        );
        assert_eq!(decision, Decision::Later(MIN_PROGRESS_INTERVAL));
        assert_eq!(pace, Pace::Due(now + MIN_PROGRESS_INTERVAL));
        let (decision, pace) = decide(
            pace,
            MIN_PROGRESS_INTERVAL,
            Some(&running(2)),
            &succeeded(),
            now,
        );
        assert_eq!(decision, Decision::Write(StatusChange::News));
        assert_eq!(
            pace,
            Pace::Due(now + MIN_PROGRESS_INTERVAL),
            "the write records it"
        );
    }

    #[test]
    fn progress_that_went_back_is_not_written() {
        let pacer = StatusPacer::default();
        let start = Instant::now();
        pacer.wrote("a");
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(1), start),
            Decision::Later(MIN_PROGRESS_INTERVAL)
        );
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(0), start),
            Decision::Keep
        );
        let later = start + Duration::from_secs(1);
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(1), later),
            Decision::Later(MIN_PROGRESS_INTERVAL),
            "a new change starts a new interval"
        );
    }

    #[test]
    fn progress_interval_stretches_with_the_fleet_within_bounds() {
        let young = Duration::ZERO;
        assert_eq!(progress_interval(0, young), MIN_PROGRESS_INTERVAL);
        assert_eq!(progress_interval(25, young), MIN_PROGRESS_INTERVAL);
        assert_eq!(progress_interval(150, young), Duration::from_secs(30));
        assert_eq!(progress_interval(250, young), Duration::from_secs(50));
        assert_eq!(progress_interval(500, young), MAX_PROGRESS_INTERVAL);
        assert_eq!(progress_interval(10_000, young), MAX_PROGRESS_INTERVAL);
    }

    #[test]
    fn progress_interval_stretches_with_the_jobs_age_within_bounds() {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(
            progress_interval(1, Duration::from_secs(30)),
            MIN_PROGRESS_INTERVAL
        );
        assert_eq!(progress_interval(1, minutes(1)), Duration::from_secs(6));
        assert_eq!(progress_interval(1, minutes(4)), Duration::from_secs(24));
        assert_eq!(progress_interval(150, minutes(4)), Duration::from_secs(30));
        assert_eq!(progress_interval(1, minutes(600)), MAX_PROGRESS_INTERVAL);
        assert_eq!(
            progress_interval(usize::MAX, Duration::ZERO),
            MAX_PROGRESS_INTERVAL
        );
    }

    #[test]
    fn a_large_fleet_waits_longer_between_progress_writes() {
        let pacer = StatusPacer::default();
        let start = Instant::now();
        for i in 0..250 {
            pacer.wrote(&format!("aj-{i}"));
        }
        assert_eq!(
            pacer.decide("aj-0", Some(&running(0)), &running(3), start),
            Decision::Later(Duration::from_secs(50))
        );
        assert_eq!(
            pacer.decide("aj-0", Some(&running(9)), &succeeded(), start),
            Decision::Write(StatusChange::News),
            "news is never paced"
        );
    }

    #[test]
    fn the_announcement_of_the_end_waits_briefly_for_the_end() {
        let pacer = StatusPacer::default();
        let start = Instant::now();
        pacer.wrote("a");
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &running(3), start),
            Decision::Later(MIN_PROGRESS_INTERVAL)
        );
        let mut met = running(10);
        met.conditions.push(Condition {
            type_: "SuccessCriteriaMet".to_owned(),
            status: "True".to_owned(),
            reason: "CompletionsReached".to_owned(),
            message: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        });
        let soon = start + Duration::from_secs(1);
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &met, soon),
            Decision::Later(END_ANNOUNCEMENT_HOLD),
            "the hold cuts the progress interval short"
        );
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &met, soon + END_ANNOUNCEMENT_HOLD),
            Decision::Write(StatusChange::EndAnnounced),
            "without the end, the announcement is written after the hold"
        );
        let done = AnalysisJobStatus {
            phase: Some(Phase::Succeeded),
            ..met
        };
        assert_eq!(
            pacer.decide("a", Some(&running(0)), &done, soon),
            Decision::Write(StatusChange::News),
            "the end is written at once"
        );
    }

    #[test]
    fn a_first_pending_status_waits_for_the_job_controller() {
        let mut pending = running(0);
        pending.phase = Some(Phase::Pending);
        assert_eq!(
            first_status_wait(&pending, Duration::from_secs(1)),
            Some(FIRST_STATUS_GRACE - Duration::from_secs(1))
        );
        assert_eq!(first_status_wait(&pending, FIRST_STATUS_GRACE), None);
        assert_eq!(first_status_wait(&running(0), Duration::ZERO), None);
        let mut suspended = running(0);
        suspended.phase = Some(Phase::Suspended);
        assert_eq!(first_status_wait(&suspended, Duration::ZERO), None);
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
