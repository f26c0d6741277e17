//! Whether a pod the scheduler cannot place now could run on some node once that node is
//! empty.
//!
//! The scheduler's `Unschedulable` reads the same for "every node is busy" and "no node is
//! big enough" (`Insufficient memory` either way). Only the second deserves the
//! `ShardsUnschedulable` condition and a Warning; the first is a fleet waiting its turn,
//! like idle jobs in an HTCondor queue. [`could_ever_fit`] tells them apart from the
//! nodes' allocatable resources: some node the pod may use (not cordoned, labels matching
//! its node selector and required node affinity, every `NoSchedule`/`NoExecute` taint
//! tolerated) whose allocatable covers each resource the pod requests.
//!
//! When in doubt (a quantity it cannot read, an affinity operator it does not know) the
//! answer is "could fit": a waiting fleet wrongly called unschedulable would alarm its
//! owner for nothing, while one wrongly called waiting is still seen waiting in its counts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// What of a node decides whether a pod could ever run there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeRoom {
    /// The node's name (`metadata.name`, which node affinity's `matchFields` can select).
    pub name: String,
    /// The node's labels.
    pub labels: BTreeMap<String, String>,
    /// Taints that keep pods off (`NoSchedule`, `NoExecute`).
    pub taints: Vec<Taint>,
    /// Cordoned (`spec.unschedulable`).
    pub cordoned: bool,
    /// Allocatable amount of each resource; unreadable quantities are left out.
    pub allocatable: BTreeMap<String, f64>,
}

impl NodeRoom {
    /// The room of `node`.
    pub fn of(node: &Node) -> NodeRoom {
        let spec = node.spec.as_ref();
        NodeRoom {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .collect(),
            cordoned: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: node
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .map(amounts)
                .unwrap_or_default(),
        }
    }
}

/// What a pod asks of a node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodNeeds {
    /// Requested amount of each resource (containers summed, the largest init container
    /// if larger, the pod overhead added), one pod slot included.
    pub requests: BTreeMap<String, f64>,
    /// `spec.nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Required node-affinity terms (any one must match); `None`: no requirement.
    pub affinity: Option<Vec<NodeSelectorTerm>>,
    /// The pod's tolerations.
    pub tolerations: Vec<Toleration>,
}

impl PodNeeds {
    /// What `pod` needs.
    pub fn of(pod: &Pod) -> PodNeeds {
        let Some(spec) = &pod.spec else {
            return PodNeeds::default();
        };
        let mut requests = BTreeMap::from([("pods".to_owned(), 1.0)]);
        for container in &spec.containers {
            for (resource, amount) in container_requests(container.resources.as_ref()) {
                *requests.entry(resource).or_default() += amount;
            }
        }
        for container in spec.init_containers.iter().flatten() {
            for (resource, amount) in container_requests(container.resources.as_ref()) {
                let total = requests.entry(resource).or_default();
                *total = total.max(amount);
            }
        }
        for (resource, amount) in spec.overhead.as_ref().map(amounts).unwrap_or_default() {
            *requests.entry(resource).or_default() += amount;
        }
        PodNeeds {
            requests,
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            affinity: spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|r| r.node_selector_terms.clone()),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
        }
    }
}

/// Whether `pod` could run on one of `nodes` once that node is empty.
pub fn could_ever_fit(pod: &PodNeeds, nodes: &[NodeRoom]) -> bool {
    nodes
        .iter()
        .any(|node| may_use(pod, node) && has_room(pod, node))
}

/// Whether the scheduler may put `pod` on `node` at all, whatever runs there.
fn may_use(pod: &PodNeeds, node: &NodeRoom) -> bool {
    !node.cordoned
        && pod
            .node_selector
            .iter()
            .all(|(key, value)| node.labels.get(key) == Some(value))
        && pod
            .affinity
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|term| term_matches(term, node)))
        && node
            .taints
            .iter()
            .all(|taint| pod.tolerations.iter().any(|t| tolerates(t, taint)))
}

/// Whether the empty `node` holds every resource `pod` requests (a resource the node does
/// not list counts as none).
fn has_room(pod: &PodNeeds, node: &NodeRoom) -> bool {
    pod.requests
        .iter()
        .filter(|(_, amount)| **amount > 0.0)
        .all(|(resource, amount)| node.allocatable.get(resource).is_some_and(|a| a >= amount))
}

/// A node-selector term: every expression matches; a term without any selects nothing.
fn term_matches(term: &NodeSelectorTerm, node: &NodeRoom) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|e| requirement_matches(e, node.labels.get(&e.key).map(String::as_str)))
        && fields
            .iter()
            .all(|e| e.key != "metadata.name" || requirement_matches(e, Some(node.name.as_str())))
}

/// One requirement against the node's value of its key (`None`: the label is absent).
fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let compare = |wanted: fn(i64, i64) -> bool| {
        let bound = values.first().and_then(|v| v.parse::<i64>().ok());
        match (value.and_then(|v| v.parse::<i64>().ok()), bound) {
            (Some(value), Some(bound)) => wanted(value, bound),
            _ => false,
        }
    };
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|w| w == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|w| w != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(|value, bound| value > bound),
        "Lt" => compare(|value, bound| value < bound),
        _ => true,
    }
}

/// Whether `toleration` lets a pod onto a node with `taint`.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    match toleration.operator.as_deref() {
        Some("Exists") => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    }
}

/// A container's requests, its limits standing in for requests it leaves out (what the
/// apiserver defaults them to).
fn container_requests(
    resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
) -> BTreeMap<String, f64> {
    let Some(resources) = resources else {
        return BTreeMap::new();
    };
    let mut requests = resources.limits.as_ref().map(amounts).unwrap_or_default();
    requests.extend(resources.requests.as_ref().map(amounts).unwrap_or_default());
    requests
}

/// The readable quantities of a resource list.
fn amounts(list: &BTreeMap<String, Quantity>) -> BTreeMap<String, f64> {
    list.iter()
        .filter_map(|(resource, quantity)| Some((resource.clone(), amount(&quantity.0)?)))
        .collect()
}

/// The value of a Kubernetes quantity (`"500m"`, `"2Gi"`, `"1e3"`, `"16"`), or `None` when
/// it is not one.
pub fn amount(quantity: &str) -> Option<f64> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let exponent = exponent.strip_prefix(['e', 'E'])?;
            10f64.powi(exponent.parse().ok()?)
        }
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(yaml: &str) -> NodeRoom {
        NodeRoom::of(&serde_yaml::from_str::<Node>(yaml).expect("node yaml"))
    }

    fn pod(yaml: &str) -> PodNeeds {
        PodNeeds::of(&serde_yaml::from_str::<Pod>(yaml).expect("pod yaml"))
    }

    const CPU_NODE: &str = "
metadata: {name: cpu-0, labels: {kubernetes.io/os: linux}}
status: {allocatable: {cpu: '64', memory: 256Gi, pods: '250'}}
";

    const GPU_NODE: &str = "
metadata: {name: gpu-0, labels: {nvidia.com/gpu.product: A100, nvidia.com/gpu.memory: '81920'}}
spec: {taints: [{key: nvidia.com/gpu, effect: NoSchedule}]}
status: {allocatable: {cpu: '64', memory: 256Gi, pods: '250', nvidia.com/gpu: '8'}}
";

    fn shard(resources: &str, extra: &str) -> PodNeeds {
        pod(&format!(
            "spec: {{containers: [{{name: shard, resources: {resources}}}]{extra}}}"
        ))
    }

    #[test]
    fn quantities_read_like_kubernetes_reads_them() {
        assert_eq!(amount("500m"), Some(0.5));
        assert_eq!(amount("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(amount("1500M"), Some(1.5e9));
        assert_eq!(amount("1e3"), Some(1000.0));
        assert_eq!(amount("16"), Some(16.0));
        assert_eq!(amount("0.5Ki"), Some(512.0));
        assert_eq!(amount("lots"), None);
        assert_eq!(amount("3Xi"), None);
    }

    #[test]
    fn a_pod_a_busy_node_could_hold_when_empty_could_fit() {
        let nodes = [node(CPU_NODE)];
        assert!(could_ever_fit(
            &shard("{requests: {cpu: '40', memory: 100Gi}}", ""),
            &nodes
        ));
    }

    #[test]
    fn more_memory_than_any_node_has_never_fits() {
        let nodes = [node(CPU_NODE), node(GPU_NODE)];
        assert!(!could_ever_fit(
            &shard("{requests: {memory: 100Ti}}", ""),
            &nodes
        ));
    }

    #[test]
    fn gpus_count_only_on_nodes_the_pod_tolerates() {
        let nodes = [node(CPU_NODE), node(GPU_NODE)];
        let tolerating = ", tolerations: [{key: nvidia.com/gpu, operator: Exists}]";
        assert!(could_ever_fit(
            &shard("{limits: {nvidia.com/gpu: '8'}}", tolerating),
            &nodes
        ));
        assert!(!could_ever_fit(
            &shard("{limits: {nvidia.com/gpu: '16'}}", tolerating),
            &nodes
        ));
        assert!(!could_ever_fit(
            &shard("{limits: {nvidia.com/gpu: '1'}}", ""),
            &nodes
        ));
    }

    #[test]
    fn node_affinity_and_selector_narrow_the_nodes() {
        let nodes = [node(CPU_NODE), node(GPU_NODE)];
        let tolerating = "tolerations: [{key: nvidia.com/gpu, operator: Exists}]";
        let affinity = |expression: &str| {
            shard(
                "{limits: {nvidia.com/gpu: '1'}}",
                &format!(
                    ", {tolerating}, affinity: {{nodeAffinity: \
                     {{requiredDuringSchedulingIgnoredDuringExecution: \
                     {{nodeSelectorTerms: [{{matchExpressions: [{expression}]}}]}}}}}}"
                ),
            )
        };
        assert!(could_ever_fit(
            &affinity("{key: nvidia.com/gpu.memory, operator: Gt, values: ['40000']}"),
            &nodes
        ));
        assert!(!could_ever_fit(
            &affinity("{key: nvidia.com/gpu.memory, operator: Gt, values: ['90000']}"),
            &nodes
        ));
        assert!(!could_ever_fit(
            &affinity("{key: nvidia.com/gpu.product, operator: In, values: [H100]}"),
            &nodes
        ));
        assert!(!could_ever_fit(
            &shard(
                "{requests: {cpu: '1'}}",
                ", nodeSelector: {kubernetes.io/os: windows}"
            ),
            &nodes
        ));
    }

    #[test]
    fn cordoned_nodes_hold_nothing() {
        let mut cordoned = node(CPU_NODE);
        cordoned.cordoned = true;
        assert!(!could_ever_fit(
            &shard("{requests: {cpu: '1'}}", ""),
            &[cordoned]
        ));
    }

    #[test]
    fn init_containers_and_overhead_count() {
        let nodes = [node(CPU_NODE)];
        let needs = pod("
spec:
  containers: [{name: a, resources: {requests: {cpu: '10'}}}, {name: b, resources: {requests: {cpu: '10'}}}]
  initContainers: [{name: stage-in, resources: {requests: {cpu: '30'}}}]
  overhead: {cpu: '40'}
");
        assert_eq!(needs.requests["cpu"], 70.0);
        assert_eq!(needs.requests["pods"], 1.0);
        assert!(!could_ever_fit(&needs, &nodes));
    }

    #[test]
    fn tolerations_match_by_key_value_and_effect() {
        let taint = Taint {
            key: "dedicated".to_owned(),
            value: Some("cms".to_owned()),
            effect: "NoSchedule".to_owned(),
            ..Taint::default()
        };
        let toleration = |yaml: &str| serde_yaml::from_str::<Toleration>(yaml).expect("yaml");
        assert!(tolerates(
            &toleration("{key: dedicated, value: cms}"),
            &taint
        ));
        assert!(!tolerates(
            &toleration("{key: dedicated, value: atlas}"),
            &taint
        ));
        assert!(tolerates(&toleration("{operator: Exists}"), &taint));
        assert!(!tolerates(
            &toleration("{key: dedicated, operator: Exists, effect: NoExecute}"),
            &taint
        ));
    }
}
