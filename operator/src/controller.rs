//! The reconcile loop: AnalysisJob → (server-side apply) Job → (pure) status → Events.
//!
//! Each reconcile
//! 1. reads the AnalysisJob through [`DeserializeGuard`], so a malformed stored object gets
//!    a Warning Event and waits for a change instead of stalling the watch;
//! 2. reads the Job from the reflector store that also triggers reconciles (Jobs are
//!    watched by label, so only ours are cached and trigger); only when the store has no
//!    such Job is the apiserver asked, so the steady state costs no read request:
//!    absent → resolves the CVMFS revisions a `consistency: Fleet` AnalysisJob pins
//!    ([`revision::resolve`]; a failure is reported like any rejection) and server-side
//!    applies the full translation with the fixed field manager (idempotent, never
//!    get-then-create), so the Job carries the resolution: a crash before it exists
//!    resolves again, after it the Job is the truth; present → patches only `parallelism` and
//!    `suspend` when they differ ([`build::live_update`]), and never touches `suspend` of a
//!    Kueue-managed Job. A stale cached Job is harmless: the patch is an idempotent merge
//!    patch, and the watch event that follows triggers the next reconcile;
//! 3. lists the failed pods of the Job (by label and phase) only when shards failed for
//!    good, to describe them;
//! 4. derives the status ([`status::derive`]) and writes it only when it changed, with an
//!    Event for each thing that happened in between ([`status::events`]);
//! 5. deletes a finished AnalysisJob once its `ttlSecondsAfterFinished` has passed.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt, future};
use hepbatch_crds::analysis_job::{ANALYSIS_JOB_LABEL, AnalysisJob, AnalysisJobStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::build;
use crate::config::{ConfigWatch, OperatorConfig};
use crate::cvmfs;
use crate::inputs::{self, InputPlan, InputsError};
use crate::metrics::{ErrorCategory, Metrics};
use crate::pacing::{self, Decision, NotBefore, StatusPacer};
use crate::revision::{self, Snapshot};
use crate::status::{self, Happening, SchedulingLook};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "hepbatch-operator";

/// Changes of one AnalysisJob or its Job within this window are reconciled once (a burst
/// of watch events, such as a Job update and the echo of our own status write). Kept
/// short: it delays the Job's creation and the final status; the pacing of progress-only
/// status writes ([`crate::pacing`]) is what bounds the write rate.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often an AnalysisJob that cannot run as it stands is looked at again (a missing
/// input ConfigMap may appear; configuration reloads trigger at once anyway).
const REJECTED_RETRY: Duration = Duration::from_secs(10);

/// How long shards may wait for a node before the AnalysisJob says why: batch shards
/// often wait for room a while, and in a full cluster every AnalysisJob would otherwise
/// cost a pod LIST soon after its start.
const UNSCHEDULABLE_AFTER: Duration = Duration::from_secs(60);

/// How soon waiting shards are looked at again when the last look found none the
/// scheduler had given up on (yet): a scheduler that has not tried a pod for this long is
/// busy with a large backlog, which another look soon after would only add to.
const UNSCHEDULABLE_RECHECK: Duration = Duration::from_secs(120);

/// How soon waiting shards are looked at again after the reason was reported: the Event
/// stands meanwhile, and a fleet larger than the cluster waits for long, so looking more
/// often would cost a pod LIST per AnalysisJob and minute for news nobody needs.
const UNSCHEDULABLE_REPORTED_RECHECK: Duration = Duration::from_secs(600);

/// How often a healthy, unfinished AnalysisJob is looked at even without a change.
const RESYNC: Duration = Duration::from_secs(300);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The AnalysisJob cannot be translated.
    #[error("translating {namespace}/{name}: {source}")]
    Build {
        /// Namespace of the AnalysisJob.
        namespace: String,
        /// Name of the AnalysisJob.
        name: String,
        /// What was wrong.
        source: build::BuildError,
    },
    /// A request to the apiserver failed.
    #[error("{action} for {namespace}/{name}: {source}")]
    Api {
        /// What the operator was doing.
        action: &'static str,
        /// Namespace of the AnalysisJob.
        namespace: String,
        /// Name of the AnalysisJob.
        name: String,
        /// The apiserver's answer.
        source: kube::Error,
    },
}

impl Error {
    /// The bounded category used in metrics.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Build { .. } => ErrorCategory::Invalid,
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => ErrorCategory::Conflict,
            Error::Api { .. } => ErrorCategory::Api,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// Client of the apiserver.
    pub client: Client,
    /// Publishes Events on AnalysisJobs.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The operator's Jobs, as last seen by the watch.
    pub jobs: Store<Job>,
    /// The cluster configuration in force.
    pub config: ConfigWatch,
    /// Which AnalysisJobs' status writes are held back, and until when.
    pub pacer: StatusPacer,
    /// When each AnalysisJob's waiting shards may be looked at again.
    pub unschedulable_checks: NotBefore,
}

impl Context {
    /// Forgets what is remembered about the AnalysisJob `key` (finished or deleted).
    fn forget(&self, key: &str) {
        self.pacer.forget(key);
        self.unschedulable_checks.forget(key);
    }
}

/// Reconciles in flight at once, by default. Without a limit a burst of new AnalysisJobs
/// starts a reconcile for each, and each holds a connection (the client speaks HTTP/1.1)
/// and its buffers: 1,000 AnalysisJobs created within half a minute took the operator to
/// 97 MiB, with 64 at once 45 MiB and the same status lag; 32 or 16 at once queued
/// reconciles behind the slow apiserver of such a burst (lag up to 1.3 s and 5.9 s).
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: NonZeroU16 = match NonZeroU16::new(64) {
    Some(limit) => limit,
    None => panic!("the default limit of reconciles must not be zero"),
};

/// What the controller watches and how much of it it reconciles at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The namespaces watched.
    pub namespaces: Namespaces,
    /// Reconciles in flight at once, in each watched namespace's controller.
    pub max_concurrent_reconciles: NonZeroU16,
}

/// Which namespaces the operator watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace.
    All,
    /// Only these.
    Only(Vec<String>),
}

/// Runs the controller until `shutdown` completes; `ready` turns true once the watches of
/// AnalysisJobs and Jobs have synced. Every AnalysisJob is reconciled again when the
/// configuration changes.
pub async fn run(
    client: Client,
    scope: Scope,
    config: ConfigWatch,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    reporter_instance: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespaces: Vec<Option<String>> = match scope.namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(list) => list.into_iter().map(Some).collect(),
    };
    let controller_config = controller::Config::default()
        .debounce(DEBOUNCE)
        .concurrency(scope.max_concurrent_reconciles.get());
    let shutdown = Box::pin(shutdown).shared();
    let mut runs = Vec::new();
    let mut readiness = Vec::new();
    for namespace in namespaces {
        let (guards, jobs): (Api<DeserializeGuard<AnalysisJob>>, Api<Job>) = match &namespace {
            None => (Api::all(client.clone()), Api::all(client.clone())),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
        };
        let (job_store, job_writer) = reflector::store();
        let job_events = watcher(
            jobs,
            watcher::Config::default()
                .labels(ANALYSIS_JOB_LABEL)
                .any_semantic(),
        )
        .default_backoff()
        .modify(|job| job.managed_fields_mut().clear())
        .reflect(job_writer)
        .touched_objects();
        let reloads = futures::stream::unfold(config.subscribe(), |mut changes| async move {
            changes.changed().await.ok().map(|()| ((), changes))
        });
        let controller = Controller::new(guards, watcher::Config::default().any_semantic())
            .owns_stream(job_events)
            .reconcile_all_on(reloads)
            .with_config(controller_config.clone())
            .graceful_shutdown_on(shutdown.clone());
        let analysis_jobs = controller.store();
        readiness.push((analysis_jobs.clone(), job_store.clone()));
        let context = Arc::new(Context {
            jobs: job_store,
            config: config.clone(),
            pacer: StatusPacer::default(),
            unschedulable_checks: NotBefore::default(),
            client: client.clone(),
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: FIELD_MANAGER.to_owned(),
                    instance: Some(reporter_instance.clone()),
                },
            ),
            metrics: metrics.clone(),
        });
        runs.push(
            controller
                .run(reconcile, error_policy, context)
                .for_each(|_| future::ready(()))
                .boxed(),
        );
        // Keep the phase gauge current from the AnalysisJob store.
        let phase_metrics = metrics.clone();
        let phase_shutdown = shutdown.clone();
        runs.push(
            async move {
                let tick = async {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        phase_metrics.set_phases(analysis_jobs.state().iter().map(|guard| {
                            guard
                                .0
                                .as_ref()
                                .ok()
                                .and_then(|aj| aj.status.as_ref())
                                .and_then(|s| s.phase)
                        }));
                    }
                };
                tokio::select! {
                    () = tick => {}
                    () = phase_shutdown => {}
                }
            }
            .boxed(),
        );
    }
    // Watches that never sync (the CRD was deleted, RBAC forbids a list) must not hold
    // up the stop: the wait for readiness ends with the shutdown too.
    runs.push(
        async move {
            let synced = async {
                for (analysis_jobs, jobs) in readiness {
                    if analysis_jobs.wait_until_ready().await.is_err()
                        || jobs.wait_until_ready().await.is_err()
                    {
                        return false;
                    }
                }
                true
            };
            tokio::select! {
                synced = synced => if synced {
                    ready.store(true, Ordering::SeqCst);
                    info!("watches synced; ready");
                },
                () = shutdown => {}
            }
        }
        .boxed(),
    );
    future::join_all(runs).await;
}

fn error_policy(
    _guard: Arc<DeserializeGuard<AnalysisJob>>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let category = error.category();
    context.metrics.observe_error(category);
    warn!(%error, "reconcile failed");
    match category {
        ErrorCategory::Conflict => Action::requeue(Duration::from_millis(500)),
        ErrorCategory::Invalid => Action::requeue(Duration::from_secs(60)),
        ErrorCategory::Api => Action::requeue(Duration::from_secs(5)),
    }
}

async fn reconcile(
    guard: Arc<DeserializeGuard<AnalysisJob>>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(analysis_job) => {
            let span = info_span!(
                "reconcile",
                namespace = analysis_job.namespace().unwrap_or_default(),
                name = analysis_job.name_any()
            );
            reconcile_analysis_job(analysis_job, &context)
                .instrument(span)
                .await
        }
        Err(invalid) => {
            let metadata = &invalid.metadata;
            warn!(
                namespace = metadata.namespace.as_deref().unwrap_or_default(),
                name = metadata.name.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "malformed AnalysisJob; waiting for it to change"
            );
            context.metrics.observe_error(ErrorCategory::Invalid);
            let reference = ObjectReference {
                api_version: Some(AnalysisJob::api_version(&()).into_owned()),
                kind: Some(AnalysisJob::kind(&()).into_owned()),
                name: metadata.name.clone(),
                namespace: metadata.namespace.clone(),
                uid: metadata.uid.clone(),
                ..ObjectReference::default()
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "Malformed".to_owned(),
                note: Some(truncate(&format!(
                    "cannot read this AnalysisJob: {}",
                    invalid.error
                ))),
                action: "Read".to_owned(),
                secondary: None,
            };
            if let Err(error) = context.recorder.publish(&event, &reference).await {
                warn!(%error, "cannot publish an Event");
            }
            Ok(Action::await_change())
        }
    };
    context.metrics.observe_reconcile(started.elapsed());
    result
}

async fn reconcile_analysis_job(
    analysis_job: &AnalysisJob,
    context: &Context,
) -> Result<Action, Error> {
    let name = analysis_job.name_any();
    let namespace = analysis_job.namespace().unwrap_or_default();
    let key = format!("{namespace}/{name}");
    if analysis_job.metadata.deletion_timestamp.is_some() {
        context.forget(&key);
        return Ok(Action::await_change());
    }
    let api_error = |action: &'static str| {
        let (namespace, name) = (namespace.clone(), name.clone());
        move |source| Error::Api {
            action,
            namespace,
            name,
            source,
        }
    };
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let reference = analysis_job.object_ref(&());
    let mut happenings_before = Vec::new();

    // The watch's copy when there is one; a Job the store does not know yet is looked up
    // for real before creating, so a Job of this name owned by something else is never
    // overwritten.
    let cached = context
        .jobs
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|job| (*job).clone());
    let live = match cached {
        Some(job) => Some(job),
        None => jobs
            .get_opt(&name)
            .await
            .map_err(api_error("reading the Job"))?,
    };
    let job: Job = match live {
        Some(live) if !is_controlled_by(&live, analysis_job) => {
            // A Job of this name belongs to something else (or to a deleted AnalysisJob
            // of the same name that garbage collection has not removed yet).
            publish(
                context,
                &reference,
                EventType::Warning,
                "JobNameTaken",
                format!(
                    "a Job named {name} exists and is not controlled by this AnalysisJob; waiting"
                ),
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
        Some(live) => match build::live_update(analysis_job, &live) {
            Some(patch) => {
                info!(%patch, "updating the Job");
                jobs.patch(
                    &name,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.to_owned()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(api_error("patching the Job"))?
            }
            None => live,
        },
        None => {
            let config = context.config.current();
            let plan = match plan_inputs(analysis_job, context, &namespace).await {
                Ok(plan) => plan,
                Err(Rejection { reason, message }) => {
                    return reject(analysis_job, context, &reference, reason, &message).await;
                }
            };
            // The revisions a Fleet pins are resolved here, once per Job: the Job
            // created below carries them, and until it exists nothing else does.
            let snapshot = match resolve_revisions(analysis_job, &config).await {
                Ok(snapshot) => snapshot,
                Err(Rejection { reason, message }) => {
                    return reject(analysis_job, context, &reference, reason, &message).await;
                }
            };
            let desired = match build::job(analysis_job, &config, plan.as_ref(), &snapshot) {
                Ok(job) => job,
                Err(error) if let Some(reason) = error.reason() => {
                    let message = error.to_string();
                    return reject(analysis_job, context, &reference, reason, &message).await;
                }
                Err(source) => {
                    return Err(Error::Build {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    });
                }
            };
            // The shards' input lists exist before any pod that mounts them.
            if let Some(plan) = &plan {
                let config_maps: Api<ConfigMap> =
                    Api::namespaced(context.client.clone(), &namespace);
                for config_map in &plan.config_maps {
                    config_maps
                        .patch(
                            &config_map.name_any(),
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(config_map),
                        )
                        .await
                        .map_err(api_error("applying an input-list ConfigMap"))?;
                }
            }
            let shards = desired
                .spec
                .as_ref()
                .and_then(|s| s.completions)
                .unwrap_or(1);
            let applied = jobs
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await
                .map_err(api_error("applying the Job"))?;
            if !is_controlled_by(&applied, analysis_job) {
                return Ok(Action::requeue(Duration::from_secs(10)));
            }
            let mut note = format!(
                "created Job {name} for {}, {} at a time",
                status::shards(shards),
                analysis_job.spec.effective_parallelism(shards)
            );
            if !snapshot.is_empty() {
                note.push_str("; every shard sees ");
                note.push_str(&describe_snapshot(&snapshot));
            }
            happenings_before.push(("JobCreated", note));
            applied
        }
    };

    let old = analysis_job.status.clone().unwrap_or_default();
    // Failed shards were described when they failed; their pods are listed again only
    // when the Job counts failures the last status does not describe.
    let list_failed_pods = status::needs_failed_pods(&old, &job);
    let failed_pods = if list_failed_pods {
        let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
        pods.list(
            &ListParams::default()
                .labels(&format!("{ANALYSIS_JOB_LABEL}={name}"))
                .fields("status.phase=Failed"),
        )
        .await
        .map_err(api_error("listing failed pods"))?
        .items
    } else {
        Vec::new()
    };

    let new = status::keep_described(
        &old,
        status::derive(analysis_job, Some(&job), &failed_pods),
        list_failed_pods,
    );

    // Shards waiting for a node: say why. Every Job status change triggers a reconcile,
    // so the look is throttled per AnalysisJob: again after two minutes while the scheduler
    // has not given up on any shard, after ten once the reason was reported.
    let waiting = waiting_shards(&job);
    let mut look_again = None;
    let look = if waiting > 0 && !new.phase.is_some_and(|p| p.is_finished()) {
        let age = job_age(&job);
        let now = Instant::now();
        if age < UNSCHEDULABLE_AFTER {
            look_again = Some(UNSCHEDULABLE_AFTER - age);
            SchedulingLook::NotLooked
        } else if let Some(wait) = context.unschedulable_checks.wait_left(&key, now) {
            look_again = Some(wait);
            SchedulingLook::NotLooked
        } else {
            let look = look_at_waiting_shards(context, &namespace, &name).await;
            let next = if matches!(look, SchedulingLook::Unschedulable { .. }) {
                UNSCHEDULABLE_REPORTED_RECHECK
            } else {
                UNSCHEDULABLE_RECHECK
            };
            context.unschedulable_checks.set(&key, now + next);
            look_again = Some(next);
            look
        }
    } else {
        SchedulingLook::NotLooked
    };
    let new = status::with_scheduling(&old, new, waiting, &look, Time(Timestamp::now()));
    if let SchedulingLook::Unschedulable { .. } = &look
        && let Some(condition) = new
            .conditions
            .iter()
            .find(|c| c.type_ == status::UNSCHEDULABLE_CONDITION)
    {
        publish(
            context,
            &reference,
            EventType::Warning,
            "ShardsUnschedulable",
            condition.message.clone(),
        )
        .await;
    }

    for (reason, note) in happenings_before {
        publish(context, &reference, EventType::Normal, reason, note).await;
    }
    if analysis_job.status.is_none()
        && let Some(wait) = pacing::first_status_wait(&new, job_age(&job))
    {
        return Ok(Action::requeue(wait));
    }
    let now = Instant::now();
    let decision = context
        .pacer
        .decide(&key, analysis_job.status.as_ref(), &new, now);
    if let Decision::Later(wait) = decision {
        return Ok(Action::requeue(
            look_again.map_or(wait, |look| look.min(wait)),
        ));
    }
    if let Decision::Write(change) = decision {
        write_status(context, analysis_job, &new)
            .await
            .map_err(api_error("writing the status"))?;
        context.pacer.wrote(&key);
        context.metrics.observe_status_write(change);
        for happening in status::events(&old, &new) {
            publish_event(context, &reference, describe(&happening, &namespace)).await;
        }
    }

    if new.phase.is_some_and(|p| p.is_finished()) {
        context.forget(&key);
    }
    if let Some(wait) = look_again {
        return Ok(Action::requeue(wait));
    }

    finish(
        analysis_job,
        &new,
        context,
        api_error("deleting the finished AnalysisJob"),
    )
    .await
}

/// Shards whose pods exist but are not ready (not scheduled, pulling images, ...).
fn waiting_shards(job: &Job) -> i32 {
    job.status
        .as_ref()
        .map(|s| s.active.unwrap_or(0) - s.ready.unwrap_or(0))
        .unwrap_or(0)
        .max(0)
}

fn job_age(job: &Job) -> Duration {
    job.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| Timestamp::now().duration_since(t.0).unsigned_abs())
        .unwrap_or_default()
}

/// Looks whether the scheduler cannot place waiting shards (e.g. more GPUs than any node
/// has) and what it says; the caller records it in the status and an Event.
///
/// Only pods without a node are listed (`spec.nodeName` is the field the apiserver's
/// watch cache indexes pods by), from the watch cache.
async fn look_at_waiting_shards(context: &Context, namespace: &str, name: &str) -> SchedulingLook {
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let pending = match pods
        .list(
            &ListParams::default()
                .labels(&format!("{ANALYSIS_JOB_LABEL}={name}"))
                .fields("spec.nodeName=,status.phase=Pending")
                .match_any()
                .limit(20),
        )
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            warn!(%error, "cannot list pending pods");
            return SchedulingLook::NotLooked;
        }
    };
    let unschedulable = pending.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
            .and_then(|c| c.message.clone())
    });
    match unschedulable {
        Some(message) => SchedulingLook::Unschedulable { message },
        None => SchedulingLook::Schedulable,
    }
}

/// Server-side applies `status` as the AnalysisJob's status with the operator's field
/// manager.
async fn write_status(
    context: &Context,
    analysis_job: &AnalysisJob,
    status: &AnalysisJobStatus,
) -> Result<(), kube::Error> {
    let api: Api<AnalysisJob> = Api::namespaced(
        context.client.clone(),
        &analysis_job.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": AnalysisJob::api_version(&()),
        "kind": AnalysisJob::kind(&()),
        "status": status,
    });
    api.patch_status(
        &analysis_job.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Why an AnalysisJob cannot run as it stands; reported, not retried as an error.
struct Rejection {
    reason: &'static str,
    message: String,
}

/// Reads the input list (inline or from the user's ConfigMap) and plans the split;
/// `None` without `inputs`.
async fn plan_inputs(
    analysis_job: &AnalysisJob,
    context: &Context,
    namespace: &str,
) -> Result<Option<InputPlan>, Rejection> {
    let Some(spec) = &analysis_job.spec.inputs else {
        return Ok(None);
    };
    let rejection = |error: InputsError| Rejection {
        reason: "InvalidInputs",
        message: error.to_string(),
    };
    let files = match (&spec.files, &spec.from_config_map) {
        (Some(files), _) => files.clone(),
        (None, Some(source)) => {
            let config_maps: Api<ConfigMap> = Api::namespaced(context.client.clone(), namespace);
            let missing = || InputsError::Missing {
                name: source.name.clone(),
                key: source.key.clone(),
            };
            let config_map = match config_maps.get_opt(&source.name).await {
                Ok(found) => found.ok_or_else(missing).map_err(rejection)?,
                Err(error) => {
                    return Err(Rejection {
                        reason: "InputsUnreadable",
                        message: format!("cannot read ConfigMap {}: {error}", source.name),
                    });
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
            let error = build::BuildError::Cvmfs(error);
            Rejection {
                reason: error.reason().unwrap_or("InvalidCvmfs"),
                message: error.to_string(),
            }
        })?;
    if repositories.is_empty() {
        return Ok(Snapshot::new());
    }
    let unresolved = |message: String| Rejection {
        reason: "CvmfsRevisionUnresolved",
        message,
    };
    // The configuration was checked when it was loaded; a source is there for csi.
    let source = config
        .cvmfs
        .manifest_source()
        .map_err(unresolved)?
        .ok_or_else(|| unresolved("the CVMFS provider cannot pin".to_owned()))?;
    let snapshot = revision::resolve(&source, &repositories, Timestamp::now())
        .await
        .map_err(|error| unresolved(error.to_string()))?;
    info!(revisions = %describe_snapshot(&snapshot), "resolved the fleet's CVMFS revisions");
    Ok(snapshot)
}

/// `cms.cern.ch at revision 5 (root hash 1a2b…, published …)` for each repository.
fn describe_snapshot(snapshot: &Snapshot) -> String {
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

/// Reports that the AnalysisJob cannot run as it stands: an `Accepted=False` condition
/// and a Warning Event when that is news; looks again later (configuration reloads and
/// spec changes also trigger a reconcile).
async fn reject(
    analysis_job: &AnalysisJob,
    context: &Context,
    reference: &ObjectReference,
    reason: &'static str,
    message: &str,
) -> Result<Action, Error> {
    let name = analysis_job.name_any();
    let namespace = analysis_job.namespace().unwrap_or_default();
    let old = analysis_job.status.clone().unwrap_or_default();
    let new = status::rejected(analysis_job, &old, reason, message, Time(Timestamp::now()));
    if old != new {
        warn!(reason, message, "cannot run the AnalysisJob as it stands");
        write_status(context, analysis_job, &new)
            .await
            .map_err(|source| Error::Api {
                action: "writing the status",
                namespace: namespace.clone(),
                name: name.clone(),
                source,
            })?;
        let changed = old.conditions.iter().all(|c| {
            c.type_ != status::ACCEPTED_CONDITION || c.reason != reason || c.message != message
        });
        if changed {
            publish(
                context,
                reference,
                EventType::Warning,
                reason,
                message.to_owned(),
            )
            .await;
        }
    }
    Ok(Action::requeue(REJECTED_RETRY))
}

/// Deletes the AnalysisJob once its TTL after finishing has passed, or says when to look
/// again.
async fn finish(
    analysis_job: &AnalysisJob,
    status: &AnalysisJobStatus,
    context: &Context,
    api_error: impl FnOnce(kube::Error) -> Error,
) -> Result<Action, Error> {
    let finished = status.phase.is_some_and(|p| p.is_finished());
    if !finished {
        return Ok(Action::requeue(RESYNC));
    }
    let Some(ttl) = analysis_job.spec.ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let finished_at = status
        .conditions
        .iter()
        .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.last_transition_time.0)
        .max()
        .unwrap_or_else(Timestamp::now);
    let age = Timestamp::now()
        .duration_since(finished_at)
        .as_secs_f64()
        .max(0.0);
    let remaining = f64::from(ttl) - age;
    if remaining > 0.0 {
        return Ok(Action::requeue(Duration::from_secs_f64(
            remaining.min(3600.0),
        )));
    }
    info!(ttl, "TTL after finishing passed; deleting");
    let api: Api<AnalysisJob> = Api::namespaced(
        context.client.clone(),
        &analysis_job.namespace().unwrap_or_default(),
    );
    match api
        .delete(&analysis_job.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
        Err(error) => Err(api_error(error)),
    }
}

fn is_controlled_by(job: &Job, analysis_job: &AnalysisJob) -> bool {
    let uid = analysis_job.metadata.uid.as_deref();
    job.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// The Event telling of `happening` on an AnalysisJob in `namespace`. A failed shard's
/// Event is related to the pod of its last attempt: the recorder merges Events into a
/// series by reason and related object, not by note, so without it the second shard to
/// fail would only count up the first one's Event.
fn describe(happening: &Happening, namespace: &str) -> Event {
    let event = |type_, reason: &str, note: String| Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(&note)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    match happening {
        Happening::Suspended => event(
            EventType::Normal,
            "Suspended",
            "shards stopped; finished shards are kept".to_owned(),
        ),
        Happening::Resumed => event(EventType::Normal, "Resumed", "shards run again".to_owned()),
        Happening::ShardFailed(shard) => {
            let attempts = if shard.attempts == 1 {
                "1 attempt".to_owned()
            } else {
                format!("{} attempts", shard.attempts)
            };
            let mut note = format!("shard {} failed after {attempts}", shard.index);
            if let Some(code) = shard.last_exit_code {
                note.push_str(&format!(", exit code {code}"));
            }
            if let Some(reason) = &shard.reason {
                note.push_str(&format!(" ({reason})"));
            }
            if let Some(node) = &shard.node {
                note.push_str(&format!(" on node {node}"));
            }
            if let Some(pod) = &shard.pod {
                note.push_str(&format!(" (pod {pod})"));
            }
            Event {
                secondary: Some(ObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    namespace: Some(namespace.to_owned()),
                    name: Some(
                        shard
                            .pod
                            .clone()
                            .unwrap_or_else(|| format!("shard-{}", shard.index)),
                    ),
                    ..ObjectReference::default()
                }),
                ..event(EventType::Warning, "ShardFailed", note)
            }
        }
        Happening::Succeeded { shards } => {
            let note = if *shards == 1 {
                "the shard succeeded".to_owned()
            } else {
                format!("all {shards} shards succeeded")
            };
            event(EventType::Normal, "Succeeded", note)
        }
        Happening::Failed { reason, message } => {
            event(EventType::Warning, "Failed", format!("{reason}: {message}"))
        }
    }
}

async fn publish(
    context: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(&note)),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    publish_event(context, reference, event).await;
}

async fn publish_event(context: &Context, reference: &ObjectReference, event: Event) {
    if let Err(error) = context.recorder.publish(&event, reference).await {
        warn!(%error, reason = event.reason, "cannot publish an Event");
    }
}

/// Event notes are limited to 1 kB.
fn truncate(note: &str) -> String {
    let mut end = note.len().min(1000);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hepbatch_crds::FailedShard;

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
