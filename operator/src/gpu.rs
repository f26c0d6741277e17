//! GPUs → device-plugin resources, node affinity, tolerations and runtime class.
//!
//! (Design sketch to be completed.) [`placement`] turns the optional `resources.gpu` of an
//! AnalysisJob and the operator's [`GpuConfig`] into a [`GpuPlacement`]; [`apply`] merges a
//! placement into the shard pod.

use std::collections::BTreeMap;

use hepbatch_crds::GpuRequest;
use k8s_openapi::api::core::v1::{EnvVar, NodeSelectorTerm, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::GpuConfig;

/// What a GPU request adds to a shard pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuPlacement {
    /// Extended resources for the container's limits, e.g. `nvidia.com/gpu: 1`.
    pub limits: BTreeMap<String, Quantity>,
    /// Required node-affinity terms (OR'ed; the expressions of one term are AND'ed); empty:
    /// no requirement.
    pub node_selector_terms: Vec<NodeSelectorTerm>,
    /// Tolerations of the GPU nodes' taints.
    pub tolerations: Vec<Toleration>,
    /// RuntimeClass the pod runs with.
    pub runtime_class_name: Option<String>,
    /// Environment variables of the container (e.g. `NVIDIA_VISIBLE_DEVICES=void` when the
    /// shard uses no NVIDIA GPU).
    pub env: Vec<EnvVar>,
}

/// Why a GPU request cannot be placed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GpuError {
    /// The request contradicts itself in a way the schema cannot see.
    #[error("{0}")]
    Contradiction(String),
}

/// The placement of `request` (absent: a CPU-only shard) under `config`.
pub fn placement(
    request: Option<&GpuRequest>,
    config: &GpuConfig,
) -> Result<GpuPlacement, GpuError> {
    let _ = (request, config);
    Ok(GpuPlacement::default())
}

/// Merges `placement` into the pod (its first container gets the limits and env); the
/// user's own affinity, tolerations and environment are kept.
pub fn apply(placement: GpuPlacement, pod: &mut PodSpec) {
    let _ = (placement, pod);
}
