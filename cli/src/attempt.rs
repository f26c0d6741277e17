//! Shard attempts: what each pod of an AnalysisJob says about one try of one shard.
//!
//! The Job controller creates one pod per attempt of a shard and marks it with the
//! shard's completion index; attempts of a shard are numbered 1, 2, ... in the order
//! their pods were created. Only pods that still exist can be seen: the AnalysisJob's
//! status keeps the last failed attempt's detail after its pod is gone. Shards are
//! numbered as in the fleet: an AnalysisJob running a selection (`spec.shardIndexes`)
//! shows its shards under their original indexes.

use std::collections::BTreeMap;

pub use hepbatch_crds::analysis_job::{COMPLETION_INDEX_ANNOTATION, SHARD_CONTAINER};
use hepbatch_crds::{AnalysisJob, ShardNumbering};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

/// Where one attempt is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum AttemptState {
    /// Created, not running yet (waiting for a node, pulling the image).
    Pending,
    /// Its container runs.
    Running,
    /// It ended with exit code 0.
    Succeeded,
    /// It ended otherwise (exit code, eviction, deadline).
    Failed,
    /// The kubelet stopped reporting.
    Unknown,
}

impl AttemptState {
    /// The state as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Pending => "Pending",
            AttemptState::Running => "Running",
            AttemptState::Succeeded => "Succeeded",
            AttemptState::Failed => "Failed",
            AttemptState::Unknown => "Unknown",
        }
    }
}

/// One attempt of one shard, as its pod shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The shard's index.
    pub index: i32,
    /// 1, 2, ...: the position of its pod among the shard's pods, by creation.
    pub attempt: u32,
    /// The pod's name.
    pub pod: String,
    /// The node it was bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its state.
    pub state: AttemptState,
    /// The shard container's exit code, once it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it ended (`Error`, `OOMKilled`, `DeadlineExceeded`, `Evicted`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the pod was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    /// When the container (else the pod) started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// When the container finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<Timestamp>,
}

impl Attempt {
    /// How long it ran: from its start to its end, or to `now` while it runs.
    pub fn duration(&self, now: Timestamp) -> Option<i64> {
        let start = self.started?;
        let end = self.finished.unwrap_or(now);
        Some((end.as_second() - start.as_second()).max(0))
    }
}

/// The shard index of a pod in the fleet's numbering, from the Job controller's
/// annotation.
pub fn shard_index(pod: &Pod, numbering: &ShardNumbering) -> Option<i32> {
    let completion = pod
        .metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX_ANNOTATION)?
        .parse()
        .ok()?;
    numbering.original(completion)
}

/// How `analysis_job` numbers its shards (a spec the apiserver accepted but the operator
/// refused runs no pods, so any numbering will do for it).
pub fn numbering(analysis_job: &AnalysisJob) -> ShardNumbering {
    analysis_job
        .spec
        .numbering()
        .unwrap_or(ShardNumbering::Every)
}

/// Every attempt the pods show, by shard index, each shard's in creation order.
pub fn attempts(pods: &[Pod], numbering: &ShardNumbering) -> BTreeMap<i32, Vec<Attempt>> {
    let mut by_shard: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(index) = shard_index(pod, numbering) {
            by_shard.entry(index).or_default().push(pod);
        }
    }
    by_shard
        .into_iter()
        .map(|(index, mut pods)| {
            pods.sort_by(|a, b| {
                let key = |p: &Pod| {
                    (
                        p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                        p.metadata.name.clone(),
                    )
                };
                key(a).cmp(&key(b))
            });
            let attempts = pods
                .iter()
                .zip(1..)
                .map(|(pod, number)| attempt_of(index, number, pod))
                .collect();
            (index, attempts)
        })
        .collect()
}

fn attempt_of(index: i32, attempt: u32, pod: &Pod) -> Attempt {
    let status = pod.status.as_ref();
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.name == SHARD_CONTAINER)
                .or_else(|| cs.first())
        });
    let terminated = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let running = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.running.as_ref());
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let state = match phase {
        "Pending" => AttemptState::Pending,
        "Running" => AttemptState::Running,
        "Succeeded" => AttemptState::Succeeded,
        "Failed" => AttemptState::Failed,
        _ => AttemptState::Unknown,
    };
    let reason = terminated
        .and_then(|t| t.reason.clone())
        .or_else(|| status.and_then(|s| s.reason.clone()))
        .filter(|_| state != AttemptState::Succeeded);
    Attempt {
        index,
        attempt,
        pod: pod.metadata.name.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        state,
        exit_code: terminated.map(|t| t.exit_code),
        reason,
        created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        started: terminated
            .and_then(|t| t.started_at.as_ref())
            .or_else(|| running.and_then(|r| r.started_at.as_ref()))
            .or_else(|| status.and_then(|s| s.start_time.as_ref()))
            .map(|t| t.0),
        finished: terminated.and_then(|t| t.finished_at.as_ref()).map(|t| t.0),
    }
}

/// Pods of shards for the tests of this crate: `(index, created second, phase, exit
/// code, node)`.
#[cfg(test)]
pub(crate) fn test_pod(
    name: &str,
    index: i32,
    created: i64,
    phase: &str,
    exit_code: Option<i32>,
    node: &str,
) -> Pod {
    let time = |s: i64| {
        Timestamp::from_second(1_800_000_000 + s)
            .unwrap()
            .to_string()
    };
    let state = match (phase, exit_code) {
        ("Running", _) => serde_json::json!({"running": {"startedAt": time(created + 1)}}),
        (_, Some(code)) => serde_json::json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "startedAt": time(created + 1),
            "finishedAt": time(created + 61),
        }}),
        _ => serde_json::json!({"waiting": {"reason": "ContainerCreating"}}),
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "creationTimestamp": time(created),
            "annotations": {COMPLETION_INDEX_ANNOTATION: index.to_string()},
        },
        "spec": {"nodeName": node, "containers": [{"name": SHARD_CONTAINER}]},
        "status": {
            "phase": phase,
            "containerStatuses": [{
                "name": SHARD_CONTAINER, "image": "busybox", "imageID": "", "ready": false,
                "restartCount": 0, "state": state,
            }],
        },
    }))
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_numbered_per_shard_in_creation_order() {
        let pods = vec![
            test_pod("aj-1-b", 1, 100, "Running", None, "cpu-1"),
            test_pod("aj-1-a", 1, 10, "Failed", Some(3), "cpu-0"),
            test_pod("aj-0-a", 0, 5, "Succeeded", Some(0), "cpu-0"),
        ];
        let attempts = attempts(&pods, &ShardNumbering::Every);
        let one = &attempts[&1];
        assert_eq!(one.len(), 2);
        assert_eq!((one[0].attempt, one[0].pod.as_str()), (1, "aj-1-a"));
        assert_eq!(one[0].state, AttemptState::Failed);
        assert_eq!(one[0].exit_code, Some(3));
        assert_eq!(one[0].reason.as_deref(), Some("Error"));
        assert_eq!(one[0].duration(Timestamp::UNIX_EPOCH), Some(60));
        assert_eq!((one[1].attempt, one[1].state), (2, AttemptState::Running));
        assert_eq!(one[1].node.as_deref(), Some("cpu-1"));
        assert_eq!(
            attempts[&0][0].reason, None,
            "a success has no failure reason"
        );
    }

    #[test]
    fn pods_without_an_index_are_not_attempts() {
        let mut pod = test_pod("other", 0, 0, "Running", None, "cpu-0");
        pod.metadata.annotations = None;
        assert!(attempts(&[pod], &ShardNumbering::Every).is_empty());
    }

    #[test]
    fn a_selections_attempts_carry_the_fleets_indexes() {
        let numbering = ShardNumbering::Selected("3,7".parse().expect("valid"));
        let pods = vec![
            test_pod("aj-1-a", 1, 10, "Failed", Some(3), "cpu-0"),
            test_pod("aj-0-a", 0, 5, "Succeeded", Some(0), "cpu-0"),
            test_pod("aj-2-a", 2, 5, "Succeeded", Some(0), "cpu-0"),
        ];
        let attempts = attempts(&pods, &numbering);
        assert_eq!(attempts.keys().copied().collect::<Vec<_>>(), [3, 7]);
        assert_eq!(attempts[&7][0].index, 7);
    }
}
