//! The AnalysisJobs' shard pods that wait for a node, as the look at waiting shards needs
//! them.
//!
//! A full cluster holds every fleet's pending pods at once (10,000 in the 500 × 20
//! bench), so the store keeps of each only its name, its AnalysisJob and, once the
//! scheduler gave up on it, what it needs and the scheduler's message, not the pod
//! (whole stripped pods took the operator's peak RSS from 39 to 84 MiB there). The watch selects pending pods without a node
//! (`spec.nodeName=`, the field the apiserver indexes pods by); a pod leaves it once
//! bound. Its events do not trigger reconciles: the look is timed
//! ([`plan::look_due`](super::plan::look_due)).

use std::borrow::Cow;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use hepbatch_crds::analysis_job::ANALYSIS_JOB_LABEL;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::k8s::{ConditionStatus, PodCondition, PodConditionReason, PodPhase};
use crate::room::PodNeeds;

/// A shard pod waiting for a node.
#[derive(Clone, Debug, PartialEq)]
pub struct WaitingPod {
    name: String,
    namespace: String,
    /// The AnalysisJob the pod is a shard of.
    analysis_job: String,
    /// What the pod needs and what the scheduler said, once it could not place the pod.
    gave_up: Option<(PodNeeds, String)>,
}

impl WaitingPod {
    /// What the look needs of `pod`.
    pub fn of(pod: &Pod) -> WaitingPod {
        WaitingPod {
            name: pod.name_any(),
            namespace: ResourceExt::namespace(pod).unwrap_or_default(),
            analysis_job: pod
                .labels()
                .get(ANALYSIS_JOB_LABEL)
                .cloned()
                .unwrap_or_default(),
            gave_up: scheduler_gave_up(pod).map(|message| (PodNeeds::of(pod), message)),
        }
    }

    /// Whether the pod is a shard of the AnalysisJob `namespace/name`.
    fn is_shard_of(&self, namespace: &str, name: &str) -> bool {
        self.namespace == namespace && self.analysis_job == name
    }
}

/// The store holds `WaitingPod`s under the pods' names; resource versions and UIDs are
/// not kept (a newer event replaces the entry either way).
impl Lookup for WaitingPod {
    type DynamicType = ();

    fn kind(_: &()) -> Cow<'_, str> {
        <Pod as Resource>::kind(&())
    }

    fn group(_: &()) -> Cow<'_, str> {
        <Pod as Resource>::group(&())
    }

    fn version(_: &()) -> Cow<'_, str> {
        <Pod as Resource>::version(&())
    }

    fn plural(_: &()) -> Cow<'_, str> {
        <Pod as Resource>::plural(&())
    }

    fn name(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.name))
    }

    fn namespace(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.namespace))
    }

    fn resource_version(&self) -> Option<Cow<'_, str>> {
        None
    }

    fn uid(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// The watch of the shard pods waiting for a node, and the store it fills; the stream must
/// be driven for the store to fill.
pub fn watch(
    pods: Api<Pod>,
) -> (
    Store<WaitingPod>,
    impl Stream<Item = watcher::Result<watcher::Event<WaitingPod>>> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(ANALYSIS_JOB_LABEL)
        .fields(&format!(
            "spec.nodeName=,status.phase={}",
            PodPhase::Pending
        ))
        .any_semantic();
    let compact_events = watcher(pods, config)
        .default_backoff()
        .map_ok(|event| compact(&event));
    (store, reflector::reflector(writer, compact_events))
}

/// The event with each pod made a [`WaitingPod`].
fn compact(event: &watcher::Event<Pod>) -> watcher::Event<WaitingPod> {
    use watcher::Event;
    match event {
        Event::Apply(pod) => Event::Apply(WaitingPod::of(pod)),
        Event::Delete(pod) => Event::Delete(WaitingPod::of(pod)),
        Event::Init => Event::Init,
        Event::InitApply(pod) => Event::InitApply(WaitingPod::of(pod)),
        Event::InitDone => Event::InitDone,
    }
}

/// What a shard of the AnalysisJob `namespace/name` among the `waiting` pods needs that
/// the scheduler could not place, and the scheduler's message; `None` when it gave up on
/// none of them.
pub fn gave_up_on(
    waiting: &[Arc<WaitingPod>],
    namespace: &str,
    name: &str,
) -> Option<(PodNeeds, String)> {
    waiting
        .iter()
        .filter(|pod| pod.is_shard_of(namespace, name))
        .find_map(|pod| pod.gave_up.clone())
}

/// The scheduler's message when it could not place `pod` (`PodScheduled=False`, reason
/// `Unschedulable`).
fn scheduler_gave_up(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            PodCondition::PodScheduled.is(&c.type_)
                && ConditionStatus::False.is(&c.status)
                && c.reason.as_deref() == Some(PodConditionReason::Unschedulable.as_str())
        })
        .and_then(|c| c.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITING: &str = "
metadata:
  name: skim-7-x
  namespace: physics
  labels: {hepbatch.io/analysis-job: skim, batch.kubernetes.io/job-completion-index: '7'}
  ownerReferences: [{apiVersion: batch/v1, kind: Job, name: skim, uid: u-1}]
  managedFields: [{manager: kube-controller-manager}]
spec:
  containers:
  - name: shard
    image: cc7-cms
    command: [bash, -c, 'a long script']
    resources: {requests: {cpu: '2', nvidia.com/gpu: '4'}}
  nodeSelector: {hepbatch.io/gpu: a100}
  tolerations: [{key: gpu, operator: Exists}]
status:
  phase: Pending
  conditions:
  - {type: PodScheduled, status: 'False', reason: Unschedulable, message: 0/3 nodes have enough nvidia.com/gpu}
";

    fn pod(namespace: &str, analysis_job: &str, condition: &str) -> Pod {
        let yaml = WAITING
            .replace("namespace: physics", &format!("namespace: {namespace}"))
            .replace(
                "analysis-job: skim",
                &format!("analysis-job: {analysis_job}"),
            )
            .replace("reason: Unschedulable", condition);
        serde_yaml::from_str(&yaml).expect("a pod")
    }

    #[test]
    fn a_waiting_pod_keeps_what_it_needs_and_why_it_waits() {
        let pod = pod("physics", "skim", "reason: Unschedulable");
        let waiting = WaitingPod::of(&pod);
        assert_eq!(waiting.name, "skim-7-x");
        assert!(waiting.is_shard_of("physics", "skim"));
        let (needs, message) = waiting.gave_up.expect("the scheduler gave up");
        assert_eq!(needs, PodNeeds::of(&pod));
        assert_eq!(needs.requests.get("nvidia.com/gpu"), Some(&4.0));
        assert_eq!(message, "0/3 nodes have enough nvidia.com/gpu");

        let not_tried = WaitingPod::of(&self::pod("physics", "skim", "reason: SchedulingGated"));
        assert_eq!(not_tried.gave_up, None);
    }

    #[test]
    fn the_look_reads_only_the_analysis_jobs_own_pods_the_scheduler_gave_up_on() {
        let waiting = |pods: &[Pod]| -> Vec<Arc<WaitingPod>> {
            pods.iter().map(|p| Arc::new(WaitingPod::of(p))).collect()
        };
        let others = [
            pod("other", "skim", "reason: Unschedulable"),
            pod("physics", "fit", "reason: Unschedulable"),
            pod("physics", "skim", "reason: SchedulingGated"),
        ];
        assert_eq!(gave_up_on(&waiting(&others), "physics", "skim"), None);

        let all = [
            others.to_vec(),
            vec![pod("physics", "skim", "reason: Unschedulable")],
        ]
        .concat();
        let (_, message) = gave_up_on(&waiting(&all), "physics", "skim").expect("one");
        assert_eq!(message, "0/3 nodes have enough nvidia.com/gpu");
    }

    #[test]
    fn the_store_follows_the_watch_with_compact_pods() {
        let (store, mut writer) = reflector::store::<WaitingPod>();
        let unplaced = pod("physics", "skim", "reason: Unschedulable");
        writer.apply_watcher_event(&compact(&watcher::Event::Apply(unplaced.clone())));
        assert_eq!(store.state().len(), 1);
        assert!(gave_up_on(&store.state(), "physics", "skim").is_some());
        writer.apply_watcher_event(&compact(&watcher::Event::Delete(unplaced)));
        assert!(store.state().is_empty());
    }
}
