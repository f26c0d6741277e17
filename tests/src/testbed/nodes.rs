//! The testbed's fake nodes: plain Node objects that kwok keeps Ready and whose pods kwok
//! moves through their lifecycle (see `tests/testbed/kwok-stages.yaml`).
//!
//! GPU nodes look to the scheduler exactly like nodes running the NVIDIA device plugin
//! and GPU Feature Discovery: `nvidia.com/gpu` capacity, the GFD labels, and the usual
//! `nvidia.com/gpu:NoSchedule` taint.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use super::TestbedError;

/// Label that selects the nodes kwok manages (`--manage-nodes-with-label-selector`).
pub const MANAGED_LABEL: (&str, &str) = ("type", "kwok");

/// Extended resource name of NVIDIA GPUs.
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";

/// A GPU model as GPU Feature Discovery describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuModel {
    /// `nvidia.com/gpu.product`, e.g. `NVIDIA-A100-SXM4-80GB`.
    pub product: &'static str,
    /// `nvidia.com/gpu.family`, e.g. `ampere`.
    pub family: &'static str,
    /// `nvidia.com/gpu.memory`, in MiB.
    pub memory_mib: u32,
    /// `nvidia.com/gpu.compute.major` and `.minor`.
    pub compute_capability: (u32, u32),
}

impl GpuModel {
    /// NVIDIA A100 80 GB (SXM4), compute capability 8.0.
    pub const A100_80GB: GpuModel = GpuModel {
        product: "NVIDIA-A100-SXM4-80GB",
        family: "ampere",
        memory_mib: 81920,
        compute_capability: (8, 0),
    };
    /// NVIDIA Tesla T4 (16 GB), compute capability 7.5.
    pub const T4: GpuModel = GpuModel {
        product: "Tesla-T4",
        family: "turing",
        memory_mib: 15360,
        compute_capability: (7, 5),
    };
}

/// One fake node of the testbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeNode {
    /// Node name.
    pub name: String,
    /// CPU capacity in cores.
    pub cpus: u32,
    /// Memory capacity in GiB.
    pub memory_gib: u32,
    /// Pod capacity.
    pub pods: u32,
    /// GPUs on the node: model and count.
    pub gpus: Option<(GpuModel, u32)>,
}

impl FakeNode {
    /// A CPU-only worker node.
    pub fn cpu(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            cpus: 64,
            memory_gib: 256,
            pods: 250,
            gpus: None,
        }
    }

    /// A GPU node with `count` GPUs of `model`.
    pub fn gpu(name: impl Into<String>, model: GpuModel, count: u32) -> Self {
        Self {
            gpus: Some((model, count)),
            ..Self::cpu(name)
        }
    }

    /// The default topology: four CPU nodes, one 8×A100-80GB node and one 4×T4 node.
    pub fn default_set() -> Vec<Self> {
        let mut nodes: Vec<Self> = (0..4).map(|i| Self::cpu(format!("cpu-{i}"))).collect();
        nodes.push(Self::gpu("gpu-a100-0", GpuModel::A100_80GB, 8));
        nodes.push(Self::gpu("gpu-t4-0", GpuModel::T4, 4));
        nodes
    }

    /// The Node object for this fake node, status included.
    pub fn to_node(&self) -> Node {
        let mut labels = BTreeMap::from([
            (MANAGED_LABEL.0.to_owned(), MANAGED_LABEL.1.to_owned()),
            ("kubernetes.io/hostname".to_owned(), self.name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
        ]);
        let mut capacity = BTreeMap::from([
            ("cpu".to_owned(), Quantity(self.cpus.to_string())),
            (
                "memory".to_owned(),
                Quantity(format!("{}Gi", self.memory_gib)),
            ),
            ("pods".to_owned(), Quantity(self.pods.to_string())),
            ("ephemeral-storage".to_owned(), Quantity("1Ti".to_owned())),
        ]);
        let mut taints = Vec::new();
        if let Some((model, count)) = &self.gpus {
            let (major, minor) = model.compute_capability;
            labels.extend([
                ("nvidia.com/gpu.present".to_owned(), "true".to_owned()),
                (
                    "nvidia.com/gpu.product".to_owned(),
                    model.product.to_owned(),
                ),
                ("nvidia.com/gpu.family".to_owned(), model.family.to_owned()),
                (
                    "nvidia.com/gpu.memory".to_owned(),
                    model.memory_mib.to_string(),
                ),
                ("nvidia.com/gpu.count".to_owned(), count.to_string()),
                ("nvidia.com/gpu.compute.major".to_owned(), major.to_string()),
                ("nvidia.com/gpu.compute.minor".to_owned(), minor.to_string()),
            ]);
            capacity.insert(NVIDIA_GPU.to_owned(), Quantity(count.to_string()));
            taints.push(Taint {
                key: NVIDIA_GPU.to_owned(),
                effect: "NoSchedule".to_owned(),
                ..Taint::default()
            });
        }
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([(
                    "kwok.x-k8s.io/node".to_owned(),
                    "fake".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: (!taints.is_empty()).then_some(taints),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(capacity.clone()),
                capacity: Some(capacity),
                ..NodeStatus::default()
            }),
        }
    }
}

/// Creates the nodes (status included) through the API.
pub async fn create(client: &kube::Client, nodes: &[FakeNode]) -> Result<(), TestbedError> {
    let api: Api<Node> = Api::all(client.clone());
    for fake in nodes {
        let node = fake.to_node();
        api.create(&PostParams::default(), &node)
            .await
            .map_err(|source| TestbedError::Kube {
                what: format!("creating node {}", fake.name),
                source,
            })?;
        // Creation may drop status; set capacity explicitly so the scheduler sees it.
        let status = serde_json::json!({ "status": node.status });
        api.patch_status(&fake.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|source| TestbedError::Kube {
                what: format!("setting capacity of node {}", fake.name),
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_nodes_carry_feature_discovery_labels_capacity_and_taint() {
        let node = FakeNode::gpu("g", GpuModel::A100_80GB, 8).to_node();
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["nvidia.com/gpu.memory"], "81920");
        assert_eq!(labels["nvidia.com/gpu.compute.major"], "8");
        assert_eq!(labels["nvidia.com/gpu.count"], "8");
        let capacity = node.status.unwrap().capacity.unwrap();
        assert_eq!(capacity[NVIDIA_GPU].0, "8");
        let taints = node.spec.unwrap().taints.unwrap();
        assert_eq!(taints[0].key, NVIDIA_GPU);
        assert_eq!(taints[0].effect, "NoSchedule");
    }

    #[test]
    fn cpu_nodes_have_no_gpus_and_no_taints() {
        let node = FakeNode::cpu("c").to_node();
        assert!(
            !node
                .metadata
                .labels
                .unwrap()
                .contains_key("nvidia.com/gpu.product")
        );
        assert!(
            !node
                .status
                .unwrap()
                .capacity
                .unwrap()
                .contains_key(NVIDIA_GPU)
        );
        assert!(node.spec.unwrap().taints.is_none());
    }
}
