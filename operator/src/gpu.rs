//! GPUs → device-plugin resources, node affinity, tolerations and runtime class.
//!
//! [`placement`] turns the optional `resources.gpu` of an AnalysisJob and the operator's
//! [`GpuConfig`] into a [`GpuPlacement`]; [`apply`] merges a placement into the shard pod.
//!
//! | request | pod |
//! |---|---|
//! | `count: n` (NVIDIA) | limit `nvidia.com/gpu: n` |
//! | `mig: 1g.10gb` | limit `nvidia.com/mig-1g.10gb: 1` (mixed strategy) |
//! | `shared: true` | limit `nvidia.com/gpu.shared: n` (time-slicing with renamed resources) |
//! | `vendor: amd` / `intel` | `amd.com/gpu` / `gpu.intel.com/i915` (or `xe`) |
//! | `minMemory: 40Gi` | required `nvidia.com/gpu.memory` Gt 40959 (MiB, GPU Feature Discovery) |
//! | `minComputeCapability: "8.6"` | `nvidia.com/gpu.compute.major` Gt 8, or = 8 with `.minor` Gt 5 |
//! | `products: [...]` | `nvidia.com/gpu.product` In [...] |
//! | any GPU | toleration of the vendor taint (key = the resource, `Exists`, `NoSchedule`) |
//! | NVIDIA GPU | `runtimeClassName` from the configuration, if set |
//! | no NVIDIA GPU | `NVIDIA_VISIBLE_DEVICES=void`, so an NVIDIA image cannot see the node's GPUs |
//!
//! Required node-affinity terms are OR'ed by Kubernetes and their expressions AND'ed, so
//! "compute capability ≥ 8.6" needs two terms, and merging with the user's own terms is a
//! cross product (every user term AND every GPU term).
//!
//! What the schema cannot see but is knowable is an error: `products` whose memory is all
//! known (from the GFD name, e.g. `…-80GB`, or a small table) and below `minMemory`.

use std::collections::BTreeMap;

use hepbatch_crds::{GpuRequest, GpuVendor, IntelDriver};
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PodSpec, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::config::GpuConfig;
use crate::k8s::{SelectorOperator, TaintEffect, TolerationOperator};

/// Variable that tells the NVIDIA container runtime which GPUs a container sees.
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// GPU Feature Discovery label: memory per GPU in MiB.
pub const GFD_MEMORY: &str = "nvidia.com/gpu.memory";
/// GPU Feature Discovery label: CUDA compute capability, major part.
pub const GFD_COMPUTE_MAJOR: &str = "nvidia.com/gpu.compute.major";
/// GPU Feature Discovery label: CUDA compute capability, minor part.
pub const GFD_COMPUTE_MINOR: &str = "nvidia.com/gpu.compute.minor";
/// GPU Feature Discovery label: the product name.
pub const GFD_PRODUCT: &str = "nvidia.com/gpu.product";

/// Memory (MiB, as GFD reports it) of products whose GFD name does not carry their size.
const KNOWN_PRODUCT_MEMORY: &[(&str, u64)] = &[
    ("Tesla-T4", 15_360),
    ("NVIDIA-L4", 23_034),
    ("NVIDIA-A10", 23_028),
    ("NVIDIA-A30", 24_576),
    ("NVIDIA-L40S", 46_068),
    ("NVIDIA-L40", 46_068),
];

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
    let Some(request) = request else {
        return Ok(GpuPlacement {
            env: vec![no_nvidia_devices()],
            ..GpuPlacement::default()
        });
    };
    let count = if request.mig.is_some() {
        1
    } else {
        request.count
    };
    let resource = resource_name(request);
    let taint_key = match request.vendor {
        GpuVendor::Nvidia => "nvidia.com/gpu".to_owned(),
        _ => resource.clone(),
    };
    let mut placement = GpuPlacement {
        limits: BTreeMap::from([(resource, Quantity(count.to_string()))]),
        tolerations: vec![Toleration {
            key: Some(taint_key),
            operator: Some(TolerationOperator::Exists.into()),
            effect: Some(TaintEffect::NoSchedule.into()),
            ..Toleration::default()
        }],
        ..GpuPlacement::default()
    };
    if request.vendor != GpuVendor::Nvidia {
        placement.env.push(no_nvidia_devices());
        return Ok(placement);
    }
    placement.runtime_class_name = config.nvidia_runtime_class_name.clone();
    placement.node_selector_terms = nvidia_node_selector_terms(request)?;
    Ok(placement)
}

/// The node-selector terms placing an NVIDIA shard on a node whose GPUs (as GPU feature
/// discovery labels them) have the memory, product and compute capability asked for.
fn nvidia_node_selector_terms(request: &GpuRequest) -> Result<Vec<NodeSelectorTerm>, GpuError> {
    let mut common = Vec::new();
    if let Some(min_memory) = &request.min_memory {
        let mib = quantity_mib(min_memory).ok_or_else(|| {
            GpuError::Contradiction(format!(
                "spec.resources.gpu.minMemory {min_memory:?} is not a quantity such as 40Gi"
            ))
        })?;
        if let Some(too_small) = all_too_small(request.products.as_deref(), mib) {
            return Err(GpuError::Contradiction(format!(
                "spec.resources.gpu.products lists only GPUs with less memory than minMemory \
                 {min_memory} ({mib} MiB): {too_small}; no GPU can satisfy both, so list a \
                 larger product or lower minMemory"
            )));
        }
        common.push(requirement(
            GFD_MEMORY,
            SelectorOperator::Gt,
            &[(mib - 1).to_string()],
        ));
    }
    if let Some(products) = request.products.as_ref().filter(|p| !p.is_empty()) {
        common.push(requirement(GFD_PRODUCT, SelectorOperator::In, products));
    }
    let mut terms = vec![common.clone()];
    if let Some(capability) = &request.min_compute_capability {
        let (major, minor) = parse_capability(capability).ok_or_else(|| {
            GpuError::Contradiction(format!(
                "spec.resources.gpu.minComputeCapability {capability:?} is not major.minor"
            ))
        })?;
        terms = if minor == 0 {
            vec![with(
                &common,
                requirement(
                    GFD_COMPUTE_MAJOR,
                    SelectorOperator::Gt,
                    &[(major - 1).to_string()],
                ),
            )]
        } else {
            vec![
                with(
                    &common,
                    requirement(
                        GFD_COMPUTE_MAJOR,
                        SelectorOperator::Gt,
                        &[major.to_string()],
                    ),
                ),
                with(
                    &with(
                        &common,
                        requirement(
                            GFD_COMPUTE_MAJOR,
                            SelectorOperator::In,
                            &[major.to_string()],
                        ),
                    ),
                    requirement(
                        GFD_COMPUTE_MINOR,
                        SelectorOperator::Gt,
                        &[(minor - 1).to_string()],
                    ),
                ),
            ]
        };
    }
    Ok(terms
        .into_iter()
        .filter(|expressions| !expressions.is_empty())
        .map(|expressions| NodeSelectorTerm {
            match_expressions: Some(expressions),
            match_fields: None,
        })
        .collect())
}

/// `"A with n MiB, B with m MiB"` when every listed product is known to have less than
/// `mib` MiB; `None` when one of them may be large enough (or its memory is unknown).
fn all_too_small(products: Option<&[String]>, mib: u64) -> Option<String> {
    let products = products.filter(|p| !p.is_empty())?;
    let known = products
        .iter()
        .map(|product| {
            product_memory_mib(product)
                .filter(|known| *known < mib)
                .map(|known| format!("{product} with {known} MiB"))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(known.join(", "))
}

fn no_nvidia_devices() -> EnvVar {
    EnvVar {
        name: NVIDIA_VISIBLE_DEVICES.to_owned(),
        value: Some("void".to_owned()),
        value_from: None,
    }
}

/// The device-plugin resource a request asks for.
pub fn resource_name(request: &GpuRequest) -> String {
    match request.vendor {
        GpuVendor::Nvidia => match (&request.mig, request.shared) {
            (Some(profile), _) => format!("nvidia.com/mig-{profile}"),
            (None, Some(true)) => "nvidia.com/gpu.shared".to_owned(),
            _ => "nvidia.com/gpu".to_owned(),
        },
        GpuVendor::Amd => "amd.com/gpu".to_owned(),
        GpuVendor::Intel => match request.intel_driver.unwrap_or_default() {
            IntelDriver::I915 => "gpu.intel.com/i915".to_owned(),
            IntelDriver::Xe => "gpu.intel.com/xe".to_owned(),
        },
    }
}

fn requirement(
    key: &str,
    operator: SelectorOperator,
    values: &[String],
) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_owned(),
        operator: operator.into(),
        values: Some(values.to_vec()),
    }
}

fn with(
    expressions: &[NodeSelectorRequirement],
    extra: NodeSelectorRequirement,
) -> Vec<NodeSelectorRequirement> {
    let mut all = expressions.to_vec();
    all.push(extra);
    all
}

fn parse_capability(text: &str) -> Option<(i64, i64)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A Kubernetes quantity (`40Gi`, `40G`, `42949672960`, `0.5Ti`) in MiB, rounded up.
pub fn quantity_mib(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        _ => return None,
    };
    let mib = (number * factor / (1024.0 * 1024.0)).ceil();
    (1.0..1e15).contains(&mib).then_some(mib as u64)
}

/// Memory of a GFD product name in MiB when it is known: from a `-<N>GB` part of the name
/// (`NVIDIA-A100-SXM4-80GB`, `NVIDIA-H100-80GB-HBM3`), taken as N × 1024 MiB — what GFD
/// reports for the A100 and at least what it reports for others (81559 for the H100), so
/// the contradiction check never refuses a request a node could satisfy — or from a table
/// of models whose names carry no size.
pub fn product_memory_mib(product: &str) -> Option<u64> {
    let from_name = product.split('-').find_map(|part| {
        part.strip_suffix("GB")
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .map(|gb| gb * 1024)
    });
    from_name.or_else(|| {
        KNOWN_PRODUCT_MEMORY
            .iter()
            .find(|(name, _)| *name == product)
            .map(|(_, mib)| *mib)
    })
}

/// Merges `placement` into the pod (its first container gets the limits and env); the
/// user's own affinity, tolerations and environment are kept (a variable the user set
/// wins over ours).
pub fn apply(placement: GpuPlacement, pod: &mut PodSpec) {
    if let Some(container) = pod.containers.first_mut() {
        if !placement.limits.is_empty() {
            let resources = container
                .resources
                .get_or_insert_with(ResourceRequirements::default);
            resources
                .limits
                .get_or_insert_with(BTreeMap::new)
                .extend(placement.limits);
        }
        let env = container.env.get_or_insert_with(Vec::new);
        for variable in placement.env {
            if env.iter().all(|e| e.name != variable.name) {
                env.push(variable);
            }
        }
        if env.is_empty() {
            container.env = None;
        }
    }
    if !placement.tolerations.is_empty() {
        let tolerations = pod.tolerations.get_or_insert_with(Vec::new);
        for toleration in placement.tolerations {
            if !tolerations.contains(&toleration) {
                tolerations.push(toleration);
            }
        }
    }
    if pod.runtime_class_name.is_none() {
        pod.runtime_class_name = placement.runtime_class_name;
    }
    if placement.node_selector_terms.is_empty() {
        return;
    }
    let affinity = pod.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    let user_terms = node_affinity
        .required_during_scheduling_ignored_during_execution
        .take()
        .map(|s| s.node_selector_terms)
        .filter(|t| !t.is_empty());
    let terms = match user_terms {
        None => placement.node_selector_terms,
        Some(user_terms) => user_terms
            .iter()
            .flat_map(|user| {
                placement.node_selector_terms.iter().map(move |gpu| {
                    let mut expressions = user.match_expressions.clone().unwrap_or_default();
                    expressions.extend(gpu.match_expressions.clone().unwrap_or_default());
                    NodeSelectorTerm {
                        match_expressions: Some(expressions),
                        match_fields: user.match_fields.clone(),
                    }
                })
            })
            .collect(),
    };
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: terms,
    });
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Container;
    use serde_json::json;

    use super::*;

    fn gpu(value: serde_json::Value) -> GpuRequest {
        serde_json::from_value(value).expect("valid request")
    }

    fn expressions(term: &NodeSelectorTerm) -> Vec<(String, String, Vec<String>)> {
        term.match_expressions
            .iter()
            .flatten()
            .map(|e| {
                (
                    e.key.clone(),
                    e.operator.clone(),
                    e.values.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn cpu_only_shards_cannot_see_nvidia_gpus() {
        let placement = placement(None, &GpuConfig::default()).expect("places");
        assert!(placement.limits.is_empty() && placement.tolerations.is_empty());
        assert_eq!(placement.env[0].name, NVIDIA_VISIBLE_DEVICES);
        assert_eq!(placement.env[0].value.as_deref(), Some("void"));
    }

    #[test]
    fn resources_follow_vendor_mig_and_sharing() {
        for (request, resource, count) in [
            (json!({"count": 2}), "nvidia.com/gpu", "2"),
            (json!({"mig": "1g.10gb"}), "nvidia.com/mig-1g.10gb", "1"),
            (
                json!({"count": 3, "shared": true}),
                "nvidia.com/gpu.shared",
                "3",
            ),
            (json!({"vendor": "amd"}), "amd.com/gpu", "1"),
            (json!({"vendor": "intel"}), "gpu.intel.com/i915", "1"),
            (
                json!({"vendor": "intel", "intelDriver": "xe"}),
                "gpu.intel.com/xe",
                "1",
            ),
        ] {
            let placement = placement(Some(&gpu(request)), &GpuConfig::default()).expect("ok");
            assert_eq!(placement.limits[resource], Quantity(count.to_owned()));
            assert_eq!(placement.tolerations.len(), 1);
        }
        let amd =
            placement(Some(&gpu(json!({"vendor": "amd"}))), &GpuConfig::default()).expect("ok");
        assert_eq!(amd.tolerations[0].key.as_deref(), Some("amd.com/gpu"));
        assert_eq!(amd.env[0].name, NVIDIA_VISIBLE_DEVICES);
        let mig =
            placement(Some(&gpu(json!({"mig": "3g.40gb"}))), &GpuConfig::default()).expect("ok");
        assert_eq!(mig.tolerations[0].key.as_deref(), Some("nvidia.com/gpu"));
        assert!(mig.env.is_empty());
    }

    #[test]
    fn memory_and_capability_become_feature_discovery_affinity() {
        let config = GpuConfig {
            nvidia_runtime_class_name: Some("nvidia".to_owned()),
        };
        let placement = placement(
            Some(&gpu(
                json!({"minMemory": "40Gi", "minComputeCapability": "8.0"}),
            )),
            &config,
        )
        .expect("ok");
        assert_eq!(placement.runtime_class_name.as_deref(), Some("nvidia"));
        assert_eq!(placement.node_selector_terms.len(), 1);
        assert_eq!(
            expressions(&placement.node_selector_terms[0]),
            vec![
                (GFD_MEMORY.to_owned(), "Gt".to_owned(), strings(&["40959"])),
                (
                    GFD_COMPUTE_MAJOR.to_owned(),
                    "Gt".to_owned(),
                    strings(&["7"])
                ),
            ]
        );

        let placement = super::placement(
            Some(&gpu(
                json!({"minComputeCapability": "8.6", "products": ["NVIDIA-A40"]}),
            )),
            &GpuConfig::default(),
        )
        .expect("ok");
        let terms: Vec<_> = placement
            .node_selector_terms
            .iter()
            .map(expressions)
            .collect();
        let product = (
            GFD_PRODUCT.to_owned(),
            "In".to_owned(),
            strings(&["NVIDIA-A40"]),
        );
        assert_eq!(
            terms,
            vec![
                vec![
                    product.clone(),
                    (
                        GFD_COMPUTE_MAJOR.to_owned(),
                        "Gt".to_owned(),
                        strings(&["8"])
                    )
                ],
                vec![
                    product,
                    (
                        GFD_COMPUTE_MAJOR.to_owned(),
                        "In".to_owned(),
                        strings(&["8"])
                    ),
                    (
                        GFD_COMPUTE_MINOR.to_owned(),
                        "Gt".to_owned(),
                        strings(&["5"])
                    ),
                ],
            ]
        );
    }

    #[test]
    fn products_that_contradict_min_memory_are_errors() {
        let error = placement(
            Some(&gpu(json!({"minMemory": "40Gi", "products": ["Tesla-T4"]}))),
            &GpuConfig::default(),
        )
        .expect_err("T4 has 16 GB");
        assert!(
            error.to_string().contains("Tesla-T4 with 15360 MiB"),
            "{error}"
        );
        let error = placement(
            Some(&gpu(json!({"minMemory": "40Gi",
                "products": ["Tesla-T4", "Tesla-V100-SXM2-16GB"]}))),
            &GpuConfig::default(),
        )
        .expect_err("neither has 40 GiB");
        assert!(
            error
                .to_string()
                .contains("Tesla-T4 with 15360 MiB, Tesla-V100-SXM2-16GB with 16384 MiB"),
            "{error}"
        );
        // One product that may be large enough (known or not) keeps the request satisfiable.
        for products in [
            json!(["Tesla-T4", "NVIDIA-A100-SXM4-80GB"]),
            json!(["Tesla-T4", "NVIDIA-A40"]),
        ] {
            assert!(
                placement(
                    Some(&gpu(json!({"minMemory": "40Gi", "products": products}))),
                    &GpuConfig::default(),
                )
                .is_ok(),
                "{products}"
            );
        }
        assert!(
            placement(
                Some(&gpu(
                    json!({"minMemory": "40Gi", "products": ["NVIDIA-A100-SXM4-80GB"]})
                )),
                &GpuConfig::default(),
            )
            .is_ok()
        );
        assert_eq!(product_memory_mib("NVIDIA-H100-80GB-HBM3"), Some(81_920));
        assert_eq!(product_memory_mib("NVIDIA-A40"), None);
    }

    #[test]
    fn quantities_convert_to_mib() {
        assert_eq!(quantity_mib("40Gi"), Some(40_960));
        assert_eq!(quantity_mib("40G"), Some(38_147));
        assert_eq!(quantity_mib("1.5Ti"), Some(1_572_864));
        assert_eq!(quantity_mib("1048576"), Some(1));
        assert_eq!(quantity_mib("40 Gi"), None);
        assert_eq!(quantity_mib("Gi"), None);
    }

    #[test]
    fn apply_merges_with_the_users_pod() {
        let mut pod = PodSpec {
            containers: vec![Container {
                name: "shard".to_owned(),
                env: Some(vec![EnvVar {
                    name: NVIDIA_VISIBLE_DEVICES.to_owned(),
                    value: Some("all".to_owned()),
                    value_from: None,
                }]),
                ..Container::default()
            }],
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![
                            NodeSelectorTerm {
                                match_expressions: Some(vec![requirement(
                                    "zone",
                                    SelectorOperator::In,
                                    &strings(&["a"]),
                                )]),
                                match_fields: None,
                            },
                            NodeSelectorTerm {
                                match_expressions: Some(vec![requirement(
                                    "zone",
                                    SelectorOperator::In,
                                    &strings(&["b"]),
                                )]),
                                match_fields: None,
                            },
                        ],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
            ..PodSpec::default()
        };
        // A CPU-only placement keeps the user's NVIDIA_VISIBLE_DEVICES.
        let cpu_only = {
            let mut copy = pod.clone();
            apply(
                placement(None, &GpuConfig::default()).expect("ok"),
                &mut copy,
            );
            copy
        };
        let env = cpu_only.containers[0].env.clone().expect("env");
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].value.as_deref(), Some("all"));

        let request = gpu(json!({"minComputeCapability": "8.6"}));
        apply(
            placement(Some(&request), &GpuConfig::default()).expect("ok"),
            &mut pod,
        );
        let terms = pod
            .affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.required_during_scheduling_ignored_during_execution)
            .expect("required affinity")
            .node_selector_terms;
        assert_eq!(terms.len(), 4, "2 user terms × 2 GPU terms");
        assert!(terms.iter().all(|t| {
            t.match_expressions
                .as_ref()
                .is_some_and(|e| e[0].key == "zone")
        }));
        let limits = pod.containers[0]
            .resources
            .clone()
            .and_then(|r| r.limits)
            .expect("limits");
        assert_eq!(limits["nvidia.com/gpu"], Quantity("1".to_owned()));
        assert_eq!(pod.tolerations.map(|t| t.len()), Some(1));
    }
}
