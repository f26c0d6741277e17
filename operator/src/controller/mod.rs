//! The reconcile loop: AnalysisJob → (server-side apply) Job → (pure) status → Events.
//!
//! One reconcile runs four stages ([`reconcile_analysis_job`] reads as their list):
//! 1. [`observe`]: what the cluster has — the Job from the watch's store (else a GET),
//!    and only when needed the input list and CVMFS revisions for a new Job, the failed
//!    pods, the pods waiting for a node, the refusals of pods that could not be created
//!    (each from a watch's store: a reconcile in the steady state sends no read);
//! 2. [`plan()`]: pure — the Job (or patch, or nothing, or a rejection), the status, the
//!    Events and one [`Requeue`], from the AnalysisJob, the observation and the time;
//! 3. [`apply()`]: server-side apply of the new Job and its input ConfigMaps, or the patch;
//! 4. [`report()`]: Events, the status write, and deleting a finished AnalysisJob once its
//!    `ttlSecondsAfterFinished` passed.
//!
//! AnalysisJobs are read through [`DeserializeGuard`], so a malformed stored object gets
//! a Warning Event and waits for a change instead of stalling the watch. Every failure
//! is a variant of [`Error`], one per stage.

mod apply;
mod error;
mod nodes;
mod observe;
#[cfg(test)]
mod order_of_writes;
mod plan;
mod report;
mod requeue;
mod waiting;

use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, future};
use hepbatch_crds::analysis_job::{ANALYSIS_JOB_LABEL, AnalysisJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod, PodSpec};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

pub use error::Error;
pub use plan::{Now, Plan, plan};
pub use requeue::Requeue;

use crate::config::ConfigWatch;
use crate::k8s::{PodCondition, PodPhase};
use crate::metrics::Metrics;
use crate::pacing::{NotBefore, StatusPacer};
use crate::status;
use apply::{Applied, apply};
use observe::observe;
use report::report;
use waiting::WaitingPod;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "hepbatch-operator";

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
    /// The failed pods of the operator's Jobs, as last seen by the watch (stripped to what
    /// describes a failure, see [`failed_pod_detail`]).
    pub failed_pods: Store<Pod>,
    /// The pending shard pods without a node, as last seen by the watch (what the look at
    /// waiting shards reads of them).
    pub waiting_pods: Store<WaitingPod>,
    /// The cluster configuration in force.
    pub config: ConfigWatch,
    /// Which AnalysisJobs' status writes are held back, and until when.
    pub pacer: StatusPacer,
    /// When each AnalysisJob's waiting shards may be looked at again.
    pub unschedulable_checks: NotBefore,
    /// The `FailedCreate` Events of Jobs, as last seen by the watch: why the Job controller
    /// cannot create pods.
    pub refusals: Store<CoreEvent>,
    /// The nodes' room, shared by the looks at waiting shards.
    pub nodes: nodes::NodeRooms,
}

impl Context {
    /// Forgets what is remembered about the AnalysisJob `key` (finished or deleted).
    fn forget(&self, key: &str) {
        self.pacer.forget(key);
        self.unschedulable_checks.forget(key);
    }
}

/// Reconciles in flight at once, by default: without a limit a burst of new AnalysisJobs
/// holds a connection and its buffers per reconcile (measurements: docs/operator.md).
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

/// What [`run`] runs with.
pub struct Options {
    /// Client of the apiserver.
    pub client: Client,
    /// What is watched, and how much is reconciled at once.
    pub scope: Scope,
    /// The cluster configuration in force; a change reconciles every AnalysisJob again.
    pub config: ConfigWatch,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Turns true once the watches of AnalysisJobs and Jobs have synced.
    pub ready: Arc<AtomicBool>,
    /// The instance named in the Events' reporter (the pod's name).
    pub reporter_instance: String,
}

type Shutdown = Shared<BoxFuture<'static, ()>>;

/// Runs the controller until `shutdown` completes; `options.ready` turns true once the
/// watches of AnalysisJobs and Jobs have synced. Every AnalysisJob is reconciled again
/// when the configuration changes.
pub async fn run(options: Options, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let namespaces: Vec<Option<String>> = match &options.scope.namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(list) => list.iter().cloned().map(Some).collect(),
    };
    let shutdown: Shutdown = shutdown.boxed().shared();
    let mut runs = Vec::new();
    let mut readiness = Vec::new();
    for namespace in namespaces {
        let (stores, controller) = watch(&options, namespace.as_deref(), shutdown.clone());
        runs.push(phase_gauge(
            options.metrics.clone(),
            stores.analysis_jobs.clone(),
            shutdown.clone(),
        ));
        readiness.push(stores);
        runs.push(controller);
    }
    runs.push(readiness_flag(readiness, options.ready.clone(), shutdown));
    future::join_all(runs).await;
}

/// The stores of one namespace's watches.
struct Stores {
    analysis_jobs: Store<DeserializeGuard<AnalysisJob>>,
    jobs: Store<Job>,
    failed_pods: Store<Pod>,
    waiting_pods: Store<WaitingPod>,
    refusals: Store<CoreEvent>,
}

impl Stores {
    /// Waits until every store has synced; false if one never will (its writer is gone).
    async fn synced(&self) -> bool {
        self.analysis_jobs.wait_until_ready().await.is_ok()
            && self.jobs.wait_until_ready().await.is_ok()
            && self.failed_pods.wait_until_ready().await.is_ok()
            && self.waiting_pods.wait_until_ready().await.is_ok()
            && self.refusals.wait_until_ready().await.is_ok()
    }
}

/// The controller of one watched namespace (`None`: all), and its stores.
fn watch(
    options: &Options,
    namespace: Option<&str>,
    shutdown: Shutdown,
) -> (Stores, BoxFuture<'static, ()>) {
    let client = &options.client;
    let (guards, jobs, pods, events): (
        Api<DeserializeGuard<AnalysisJob>>,
        Api<Job>,
        Api<Pod>,
        Api<CoreEvent>,
    ) = match namespace {
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
    };
    // Jobs are watched by label, so only ours are cached and trigger.
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
    // Failed shard pods are watched rather than listed per change: a pod enters the watch
    // once, when it fails, however many shards fail, and its arrival triggers its
    // AnalysisJob's reconcile.
    let (failed_pod_store, failed_pod_writer) = reflector::store();
    let failed_pod_events = watcher(
        pods.clone(),
        watcher::Config::default()
            .labels(ANALYSIS_JOB_LABEL)
            .fields(&format!("status.phase={}", PodPhase::Failed))
            .any_semantic(),
    )
    .default_backoff()
    .modify(failed_pod_detail)
    .reflect(failed_pod_writer)
    .touched_objects();
    let (waiting_pod_store, waiting_pod_events) = waiting::watch(pods);
    let waiting_pods_reflected = waiting_pod_events
        .take_until(shutdown.clone())
        .for_each(|_| future::ready(()));
    // Refused pod creations, by their Events: the field selector keeps every other Event
    // out, so a healthy cluster sends none; an arrival triggers the Job's AnalysisJob.
    let (refusal_store, refusal_writer) = reflector::store();
    let refusal_events = watcher(
        events,
        watcher::Config::default()
            .fields(&format!(
                "reason={},involvedObject.kind=Job",
                status::FAILED_CREATE_REASON
            ))
            .any_semantic(),
    )
    .default_backoff()
    .modify(|event| event.managed_fields_mut().clear())
    .reflect(refusal_writer)
    .touched_objects();
    let reloads = futures::stream::unfold(options.config.subscribe(), |mut changes| async move {
        changes.changed().await.ok().map(|()| ((), changes))
    });
    let controller_config = controller::Config::default()
        .debounce(requeue::DEBOUNCE)
        .concurrency(options.scope.max_concurrent_reconciles.get());
    let controller = Controller::new(guards, watcher::Config::default().any_semantic())
        .owns_stream(job_events)
        .watches_stream(failed_pod_events, analysis_job_of)
        .watches_stream(refusal_events, analysis_job_refused)
        .reconcile_all_on(reloads)
        .with_config(controller_config)
        .graceful_shutdown_on(shutdown);
    let analysis_jobs = controller.store();
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: Some(options.reporter_instance.clone()),
    };
    let context = Arc::new(Context {
        jobs: job_store.clone(),
        failed_pods: failed_pod_store.clone(),
        waiting_pods: waiting_pod_store.clone(),
        config: options.config.clone(),
        pacer: StatusPacer::default(),
        unschedulable_checks: NotBefore::default(),
        refusals: refusal_store.clone(),
        nodes: nodes::NodeRooms::default(),
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: options.metrics.clone(),
    });
    let reconciles = controller
        .run(reconcile, error_policy, context)
        .for_each(|_| future::ready(()));
    let stores = Stores {
        analysis_jobs,
        jobs: job_store,
        failed_pods: failed_pod_store,
        waiting_pods: waiting_pod_store,
        refusals: refusal_store,
    };
    let run = future::join(reconciles, waiting_pods_reflected).map(|_| ());
    (stores, run.boxed())
}

/// Keeps of a failed pod what describes its failure ([`crate::status`] reads the
/// completion index and failure count annotations, the AnalysisJob label, the node, a
/// `DisruptionTarget` condition and the container's end): the spec and managed fields of
/// thousands of failed pods would otherwise dominate the operator's memory.
fn failed_pod_detail(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    if let Some(spec) = pod.spec.as_mut() {
        *spec = PodSpec {
            node_name: spec.node_name.take(),
            ..PodSpec::default()
        };
    }
    if let Some(status) = pod.status.as_mut() {
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| PodCondition::DisruptionTarget.is(&c.type_));
        }
        status.init_container_statuses = None;
    }
}

/// The AnalysisJob whose Job a `FailedCreate` Event is about (a Job has its
/// AnalysisJob's name).
fn analysis_job_refused(event: CoreEvent) -> Option<ObjectRef<DeserializeGuard<AnalysisJob>>> {
    let job = event.involved_object;
    Some(ObjectRef::new(job.name.as_deref()?).within(job.namespace.as_deref()?))
}

/// The AnalysisJob a shard pod belongs to, by its label.
fn analysis_job_of(pod: Pod) -> Option<ObjectRef<DeserializeGuard<AnalysisJob>>> {
    let name = pod.labels().get(ANALYSIS_JOB_LABEL)?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

/// Keeps the phase gauge current from the AnalysisJob store until `shutdown`.
fn phase_gauge(
    metrics: Arc<Metrics>,
    analysis_jobs: Store<DeserializeGuard<AnalysisJob>>,
    shutdown: Shutdown,
) -> BoxFuture<'static, ()> {
    async move {
        let tick = async {
            loop {
                tokio::time::sleep(requeue::PHASE_GAUGE_TICK).await;
                metrics.set_phases(analysis_jobs.state().iter().map(|guard| {
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
            () = shutdown => {}
        }
    }
    .boxed()
}

/// Sets `ready` once every watch has synced. Watches that never sync (the CRD was deleted,
/// RBAC forbids a list) must not hold up the stop: the wait ends with the shutdown too.
fn readiness_flag(
    readiness: Vec<Stores>,
    ready: Arc<AtomicBool>,
    shutdown: Shutdown,
) -> BoxFuture<'static, ()> {
    async move {
        let synced = async {
            for stores in &readiness {
                if !stores.synced().await {
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
    .boxed()
}

fn error_policy(
    _guard: Arc<DeserializeGuard<AnalysisJob>>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let category = error.category();
    context.metrics.observe_error(category);
    warn!(%error, "reconcile failed");
    Requeue::after_error(category).action()
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
            report::malformed(&invalid.metadata, &invalid.error, &context).await;
            Ok(Action::await_change())
        }
    };
    context.metrics.observe_reconcile(started.elapsed());
    result
}

/// One reconcile: observe, plan, apply, report.
async fn reconcile_analysis_job(
    analysis_job: &AnalysisJob,
    context: &Context,
) -> Result<Action, Error> {
    let key = format!(
        "{}/{}",
        analysis_job.namespace().unwrap_or_default(),
        analysis_job.name_any()
    );
    if analysis_job.metadata.deletion_timestamp.is_some() {
        context.forget(&key);
        return Ok(Requeue::AwaitChange.action());
    }
    let config = context.config.current();
    let now = Now::current();
    let observed = observe(analysis_job, &key, context, &config, now).await?;
    let plan = plan(analysis_job, &observed, &config, now).map_err(|source| Error::Plan {
        key: key.clone(),
        source,
    })?;
    if apply(analysis_job, &key, &plan.children, context).await? == Applied::NameTaken {
        return Ok(Requeue::After(requeue::NAME_TAKEN_RETRY).action());
    }
    report(analysis_job, &key, &plan, context).await?;
    Ok(plan.requeue.action())
}
