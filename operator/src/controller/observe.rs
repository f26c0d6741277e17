//! What the cluster has for one AnalysisJob: its Job (from the watch's store, else a GET),
//! and only when needed what the Job alone does not tell: the input list and the CVMFS
//! revisions a new Job needs, the failed pods that describe failures, the pods waiting
//! for a node, the refusals of pods the Job controller could not create.
//!
//! The steady state costs no read request: the Job comes from the reflector store that
//! also triggers reconciles, the failed pods from the watch of failed shard pods (which
//! triggers too, so a failure the Job counted before the pod reached the watch is
//! described on the pod's arrival), and the pods waiting for a node from a watch of
//! pending pods without one (which does not trigger: the look is timed); only a Job the
//! store does not know is looked up for real before creating, so a Job of this name
//! owned by something else is never overwritten.
//! A stale cached Job is harmless: the patch planned from it is an idempotent merge patch,
//! and the watch event that follows triggers the next reconcile.
//!
//! Pods the Job controller cannot create. An admission refusal (Pod Security, a
//! ResourceQuota, a LimitRange, a missing ServiceAccount, a webhook) shows in the Job only
//! as a shortfall: fewer pods than it should have ([`status::missing_pods`]); the reason
//! is in the Job's `FailedCreate` Events. Those are watched (field selector
//! `reason=FailedCreate,involvedObject.kind=Job`, so a healthy cluster sends none) into a
//! store whose arrivals trigger the Job's AnalysisJob; a reconcile reads the store, no
//! request, when the Job has pods missing and is older than
//! [`CREATION_LOOK_AFTER`](super::requeue::CREATION_LOOK_AFTER) (its first pods are on
//! their way before). The status module decides from the Events
//! ([`status::creation_look`]) and derives the `ShardsNotCreated` condition, and the plan
//! its Events. The condition clears as soon as the Job counts the pods it should have.

use std::time::Duration;

use hepbatch_crds::analysis_job::{ANALYSIS_JOB_LABEL, AnalysisJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, info, warn};

use super::error::{self, Error};
use super::plan::{self, LookDue, Now};
use super::{Context, waiting};
use crate::build::BuildError;
use crate::config::OperatorConfig;
use crate::cvmfs;
use crate::inputs::{self, InputPlan, InputsError};
use crate::pacing::Pace;
use crate::revision::{self, Snapshot};
use crate::room;
use crate::status::{self, CreationLook, SchedulingLook};

/// Why an AnalysisJob cannot run as it stands; reported, not retried as an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The reason of the `Accepted=False` condition and the Warning Event.
    pub reason: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

impl Rejection {
    /// A rejection for `reason`.
    pub fn new(reason: &'static str, message: String) -> Rejection {
        Rejection { reason, message }
    }
}

/// What a new Job is built from besides the AnalysisJob and the configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prerequisites {
    /// The input list split over the shards; `None` without `spec.inputs`.
    pub inputs: Option<InputPlan>,
    /// The CVMFS revisions a `consistency: Fleet` AnalysisJob pins (else empty). Resolved
    /// once per Job: the Job carries them, so a crash before it exists resolves again.
    pub snapshot: Snapshot,
}

/// The AnalysisJob's Job as the cluster has it.
#[derive(Clone, Debug, PartialEq)]
pub enum ObservedJob {
    /// A Job of the AnalysisJob's name exists (ours or not).
    Present(Box<Job>),
    /// None exists; what a new one needs, or why it cannot be built.
    Absent(Result<Prerequisites, Rejection>),
}

/// The failed pods of the Job.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum FailedPods {
    /// None: the Job counts no failed attempt and the watch knows no failed pod.
    #[default]
    NotListed,
    /// The failed pods the watch knows, because there are some or the Job counts failed
    /// attempts.
    Listed(Vec<Pod>),
}

/// What the look at shards waiting for a node found, and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduling {
    /// What the look found, or that there was none.
    pub look: SchedulingLook,
    /// When to look again, while shards wait.
    pub look_again: Option<Duration>,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            look: SchedulingLook::NotLooked,
            look_again: None,
        }
    }
}

/// What the look at the Job's missing pods found, and when to look again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creation {
    /// What the look found, or that there was none.
    pub look: CreationLook,
    /// When to look again, while pods are missing.
    pub look_again: Option<Duration>,
}

impl Default for Creation {
    fn default() -> Self {
        Creation {
            look: CreationLook::NotLooked,
            look_again: None,
        }
    }
}

/// Everything [`plan`](super::plan::plan) needs to know of the cluster and of the past.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The Job.
    pub job: ObservedJob,
    /// The Job's failed pods, when needed.
    pub failed_pods: FailedPods,
    /// The look at waiting shards.
    pub scheduling: Scheduling,
    /// The look at missing pods.
    pub creation: Creation,
    /// What the pacer remembers of this AnalysisJob.
    pub pace: Pace,
    /// How many AnalysisJobs are paced (they share the write budget).
    pub paced: usize,
}

impl Observed {
    /// The CVMFS revisions a new Job pins (empty when the Job exists).
    pub fn snapshot(&self) -> Snapshot {
        match &self.job {
            ObservedJob::Absent(Ok(prerequisites)) => prerequisites.snapshot.clone(),
            _ => Snapshot::new(),
        }
    }
}

/// Observes what the cluster has for `analysis_job` (`key` is its `namespace/name`).
pub async fn observe(
    analysis_job: &AnalysisJob,
    key: &str,
    context: &Context,
    config: &OperatorConfig,
    now: Now,
) -> Result<Observed, Error> {
    let name = analysis_job.name_any();
    let namespace = analysis_job.namespace().unwrap_or_default();
    let (pace, paced) = context.pacer.pace(key);
    let mut observed = Observed {
        job: ObservedJob::Absent(Ok(Prerequisites::default())),
        failed_pods: FailedPods::NotListed,
        scheduling: Scheduling::default(),
        creation: Creation::default(),
        pace,
        paced,
    };
    let Some(job) = job(context, &namespace, &name, key).await? else {
        observed.job = ObservedJob::Absent(prerequisites(analysis_job, context, config).await);
        return Ok(observed);
    };
    if plan::is_controlled_by(&job, analysis_job) {
        // The watch often sees a failed pod before the Job controller counts it.
        let pods = failed_pods(context, &namespace, &name);
        if status::has_failed_attempts(&job) || !pods.is_empty() {
            observed.failed_pods = FailedPods::Listed(pods);
        }
        observed.scheduling = scheduling(context, &job, key, now).await;
        observed.creation = creation(context, &job, now);
    }
    observed.job = ObservedJob::Present(Box::new(job));
    Ok(observed)
}

/// The Job from the watch's store, else from the apiserver.
async fn job(
    context: &Context,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<Job>, Error> {
    if let Some(cached) = context.jobs.get(&ObjectRef::new(name).within(namespace)) {
        return Ok(Some((*cached).clone()));
    }
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), namespace);
    jobs.get_opt(name)
        .await
        .map_err(error::observe(key, "reading the Job"))
}

/// The Job's failed pods, from the watch of failed shard pods: no request, however many
/// shards fail.
fn failed_pods(context: &Context, namespace: &str, name: &str) -> Vec<Pod> {
    context
        .failed_pods
        .state()
        .iter()
        .filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(namespace)
                && pod.labels().get(ANALYSIS_JOB_LABEL).map(String::as_str) == Some(name)
        })
        .map(|pod| (**pod).clone())
        .collect()
}

/// Looks at waiting shards when due ([`plan::look_due`]); every Job status change
/// triggers a reconcile, so the look is throttled per AnalysisJob.
async fn scheduling(context: &Context, job: &Job, key: &str, now: Now) -> Scheduling {
    let throttled = context.unschedulable_checks.wait_left(key, now.instant);
    match plan::look_due(job, throttled, now.time) {
        LookDue::No => Scheduling::default(),
        LookDue::After(wait) => Scheduling {
            look: SchedulingLook::NotLooked,
            look_again: Some(wait),
        },
        LookDue::Now => {
            let look = look_at_waiting_shards(context, job).await;
            if let Some(outcome) = look.outcome() {
                context.metrics.observe_look(outcome);
            }
            let next = plan::next_look(&look);
            context.unschedulable_checks.set(key, now.instant + next);
            Scheduling {
                look,
                look_again: Some(next),
            }
        }
    }
}

/// Looks at the Job's refusals when pods are missing and it is due
/// ([`plan::creation_look_due`]), in the store of `FailedCreate` Events.
fn creation(context: &Context, job: &Job, now: Now) -> Creation {
    match plan::creation_look_due(job, now.time) {
        LookDue::No => Creation::default(),
        LookDue::After(wait) => Creation {
            look: CreationLook::NotLooked,
            look_again: Some(wait),
        },
        LookDue::Now => {
            let look = status::creation_look(&refusals(context, job), now.time);
            Creation {
                look_again: plan::next_creation_look(&look),
                look,
            }
        }
    }
}

/// The `FailedCreate` Events of `job` the watch has seen.
fn refusals(context: &Context, job: &Job) -> Vec<CoreEvent> {
    let Some(uid) = job.metadata.uid.as_deref() else {
        return Vec::new();
    };
    context
        .refusals
        .state()
        .iter()
        .filter(|event| event.involved_object.uid.as_deref() == Some(uid))
        .map(|event| (**event).clone())
        .collect()
}

/// Looks whether the scheduler cannot place waiting shards (e.g. more GPUs than any node
/// has) and what it says, and whether they merely wait for room: the pending pods without
/// a node come from the watch's store, the nodes only when the scheduler gave up on one of
/// them.
async fn look_at_waiting_shards(context: &Context, job: &Job) -> SchedulingLook {
    let namespace = job.namespace().unwrap_or_default();
    let waiting = context.waiting_pods.state();
    let Some((needs, message)) = waiting::gave_up_on(&waiting, &namespace, &job.name_any()) else {
        return SchedulingLook::Schedulable;
    };
    match context.nodes.get(&context.client).await {
        Ok(nodes) if room::could_ever_fit(&needs, &nodes) => {
            debug!(%message, "shards wait for room");
            SchedulingLook::WaitingForRoom
        }
        Ok(_) => SchedulingLook::Unschedulable { message },
        Err(error) => {
            warn!(%error, "cannot list nodes; reporting waiting shards as unschedulable");
            SchedulingLook::Unschedulable { message }
        }
    }
}

/// What a new Job needs: the input list, then the CVMFS revisions (not resolved when the
/// inputs are wrong).
async fn prerequisites(
    analysis_job: &AnalysisJob,
    context: &Context,
    config: &OperatorConfig,
) -> Result<Prerequisites, Rejection> {
    let inputs = plan_inputs(analysis_job, context).await?;
    let snapshot = resolve_revisions(analysis_job, config).await?;
    Ok(Prerequisites { inputs, snapshot })
}

/// Reads the input list (inline or from the user's ConfigMap) and plans the split;
/// `None` without `inputs`.
async fn plan_inputs(
    analysis_job: &AnalysisJob,
    context: &Context,
) -> Result<Option<InputPlan>, Rejection> {
    let Some(spec) = &analysis_job.spec.inputs else {
        return Ok(None);
    };
    let rejection = |error: InputsError| Rejection::new(error.reason(), error.to_string());
    let files = match (&spec.files, &spec.from_config_map) {
        (Some(files), _) => files.clone(),
        (None, Some(source)) => {
            let namespace = analysis_job.namespace().unwrap_or_default();
            let config_maps: Api<ConfigMap> = Api::namespaced(context.client.clone(), &namespace);
            let missing = || InputsError::Missing {
                name: source.name.clone(),
                key: source.key.clone(),
            };
            let config_map = match config_maps.get_opt(&source.name).await {
                Ok(found) => found.ok_or_else(missing).map_err(rejection)?,
                Err(error) => {
                    let message = format!("cannot read ConfigMap {}: {error}", source.name);
                    return Err(Rejection::new("InputsUnreadable", message));
                }
            };
            let text = config_map
                .data
                .as_ref()
                .and_then(|d| d.get(&source.key))
                .ok_or_else(missing)
                .map_err(rejection)?;
            inputs::parse_list(text)
        }
        (None, None) => Vec::new(),
    };
    inputs::plan(analysis_job, &files, spec.files_per_shard)
        .map(Some)
        .map_err(rejection)
}

/// Resolves the current revision of the repositories a `consistency: Fleet` AnalysisJob
/// pins (none for other AnalysisJobs) from their signed manifests.
async fn resolve_revisions(
    analysis_job: &AnalysisJob,
    config: &OperatorConfig,
) -> Result<Snapshot, Rejection> {
    let spec = &analysis_job.spec;
    let repositories = cvmfs::to_resolve(spec.cvmfs.as_ref(), spec.cmssw.is_some(), &config.cvmfs)
        .map_err(|error| {
            let error = BuildError::Cvmfs(error);
            Rejection::new(error.reason().unwrap_or("InvalidCvmfs"), error.to_string())
        })?;
    if repositories.is_empty() {
        return Ok(Snapshot::new());
    }
    let unresolved = |message: String| Rejection::new("CvmfsRevisionUnresolved", message);
    // The configuration was checked when it was loaded; a source is there for csi.
    let source = config
        .cvmfs
        .manifest_source()
        .map_err(|error| unresolved(error.to_string()))?
        .ok_or_else(|| unresolved("the CVMFS provider cannot pin".to_owned()))?;
    let snapshot = revision::resolve(&source, &repositories, k8s_openapi::jiff::Timestamp::now())
        .await
        .map_err(|error| unresolved(error.to_string()))?;
    info!(revisions = %plan::describe_snapshot(&snapshot), "resolved the fleet's CVMFS revisions");
    Ok(snapshot)
}
