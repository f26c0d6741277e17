//! What one reconcile should do, decided purely from the AnalysisJob, what
//! [`observe`](super::observe) found and the time: the child objects to write (a new Job
//! and its input ConfigMaps, a patch, or nothing), the status to write, the Events and
//! when to look again. Nothing here talks to the apiserver, so every branch is
//! unit-tested from small YAML fixtures. It also decides when observing should look
//! further than the Job: at shards waiting for a node ([`look_due`]) and at the refusals
//! of pods the Job controller could not create ([`creation_look_due`]).

use std::time::{Duration, Instant};

use hepbatch_crds::analysis_job::{AnalysisJob, AnalysisJobStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};
use serde_json::Value;

use super::observe::{Creation, FailedPods, Observed, ObservedJob, Rejection, Scheduling};
use super::requeue::{self, Requeue};
use crate::build::{self, BuildError};
use crate::config::OperatorConfig;
use crate::k8s::{self, ConditionStatus};
use crate::pacing::{self, Decision, Pace, StatusChange};
use crate::revision::Snapshot;
use crate::status::{self, CreationLook, Happening, SchedulingLook};

/// The moment a reconcile plans for, on both clocks it needs.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// For the pacer's and the throttles' deadlines.
    pub instant: Instant,
    /// For condition times, ages and the TTL.
    pub time: Timestamp,
}

impl Now {
    /// The current moment.
    pub fn current() -> Now {
        Now {
            instant: Instant::now(),
            time: Timestamp::now(),
        }
    }
}

/// The child objects to write.
#[derive(Clone, Debug, PartialEq)]
pub enum Children {
    /// Nothing to write.
    Keep,
    /// Merge-patch the live Job.
    Patch(Value),
    /// Server-side apply the input-list ConfigMaps, then the Job.
    Create {
        /// The shards' input lists, written before any pod that mounts them.
        config_maps: Vec<ConfigMap>,
        /// The full translation of the AnalysisJob.
        job: Box<Job>,
    },
}

/// A status to write and what to tell after it is written.
pub struct StatusWrite {
    /// The new status.
    pub status: AnalysisJobStatus,
    /// How it differs, for the metric; `None` for a rejection, which is not paced.
    pub change: Option<StatusChange>,
    /// Events published once it is written.
    pub events: Vec<Event>,
}

/// Everything one reconcile does, in order: write `children`, publish `notes`, write
/// `status` and its Events, remember `pace`, `forget` a finished AnalysisJob, `delete`
/// it once its TTL passed, and look again as `requeue` says.
pub struct Plan {
    /// The child objects to write.
    pub children: Children,
    /// Events published before the status is written.
    pub notes: Vec<Event>,
    /// The status to write, if any.
    pub status: Option<StatusWrite>,
    /// What the pacer remembers of this AnalysisJob afterwards.
    pub pace: Pace,
    /// Whether the AnalysisJob finished, so what is remembered of it can go.
    pub forget: bool,
    /// Whether to delete the AnalysisJob (its TTL after finishing passed).
    pub delete: bool,
    /// When to look again.
    pub requeue: Requeue,
}

impl Plan {
    fn only(pace: Pace, notes: Vec<Event>, status: Option<StatusWrite>, wait: Duration) -> Plan {
        Plan {
            children: Children::Keep,
            notes,
            status,
            pace,
            forget: false,
            delete: false,
            requeue: Requeue::After(wait),
        }
    }
}

/// Plans the reconcile of `analysis_job` given what was `observed`. An error is a
/// translation failure no user can fix (a reported [`Rejection`] is not an error).
pub fn plan(
    analysis_job: &AnalysisJob,
    observed: &Observed,
    config: &OperatorConfig,
    now: Now,
) -> Result<Plan, BuildError> {
    let pace = observed.pace;
    let (children, job) = match &observed.job {
        ObservedJob::Present(live) if !is_controlled_by(live, analysis_job) => {
            return Ok(name_taken(analysis_job, pace));
        }
        ObservedJob::Present(live) => match build::live_update(analysis_job, live) {
            Some(patch) => {
                let patched = merged(live, &patch);
                (Children::Patch(patch), patched)
            }
            None => (Children::Keep, live.as_ref().clone()),
        },
        ObservedJob::Absent(Err(rejection)) => {
            return Ok(rejected(analysis_job, rejection, pace, now));
        }
        ObservedJob::Absent(Ok(prerequisites)) => {
            let inputs = prerequisites.inputs.as_ref();
            let job = match build::job(analysis_job, config, inputs, &prerequisites.snapshot) {
                Ok(job) => job,
                Err(error) => {
                    let Some(reason) = error.reason() else {
                        return Err(error);
                    };
                    let rejection = Rejection::new(reason, error.to_string());
                    return Ok(rejected(analysis_job, &rejection, pace, now));
                }
            };
            let config_maps = inputs.map(|p| p.config_maps.clone()).unwrap_or_default();
            let children = Children::Create {
                config_maps,
                job: Box::new(job.clone()),
            };
            (children, job)
        }
    };
    let mut plan = plan_status(analysis_job, &job, observed, now);
    if let Children::Create { job, .. } = &children {
        plan.notes
            .push(job_created(analysis_job, job, &observed.snapshot()));
    }
    plan.children = children;
    Ok(plan)
}

/// The status part of the plan, for the Job as it will be after the children are written.
fn plan_status(analysis_job: &AnalysisJob, job: &Job, observed: &Observed, now: Now) -> Plan {
    let old = analysis_job.status.clone().unwrap_or_default();
    let (failed_pods, listed): (&[Pod], bool) = match &observed.failed_pods {
        FailedPods::Listed(pods) => (pods, true),
        FailedPods::NotListed => (&[], false),
    };
    let new = status::keep_described(
        &old,
        status::derive(analysis_job, Some(job), failed_pods),
        listed,
    );
    let Scheduling { look, look_again } = &observed.scheduling;
    let new = status::with_scheduling(&old, new, waiting_shards(job), look, Time(now.time));
    let Creation {
        look: creation,
        look_again: creation_again,
    } = &observed.creation;
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let missing = status::missing_pods(job);
    let new = status::with_creation(&old, new, missing, creation, pod, Time(now.time));
    let look_again = sooner(*look_again, *creation_again);
    let mut notes = Vec::new();
    if let SchedulingLook::Unschedulable { .. } = look
        && let Some(condition) = new
            .conditions
            .iter()
            .find(|c| c.type_ == status::UNSCHEDULABLE_CONDITION)
    {
        notes.push(note(
            EventType::Warning,
            "ShardsUnschedulable",
            condition.message.clone(),
        ));
    }
    if analysis_job.status.is_none()
        && let Some(wait) = pacing::first_status_wait(&new, job_age(job, now.time))
    {
        return Plan::only(observed.pace, notes, None, wait);
    }
    let (decision, pace) = pacing::decide(
        observed.pace,
        pacing::progress_interval(observed.paced, job_age(job, now.time)),
        analysis_job.status.as_ref(),
        &new,
        now.instant,
    );
    if let Decision::Later(wait) = decision {
        let wait = look_again.map_or(wait, |look| look.min(wait));
        return Plan::only(pace, notes, None, wait);
    }
    let namespace = analysis_job.namespace().unwrap_or_default();
    let status_write = match decision {
        Decision::Write(change) => Some(StatusWrite {
            events: status::events(&old, &new)
                .iter()
                .map(|happening| describe(happening, &namespace))
                .collect(),
            status: new.clone(),
            change: Some(change),
        }),
        Decision::Keep | Decision::Later(_) => None,
    };
    let finished = new.phase.is_some_and(|p| p.is_finished());
    let (delete, requeue) = match look_again {
        Some(wait) => (false, Requeue::After(wait)),
        None => after_finishing(analysis_job, &new, now.time),
    };
    Plan {
        children: Children::Keep,
        notes,
        status: status_write,
        pace,
        forget: finished,
        delete,
        requeue,
    }
}

/// A Job of this name belongs to something else (or to a deleted AnalysisJob of the same
/// name that garbage collection has not removed yet): say so and wait.
fn name_taken(analysis_job: &AnalysisJob, pace: Pace) -> Plan {
    let name = analysis_job.name_any();
    let message =
        format!("a Job named {name} exists and is not controlled by this AnalysisJob; waiting");
    let notes = vec![note(EventType::Warning, "JobNameTaken", message)];
    Plan::only(pace, notes, None, requeue::NAME_TAKEN_RETRY)
}

/// The AnalysisJob cannot run as it stands: an `Accepted=False` condition and a Warning
/// Event when that is news; looks again later (configuration reloads and spec changes
/// also trigger a reconcile).
fn rejected(analysis_job: &AnalysisJob, rejection: &Rejection, pace: Pace, now: Now) -> Plan {
    let Rejection { reason, message } = rejection;
    let old = analysis_job.status.clone().unwrap_or_default();
    let new = status::rejected(analysis_job, &old, reason, message, Time(now.time));
    let status_write = (old != new).then(|| {
        let news = old.conditions.iter().all(|c| {
            c.type_ != status::ACCEPTED_CONDITION || c.reason != *reason || c.message != *message
        });
        StatusWrite {
            status: new,
            change: None,
            events: news
                .then(|| note(EventType::Warning, reason, message.clone()))
                .into_iter()
                .collect(),
        }
    });
    Plan::only(pace, Vec::new(), status_write, requeue::REJECTED_RETRY)
}

/// Whether to delete a finished AnalysisJob now (its `ttlSecondsAfterFinished` passed)
/// and when to look again.
fn after_finishing(
    analysis_job: &AnalysisJob,
    status: &AnalysisJobStatus,
    now: Timestamp,
) -> (bool, Requeue) {
    if !status.phase.is_some_and(|p| p.is_finished()) {
        return (false, Requeue::After(requeue::RESYNC));
    }
    let Some(ttl) = analysis_job.spec.ttl_seconds_after_finished else {
        return (false, Requeue::AwaitChange);
    };
    let finished_at = status
        .conditions
        .iter()
        .filter(|c| {
            (k8s::JobCondition::Complete.is(&c.type_) || k8s::JobCondition::Failed.is(&c.type_))
                && ConditionStatus::True.is(&c.status)
        })
        .map(|c| c.last_transition_time.0)
        .max()
        .unwrap_or(now);
    let age = now.duration_since(finished_at).as_secs_f64().max(0.0);
    let remaining = f64::from(ttl) - age;
    if remaining > 0.0 {
        let wait = Duration::from_secs_f64(remaining).min(requeue::TTL_MAX_WAIT);
        return (false, Requeue::After(wait));
    }
    (true, Requeue::AwaitChange)
}

/// Whether waiting shards of `job` should be looked at now, or when, or not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookDue {
    /// Nothing waits, or the Job has finished.
    No,
    /// Not yet: look again after this long.
    After(Duration),
    /// Now.
    Now,
}

/// Whether to look at the shards of `job` waiting for a node: not before they waited
/// [`requeue::UNSCHEDULABLE_AFTER`], nor before the last look's throttle
/// (`throttled` left) ran out.
pub fn look_due(job: &Job, throttled: Option<Duration>, now: Timestamp) -> LookDue {
    if waiting_shards(job) == 0 || k8s::job_finished(job) {
        return LookDue::No;
    }
    let age = job_age(job, now);
    if age < requeue::UNSCHEDULABLE_AFTER {
        return LookDue::After(requeue::UNSCHEDULABLE_AFTER - age);
    }
    throttled.map_or(LookDue::Now, LookDue::After)
}

/// The sooner of two optional waits.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether to look at the refusals of `job`'s missing pods: only while pods are missing
/// ([`status::missing_pods`]) and not before the Job is [`requeue::CREATION_LOOK_AFTER`]
/// old. A look reads the watch's store, so it needs no throttle.
pub fn creation_look_due(job: &Job, now: Timestamp) -> LookDue {
    if status::missing_pods(job) == 0 {
        return LookDue::No;
    }
    let age = job_age(job, now);
    if age < requeue::CREATION_LOOK_AFTER {
        return LookDue::After(requeue::CREATION_LOOK_AFTER - age);
    }
    LookDue::Now
}

/// When to look into missing pods again after a look that found `look`: a reported
/// refusal once it may have gone stale; otherwise only when the Job or a new refusal
/// triggers.
pub fn next_creation_look(look: &CreationLook) -> Option<Duration> {
    matches!(look, CreationLook::Refused { .. }).then_some(requeue::CREATION_REPORTED_RECHECK)
}

/// How long after a look that found `look` waiting shards are looked at again.
pub fn next_look(look: &SchedulingLook) -> Duration {
    match look {
        SchedulingLook::Unschedulable { .. } | SchedulingLook::WaitingForRoom => {
            requeue::UNSCHEDULABLE_REPORTED_RECHECK
        }
        SchedulingLook::NotLooked | SchedulingLook::Schedulable => requeue::UNSCHEDULABLE_RECHECK,
    }
}

/// Whether `job` is controlled by `analysis_job` (its controller owner reference).
pub fn is_controlled_by(job: &Job, analysis_job: &AnalysisJob) -> bool {
    let uid = analysis_job.metadata.uid.as_deref();
    job.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// Shards whose pods exist but are not ready (not scheduled, pulling images, ...).
fn waiting_shards(job: &Job) -> i32 {
    job.status
        .as_ref()
        .map(|s| s.active.unwrap_or(0) - s.ready.unwrap_or(0))
        .unwrap_or(0)
        .max(0)
}

fn job_age(job: &Job, now: Timestamp) -> Duration {
    job.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| now.duration_since(t.0).unsigned_abs())
        .unwrap_or_default()
}

/// `live` with the merge patch `patch` (RFC 7386) applied: the Job as it will be once
/// the patch is written. Unchanged should the two not combine into a Job.
fn merged(live: &Job, patch: &Value) -> Job {
    fn merge(target: &mut Value, patch: &Value) {
        let Value::Object(fields) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        if let Value::Object(target) = target {
            for (key, value) in fields {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
    }
    let Ok(mut value) = serde_json::to_value(live) else {
        return live.clone();
    };
    merge(&mut value, patch);
    serde_json::from_value(value).unwrap_or_else(|_| live.clone())
}

/// The `JobCreated` Event for the new Job `job`.
fn job_created(analysis_job: &AnalysisJob, job: &Job, snapshot: &Snapshot) -> Event {
    let shards = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
    let mut message = format!(
        "created Job {} for {}, {} at a time",
        analysis_job.name_any(),
        status::shards(shards),
        analysis_job.spec.effective_parallelism(shards)
    );
    if !snapshot.is_empty() {
        message.push_str("; every shard sees ");
        message.push_str(&describe_snapshot(snapshot));
    }
    note(EventType::Normal, "JobCreated", message)
}

/// `cms.cern.ch at revision 5 (root hash 1a2b…, published …)` for each repository.
pub fn describe_snapshot(snapshot: &Snapshot) -> String {
    snapshot
        .iter()
        .map(|(repository, revision)| {
            format!(
                "{repository} at revision {} (root hash {}, published {})",
                revision.revision, revision.root_hash, revision.published.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An Event of the reconcile with `reason` and `message`.
pub fn note(type_: EventType, reason: &str, message: String) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(&message)),
        action: "Reconcile".to_owned(),
        secondary: None,
    }
}

/// The Event telling of `happening` on an AnalysisJob in `namespace`. A failed shard's
/// Event is related to the pod of its last attempt: the recorder merges Events into a
/// series by reason and related object, not by note, so without it the second shard to
/// fail would only count up the first one's Event.
pub fn describe(happening: &Happening, namespace: &str) -> Event {
    match happening {
        Happening::Suspended => note(
            EventType::Normal,
            "Suspended",
            "shards stopped; finished shards are kept".to_owned(),
        ),
        Happening::Resumed => note(EventType::Normal, "Resumed", "shards run again".to_owned()),
        Happening::ShardFailed(shard) => {
            let attempts = if shard.attempts == 1 {
                "1 attempt".to_owned()
            } else {
                format!("{} attempts", shard.attempts)
            };
            let mut message = format!("shard {} failed after {attempts}", shard.index);
            if let Some(code) = shard.last_exit_code {
                message.push_str(&format!(", exit code {code}"));
            }
            if let Some(reason) = &shard.reason {
                message.push_str(&format!(" ({reason})"));
            }
            if let Some(node) = &shard.node {
                message.push_str(&format!(" on node {node}"));
            }
            if let Some(pod) = &shard.pod {
                message.push_str(&format!(" (pod {pod})"));
            }
            let pod = shard
                .pod
                .clone()
                .unwrap_or_else(|| format!("shard-{}", shard.index));
            Event {
                secondary: Some(ObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    namespace: Some(namespace.to_owned()),
                    name: Some(pod),
                    ..ObjectReference::default()
                }),
                ..note(EventType::Warning, "ShardFailed", message)
            }
        }
        Happening::Succeeded { shards } => {
            let message = if *shards == 1 {
                "the shard succeeded".to_owned()
            } else {
                format!("all {shards} shards succeeded")
            };
            note(EventType::Normal, "Succeeded", message)
        }
        Happening::NotCreated { message, .. } => {
            note(EventType::Warning, "ShardsNotCreated", message.clone())
        }
        Happening::CreatedAgain => note(
            EventType::Normal,
            "ShardsCreated",
            "the Job controller creates the shards' pods again".to_owned(),
        ),
        Happening::Failed { reason, message } => {
            note(EventType::Warning, "Failed", format!("{reason}: {message}"))
        }
    }
}

/// Event notes are limited to 1 kB.
pub fn truncate(note: &str) -> String {
    let mut end = note.len().min(1000);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use hepbatch_crds::{FailedShard, Phase};

    use super::super::observe::Prerequisites;
    use super::*;
    use crate::inputs;
    use crate::pacing::FIRST_STATUS_GRACE;

    /// An AnalysisJob `higgs` in `physics` with this spec and (optionally) status, YAML.
    fn analysis_job(spec: &str, status: Option<&str>) -> AnalysisJob {
        let mut text = format!(
            "apiVersion: hepbatch.io/v1alpha1\nkind: AnalysisJob\n\
             metadata: {{name: higgs, namespace: physics, uid: u-1, generation: 1}}\n\
             spec: {spec}\n"
        );
        if let Some(status) = status {
            text.push_str(&format!("status: {status}\n"));
        }
        serde_yaml::from_str(&text).expect("a valid AnalysisJob")
    }

    /// The Job `higgs` controlled by `owner` (uid), created at 2026-01-01T00:00:00Z.
    fn job(owner: &str, spec: &str, status: &str) -> Job {
        serde_yaml::from_str(&format!(
            "apiVersion: batch/v1\nkind: Job\n\
             metadata:\n  name: higgs\n  namespace: physics\n  \
             creationTimestamp: '2026-01-01T00:00:00Z'\n  \
             ownerReferences: [{{apiVersion: hepbatch.io/v1alpha1, kind: AnalysisJob, \
             name: higgs, uid: {owner}, controller: true}}]\n\
             spec: {spec}\nstatus: {status}\n"
        ))
        .expect("a valid Job")
    }

    fn at(time: &str) -> Now {
        Now {
            instant: Instant::now(),
            time: time.parse().expect("a timestamp"),
        }
    }

    /// A minute after the Job's creation.
    fn later() -> Now {
        at("2026-01-01T00:01:00Z")
    }

    fn observed(job: ObservedJob) -> Observed {
        Observed {
            job,
            failed_pods: FailedPods::NotListed,
            scheduling: Scheduling::default(),
            creation: Creation::default(),
            pace: Pace::Written,
            paced: 1,
        }
    }

    fn present(job: Job) -> Observed {
        observed(ObservedJob::Present(Box::new(job)))
    }

    fn absent() -> Observed {
        observed(ObservedJob::Absent(Ok(Prerequisites::default())))
    }

    fn planned(aj: &AnalysisJob, observed: &Observed, now: Now) -> Plan {
        plan(aj, observed, &OperatorConfig::default(), now).expect("plans")
    }

    fn reasons(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.reason.as_str()).collect()
    }

    const SPEC: &str = "{platform: el9, script: 'true', shards: 3}";
    const RUNNING: &str = "{phase: Running, shards: 3, active: 3, ready: 3}";

    #[test]
    fn a_new_analysis_job_gets_its_job_created_and_a_first_status_after_the_grace() {
        let aj = analysis_job(SPEC, None);
        let plan = planned(&aj, &absent(), later());
        let Children::Create { config_maps, job } = &plan.children else {
            panic!("creates the Job");
        };
        assert!(config_maps.is_empty());
        assert_eq!(job.spec.as_ref().and_then(|s| s.completions), Some(3));
        assert_eq!(reasons(&plan.notes), ["JobCreated"]);
        assert_eq!(
            plan.notes[0].note.as_deref(),
            Some("created Job higgs for 3 shards, 3 at a time")
        );
        assert!(plan.status.is_none(), "a Pending first status waits");
        assert_eq!(plan.requeue, Requeue::After(FIRST_STATUS_GRACE));
    }

    #[test]
    fn the_input_lists_are_created_with_the_job() {
        let aj = analysis_job(
            "{platform: el9, script: 'true', inputs: {files: [a.root, b.root], filesPerShard: 1}}",
            None,
        );
        let files = vec!["a.root".to_owned(), "b.root".to_owned()];
        let inputs = inputs::plan(&aj, &files, 1).expect("plans the inputs");
        let observed = observed(ObservedJob::Absent(Ok(Prerequisites {
            inputs: Some(inputs),
            snapshot: Snapshot::new(),
        })));
        let plan = planned(&aj, &observed, later());
        let Children::Create { config_maps, job } = &plan.children else {
            panic!("creates the Job");
        };
        assert_eq!(config_maps.len(), 1);
        assert_eq!(job.spec.as_ref().and_then(|s| s.completions), Some(2));
    }

    #[test]
    fn a_job_of_the_name_owned_by_another_is_left_alone_and_reported() {
        let aj = analysis_job(SPEC, None);
        let theirs = job("someone-else", "{parallelism: 1}", "{}");
        let plan = planned(&aj, &present(theirs), later());
        assert_eq!(plan.children, Children::Keep);
        assert_eq!(reasons(&plan.notes), ["JobNameTaken"]);
        assert!(plan.status.is_none());
        assert_eq!(plan.requeue, Requeue::After(requeue::NAME_TAKEN_RETRY));
    }

    #[test]
    fn an_analysis_job_that_cannot_be_translated_is_rejected_once() {
        let aj = analysis_job("{platform: alma10, script: 'true'}", None);
        let plan = planned(&aj, &absent(), later());
        assert_eq!(plan.children, Children::Keep);
        assert_eq!(plan.requeue, Requeue::After(requeue::REJECTED_RETRY));
        let write = plan.status.expect("writes Accepted=False");
        assert_eq!(write.change, None);
        assert_eq!(reasons(&write.events), ["UnknownPlatform"]);
        let accepted = &write.status.conditions[0];
        assert_eq!(
            (accepted.type_.as_str(), accepted.status.as_str()),
            (status::ACCEPTED_CONDITION, "False")
        );
        // The same rejection again: nothing new to write or tell.
        let stored = serde_json::to_string(&write.status).expect("serializes");
        let again = analysis_job("{platform: alma10, script: 'true'}", Some(&stored));
        let plan = planned(&again, &absent(), later());
        assert!(plan.status.is_none());
    }

    #[test]
    fn a_rejection_found_while_observing_is_reported_like_a_translation_failure() {
        let aj = analysis_job(SPEC, None);
        let rejection = Rejection::new("InvalidInputs", "ConfigMap files has no key".to_owned());
        let plan = planned(&aj, &observed(ObservedJob::Absent(Err(rejection))), later());
        let write = plan.status.expect("writes Accepted=False");
        assert_eq!(reasons(&write.events), ["InvalidInputs"]);
        assert_eq!(plan.requeue, Requeue::After(requeue::REJECTED_RETRY));
    }

    #[test]
    fn a_translation_failure_no_user_can_fix_is_an_error() {
        let mut aj = analysis_job(SPEC, None);
        aj.metadata.uid = None;
        assert!(plan(&aj, &absent(), &OperatorConfig::default(), later()).is_err());
    }

    /// The plan for a running AnalysisJob with `spec` whose live Job runs 3 of 3 shards.
    fn planned_against_a_running_job(spec: &str) -> Plan {
        let aj = analysis_job(spec, Some(RUNNING));
        let live = job(
            "u-1",
            "{completions: 3, parallelism: 3}",
            "{active: 3, ready: 3}",
        );
        planned(&aj, &present(live), later())
    }

    #[test]
    fn suspending_patches_the_job_and_says_so_at_once() {
        let plan = planned_against_a_running_job(
            "{platform: el9, script: 'true', shards: 3, suspend: true}",
        );
        assert_eq!(
            plan.children,
            Children::Patch(serde_json::json!({"spec": {"suspend": true}}))
        );
        let write = plan.status.expect("news is written at once");
        assert_eq!(write.status.phase, Some(Phase::Suspended));
        assert_eq!(write.change, Some(StatusChange::News));
        assert_eq!(reasons(&write.events), ["Suspended"]);
    }

    #[test]
    fn scaling_patches_the_parallelism() {
        let plan = planned_against_a_running_job(
            "{platform: el9, script: 'true', shards: 3, parallelism: 1}",
        );
        assert_eq!(
            plan.children,
            Children::Patch(serde_json::json!({"spec": {"parallelism": 1}}))
        );
    }

    #[test]
    fn progress_is_paced_and_an_unchanged_running_job_resyncs() {
        let aj = analysis_job(SPEC, Some(RUNNING));
        let live = |succeeded: i32| {
            job(
                "u-1",
                "{completions: 3, parallelism: 3}",
                &format!(
                    "{{active: {}, ready: {}, succeeded: {succeeded}, \
                     startTime: '2026-01-01T00:00:01Z'}}",
                    3 - succeeded,
                    3 - succeeded
                ),
            )
        };
        let first = planned(&aj, &present(live(0)), later());
        let stored =
            serde_json::to_string(&first.status.expect("news").status).expect("serializes");
        let aj = analysis_job(SPEC, Some(&stored));
        let unchanged = planned(&aj, &present(live(0)), later());
        assert_eq!(unchanged.children, Children::Keep);
        assert!(unchanged.status.is_none());
        assert_eq!(unchanged.requeue, Requeue::After(requeue::RESYNC));
        let progress = planned(&aj, &present(live(1)), later());
        assert!(progress.status.is_none());
        // The Job is a minute old: a tenth of its age.
        assert_eq!(progress.requeue, Requeue::After(Duration::from_secs(6)));
        assert!(matches!(progress.pace, Pace::Due(_)));
        assert!(!progress.forget);
    }

    const COMPLETE: &str = "{succeeded: 3, completedIndexes: '0-2', \
        startTime: '2026-01-01T00:00:01Z', completionTime: '2026-01-01T00:00:30Z', \
        conditions: [{type: SuccessCriteriaMet, status: 'True', reason: CompletionsReached, \
        lastTransitionTime: '2026-01-01T00:00:30Z'}, {type: Complete, status: 'True', \
        reason: CompletionsReached, lastTransitionTime: '2026-01-01T00:00:30Z'}]}";

    #[test]
    fn success_is_news_and_forgets_the_analysis_job() {
        let aj = analysis_job(SPEC, Some(RUNNING));
        let live = job("u-1", "{completions: 3, parallelism: 3}", COMPLETE);
        let plan = planned(&aj, &present(live), later());
        let write = plan.status.expect("written at once");
        assert_eq!(write.status.phase, Some(Phase::Succeeded));
        assert_eq!(reasons(&write.events), ["Succeeded"]);
        assert!(plan.forget);
        assert!(!plan.delete);
        assert_eq!(plan.requeue, Requeue::AwaitChange);
    }

    #[test]
    fn a_finished_analysis_job_is_deleted_once_its_ttl_passed() {
        let spec = "{platform: el9, script: 'true', shards: 3, ttlSecondsAfterFinished: 60}";
        let live = job("u-1", "{completions: 3, parallelism: 3}", COMPLETE);
        let finished = planned(
            &analysis_job(spec, Some(RUNNING)),
            &present(live.clone()),
            later(),
        );
        let stored =
            serde_json::to_string(&finished.status.expect("written").status).expect("serializes");
        let aj = analysis_job(spec, Some(&stored));
        let early = planned(&aj, &present(live.clone()), at("2026-01-01T00:01:00Z"));
        assert!(!early.delete);
        assert_eq!(early.requeue, Requeue::After(Duration::from_secs(30)));
        let due = planned(&aj, &present(live), at("2026-01-01T00:01:31Z"));
        assert!(due.delete);
        assert!(due.status.is_none());
        assert_eq!(due.requeue, Requeue::AwaitChange);
    }

    #[test]
    fn failed_shards_listed_get_an_event_each_naming_the_pod() {
        let aj = analysis_job(SPEC, Some(RUNNING));
        let live = job(
            "u-1",
            "{completions: 3, parallelism: 3}",
            "{active: 2, ready: 2, failed: 1, failedIndexes: '1', \
             startTime: '2026-01-01T00:00:01Z'}",
        );
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: higgs-1-abcde, annotations: \
             {batch.kubernetes.io/job-completion-index: '1', \
             batch.kubernetes.io/job-index-failure-count: '0'}}\n\
             spec: {nodeName: cpu-0, containers: [{name: shard}]}\n\
             status: {phase: Failed, containerStatuses: [{name: shard, image: i, imageID: '', \
             ready: false, restartCount: 0, state: {terminated: {exitCode: 42, reason: Error}}}]}",
        )
        .expect("a valid Pod");
        let mut observed = present(live);
        observed.failed_pods = FailedPods::Listed(vec![pod]);
        let plan = planned(&aj, &observed, later());
        let write = plan.status.expect("a failed shard is news");
        assert_eq!(reasons(&write.events), ["ShardFailed"]);
        let related = write.events[0]
            .secondary
            .as_ref()
            .and_then(|r| r.name.clone());
        assert_eq!(related.as_deref(), Some("higgs-1-abcde"));
    }

    #[test]
    fn unschedulable_shards_are_reported_and_looked_at_again_later() {
        let aj = analysis_job(SPEC, Some(RUNNING));
        let live = job(
            "u-1",
            "{completions: 3, parallelism: 3}",
            "{active: 3, ready: 0, startTime: '2026-01-01T00:00:01Z'}",
        );
        let mut observed = present(live);
        let look = SchedulingLook::Unschedulable {
            message: "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.".to_owned(),
        };
        observed.scheduling = Scheduling {
            look_again: Some(next_look(&look)),
            look,
        };
        let plan = planned(&aj, &observed, later());
        assert_eq!(reasons(&plan.notes), ["ShardsUnschedulable"]);
        let write = plan.status.expect("the condition is news");
        assert_eq!(write.status.phase, Some(Phase::Unschedulable));
        assert_eq!(
            plan.requeue,
            Requeue::After(requeue::UNSCHEDULABLE_REPORTED_RECHECK)
        );
    }

    #[test]
    fn shards_waiting_for_room_are_no_news_and_clear_an_old_unschedulable() {
        let unschedulable = "{phase: Unschedulable, shards: 3, active: 3, ready: 0, \
            conditions: [{type: ShardsUnschedulable, status: 'True', reason: Unschedulable, \
            message: 3 shards wait, lastTransitionTime: '2026-01-01T00:00:30Z'}]}";
        let live = || {
            job(
                "u-1",
                "{completions: 3, parallelism: 3}",
                "{active: 3, ready: 0, startTime: '2026-01-01T00:00:01Z'}",
            )
        };
        let mut observed = present(live());
        observed.scheduling = Scheduling {
            look: SchedulingLook::WaitingForRoom,
            look_again: Some(next_look(&SchedulingLook::WaitingForRoom)),
        };
        let waiting = "{phase: Running, shards: 3, active: 3, ready: 0, jobName: higgs, \
            startTime: '2026-01-01T00:00:01Z', observedGeneration: 1}";
        let plan = planned(&analysis_job(SPEC, Some(waiting)), &observed, later());
        assert!(reasons(&plan.notes).is_empty());
        assert!(plan.status.is_none(), "{:?}", plan.status.map(|w| w.status));
        assert_eq!(
            plan.requeue,
            Requeue::After(requeue::UNSCHEDULABLE_REPORTED_RECHECK)
        );

        let plan = planned(&analysis_job(SPEC, Some(unschedulable)), &observed, later());
        let write = plan.status.expect("the condition clears");
        assert_eq!(write.status.phase, Some(Phase::Running));
        assert!(write.status.conditions.is_empty(), "{:?}", write.status);
        assert!(reasons(&plan.notes).is_empty());
    }

    #[test]
    fn refused_pods_are_looked_into_soon_and_only_while_pods_are_missing() {
        let missing = job("u-1", "{completions: 3, parallelism: 3}", "{active: 1}");
        let young = at("2026-01-01T00:00:01Z").time;
        assert_eq!(
            creation_look_due(&missing, young),
            LookDue::After(Duration::from_secs(2))
        );
        assert_eq!(creation_look_due(&missing, later().time), LookDue::Now);
        let complete = job("u-1", "{completions: 3, parallelism: 3}", "{active: 3}");
        assert_eq!(creation_look_due(&complete, later().time), LookDue::No);
        assert_eq!(next_creation_look(&CreationLook::Created), None);
    }

    #[test]
    fn a_refusal_is_reported_at_once_and_cleared_when_the_pods_come() {
        let refusing = || {
            job(
                "u-1",
                "{completions: 3, parallelism: 3}",
                "{active: 1, ready: 1, startTime: '2026-01-01T00:00:01Z'}",
            )
        };
        let mut observed = present(refusing());
        let look = CreationLook::Refused {
            message: "Error creating: pods \"higgs-1-x\" is forbidden: exceeded quota: pods"
                .to_owned(),
        };
        observed.creation = Creation {
            look_again: next_creation_look(&look),
            look,
        };
        let plan = planned(&analysis_job(SPEC, Some(RUNNING)), &observed, later());
        let write = plan.status.expect("the refusal is news");
        assert_eq!(write.change, Some(StatusChange::News));
        assert_eq!(reasons(&write.events), ["ShardsNotCreated"]);
        assert!(
            write.events[0]
                .note
                .as_deref()
                .is_some_and(|n| n
                    .starts_with("the Job controller cannot create shards' pods: Error creating")),
            "{:?}",
            write.events[0].note
        );
        assert_eq!(
            plan.requeue,
            Requeue::After(requeue::CREATION_REPORTED_RECHECK)
        );
        // The quota was raised: the Job has its pods, no look needed to clear it.
        let stored = serde_json::to_string(&write.status).expect("serializes");
        let all = job(
            "u-1",
            "{completions: 3, parallelism: 3}",
            "{active: 3, ready: 3, startTime: '2026-01-01T00:00:01Z'}",
        );
        let plan = planned(&analysis_job(SPEC, Some(&stored)), &present(all), later());
        let write = plan.status.expect("the clearing is news");
        assert!(
            write
                .status
                .conditions
                .iter()
                .all(|c| c.type_ != status::NOT_CREATED_CONDITION)
        );
        assert_eq!(reasons(&write.events), ["ShardsCreated"]);
    }

    #[test]
    fn waiting_shards_are_looked_at_only_after_a_while_and_not_when_finished() {
        let waiting = job("u-1", "{completions: 3}", "{active: 3, ready: 1}");
        let young = at("2026-01-01T00:00:20Z").time;
        assert_eq!(
            look_due(&waiting, None, young),
            LookDue::After(Duration::from_secs(40))
        );
        let old = later().time;
        assert_eq!(look_due(&waiting, None, old), LookDue::Now);
        let throttle = Duration::from_secs(7);
        assert_eq!(
            look_due(&waiting, Some(throttle), old),
            LookDue::After(throttle)
        );
        let none_waiting = job("u-1", "{completions: 3}", "{active: 3, ready: 3}");
        assert_eq!(look_due(&none_waiting, None, old), LookDue::No);
        assert_eq!(
            next_look(&SchedulingLook::Schedulable),
            requeue::UNSCHEDULABLE_RECHECK
        );
    }

    #[test]
    fn a_merge_patch_applies_to_the_job_as_planned() {
        let live = job("u-1", "{completions: 3, parallelism: 3}", "{}");
        let patched = merged(
            &live,
            &serde_json::json!({"spec": {"parallelism": 1, "suspend": true}}),
        );
        let spec = patched.spec.expect("a spec");
        assert_eq!(
            (spec.completions, spec.parallelism, spec.suspend),
            (Some(3), Some(1), Some(true))
        );
    }

    fn failed(index: i32, attempts: i32, exit: i32, pod: &str) -> Happening {
        Happening::ShardFailed(FailedShard {
            index,
            attempts,
            last_exit_code: Some(exit),
            reason: Some("Error".to_owned()),
            node: Some("cpu-0".to_owned()),
            pod: Some(pod.to_owned()),
        })
    }

    #[test]
    fn each_failed_shard_has_an_event_of_its_own_naming_it() {
        let five = describe(&failed(5, 1, 42, "higgs-5-abcde"), "physics");
        let six = describe(&failed(6, 4, 1, "higgs-6-fghij"), "physics");
        assert_eq!(
            five.note.as_deref(),
            Some(
                "shard 5 failed after 1 attempt, exit code 42 (Error) on node cpu-0 (pod higgs-5-abcde)"
            )
        );
        assert!(
            six.note
                .as_deref()
                .is_some_and(|n| n.starts_with("shard 6 failed after 4 attempts, exit code 1")),
            "{:?}",
            six.note
        );
        // The recorder keys its series by reason and related object: they must differ.
        assert_eq!(five.reason, six.reason);
        let related = |event: &Event| event.secondary.as_ref().and_then(|r| r.name.clone());
        assert_eq!(related(&five).as_deref(), Some("higgs-5-abcde"));
        assert_ne!(related(&five), related(&six));
    }

    #[test]
    fn one_shard_is_one_shard() {
        let one = describe(&Happening::Succeeded { shards: 1 }, "physics");
        assert_eq!(one.note.as_deref(), Some("the shard succeeded"));
        let many = describe(&Happening::Succeeded { shards: 3 }, "physics");
        assert_eq!(many.note.as_deref(), Some("all 3 shards succeeded"));
    }
}
