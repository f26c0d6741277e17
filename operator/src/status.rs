//! The pure derivation of an AnalysisJob's status from what the cluster shows: the Job
//! (counts, index ranges, conditions, times, the CVMFS revisions it pins) and, when shards
//! failed, the failed shard pods (attempts, exit code, reason, node, pod), both of shards
//! that failed for good and of shards that were run again.
//!
//! [`derive`] is deterministic: it reads no clock and copies every timestamp from the Job,
//! so the same inputs always give the same status and the controller writes the status
//! only when it really changed. [`keep_described`] carries the shard detail over from the
//! last status when the pods were not listed again; [`with_scheduling`] adds what the
//! last look at waiting shards found (the `ShardsUnschedulable` condition, and the phase
//! `Unschedulable` while no shard runs); [`with_creation`] what the last look at missing
//! pods found (the `ShardsNotCreated` condition). [`events`] compares two statuses and
//! names what happened in between (suspended, resumed, shard failed, succeeded, failed,
//! pods refused and created again).
//!
//! Pods the Job controller cannot create (Pod Security admission, a ResourceQuota, a
//! LimitRange, a missing ServiceAccount, a webhook) leave no trace in the Job's status
//! but a shortfall: fewer pods than it should have ([`missing_pods`]). Only then does the
//! controller read the Job's `FailedCreate` Events ([`creation_look`]: the newest, if the
//! Job controller recorded it recently enough to describe the present), and the condition
//! quotes it. It goes as soon as the Job has the pods it should (no look needed: the
//! counts say so), so a raised quota clears it with the Job's next status.

use std::collections::{BTreeMap, BTreeSet};

use hepbatch_crds::analysis_job::{
    AnalysisJob, AnalysisJobStatus, CVMFS_REVISIONS_ANNOTATION, CvmfsRevision, CvmfsStatus,
    FailedShard, Phase, RetriedShard,
};
use std::time::Duration;

use hepbatch_crds::shard_indexes::range_parts;
use hepbatch_crds::{PodSecurityLevel, ShardNumbering};
use k8s_openapi::api::batch::v1::{Job, JobCondition as JobStatusCondition};
use k8s_openapi::api::core::v1::{Event, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::build::{COMPLETION_INDEX_ANNOTATION, CONTAINER_NAME};
use crate::k8s::{ConditionStatus, JobCondition, PodCondition, PodConditionReason, PodPhase};
use crate::metrics::LookOutcome;
use crate::security;

/// Annotation the Job controller puts on each pod: failures of its index before this pod.
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";

/// At most this many failed shards are described in detail.
pub const MAX_FAILED_SHARD_DETAILS: usize = 100;

/// At most this many retried shards are recorded (`retries` counts them all).
pub const MAX_RETRIED_SHARDS: usize = 100;

/// Type of the condition saying that shards wait for a node the scheduler cannot find.
pub const UNSCHEDULABLE_CONDITION: &str = "ShardsUnschedulable";

/// Type of the condition saying that the Job controller cannot create shards' pods.
pub const NOT_CREATED_CONDITION: &str = "ShardsNotCreated";

/// Reason of the Job controller's Warning Events about a pod it could not create.
pub const FAILED_CREATE_REASON: &str = "FailedCreate";

/// How old the Job controller's newest `FailedCreate` may be and still describe the
/// present: it retries a refused creation at least every minute (its backoff stops
/// growing at 60 s) and records each refusal.
pub const REFUSAL_FRESH: Duration = Duration::from_secs(90);

/// `1 shard`, `2 shards`.
pub fn shards(count: i32) -> String {
    if count == 1 {
        "1 shard".to_owned()
    } else {
        format!("{count} shards")
    }
}

/// The status of `analysis_job` given its Job (if it exists yet) and the failed pods of
/// that Job (only needed when shards failed; may be empty, see [`keep_described`]).
pub fn derive(
    analysis_job: &AnalysisJob,
    job: Option<&Job>,
    failed_pods: &[Pod],
) -> AnalysisJobStatus {
    let generation = analysis_job.metadata.generation;
    let shards = job
        .and_then(|j| j.spec.as_ref())
        .and_then(|s| s.completions)
        .unwrap_or_else(|| expected_shards(analysis_job));
    let Some(job) = job else {
        return before_the_job(analysis_job, shards);
    };
    let job_status = job.status.clone().unwrap_or_default();
    let job_conditions = job_status.conditions.unwrap_or_default();
    // The Job counts completions; the status speaks of the fleet's shard indexes.
    let numbering = analysis_job
        .spec
        .numbering()
        .unwrap_or(ShardNumbering::Every);
    let failed_shards = job_status
        .failed_indexes
        .filter(|s| !s.is_empty())
        .map(|ranges| numbering.renumber_ranges(ranges));
    let failed_indexes = failed_shards
        .as_deref()
        .map(parse_ranges)
        .unwrap_or_default();
    // Each shard that failed for good ended with one counted failure; every other counted
    // failure was followed by another attempt.
    let failed_for_good = i32::try_from(failed_indexes.len()).unwrap_or(i32::MAX);
    // The Job controller counts a failed pod only after its backoff (often 10-30 s); the
    // watched pods show it at once. Pods may be gone, so the larger count holds.
    let failed_attempts = job_status
        .failed
        .unwrap_or(0)
        .max(counted_failures(failed_pods));
    AnalysisJobStatus {
        phase: Some(phase(job, &job_conditions)),
        cvmfs: cvmfs(job),
        pod_security: pod_spec(job).map(|pod| security::level(pod).0),
        conditions: job_conditions
            .iter()
            .map(|c| condition(c, job, generation))
            .collect(),
        job_name: job.metadata.name.clone(),
        image: pod_spec(job)
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone()),
        shards,
        active: job_status.active.unwrap_or(0),
        ready: job_status.ready.unwrap_or(0),
        succeeded: job_status.succeeded.unwrap_or(0),
        failed: failed_for_good,
        retries: (failed_attempts - failed_for_good).max(0),
        terminating: job_status.terminating.unwrap_or(0),
        completed_shards: job_status
            .completed_indexes
            .filter(|s| !s.is_empty())
            .map(|ranges| bounded_ranges(numbering.renumber_ranges(ranges))),
        failed_shards: failed_shards.map(bounded_ranges),
        failed_shard_details: failed_shard_details(&failed_indexes, failed_pods, &numbering),
        retried_shards: retried_shards(&failed_indexes, failed_pods, &numbering),
        start_time: job_status.start_time,
        completion_time: job_status.completion_time,
        observed_generation: generation,
    }
}

/// The status of an AnalysisJob whose Job does not exist yet: `Suspended` or `Pending`.
fn before_the_job(analysis_job: &AnalysisJob, shards: i32) -> AnalysisJobStatus {
    let phase = if analysis_job.spec.is_suspended() {
        Phase::Suspended
    } else {
        Phase::Pending
    };
    AnalysisJobStatus {
        phase: Some(phase),
        shards,
        observed_generation: analysis_job.metadata.generation,
        ..AnalysisJobStatus::default()
    }
}

/// The pod template's spec of `job`.
fn pod_spec(job: &Job) -> Option<&PodSpec> {
    job.spec.as_ref()?.template.spec.as_ref()
}

/// The CVMFS revisions the Job pins, as it recorded them when it was created
/// (`consistency: Fleet`); `None` for a Job without the record (or with one that is not
/// readable, which the operator never writes).
fn cvmfs(job: &Job) -> Option<CvmfsStatus> {
    let recorded = job
        .metadata
        .annotations
        .as_ref()?
        .get(CVMFS_REVISIONS_ANNOTATION)?;
    let revisions: BTreeMap<String, CvmfsRevision> = serde_json::from_str(recorded).ok()?;
    (!revisions.is_empty()).then_some(CvmfsStatus { revisions })
}

/// The shard count before the Job exists: the spec's, or the inline input list's split
/// (0 while a ConfigMap list is still unread).
fn expected_shards(analysis_job: &AnalysisJob) -> i32 {
    let spec = &analysis_job.spec;
    if let Ok(ShardNumbering::Selected(selection)) = spec.numbering() {
        return selection.len();
    }
    match &spec.inputs {
        None => spec.shards(),
        Some(inputs) => inputs
            .files
            .as_ref()
            .map(|files| {
                let per_shard = usize::try_from(inputs.files_per_shard.max(1)).unwrap_or(1);
                i32::try_from(files.len().div_ceil(per_shard)).unwrap_or(i32::MAX)
            })
            .unwrap_or(0),
    }
}

/// Whether `new` differs from `old` only in progress: counts, the completed-shard ranges,
/// the Job's start (`Pending` → `Running`), the message of a `ShardsUnschedulable`
/// condition that holds in both (it counts the waiting shards) and, once `old` shows a
/// failure, further failures (counts, ranges and shard detail), with the same conditions
/// and Job. Such a change is not news (see the pacing of status writes): the Job
/// controller starting a Job says only that its pods are being created, which the counts
/// show anyway, and a fleet whose shards fail in bursts is told once and then paced;
/// a resumed Job (`Suspended` → `Running`), the first failed attempt, the first shard
/// failed for good, shards starting or ceasing to wait, and the end are news.
pub fn is_progress_only(old: &AnalysisJobStatus, new: &AnalysisJobStatus) -> bool {
    let started = old.phase == Some(Phase::Pending) && new.phase == Some(Phase::Running);
    let failures_told = old.failed + old.retries > 0;
    let first_failed_for_good = old.failed == 0 && new.failed > 0;
    let without_progress = |status: &AnalysisJobStatus| {
        let mut bare = AnalysisJobStatus {
            phase: if started { None } else { status.phase },
            active: 0,
            ready: 0,
            succeeded: 0,
            terminating: 0,
            completed_shards: None,
            start_time: None,
            conditions: status
                .conditions
                .iter()
                .map(|c| Condition {
                    message: if c.type_ == UNSCHEDULABLE_CONDITION {
                        String::new()
                    } else {
                        c.message.clone()
                    },
                    ..c.clone()
                })
                .collect(),
            ..status.clone()
        };
        if failures_told {
            bare.failed = 0;
            bare.retries = 0;
            bare.failed_shards = None;
            bare.failed_shard_details = Vec::new();
            bare.retried_shards = Vec::new();
        }
        bare
    };
    !new.phase.is_some_and(|p| p.is_finished())
        && !first_failed_for_good
        && (failures_told || (new.failed == old.failed && new.retries == old.retries))
        && without_progress(old) == without_progress(new)
}

/// Conditions the Job controller sets when a Job has met its success or failure criteria,
/// ahead of `Complete` or `Failed` once the remaining pods have terminated.
pub const ANNOUNCING_CONDITIONS: [JobCondition; 2] = [
    JobCondition::SuccessCriteriaMet,
    JobCondition::FailureTarget,
];

/// Whether the only news in `new` over `old` is that the Job met its success or failure
/// criteria (one of [`ANNOUNCING_CONDITIONS`] turned up, besides progress): the `Complete`
/// or `Failed` that follows usually comes within a second and can share its write.
pub fn only_announces_the_end(old: &AnalysisJobStatus, new: &AnalysisJobStatus) -> bool {
    let announcing = |c: &Condition| ANNOUNCING_CONDITIONS.iter().any(|a| a.is(&c.type_));
    let announced = |status: &AnalysisJobStatus| status.conditions.iter().any(announcing);
    if announced(old) || !announced(new) {
        return false;
    }
    let without_announcement = AnalysisJobStatus {
        conditions: new
            .conditions
            .iter()
            .filter(|c| !announcing(c))
            .cloned()
            .collect(),
        ..new.clone()
    };
    old == &without_announcement || is_progress_only(old, &without_announcement)
}

/// Type of the condition saying whether the operator could turn the AnalysisJob into a
/// Job (only present while it could not).
pub const ACCEPTED_CONDITION: &str = "Accepted";

/// The status of an AnalysisJob the operator cannot run as it stands (unknown platform,
/// a pin the CVMFS provider cannot honour, a contradictory GPU request, an unusable input
/// list): Pending (or Suspended) with an `Accepted=False` condition carrying `reason` and
/// `message`. The condition keeps its transition time from `old` while unchanged, else
/// takes `now`.
pub fn rejected(
    analysis_job: &AnalysisJob,
    old: &AnalysisJobStatus,
    reason: &str,
    message: &str,
    now: Time,
) -> AnalysisJobStatus {
    let mut status = derive(analysis_job, None, &[]);
    let time = old
        .conditions
        .iter()
        .find(|c| {
            c.type_ == ACCEPTED_CONDITION
                && ConditionStatus::False.is(&c.status)
                && c.reason == reason
        })
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    status.conditions = vec![Condition {
        type_: ACCEPTED_CONDITION.to_owned(),
        status: ConditionStatus::False.into(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: time,
        observed_generation: analysis_job.metadata.generation,
    }];
    status
}

fn is_true(conditions: &[JobStatusCondition], type_: JobCondition) -> bool {
    conditions
        .iter()
        .any(|c| type_.is(&c.type_) && ConditionStatus::True.is(&c.status))
}

fn phase(job: &Job, conditions: &[JobStatusCondition]) -> Phase {
    if is_true(conditions, JobCondition::Complete) {
        return Phase::Succeeded;
    }
    if is_true(conditions, JobCondition::Failed) {
        return Phase::Failed;
    }
    let suspended = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
    if suspended || is_true(conditions, JobCondition::Suspended) {
        return Phase::Suspended;
    }
    let status = job.status.as_ref();
    let started = status.is_some_and(|s| {
        s.start_time.is_some()
            || s.active.unwrap_or(0) > 0
            || s.succeeded.unwrap_or(0) > 0
            || s.failed.unwrap_or(0) > 0
    });
    if started {
        Phase::Running
    } else {
        Phase::Pending
    }
}

/// Mirrors a Job condition; the time comes from the Job so the result is deterministic.
fn condition(job_condition: &JobStatusCondition, job: &Job, generation: Option<i64>) -> Condition {
    let time = job_condition
        .last_transition_time
        .clone()
        .or_else(|| job_condition.last_probe_time.clone())
        .or_else(|| job.metadata.creation_timestamp.clone())
        .unwrap_or_else(|| Time(Default::default()));
    Condition {
        type_: job_condition.type_.clone(),
        status: job_condition.status.clone(),
        reason: job_condition
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| job_condition.type_.clone()),
        message: job_condition.message.clone().unwrap_or_default(),
        last_transition_time: time,
        observed_generation: generation,
    }
}

/// For each shard index (the fleet's, see `numbering`) with a counted failed attempt among
/// `failed_pods`, the number of counted failures before its last one and that last failed
/// pod. Pods failed by a disruption (`DisruptionTarget`: eviction, preemption) are not
/// counted failures.
fn last_failures<'p>(
    failed_pods: &'p [Pod],
    numbering: &ShardNumbering,
) -> BTreeMap<i32, (i32, &'p Pod)> {
    let mut last: BTreeMap<i32, (i32, &Pod)> = BTreeMap::new();
    for pod in failed_pods.iter().filter(|pod| is_counted_failure(pod)) {
        let annotations = pod.metadata.annotations.as_ref();
        let Some(index) = annotations
            .and_then(|a| a.get(COMPLETION_INDEX_ANNOTATION))
            .and_then(|v| v.parse::<i32>().ok())
            .and_then(|completion| numbering.original(completion))
        else {
            continue;
        };
        let earlier_failures = annotations
            .and_then(|a| a.get(INDEX_FAILURE_COUNT_ANNOTATION))
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        // The pod with the highest failure count is the index's last attempt.
        let newer = last
            .get(&index)
            .is_none_or(|(count, _)| earlier_failures > *count);
        if newer {
            last.insert(index, (earlier_failures, pod));
        }
    }
    last
}

/// Whether `pod` is a failed attempt the Job counts: failed, and not by a disruption
/// (`DisruptionTarget`: eviction, preemption), which the failure policy ignores.
fn is_counted_failure(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let failed = status.and_then(|s| s.phase.as_deref()) == Some(PodPhase::Failed.as_str());
    let disrupted = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                PodCondition::DisruptionTarget.is(&c.type_) && ConditionStatus::True.is(&c.status)
            })
        });
    failed && !disrupted
}

/// How many of `failed_pods` are failed attempts the Job counts.
fn counted_failures(failed_pods: &[Pod]) -> i32 {
    let counted = failed_pods
        .iter()
        .filter(|pod| is_counted_failure(pod))
        .count();
    i32::try_from(counted).unwrap_or(i32::MAX)
}

/// The shards with failed attempts that are not in `failed_indexes` (they were run
/// again), from their last failed pod; at most [`MAX_RETRIED_SHARDS`].
fn retried_shards(
    failed_indexes: &BTreeSet<i32>,
    failed_pods: &[Pod],
    numbering: &ShardNumbering,
) -> Vec<RetriedShard> {
    last_failures(failed_pods, numbering)
        .into_iter()
        .filter(|(index, _)| !failed_indexes.contains(index))
        .take(MAX_RETRIED_SHARDS)
        .map(|(index, (earlier_failures, pod))| {
            let attempt = describe_attempt(index, earlier_failures + 1, pod);
            RetriedShard {
                index,
                failed_attempts: attempt.attempts,
                last_exit_code: attempt.last_exit_code,
                reason: attempt.reason,
            }
        })
        .collect()
}

/// Detail on the shards in `failed_indexes`, from the last failed pod of each.
fn failed_shard_details(
    failed_indexes: &BTreeSet<i32>,
    failed_pods: &[Pod],
    numbering: &ShardNumbering,
) -> Vec<FailedShard> {
    let mut last = last_failures(failed_pods, numbering);
    last.retain(|index, _| failed_indexes.contains(index));
    failed_indexes
        .iter()
        .take(MAX_FAILED_SHARD_DETAILS)
        .map(|&index| match last.get(&index) {
            Some((earlier_failures, pod)) => describe_attempt(index, earlier_failures + 1, pod),
            None => FailedShard {
                index,
                ..FailedShard::default()
            },
        })
        .collect()
}

fn describe_attempt(index: i32, attempts: i32, pod: &Pod) -> FailedShard {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER_NAME))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    FailedShard {
        index,
        attempts,
        last_exit_code: terminated.map(|t| t.exit_code),
        reason: terminated
            .and_then(|t| t.reason.clone())
            .or_else(|| status.and_then(|s| s.reason.clone())),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        pod: pod.metadata.name.clone(),
    }
}

/// Whether `job` counts failed attempts, so that its failed pods describe them.
pub fn has_failed_attempts(job: &Job) -> bool {
    job.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0
}

/// `new` (derived from the failed pods when `listed`, else without them) with the shard
/// detail of `old` where it still applies: all of it when the pods were not listed; when
/// they were, the retried shards `old` knew whose pods are gone since (garbage collected)
/// and that did not fail for good meanwhile, so nothing once recorded is lost.
pub fn keep_described(
    old: &AnalysisJobStatus,
    mut new: AnalysisJobStatus,
    listed: bool,
) -> AnalysisJobStatus {
    if !listed {
        if new.failed_shards == old.failed_shards {
            new.failed_shard_details = old.failed_shard_details.clone();
        }
        new.retried_shards = old.retried_shards.clone();
    } else {
        let failed = new
            .failed_shards
            .as_deref()
            .map(parse_ranges)
            .unwrap_or_default();
        let mut retried: BTreeMap<i32, RetriedShard> = old
            .retried_shards
            .iter()
            .filter(|r| !failed.contains(&r.index))
            .map(|r| (r.index, r.clone()))
            .collect();
        retried.extend(new.retried_shards.drain(..).map(|r| (r.index, r)));
        new.retried_shards = retried.into_values().take(MAX_RETRIED_SHARDS).collect();
    }
    new.retried_shards
        .retain(|r| !new.failed_shard_details.iter().any(|f| f.index == r.index));
    new
}

/// What the last look at the shards waiting for a node found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulingLook {
    /// Not looked this time (too soon, or nothing waits).
    NotLooked,
    /// No waiting shard is one the scheduler gave up on.
    Schedulable,
    /// The scheduler cannot place waiting shards now, but some node could hold them once
    /// it has room: the fleet waits its turn, which is no news.
    WaitingForRoom,
    /// The scheduler cannot place waiting shards and no node could ever hold them (as
    /// [`crate::room::could_ever_fit`] sees it); the scheduler says why.
    Unschedulable {
        /// The scheduler's message, e.g. `0/6 nodes are available: 6 Insufficient
        /// nvidia.com/gpu.`
        message: String,
    },
}

impl SchedulingLook {
    /// What the look found, as a metric label; `None` when there was no look.
    pub fn outcome(&self) -> Option<LookOutcome> {
        match self {
            SchedulingLook::NotLooked => None,
            SchedulingLook::Schedulable => Some(LookOutcome::Schedulable),
            SchedulingLook::WaitingForRoom => Some(LookOutcome::WaitingForRoom),
            SchedulingLook::Unschedulable { .. } => Some(LookOutcome::Unschedulable),
        }
    }
}

/// `new` with the `ShardsUnschedulable` condition as `look` found it (`NotLooked`: as
/// `old` had it, while shards still wait), and the phase `Unschedulable` while that
/// condition holds and no shard runs. `now` is the transition time of a condition that is
/// news; an unchanged one keeps its time from `old`.
pub fn with_scheduling(
    old: &AnalysisJobStatus,
    mut new: AnalysisJobStatus,
    waiting: i32,
    look: &SchedulingLook,
    now: Time,
) -> AnalysisJobStatus {
    new.conditions
        .retain(|c| c.type_ != UNSCHEDULABLE_CONDITION);
    let finished = new.phase.is_some_and(|p| p.is_finished());
    let previous = old
        .conditions
        .iter()
        .find(|c| c.type_ == UNSCHEDULABLE_CONDITION && ConditionStatus::True.is(&c.status));
    let condition = match look {
        _ if waiting == 0 || finished => None,
        SchedulingLook::Schedulable | SchedulingLook::WaitingForRoom => None,
        SchedulingLook::NotLooked => previous.cloned(),
        SchedulingLook::Unschedulable { message } => Some(Condition {
            type_: UNSCHEDULABLE_CONDITION.to_owned(),
            status: ConditionStatus::True.into(),
            reason: PodConditionReason::Unschedulable.into(),
            message: format!(
                "{} {} for resources no node offers; the scheduler says: {message}",
                shards(waiting),
                if waiting == 1 { "waits" } else { "wait" }
            ),
            last_transition_time: previous
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(now),
            observed_generation: new.observed_generation,
        }),
    };
    if let Some(condition) = condition {
        if new.phase == Some(Phase::Running) && new.ready == 0 {
            new.phase = Some(Phase::Unschedulable);
        }
        new.conditions.push(condition);
    }
    new
}

/// Shards of `job` that should have a pod now and have none: of the shards neither
/// succeeded nor failed for good, as many as `parallelism` allows, less the pods the Job
/// has (active, terminating, or finished and not yet counted). None while the Job is
/// suspended or has met its success or failure criteria.
pub fn missing_pods(job: &Job) -> i32 {
    let (Some(spec), Some(status)) = (job.spec.as_ref(), job.status.as_ref()) else {
        return 0;
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let ending = [
        JobCondition::Complete,
        JobCondition::Failed,
        JobCondition::SuccessCriteriaMet,
        JobCondition::FailureTarget,
    ]
    .into_iter()
    .any(|c| is_true(conditions, c));
    if ending || spec.suspend.unwrap_or(false) || is_true(conditions, JobCondition::Suspended) {
        return 0;
    }
    let failed_for_good = status
        .failed_indexes
        .as_deref()
        .map(count_ranges)
        .unwrap_or(0);
    let remaining = i64::from(spec.completions.unwrap_or(1))
        - i64::from(status.succeeded.unwrap_or(0))
        - failed_for_good;
    let wanted = i64::from(spec.parallelism.unwrap_or(1)).min(remaining);
    let uncounted = status.uncounted_terminated_pods.as_ref().map_or(0, |u| {
        u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len)
    });
    let present = i64::from(status.active.unwrap_or(0))
        + i64::from(status.terminating.unwrap_or(0))
        + i64::try_from(uncounted).unwrap_or(i64::MAX);
    i32::try_from((wanted - present).max(0)).unwrap_or(i32::MAX)
}

/// How many indexes the Job API's ranges (`"0-3,7"`) name, without listing them.
fn count_ranges(ranges: &str) -> i64 {
    range_parts(ranges)
        .map(|(first, last)| i64::from(last) - i64::from(first) + 1)
        .sum()
}

/// What the last look at the Job's missing pods found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreationLook {
    /// Not looked this time (too soon, or no pod is missing).
    NotLooked,
    /// The Job controller recorded no recent refusal: the pods are on their way (a
    /// shard's backoff, a large Job's slow start).
    Created,
    /// The Job controller cannot create pods, and the apiserver said why.
    Refused {
        /// The refusal as the Job controller recorded it, e.g. `Error creating: pods
        /// "higgs-0-abcde" is forbidden: exceeded quota: pods, requested: pods=1, ...`.
        message: String,
    },
}

/// What the Job's Events say about its pods at `now`: the newest `FailedCreate`, if no
/// older than [`REFUSAL_FRESH`].
pub fn creation_look(events: &[Event], now: Timestamp) -> CreationLook {
    let newest = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(FAILED_CREATE_REASON))
        .filter_map(|e| Some((last_seen(e)?, e.message.as_deref()?)))
        .max_by_key(|(at, _)| *at);
    match newest {
        Some((at, message)) if now.duration_since(at).unsigned_abs() <= REFUSAL_FRESH => {
            let message = message
                .strip_prefix("(combined from similar events): ")
                .unwrap_or(message);
            CreationLook::Refused {
                message: without_pod_name(message),
            }
        }
        _ => CreationLook::Created,
    }
}

/// `message` with the name of the refused pod (`pods "higgs-0-x7k2p" is forbidden`, a new
/// name at every attempt) replaced by `the pod`, so the same refusal reads the same.
fn without_pod_name(message: &str) -> String {
    const NAMED: &str = "pods \"";
    let Some(start) = message.find(NAMED) else {
        return message.to_owned();
    };
    let rest = &message[start + NAMED.len()..];
    match rest.find('"') {
        Some(end) => format!("{}the pod{}", &message[..start], &rest[end + 1..]),
        None => message.to_owned(),
    }
}

/// When `event` was last seen, whichever of its times the recorder set.
fn last_seen(event: &Event) -> Option<Timestamp> {
    [
        event.last_timestamp.as_ref().map(|t| t.0),
        event.event_time.as_ref().map(|t| t.0),
        event
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref())
            .map(|t| t.0),
        event.first_timestamp.as_ref().map(|t| t.0),
        event.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
}

/// The condition reason naming who refused the pods, from the apiserver's message.
pub fn refusal_reason(message: &str) -> &'static str {
    if message.contains("violates PodSecurity") {
        "PodSecurity"
    } else if message.contains("exceeded quota") || message.contains("failed quota") {
        "ResourceQuota"
    } else if message.contains("usage per Container") || message.contains("usage per Pod") {
        "LimitRange"
    } else if message.contains("serviceaccount") && message.contains("not found") {
        "ServiceAccountMissing"
    } else if message.contains("admission webhook") {
        "AdmissionWebhook"
    } else {
        FAILED_CREATE_REASON
    }
}

/// `new` with the `ShardsNotCreated` condition as `look` found it (`NotLooked`: as `old`
/// had it, while pods are still missing), and the phase `Pending` while it holds and no
/// shard ever ran. `pod` is the Job's pod template: when Pod Security refuses pods that
/// cannot meet `restricted`, the message says which level they need and why. `now` is
/// the transition time of a condition that is news.
pub fn with_creation(
    old: &AnalysisJobStatus,
    mut new: AnalysisJobStatus,
    missing: i32,
    look: &CreationLook,
    pod: Option<&PodSpec>,
    now: Time,
) -> AnalysisJobStatus {
    new.conditions.retain(|c| c.type_ != NOT_CREATED_CONDITION);
    let finished = new.phase.is_some_and(|p| p.is_finished());
    let previous = old
        .conditions
        .iter()
        .find(|c| c.type_ == NOT_CREATED_CONDITION && ConditionStatus::True.is(&c.status));
    let condition = match look {
        _ if missing == 0 || finished => None,
        CreationLook::Created => None,
        CreationLook::NotLooked => previous.cloned(),
        CreationLook::Refused { message } => {
            let reason = refusal_reason(message);
            Some(Condition {
                type_: NOT_CREATED_CONDITION.to_owned(),
                status: ConditionStatus::True.into(),
                reason: reason.to_owned(),
                message: describe_refusal(message, reason, pod),
                last_transition_time: previous
                    .filter(|c| c.reason == reason)
                    .map(|c| c.last_transition_time.clone())
                    .unwrap_or(now),
                observed_generation: new.observed_generation,
            })
        }
    };
    if let Some(condition) = condition {
        let never_ran = new.active == 0 && new.succeeded == 0 && new.failed == 0;
        if new.phase == Some(Phase::Running) && never_ran && new.retries == 0 {
            new.phase = Some(Phase::Pending);
        }
        new.conditions.push(condition);
    }
    new
}

/// `the Job controller cannot create shards' pods: <refusal>`, and for a Pod Security
/// refusal of pods below `restricted`, the level they need. The same refusal gives the
/// same message, however many pods are missing, so only a new refusal is news.
fn describe_refusal(refusal: &str, reason: &str, pod: Option<&PodSpec>) -> String {
    let mut message = format!("the Job controller cannot create shards' pods: {refusal}");
    if reason == "PodSecurity"
        && let Some(pod) = pod
    {
        let (level, why) = security::level(pod);
        if level != PodSecurityLevel::Restricted {
            message.push_str(&format!(
                "; the shards' pods meet Pod Security {} at best ({}), so their namespace \
                 must admit {}",
                level.as_str(),
                why.join("; "),
                level.as_str()
            ));
        }
    }
    message
}

/// Longest index-range text the status carries: the Job's ranges of a fleet whose
/// outcomes alternate shard by shard run to about 300 KB each at 100,000 shards.
pub const MAX_RANGES_LEN: usize = 16 * 1024;

/// `ranges` cut to [`MAX_RANGES_LEN`] at a range boundary, ending in `,…` when cut; the
/// counts beside them stay exact, and [`parse_ranges`] skips the `…`.
pub fn bounded_ranges(ranges: String) -> String {
    if ranges.len() <= MAX_RANGES_LEN {
        return ranges;
    }
    let cut = ranges[..MAX_RANGES_LEN].rfind(',').unwrap_or(0);
    format!("{},…", &ranges[..cut])
}

/// Parses the Job API's index ranges (`"0-3,7"`); malformed parts are skipped.
pub fn parse_ranges(ranges: &str) -> BTreeSet<i32> {
    range_parts(ranges)
        // Ranges are bounded by completions (at most 100000), so this stays small.
        .flat_map(|(first, last)| first..=last.min(first.saturating_add(100_000)))
        .collect()
}

/// Something worth an Event on the AnalysisJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happening {
    /// The shards were stopped.
    Suspended,
    /// The shards run again.
    Resumed,
    /// A shard failed for good.
    ShardFailed(FailedShard),
    /// Every shard succeeded.
    Succeeded {
        /// Number of shards.
        shards: i32,
    },
    /// The Job controller cannot create shards' pods (the condition's message).
    NotCreated {
        /// Who refused them, e.g. `PodSecurity`, `ResourceQuota`.
        reason: String,
        /// The condition's message, quoting the refusal.
        message: String,
    },
    /// The Job controller creates the pods again after a refusal.
    CreatedAgain,
    /// The AnalysisJob failed.
    Failed {
        /// The Job's reason, e.g. `FailedIndexes`, `DeadlineExceeded`.
        reason: String,
        /// The Job's message.
        message: String,
    },
}

/// What happened between `old` and `new`.
pub fn events(old: &AnalysisJobStatus, new: &AnalysisJobStatus) -> Vec<Happening> {
    let mut happenings = Vec::new();
    let known: BTreeSet<i32> = old.failed_shard_details.iter().map(|f| f.index).collect();
    for shard in &new.failed_shard_details {
        // Report a shard once its last attempt is known.
        let described = shard.attempts > 0;
        let old_described = old
            .failed_shard_details
            .iter()
            .any(|f| f.index == shard.index && f.attempts > 0);
        if described && (!known.contains(&shard.index) || !old_described) {
            happenings.push(Happening::ShardFailed(shard.clone()));
        }
    }
    let not_created = |status: &AnalysisJobStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == NOT_CREATED_CONDITION)
            .map(|c| c.reason.clone())
    };
    match (not_created(old), not_created(new)) {
        (before, Some(reason)) if before.as_ref() != Some(&reason) => {
            let message = new
                .conditions
                .iter()
                .find(|c| c.type_ == NOT_CREATED_CONDITION)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            happenings.push(Happening::NotCreated { reason, message });
        }
        (Some(_), None) if !new.phase.is_some_and(|p| p.is_finished()) => {
            happenings.push(Happening::CreatedAgain);
        }
        _ => {}
    }
    if old.phase != new.phase {
        match new.phase {
            Some(Phase::Suspended) => happenings.push(Happening::Suspended),
            Some(Phase::Running | Phase::Pending) if old.phase == Some(Phase::Suspended) => {
                happenings.push(Happening::Resumed);
            }
            Some(Phase::Succeeded) => happenings.push(Happening::Succeeded { shards: new.shards }),
            Some(Phase::Failed) => {
                let failed = new.conditions.iter().find(|c| {
                    JobCondition::Failed.is(&c.type_) && ConditionStatus::True.is(&c.status)
                });
                happenings.push(Happening::Failed {
                    reason: failed.map(|c| c.reason.clone()).unwrap_or_default(),
                    message: failed.map(|c| c.message.clone()).unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    happenings
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn analysis_job(spec: Value) -> AnalysisJob {
        hepbatch_crds::testing::analysis_job("higgs", spec)
            .namespace("physics")
            .uid("u")
            .generation(2)
            .build()
            .expect("valid")
    }

    fn job(spec: Value, status: Value) -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "higgs", "namespace": "physics",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec, "status": status,
        }))
        .expect("valid")
    }

    fn failed_pod(index: i32, earlier: i32, exit: i32, node: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("higgs-{index}-{earlier}"), "annotations": {
                COMPLETION_INDEX_ANNOTATION: index.to_string(),
                INDEX_FAILURE_COUNT_ANNOTATION: earlier.to_string(),
            }},
            "spec": {"nodeName": node, "containers": [{"name": "shard"}]},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "shard", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit, "reason": "Error"}}
            }]},
        }))
        .expect("valid")
    }

    #[test]
    fn without_a_job_the_analysis_job_is_pending() {
        let status = derive(&analysis_job(json!({"image": "i", "shards": 5})), None, &[]);
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_eq!(status.shards, 5);
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn a_complete_job_gives_succeeded_with_exact_counts_and_conditions() {
        let aj = analysis_job(json!({"image": "i", "shards": 4}));
        let job = job(
            json!({"parallelism": 4, "template": {}}),
            json!({"succeeded": 4, "failed": 1, "completedIndexes": "0-3",
                   "startTime": "2026-01-01T00:00:01Z", "completionTime": "2026-01-01T00:00:09Z",
                   "conditions": [
                     {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                      "lastTransitionTime": "2026-01-01T00:00:08Z"},
                     {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                      "lastTransitionTime": "2026-01-01T00:00:09Z"}]}),
        );
        let status = derive(&aj, Some(&job), &[]);
        assert_eq!(status.phase, Some(Phase::Succeeded));
        assert_eq!(
            (
                status.succeeded,
                status.failed,
                status.retries,
                status.shards
            ),
            (4, 0, 1, 4),
            "the failed attempt was retried: no shard failed for good"
        );
        assert_eq!(status.completed_shards.as_deref(), Some("0-3"));
        assert_eq!(status.conditions.len(), 2);
        assert_eq!(status.conditions[1].type_, "Complete");
        assert_eq!(status.conditions[1].reason, "CompletionsReached");
        assert_eq!(status.job_name.as_deref(), Some("higgs"));
        // Deterministic: the same inputs give the same status.
        assert_eq!(status, derive(&aj, Some(&job), &[]));
    }

    #[test]
    fn failed_shards_are_described_by_their_last_attempt() {
        let aj = analysis_job(json!({"image": "i", "shards": 4, "maxRetriesPerShard": 1}));
        let job = job(
            json!({"template": {}}),
            json!({"succeeded": 3, "failed": 3, "failedIndexes": "2",
                   "conditions": [{"type": "Failed", "status": "True", "reason": "FailedIndexes",
                                   "message": "Job has failed indexes"}]}),
        );
        let pods = [
            failed_pod(2, 0, 7, "cpu-0"),
            failed_pod(2, 1, 9, "cpu-1"),
            failed_pod(1, 0, 1, "cpu-2"),
        ];
        let status = derive(&aj, Some(&job), &pods);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(
            status.failed_shard_details,
            vec![FailedShard {
                index: 2,
                attempts: 2,
                last_exit_code: Some(9),
                reason: Some("Error".to_owned()),
                node: Some("cpu-1".to_owned()),
                pod: Some("higgs-2-1".to_owned()),
            }]
        );
        assert_eq!(
            (status.failed, status.retries),
            (1, 2),
            "one shard failed for good; its first failure and shard 1's were retried"
        );
        let happenings = events(&AnalysisJobStatus::default(), &status);
        assert!(matches!(&happenings[0], Happening::ShardFailed(s) if s.index == 2));
        assert!(
            matches!(&happenings[1], Happening::Failed { reason, .. } if reason == "FailedIndexes")
        );
    }

    #[test]
    fn failed_pods_count_before_the_job_controller_counts_them() {
        let aj = analysis_job(json!({"image": "i", "shards": 4, "maxRetriesPerShard": 3}));
        let job = job(json!({"template": {}}), json!({"active": 4}));
        let pods = [failed_pod(1, 0, 3, "cpu-0"), failed_pod(2, 0, 3, "cpu-1")];
        let status = derive(&aj, Some(&job), &pods);
        assert_eq!((status.failed, status.retries), (0, 2));
        assert_eq!(status.retried_shards.len(), 2);
        // Once counted, and after the pods are gone, the Job's count holds.
        let counted = self::job(json!({"template": {}}), json!({"active": 4, "failed": 2}));
        assert_eq!(derive(&aj, Some(&counted), &pods[..1]).retries, 2);
    }

    #[test]
    fn a_selection_is_reported_in_the_fleets_indexes() {
        let aj = analysis_job(
            json!({"image": "i", "shards": 20, "shardIndexes": "3,7,12-15",
            "maxRetriesPerShard": 1, "script": "true"}),
        );
        assert_eq!(derive(&aj, None, &[]).shards, 6);
        // Completions 0 (shard 3) and 2-5 (shards 12-15) done, 1 (shard 7) failed for good,
        // 2 (shard 12) after a retry.
        let job = job(
            json!({"completions": 6, "template": {}}),
            json!({"succeeded": 5, "failed": 3, "completedIndexes": "0,2-5",
                   "failedIndexes": "1"}),
        );
        let pods = [
            failed_pod(1, 0, 42, "cpu-0"),
            failed_pod(1, 1, 42, "cpu-1"),
            failed_pod(2, 0, 1, "cpu-2"),
        ];
        let status = derive(&aj, Some(&job), &pods);
        assert_eq!(status.shards, 6);
        assert_eq!(status.completed_shards.as_deref(), Some("3,12-15"));
        assert_eq!(status.failed_shards.as_deref(), Some("7"));
        let failed: Vec<(i32, i32, Option<i32>)> = status
            .failed_shard_details
            .iter()
            .map(|f| (f.index, f.attempts, f.last_exit_code))
            .collect();
        assert_eq!(failed, [(7, 2, Some(42))]);
        let retried: Vec<i32> = status.retried_shards.iter().map(|r| r.index).collect();
        assert_eq!(retried, [12]);
    }

    #[test]
    fn retried_shards_are_recorded_and_kept_once_their_pods_are_gone() {
        let aj = analysis_job(json!({"image": "i", "shards": 200, "maxRetriesPerShard": 3}));
        // Shards 3 and 8 failed twice each and then succeeded; shard 5 failed for good.
        let job = job(
            json!({"template": {}}),
            json!({"succeeded": 199, "failed": 8, "failedIndexes": "5",
                   "completedIndexes": "0-4,6-199"}),
        );
        let mut evicted = failed_pod(9, 0, 143, "cpu-3");
        evicted.status.as_mut().expect("status").conditions =
            Some(vec![serde_json::from_value(json!(
                {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
            )).expect("condition")]);
        let pods = [
            failed_pod(3, 0, 1, "cpu-0"),
            failed_pod(3, 1, 2, "cpu-1"),
            failed_pod(8, 1, 137, "cpu-2"),
            failed_pod(5, 0, 1, "cpu-0"),
            failed_pod(5, 1, 1, "cpu-0"),
            failed_pod(5, 2, 1, "cpu-0"),
            failed_pod(5, 3, 1, "cpu-0"),
            evicted,
        ];
        let status = derive(&aj, Some(&job), &pods);
        assert_eq!(
            (status.failed, status.retries),
            (1, 7),
            "FAILED counts shards failed for good, RETRIES the failed attempts run again"
        );
        let retried = |index, failed_attempts, code| RetriedShard {
            index,
            failed_attempts,
            last_exit_code: Some(code),
            reason: Some("Error".to_owned()),
        };
        assert_eq!(
            status.retried_shards,
            vec![retried(3, 2, 2), retried(8, 2, 137)],
            "an evicted shard did not fail; the failure count survives a collected pod"
        );
        assert_eq!(status.failed_shard_details.len(), 1);

        // A later listing without shard 3's pods (garbage collected) keeps its record.
        let later = keep_described(&status, derive(&aj, Some(&job), &pods[2..]), true);
        assert_eq!(later.retried_shards, status.retried_shards);
        // Without a listing, everything described stays as it was.
        let unlisted = keep_described(&status, derive(&aj, Some(&job), &[]), false);
        assert_eq!(unlisted, status);
        assert!(has_failed_attempts(&job));
    }

    #[test]
    fn shards_the_scheduler_cannot_place_make_the_phase_unschedulable() {
        let aj = analysis_job(json!({"image": "i", "shards": 1}));
        let running = derive(
            &aj,
            Some(&job(
                json!({"template": {}}),
                json!({"active": 1, "ready": 0, "startTime": "2026-01-01T00:00:01Z"}),
            )),
            &[],
        );
        assert_eq!(running.phase, Some(Phase::Running));
        let now = Time("2026-01-01T00:01:01Z".parse().expect("time"));
        let look = SchedulingLook::Unschedulable {
            message: "0/6 nodes are available: 2 Insufficient nvidia.com/gpu.".to_owned(),
        };
        let waiting = with_scheduling(&running, running.clone(), 1, &look, now.clone());
        assert_eq!(waiting.phase, Some(Phase::Unschedulable));
        let condition = waiting
            .conditions
            .iter()
            .find(|c| c.type_ == UNSCHEDULABLE_CONDITION)
            .expect("the condition");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "Unschedulable")
        );
        assert_eq!(
            condition.message,
            "1 shard waits for resources no node offers; the scheduler says: 0/6 nodes are \
             available: 2 Insufficient nvidia.com/gpu."
        );
        assert!(
            !is_progress_only(&running, &waiting),
            "news, written at once"
        );
        // Looked again, more shards wait: the count in the message is progress, not news.
        let more = with_scheduling(&waiting, running.clone(), 3, &look, now.clone());
        assert_ne!(more, waiting);
        assert!(is_progress_only(&waiting, &more), "{more:?}");
        // Not looked again: kept as it was, time included.
        let later = Time("2026-01-01T00:05:00Z".parse().expect("time"));
        let kept = with_scheduling(
            &waiting,
            running.clone(),
            1,
            &SchedulingLook::NotLooked,
            later,
        );
        assert_eq!(kept, waiting);
        // A shard runs while another waits: Running, with the condition.
        let mut some_run = running.clone();
        some_run.ready = 1;
        some_run.active = 2;
        let partly = with_scheduling(
            &waiting,
            some_run,
            1,
            &SchedulingLook::NotLooked,
            now.clone(),
        );
        assert_eq!(partly.phase, Some(Phase::Running));
        assert!(
            partly
                .conditions
                .iter()
                .any(|c| c.type_ == UNSCHEDULABLE_CONDITION)
        );
        // Nothing waits any more, or the scheduler found room: gone.
        let placed = with_scheduling(
            &waiting,
            running.clone(),
            0,
            &SchedulingLook::NotLooked,
            now.clone(),
        );
        assert_eq!(placed, running);
        let room = with_scheduling(
            &waiting,
            running.clone(),
            1,
            &SchedulingLook::Schedulable,
            now,
        );
        assert_eq!(room, running);
    }

    #[test]
    fn counts_of_shards_read_as_english() {
        assert_eq!(shards(1), "1 shard");
        assert_eq!(shards(0), "0 shards");
        assert_eq!(shards(200), "200 shards");
    }

    #[test]
    fn suspended_job_gives_suspended_and_resume_is_an_event() {
        let aj = analysis_job(json!({"image": "i"}));
        let suspended = derive(
            &aj,
            Some(&job(json!({"suspend": true, "template": {}}), json!({}))),
            &[],
        );
        assert_eq!(suspended.phase, Some(Phase::Suspended));
        let running = derive(
            &aj,
            Some(&job(
                json!({"suspend": false, "template": {}}),
                json!({"active": 1}),
            )),
            &[],
        );
        assert_eq!(running.phase, Some(Phase::Running));
        assert_eq!(events(&running, &suspended), vec![Happening::Suspended]);
        assert_eq!(events(&suspended, &running), vec![Happening::Resumed]);
        assert_eq!(events(&running, &running), vec![]);
    }

    #[test]
    fn the_job_starting_is_progress_and_resuming_is_news() {
        let aj = analysis_job(json!({"image": "i", "shards": 4}));
        let status = |suspend: bool, job_status: Value| {
            derive(
                &aj,
                Some(&job(
                    json!({"suspend": suspend, "template": {}}),
                    job_status,
                )),
                &[],
            )
        };
        let pending = status(false, json!({}));
        let started = status(
            false,
            json!({"active": 4, "startTime": "2026-01-01T00:00:01Z"}),
        );
        let suspended = status(true, json!({}));
        assert_eq!(pending.phase, Some(Phase::Pending));
        assert_eq!(started.phase, Some(Phase::Running));
        assert!(is_progress_only(&pending, &started));
        assert!(
            !is_progress_only(&started, &pending),
            "going back to Pending is not progress"
        );
        assert!(!is_progress_only(&suspended, &started), "resuming is news");
        let failing = status(false, json!({"active": 3, "failed": 1}));
        assert!(!is_progress_only(&pending, &failing), "a failure is news");
    }

    #[test]
    fn the_status_of_the_largest_fleet_stays_under_128_kib() {
        let long = |n: usize| "x".repeat(n);
        let ranges = || {
            Some(bounded_ranges(
                (0..100_000)
                    .step_by(2)
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ))
        };
        let status = AnalysisJobStatus {
            phase: Some(Phase::Running),
            shards: 100_000,
            completed_shards: ranges(),
            failed_shards: ranges(),
            failed_shard_details: (0..MAX_FAILED_SHARD_DETAILS as i32)
                .map(|index| FailedShard {
                    index: 99_000 + index,
                    attempts: 4,
                    last_exit_code: Some(137),
                    reason: Some(long(64)),
                    node: Some(long(253)),
                    pod: Some(long(253)),
                })
                .collect(),
            retried_shards: (0..MAX_RETRIED_SHARDS as i32)
                .map(|index| RetriedShard {
                    index: 99_000 + index,
                    failed_attempts: 3,
                    last_exit_code: Some(137),
                    reason: Some(long(64)),
                })
                .collect(),
            conditions: (0..6)
                .map(|i| Condition {
                    type_: format!("Condition{i}"),
                    status: "True".to_owned(),
                    reason: long(64),
                    message: long(1024),
                    last_transition_time: Time("2026-01-01T00:00:00Z".parse().expect("time")),
                    observed_generation: Some(1),
                })
                .collect(),
            ..AnalysisJobStatus::default()
        };
        let size = serde_json::to_vec(&status).expect("serializes").len();
        assert!(size < 128 * 1024, "{size} bytes");
    }

    #[test]
    fn long_ranges_are_cut_at_a_boundary_and_counts_stay_exact() {
        let alternating: Vec<String> = (0..100_000).step_by(2).map(|i| i.to_string()).collect();
        let ranges = alternating.join(",");
        let aj = analysis_job(json!({"image": "i", "shards": 100_000}));
        let status = derive(
            &aj,
            Some(&job(
                json!({"template": {}}),
                json!({"failed": 50_000, "failedIndexes": ranges, "completedIndexes": "1-1"}),
            )),
            &[],
        );
        let failed = status.failed_shards.expect("failed shards");
        assert!(
            failed.len() <= MAX_RANGES_LEN + "…".len() + 1,
            "{}",
            failed.len()
        );
        assert!(failed.ends_with(",…"));
        assert_eq!(status.failed, 50_000, "counted from the whole ranges");
        let kept = parse_ranges(&failed);
        assert!(kept.iter().all(|i| i % 2 == 0) && kept.len() > 2_000);
        assert_eq!(status.completed_shards.as_deref(), Some("1-1"));
    }

    #[test]
    fn failures_after_the_first_are_paced_but_the_first_for_good_is_news() {
        let aj = analysis_job(json!({"image": "i", "shards": 100}));
        let at =
            |job_status: Value| derive(&aj, Some(&job(json!({"template": {}}), job_status)), &[]);
        let running = at(json!({"active": 10, "startTime": "2026-01-01T00:00:01Z"}));
        let retried = |failed: i32| {
            at(json!({"active": 10, "failed": failed, "startTime": "2026-01-01T00:00:01Z"}))
        };
        let failed_for_good = |failed: i32, indexes: &str| {
            at(
                json!({"active": 10, "failed": failed, "failedIndexes": indexes,
                "startTime": "2026-01-01T00:00:01Z"}),
            )
        };
        assert!(
            !is_progress_only(&running, &retried(1)),
            "the first failure is news"
        );
        assert!(
            is_progress_only(&retried(1), &retried(2)),
            "the second is paced"
        );
        assert!(
            is_progress_only(&retried(2), &retried(40)),
            "a burst is paced"
        );
        assert!(
            !is_progress_only(&retried(40), &failed_for_good(41, "3")),
            "the first shard failed for good is news"
        );
        assert!(
            is_progress_only(&failed_for_good(41, "3"), &failed_for_good(45, "3,7")),
            "later ones are paced"
        );
    }

    #[test]
    fn meeting_the_success_criteria_alone_announces_the_end() {
        let aj = analysis_job(json!({"image": "i", "shards": 4}));
        let condition = |type_: &str| {
            json!({"type": type_, "status": "True", "reason": "CompletionsReached",
                   "lastTransitionTime": "2026-01-01T00:00:08Z"})
        };
        let status =
            |job_status: Value| derive(&aj, Some(&job(json!({"template": {}}), job_status)), &[]);
        let running = status(json!({"active": 1, "succeeded": 3}));
        let met = status(json!({"succeeded": 4, "terminating": 1,
                                "conditions": [condition("SuccessCriteriaMet")]}));
        let complete = status(json!({"succeeded": 4,
                                     "conditions": [condition("SuccessCriteriaMet"),
                                                    condition("Complete")]}));
        assert!(only_announces_the_end(&running, &met));
        assert!(
            !only_announces_the_end(&met, &complete),
            "Complete is news of its own"
        );
        assert!(!only_announces_the_end(&running, &complete));
        assert!(!only_announces_the_end(&running, &running));
        let failing = status(json!({"active": 1, "failed": 1, "failedIndexes": "2",
                                    "conditions": [condition("FailureTarget")]}));
        assert!(
            !only_announces_the_end(&running, &failing),
            "a shard failing for good is news of its own"
        );
    }

    #[test]
    fn ranges_parse_like_the_job_api_writes_them() {
        assert_eq!(parse_ranges("0-3,7"), BTreeSet::from([0, 1, 2, 3, 7]));
        assert_eq!(parse_ranges(""), BTreeSet::new());
        assert_eq!(parse_ranges("x,5"), BTreeSet::from([5]));
    }

    #[test]
    fn the_cvmfs_revisions_come_from_the_job_that_pins_them() {
        let aj = analysis_job(
            json!({"image": "i", "cvmfs": {"repositories": ["cms.cern.ch"],
            "consistency": "Fleet"}}),
        );
        let mut pinned = job(json!({"template": {}}), json!({}));
        pinned.metadata.annotations = Some(BTreeMap::from([(
            CVMFS_REVISIONS_ANNOTATION.to_owned(),
            r#"{"cms.cern.ch":{"rootHash":"1111111111111111111111111111111111111111","revision":5,"published":"2026-01-01T00:00:00Z"}}"#.to_owned(),
        )]));
        let status = derive(&aj, Some(&pinned), &[]);
        let revisions = status.cvmfs.clone().expect("recorded").revisions;
        assert_eq!(revisions.len(), 1);
        let cms = &revisions["cms.cern.ch"];
        assert_eq!(cms.root_hash, "1111111111111111111111111111111111111111");
        assert_eq!(cms.revision, 5);
        assert_eq!(
            cms.published,
            Time("2026-01-01T00:00:00Z".parse().expect("time"))
        );
        assert_eq!(status, derive(&aj, Some(&pinned), &[]), "deterministic");
        // Before the Job exists nothing is recorded, and a Job without the record
        // (Node consistency, or made before Fleet existed) shows none.
        assert_eq!(derive(&aj, None, &[]).cvmfs, None);
        assert_eq!(
            derive(&aj, Some(&job(json!({"template": {}}), json!({}))), &[]).cvmfs,
            None
        );
        // The Job's record is news of the first status, not progress to hold back.
        let bare = derive(&aj, Some(&job(json!({"template": {}}), json!({}))), &[]);
        assert!(!is_progress_only(&bare, &status));
    }

    /// A `FailedCreate` Event of the Job controller last seen at `at`.
    fn refusal(at: &str, message: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": {"name": "higgs.1", "namespace": "physics"},
            "involvedObject": {"kind": "Job", "name": "higgs"},
            "reason": "FailedCreate", "type": "Warning", "message": message,
            "lastTimestamp": at, "count": 3,
        }))
        .expect("valid")
    }

    const QUOTA: &str = "Error creating: pods \"higgs-1-abcde\" is forbidden: exceeded quota: \
        pods, requested: pods=1, used: pods=1, limited: pods=1";

    /// [`QUOTA`] as the look reports it.
    const QUOTA_SEEN: &str = "Error creating: the pod is forbidden: exceeded quota: pods, \
        requested: pods=1, used: pods=1, limited: pods=1";

    #[test]
    fn missing_pods_are_the_shards_parallelism_allows_less_the_pods_there_are() {
        let missing = |spec: Value, status: Value| missing_pods(&job(spec, status));
        let spec = json!({"completions": 10, "parallelism": 4, "template": {}});
        assert_eq!(missing(spec.clone(), json!({"active": 1})), 3);
        assert_eq!(
            missing(spec.clone(), json!({"active": 1, "terminating": 3})),
            0
        );
        // Near the end fewer shards remain than parallelism allows.
        assert_eq!(
            missing(
                spec.clone(),
                json!({"active": 0, "succeeded": 8, "failedIndexes": "9"})
            ),
            1
        );
        assert_eq!(
            missing(
                spec.clone(),
                json!({"active": 2, "uncountedTerminatedPods":
                {"succeeded": ["a", "b"]}})
            ),
            0
        );
        // A suspended or ending Job wants no pods.
        let suspended = json!({"completions": 10, "parallelism": 4, "suspend": true,
            "template": {}});
        assert_eq!(missing(suspended, json!({"active": 0})), 0);
        let ending = json!({"active": 0, "conditions": [{"type": "FailureTarget",
            "status": "True"}]});
        assert_eq!(missing(spec.clone(), ending), 0);
        assert_eq!(
            missing(spec, Value::Null),
            0,
            "no status yet: nothing to miss"
        );
    }

    #[test]
    fn the_newest_recent_refusal_describes_the_present() {
        let now: Timestamp = "2026-01-01T00:02:00Z".parse().expect("time");
        let events = vec![
            refusal("2026-01-01T00:00:10Z", "Error creating: old"),
            refusal(
                "2026-01-01T00:01:50Z",
                &format!("(combined from similar events): {QUOTA}"),
            ),
        ];
        assert_eq!(
            creation_look(&events, now),
            CreationLook::Refused {
                message: QUOTA_SEEN.to_owned()
            }
        );
        // A refusal the Job controller has not repeated for a while is over.
        let later: Timestamp = "2026-01-01T00:04:00Z".parse().expect("time");
        assert_eq!(creation_look(&events, later), CreationLook::Created);
        assert_eq!(creation_look(&[], now), CreationLook::Created);
        let mut other = refusal("2026-01-01T00:01:59Z", "Created pod: higgs-1-abcde");
        other.reason = Some("SuccessfulCreate".to_owned());
        assert_eq!(creation_look(&[other], now), CreationLook::Created);
    }

    #[test]
    fn refusals_are_named_after_who_refused() {
        for (message, reason) in [
            (
                "pods \"x\" is forbidden: violates PodSecurity \"restricted:latest\": ...",
                "PodSecurity",
            ),
            (QUOTA, "ResourceQuota"),
            (
                "pods \"x\" is forbidden: maximum memory usage per Container is 1Gi, but \
                 limit is 2Gi",
                "LimitRange",
            ),
            (
                "pods \"x\" is forbidden: error looking up service account physics/reco: \
                 serviceaccount \"reco\" not found",
                "ServiceAccountMissing",
            ),
            (
                "admission webhook \"policy.example.org\" denied the request",
                "AdmissionWebhook",
            ),
            ("something else", "FailedCreate"),
        ] {
            assert_eq!(refusal_reason(message), reason, "{message}");
        }
    }

    #[test]
    fn refused_pods_are_a_condition_until_the_job_has_its_pods() {
        let aj = analysis_job(json!({"image": "i", "shards": 4}));
        let started = json!({"active": 0, "startTime": "2026-01-01T00:00:01Z"});
        let running = derive(&aj, Some(&job(json!({"template": {}}), started)), &[]);
        assert_eq!(running.phase, Some(Phase::Running));
        let now = Time("2026-01-01T00:00:05Z".parse().expect("time"));
        let look = CreationLook::Refused {
            message: QUOTA_SEEN.to_owned(),
        };
        let refused = with_creation(&running, running.clone(), 4, &look, None, now.clone());
        assert_eq!(refused.phase, Some(Phase::Pending), "no shard ever ran");
        let condition = refused
            .conditions
            .iter()
            .find(|c| c.type_ == NOT_CREATED_CONDITION)
            .expect("the condition");
        assert_eq!(condition.reason, "ResourceQuota");
        assert_eq!(
            condition.message,
            "the Job controller cannot create shards' pods: Error creating: the pod is \
             forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1"
        );
        assert!(!is_progress_only(&running, &refused), "news");
        assert_eq!(
            events(&running, &refused),
            [Happening::NotCreated {
                reason: "ResourceQuota".to_owned(),
                message: condition.message.clone(),
            }]
        );
        // Looked again with one pod created, refused alike: nothing changed.
        let three = with_creation(&refused, running.clone(), 3, &look, None, now.clone());
        assert_eq!(three, refused);
        // Not looked: kept while pods are missing; gone once none is.
        let later = Time("2026-01-01T00:01:00Z".parse().expect("time"));
        let kept = with_creation(
            &refused,
            running.clone(),
            4,
            &CreationLook::NotLooked,
            None,
            later.clone(),
        );
        assert_eq!(kept, refused);
        let created = with_creation(
            &refused,
            running.clone(),
            0,
            &CreationLook::NotLooked,
            None,
            later,
        );
        assert_eq!(created, running);
        assert_eq!(events(&refused, &created), [Happening::CreatedAgain]);
    }

    #[test]
    fn a_pod_security_refusal_says_which_level_the_pods_need() {
        let aj = analysis_job(json!({"image": "i"}));
        let pod: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "shard"}],
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000},
            "volumes": [{"name": "cvmfs", "hostPath": {"path": "/cvmfs"}}],
        }))
        .expect("valid");
        let with_pod = job(json!({"template": {"spec": pod.clone()}}), json!({}));
        let status = derive(&aj, Some(&with_pod), &[]);
        assert_eq!(status.pod_security, Some(PodSecurityLevel::Privileged));
        let look = CreationLook::Refused {
            message: "Error creating: pods \"higgs-0-x\" is forbidden: violates PodSecurity \
                \"restricted:latest\": restricted volume types (volume \"cvmfs\" uses \
                restricted volume type \"hostPath\")"
                .to_owned(),
        };
        let now = Time("2026-01-01T00:00:05Z".parse().expect("time"));
        let refused = with_creation(&status, status.clone(), 1, &look, Some(&pod), now);
        let condition = &refused.conditions[0];
        assert_eq!(condition.reason, "PodSecurity");
        assert!(
            condition
                .message
                .starts_with("the Job controller cannot create shards' pods: Error creating"),
            "{}",
            condition.message
        );
        assert!(
            condition.message.ends_with(
                "; the shards' pods meet Pod Security privileged at best (volume cvmfs is a \
                 hostPath, which only privileged admits), so their namespace must admit \
                 privileged"
            ),
            "{}",
            condition.message
        );
    }
}
