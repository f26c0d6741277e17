//! GPU requests on the testbed's GPU nodes (`gpu-a100-0`: 8 × A100-SXM4-80GB, compute 8.0;
//! `gpu-t4-0`: 4 × Tesla-T4, 15360 MiB, compute 7.5; both tainted `nvidia.com/gpu`), with
//! the real scheduler placing the pods the Job controller created.

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::ExitCode;
use std::time::Duration;

use hepbatch_crds::{AnalysisJob, Phase};
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::{TestbedOptions, annotations};
use hepbatch_tests::wait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use common::{BoxError, Operator, create, event_reasons, eventually, pods_of, setup, wait_phase};

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::default(),
        vec![
            test(
                "min_memory_40gi_lands_on_the_a100_never_the_t4",
                min_memory_on_a100,
            ),
            test(
                "compute_capability_and_product_select_the_t4",
                capability_and_product_on_t4,
            ),
            test(
                "more_gpus_than_any_node_has_is_unschedulable_and_says_why",
                too_many_gpus,
            ),
            test(
                "cpu_only_shards_avoid_gpu_nodes_and_see_no_gpus",
                cpu_only_avoids_gpus,
            ),
            test(
                "contradictory_gpu_request_is_reported_without_a_job",
                contradiction_reported,
            ),
            test("bad_gpu_requests_are_rejected_at_admission", bad_requests),
        ],
    )
}

fn gpu_job(gpu: Value, shards: i32) -> Value {
    json!({
        "image": "docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
        "command": ["python", "train.py"],
        "shards": shards,
        "resources": {"gpu": gpu},
        "podMetadata": {"annotations": {annotations::RUN_DURATION: "300ms"}},
    })
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

async fn run_to_succeeded(
    operator: &Operator,
    api: &Api<AnalysisJob>,
    name: &str,
) -> Result<(), BoxError> {
    operator.explain(wait_phase(api, name, Phase::Succeeded, Duration::from_secs(90)).await)?;
    Ok(())
}

async fn min_memory_on_a100(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    create(
        &api,
        "big-memory",
        gpu_job(
            json!({"count": 1, "minMemory": "40Gi", "minComputeCapability": "8.0"}),
            12,
        ),
    )
    .await?;
    run_to_succeeded(&operator, &api, "big-memory").await?;
    let pods = pods_of(&ctx, "big-memory").await?;
    assert_eq!(pods.len(), 12);
    for pod in &pods {
        assert_eq!(node_of(pod), Some("gpu-a100-0"), "never the T4 node");
        let limits = pod.spec.as_ref().expect("spec").containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .expect("limits");
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
    }
    Ok(())
}

async fn capability_and_product_on_t4(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    create(
        &api,
        "inference",
        gpu_job(
            json!({"minComputeCapability": "7.5", "products": ["Tesla-T4"]}),
            3,
        ),
    )
    .await?;
    run_to_succeeded(&operator, &api, "inference").await?;
    for pod in pods_of(&ctx, "inference").await? {
        assert_eq!(node_of(&pod), Some("gpu-t4-0"));
    }
    Ok(())
}

async fn too_many_gpus(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    create(&api, "sixteen", gpu_job(json!({"count": 16}), 1)).await?;
    operator.explain(
        eventually(
            "the ShardsUnschedulable Event",
            Duration::from_secs(120),
            || async {
                Ok(event_reasons(&ctx, "sixteen")
                    .await?
                    .contains(&"ShardsUnschedulable".to_owned()))
            },
        )
        .await,
    )?;
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let all = events.list(&ListParams::default()).await?.items;
    let note = |reason: &str| {
        all.iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .and_then(|e| e.note.clone())
            .unwrap_or_default()
    };
    // The scheduler says why on the pod, and the AnalysisJob repeats it.
    assert!(
        note("FailedScheduling").contains("Insufficient nvidia.com/gpu"),
        "{}",
        note("FailedScheduling")
    );
    assert!(
        note("ShardsUnschedulable").contains("Insufficient nvidia.com/gpu"),
        "{}",
        note("ShardsUnschedulable")
    );
    let pods = pods_of(&ctx, "sixteen").await?;
    assert!(
        pods.iter().all(|p| node_of(p).is_none()),
        "no pod was bound"
    );
    // The AnalysisJob itself says the shard waits, and why: in its phase (PHASE of
    // `kubectl get aj`) and a condition quoting the scheduler (`-o wide`, `describe`).
    let waiting = operator.explain(
        wait::until(
            &api,
            "sixteen",
            "phase Unschedulable",
            Duration::from_secs(30),
            |aj: Option<&AnalysisJob>| {
                aj.and_then(|a| a.status.as_ref()).and_then(|s| s.phase)
                    == Some(Phase::Unschedulable)
            },
        )
        .await,
    )?;
    let status = waiting.status.ok_or("no status")?;
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ShardsUnschedulable")
        .ok_or("no ShardsUnschedulable condition")?;
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "Unschedulable")
    );
    assert!(
        condition.message.starts_with("1 shard waits for resources")
            && condition.message.contains("Insufficient nvidia.com/gpu"),
        "{}",
        condition.message
    );
    Ok(())
}

async fn cpu_only_avoids_gpus(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    create(
        &api,
        "cpu-only",
        json!({"image": "docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
            "script": "true", "shards": 12,
            "podMetadata": {"annotations": {annotations::RUN_DURATION: "200ms"}}}),
    )
    .await?;
    run_to_succeeded(&operator, &api, "cpu-only").await?;
    for pod in pods_of(&ctx, "cpu-only").await? {
        let node = node_of(&pod).unwrap_or_default();
        assert!(node.starts_with("cpu-"), "landed on {node}");
        let env = pod.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .unwrap_or_default();
        assert!(
            env.iter()
                .any(|e| e.name == "NVIDIA_VISIBLE_DEVICES" && e.value.as_deref() == Some("void"))
        );
    }
    Ok(())
}

async fn contradiction_reported(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    create(
        &api,
        "contradiction",
        gpu_job(json!({"minMemory": "40Gi", "products": ["Tesla-T4"]}), 1),
    )
    .await?;
    operator.explain(
        eventually(
            "the InvalidGpuRequest Event",
            Duration::from_secs(30),
            || async {
                Ok(event_reasons(&ctx, "contradiction")
                    .await?
                    .contains(&"InvalidGpuRequest".to_owned()))
            },
        )
        .await,
    )?;
    let status = api.get("contradiction").await?.status.expect("status");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .expect("Accepted condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "InvalidGpuRequest")
    );
    assert!(condition.message.contains("Tesla-T4 with 15360 MiB"));
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    assert!(jobs.get_opt("contradiction").await?.is_none());
    Ok(())
}

async fn bad_requests(ctx: TestContext) -> TestResult {
    common::install_crd(&ctx.client).await?;
    let api = common::untyped_api(&ctx);
    let cases = [
        (json!({"count": 0}), "spec.resources.gpu.count"),
        (json!({"vendor": "matrox"}), "spec.resources.gpu.vendor"),
        (json!({"minMemory": "-4Gi"}), "must be larger than zero"),
        (
            json!({"minMemory": "lots"}),
            "must be a quantity such as 40Gi",
        ),
        (
            json!({"minComputeCapability": "eight"}),
            "must be major.minor",
        ),
        (
            json!({"mig": "1g.10gb", "count": 2}),
            "a CUDA process uses only one",
        ),
        (json!({"mig": "big"}), "must be a MIG profile"),
        (
            json!({"mig": "1g.10gb", "shared": true}),
            "mig and shared exclude each other",
        ),
        (
            json!({"vendor": "amd", "minMemory": "16Gi"}),
            "only known for NVIDIA GPUs",
        ),
        (
            json!({"vendor": "nvidia", "intelDriver": "xe"}),
            "applies to vendor: intel only",
        ),
    ];
    let mut failures = Vec::new();
    for (index, (gpu, expected)) in cases.iter().enumerate() {
        let name = format!("bad-gpu-{index}");
        let object = common::untyped_analysis_job(&name, gpu_job(gpu.clone(), 1))?;
        match api.create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(status))
                if status.code == 422 && status.message.contains(expected) => {}
            other => failures.push(format!(
                "{gpu}: expected a 422 containing {expected:?}, got {:?}",
                other.map(|_| "created")
            )),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}
