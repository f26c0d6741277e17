//! Smoke tests that prove the testbed is a real, working cluster: the apiserver serves
//! CRDs, the scheduler binds, the Job controller runs Indexed Jobs to completion on kwok
//! nodes, GPU capacity and taints work, kwok scripts exit codes, and the built kubectl
//! talks to it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::{Failure, Failures, TestbedOptions, annotations};
use hepbatch_tests::wait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::conditions;
use serde_json::json;

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::default(),
        vec![
            test(
                "crd_becomes_established_and_objects_round_trip",
                crd_round_trip,
            ),
            test(
                "indexed_job_of_20_completes_on_kwok_nodes",
                indexed_job_completes,
            ),
            test("gpu_pod_binds_only_to_gpu_nodes", gpu_pod_binds_to_gpu_node),
            test(
                "pod_scripted_to_fail_reports_its_exit_code",
                failing_pod_exit_code,
            ),
            test(
                "shards_scripted_to_fail_fail_as_the_rules_say",
                scripted_shard_outcomes,
            ),
            test("built_kubectl_gets_nodes", kubectl_gets_nodes),
        ],
    )
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.hepbatch.io
spec:
  group: smoke.hepbatch.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              shards: {type: integer, minimum: 1}
              repositories: {type: array, items: {type: string}}
"#;

async fn crd_round_trip(ctx: TestContext) -> TestResult {
    let crd: CustomResourceDefinition = serde_yaml::from_str(WIDGET_CRD)?;
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    crds.patch(
        "widgets.smoke.hepbatch.io",
        &PatchParams::apply("hepbatch-smoke").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait::until(
        &crds,
        "widgets.smoke.hepbatch.io",
        "Established",
        Duration::from_secs(30),
        conditions::is_crd_established(),
    )
    .await?;

    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("smoke.hepbatch.io", "v1", "Widget"));
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource);
    let spec = json!({"shards": 7, "repositories": ["cms.cern.ch", "sft.cern.ch"]});
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.hepbatch.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": spec,
    }))?;
    // A CRD may be Established a moment before its endpoint serves; retry briefly.
    let mut created = None;
    for _ in 0..50 {
        match widgets.create(&PostParams::default(), &widget).await {
            Ok(object) => {
                created = Some(object);
                break;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    created.ok_or("the Widget endpoint never appeared")?;
    let fetched = widgets.get("w1").await?;
    assert_eq!(fetched.data["spec"], spec, "spec changed on the round trip");

    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "smoke.hepbatch.io/v1", "kind": "Widget",
        "metadata": {"name": "w2"}, "spec": {"shards": 0},
    }))?;
    let rejected = widgets.create(&PostParams::default(), &bad).await;
    assert!(
        matches!(&rejected, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("shards")),
        "schema validation did not reject shards=0: {rejected:?}"
    );
    Ok(())
}

fn pod_template(
    annotations: BTreeMap<&str, &str>,
    extra_spec: serde_json::Value,
) -> serde_json::Value {
    let mut spec = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"metadata": {"annotations": annotations}, "spec": spec})
}

async fn indexed_job_completes(ctx: TestContext) -> TestResult {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let template = pod_template(
        BTreeMap::from([(annotations::RUN_DURATION, "200ms")]),
        json!({}),
    );
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "fleet"},
        "spec": {
            "completions": 20,
            "parallelism": 5,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "template": template,
        }
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    let done = wait::until(
        &jobs,
        "fleet",
        "Complete",
        Duration::from_secs(180),
        conditions::is_job_completed(),
    )
    .await?;
    let status = done.status.ok_or("job without status")?;
    assert_eq!(status.succeeded, Some(20));
    assert_eq!(status.failed.unwrap_or(0), 0);
    assert_eq!(status.completed_indexes.as_deref(), Some("0-19"));

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let list = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=fleet"))
        .await?;
    let succeeded: Vec<&Pod> = list
        .items
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .collect();
    assert_eq!(succeeded.len(), 20, "expected 20 succeeded pods");
    for pod in succeeded {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        assert!(
            node.starts_with("cpu-"),
            "pod ran on {node:?}, not on a CPU node"
        );
    }
    Ok(())
}

fn gpu_pod(name: &str, tolerate: bool) -> Result<Pod, serde_json::Error> {
    let tolerations = if tolerate {
        json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    } else {
        json!([])
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {annotations::RUN_DURATION: "1h"}},
        "spec": {
            "restartPolicy": "Never",
            "tolerations": tolerations,
            "containers": [{
                "name": "main", "image": "pytorch",
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }],
        }
    }))
}

async fn gpu_pod_binds_to_gpu_node(ctx: TestContext) -> TestResult {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    pods.create(&PostParams::default(), &gpu_pod("tolerating", true)?)
        .await?;
    pods.create(&PostParams::default(), &gpu_pod("intolerant", false)?)
        .await?;

    let running = wait::pod_phase(&pods, "tolerating", "Running", Duration::from_secs(60)).await?;
    let node = running.spec.and_then(|s| s.node_name).unwrap_or_default();
    assert!(node.starts_with("gpu-"), "GPU pod bound to {node:?}");

    let unschedulable = |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    };
    let pending = wait::until(
        &pods,
        "intolerant",
        "Unschedulable",
        Duration::from_secs(60),
        unschedulable,
    )
    .await?;
    assert_eq!(pending.spec.and_then(|s| s.node_name), None);
    let status = pending.status.unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let message = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .and_then(|c| c.message)
        .unwrap_or_default();
    assert!(
        message.contains("untolerated taint"),
        "scheduler said: {message}"
    );
    Ok(())
}

async fn failing_pod_exit_code(ctx: TestContext) -> TestResult {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let template = pod_template(
        BTreeMap::from([
            (annotations::EXIT_CODE, "3"),
            (annotations::RUN_DURATION, "100ms"),
        ]),
        json!({}),
    );
    let mut pod: Pod = serde_json::from_value(template)?;
    pod.metadata.name = Some("doomed".into());
    pods.create(&PostParams::default(), &pod).await?;
    let failed = wait::pod_phase(&pods, "doomed", "Failed", Duration::from_secs(60)).await?;
    let terminated = failed
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .ok_or("no terminated container state")?;
    assert_eq!(terminated.exit_code, 3);
    assert_eq!(terminated.reason.as_deref(), Some("Error"));
    Ok(())
}

/// An Indexed Job whose shards fail as `testbed.hepbatch.io/failures` says: every pod's
/// exit code, the failed attempts of each shard and the Job's failed indexes are what
/// [`Failures::exit_code`] predicts.
async fn scripted_shard_outcomes(ctx: TestContext) -> TestResult {
    const SHARDS: i32 = 60;
    const ATTEMPTS: i32 = 3;
    let failures = Failures(vec![
        Failure::shards(&[7, 42]).code(42),
        Failure::every(20).times(2),
        Failure::percent(5.0).times(1).code(3),
    ]);
    let rules = failures.annotation();
    let template = pod_template(
        BTreeMap::from([
            (annotations::FAILURES, rules.as_str()),
            (annotations::RUN_DURATION, "100ms"),
        ]),
        json!({}),
    );
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "scripted"},
        "spec": {
            "completions": SHARDS,
            "parallelism": 20,
            "completionMode": "Indexed",
            "backoffLimitPerIndex": ATTEMPTS - 1,
            "template": template,
        }
    }))?;
    jobs.create(&PostParams::default(), &job).await?;
    let done = wait::until(
        &jobs,
        "scripted",
        "Failed",
        Duration::from_secs(180),
        |job: Option<&Job>| {
            job.and_then(|j| j.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
        },
    )
    .await?;
    let status = done.status.ok_or("job without status")?;
    assert_eq!(status.failed_indexes.as_deref(), Some("7,42"), "{status:?}");

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let list = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=scripted"))
        .await?;
    let mut seen: BTreeMap<i32, Vec<(i32, i32)>> = BTreeMap::new();
    for pod in &list.items {
        let notes = pod.metadata.annotations.clone().unwrap_or_default();
        let number = |key: &str| notes.get(key).and_then(|v| v.parse::<i32>().ok());
        let shard = number("batch.kubernetes.io/job-completion-index").ok_or("no index")?;
        let attempt = number("batch.kubernetes.io/job-index-failure-count").unwrap_or(0);
        let code = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code)
            .ok_or("a pod without an exit code")?;
        seen.entry(shard).or_default().push((attempt, code));
    }
    let mut retried = 0;
    for shard in 0..SHARDS {
        let mut attempts = seen.remove(&shard).unwrap_or_default();
        attempts.sort();
        let failed = failures.failed_attempts(shard, ATTEMPTS);
        let expected: Vec<(i32, i32)> = (0..(failed + 1).min(ATTEMPTS))
            .map(|attempt| (attempt, failures.exit_code(shard, attempt)))
            .collect();
        assert_eq!(attempts, expected, "shard {shard}");
        retried += i32::from(failed > 0 && failed < ATTEMPTS);
    }
    assert!(
        retried >= 3,
        "every 20th shard and the 5 % retried: {retried}"
    );
    Ok(())
}

async fn kubectl_gets_nodes(ctx: TestContext) -> TestResult {
    let output = ctx
        .testbed
        .kubectl()
        .args(["get", "nodes", "-o", "name"])
        .output()?;
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    for node in ctx.testbed.nodes() {
        assert!(
            stdout.contains(&format!("node/{}", node.name)),
            "{} missing in:\n{stdout}",
            node.name
        );
    }
    let version = ctx
        .testbed
        .kubectl()
        .args(["version", "-o", "json"])
        .output()?;
    let version: serde_json::Value = serde_json::from_slice(&version.stdout)?;
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    assert!(
        server.starts_with("v1.35."),
        "server reports version {server:?}"
    );
    Ok(())
}
