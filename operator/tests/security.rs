//! Pod Security on the real testbed (the apiserver's PodSecurity admission plugin is on,
//! as in every cluster since Kubernetes 1.25): every example runs to Succeeded in a
//! namespace enforcing `restricted` and in one enforcing `baseline`, with the `csi`
//! provider and (where it can serve them) the `pvc` provider; a chosen user reaches the
//! pods; root is refused until the configuration allows it, and then still drops every
//! capability and escalation. Pods the Job controller cannot create reach the
//! AnalysisJob: the `hostPath` provider under `restricted` and `baseline` (and clearing
//! once the namespace admits `privileged`), a ResourceQuota of one pod (and clearing once
//! it is raised).

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::ExitCode;
use std::time::Duration;

use hepbatch_crds::{AnalysisJob, Phase};
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::{TestbedOptions, annotations};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, ResourceQuota};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use common::{
    BoxError, Configured, create, create_examples, enforce_pod_security, event_reasons, eventually,
    pods_of, scripted, start_configured, wait_phase,
};

fn main() -> ExitCode {
    let long = Duration::from_secs(240);
    harness::run(
        TestbedOptions::default(),
        vec![
            test("every_example_succeeds_in_a_restricted_namespace", |ctx| {
                examples_succeed_under(ctx, "restricted")
            })
            .with_timeout(long),
            test("every_example_succeeds_in_a_baseline_namespace", |ctx| {
                examples_succeed_under(ctx, "baseline")
            })
            .with_timeout(long),
            test(
                "the_pvc_provider_serves_the_examples_in_a_restricted_namespace",
                pvc_provider_under_restricted,
            )
            .with_timeout(long),
            test(
                "a_chosen_user_reaches_the_pods_and_root_waits_for_the_admin",
                users_and_root,
            ),
            test(
                "the_host_path_provider_under_restricted_says_why_until_privileged",
                host_path_under_restricted,
            )
            .with_timeout(long),
            test(
                "a_quota_of_one_pod_is_shown_and_raising_it_completes_the_fleet",
                quota_of_one_pod,
            )
            .with_timeout(long),
        ],
    )
}

/// A spec whose fake pods run briefly and succeed.
fn quick(spec: Value) -> Value {
    scripted(spec, json!({annotations::RUN_DURATION: "200ms"}))
}

/// What `restricted` asks of a shard pod, as the pod the Job controller created has it.
fn assert_restricted(pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref().expect("pod spec");
    let context = spec
        .security_context
        .as_ref()
        .expect("pod security context");
    assert_eq!(context.run_as_non_root, Some(true), "{name}");
    assert!(context.run_as_user.is_some_and(|u| u > 0), "{name}");
    assert_eq!(context.fs_group, context.run_as_group, "{name}");
    assert_eq!(
        context.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{name}"
    );
    assert_drops_everything(pod);
}

/// No escalation and no capability in any container of `pod`.
fn assert_drops_everything(pod: &Pod) {
    for container in &pod.spec.as_ref().expect("pod spec").containers {
        let context = container
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(context.allow_privilege_escalation, Some(false));
        let capabilities = context.capabilities.as_ref().expect("capabilities");
        assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(capabilities.add, None);
    }
}

/// Whether the namespace admits a pod as the operator made them before they had a
/// security context (a server-side dry run): the proof that admission enforces.
async fn admits_a_bare_pod(ctx: &TestContext) -> Result<bool, BoxError> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "bare-"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "shard", "image": "busybox"}]},
    }))?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match Api::<Pod>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&params, &pod)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.message.contains("violates PodSecurity") => {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

async fn examples_succeed_under(ctx: TestContext, level: &'static str) -> TestResult {
    enforce_pod_security(&ctx, level).await?;
    assert_eq!(
        admits_a_bare_pod(&ctx).await?,
        level != "restricted",
        "Pod Security admission does not enforce {level}"
    );
    let bed = start_configured(&ctx, "").await?;
    for name in create_examples(&bed).await? {
        bed.operator.explain(
            wait_phase(&bed.api, &name, Phase::Succeeded, Duration::from_secs(180))
                .await
                .map_err(|e| format!("example {name} under {level}: {e}")),
        )?;
        let pods = pods_of(&ctx, &name).await?;
        assert!(!pods.is_empty(), "{name} has no pods");
        pods.iter().for_each(assert_restricted);
    }
    // The CMS example runs as the cc7 image's cmsusr.
    for pod in pods_of(&ctx, "zpeak").await? {
        let context = pod.spec.and_then(|s| s.security_context).expect("context");
        assert_eq!(
            (context.run_as_user, context.run_as_group),
            (Some(1000), Some(1000))
        );
    }
    Ok(())
}

/// A PersistentVolume of the CSI driver bound to the claim `cvmfs` of the test's
/// namespace, as a cvmfs-csi style installation provides it.
async fn cvmfs_claim(ctx: &TestContext) -> Result<String, BoxError> {
    let pv_name = format!("cvmfs-{}", ctx.namespace);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Mi"},
            "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": ctx.namespace, "name": "cvmfs"},
            "csi": {"driver": hepbatch_crds::CSI_DRIVER_NAME, "volumeHandle": pv_name,
                    "readOnly": true},
        },
    }))?;
    Api::<PersistentVolume>::all(ctx.client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "cvmfs"},
        "spec": {
            "accessModes": ["ReadOnlyMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1Mi"}},
        },
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&PostParams::default(), &claim)
        .await?;
    Ok(pv_name)
}

async fn pvc_provider_under_restricted(ctx: TestContext) -> TestResult {
    enforce_pod_security(&ctx, "restricted").await?;
    let pv_name = cvmfs_claim(&ctx).await?;
    let bed = start_configured(&ctx, "cvmfs:\n  provider: pvc\n  claimName: cvmfs\n").await?;
    let outcome = async {
        for name in create_examples(&bed).await? {
            if name == "pinned-snapshot" {
                // A PVC cannot pin: refused in words, whatever the namespace admits.
                let reason = common::accepted_false_reason(&bed.api, &name).await?;
                assert!(reason.starts_with("CvmfsPinUnsupported"), "{reason}");
                continue;
            }
            bed.operator.explain(
                wait_phase(&bed.api, &name, Phase::Succeeded, Duration::from_secs(180))
                    .await
                    .map_err(|e| format!("example {name} with the pvc provider: {e}")),
            )?;
            pods_of(&ctx, &name)
                .await?
                .iter()
                .for_each(assert_restricted);
        }
        let pod = &pods_of(&ctx, "cms-software").await?[0];
        let claim = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name == "cvmfs"))
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        assert_eq!(claim.as_deref(), Some("cvmfs"));
        Ok::<(), BoxError>(())
    }
    .await;
    let _ = Api::<PersistentVolume>::all(ctx.client.clone())
        .delete(&pv_name, &DeleteParams::default())
        .await;
    outcome
}

async fn users_and_root(ctx: TestContext) -> TestResult {
    enforce_pod_security(&ctx, "baseline").await?;
    let bed = start_configured(&ctx, "").await?;
    create(
        &bed.api,
        "chosen",
        quick(json!({"image": "busybox", "command": ["true"],
            "runAs": {"user": 2000, "group": 3000}})),
    )
    .await?;
    create(
        &bed.api,
        "root",
        quick(json!({"image": "cernvm:5", "command": ["/init"], "runAsRoot": true})),
    )
    .await?;
    bed.operator.explain(
        wait_phase(
            &bed.api,
            "chosen",
            Phase::Succeeded,
            Duration::from_secs(60),
        )
        .await,
    )?;
    let pod = &pods_of(&ctx, "chosen").await?[0];
    assert_restricted(pod);
    let context = pod.spec.as_ref().and_then(|s| s.security_context.clone());
    let context = context.expect("context");
    assert_eq!(
        (context.run_as_user, context.run_as_group, context.fs_group),
        (Some(2000), Some(3000), Some(3000))
    );

    // Root: refused by default, in words that say who can allow it; no Job.
    let reason = bed
        .operator
        .explain(common::accepted_false_reason(&bed.api, "root").await)?;
    assert!(
        reason.starts_with(&format!(
            "RootNotAllowed: spec.runAsRoot is not allowed in namespace {}: only the \
             cluster admin can allow it",
            ctx.namespace
        )),
        "{reason}"
    );
    assert!(reason.contains("security.allowRoot"), "{reason}");
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    assert!(jobs.get_opt("root").await?.is_none(), "a Job was created");
    eventually(
        "the RootNotAllowed Event",
        Duration::from_secs(10),
        || async {
            Ok(event_reasons(&ctx, "root")
                .await?
                .contains(&"RootNotAllowed".to_owned()))
        },
    )
    .await?;

    // The admin allows root in this namespace: the running operator picks it up.
    std::fs::write(
        &bed.config,
        format!(
            "security:\n  allowRoot:\n    namespaces: [{}]\n",
            ctx.namespace
        ),
    )?;
    let done: AnalysisJob = bed
        .operator
        .explain(wait_phase(&bed.api, "root", Phase::Succeeded, Duration::from_secs(60)).await)?;
    let status = done.status.expect("status");
    assert!(status.conditions.iter().all(|c| c.type_ != "Accepted"));
    let pod = &pods_of(&ctx, "root").await?[0];
    let context = pod.spec.as_ref().and_then(|s| s.security_context.clone());
    let context = context.expect("context");
    assert_eq!(
        (context.run_as_user, context.run_as_non_root),
        (Some(0), Some(false))
    );
    assert!(context.seccomp_profile.is_some());
    assert_drops_everything(pod);
    Ok(())
}

/// Waits until the AnalysisJob `name` has the `ShardsNotCreated` condition with a message
/// containing `text`; the condition.
async fn not_created(
    bed: &Configured,
    name: &str,
    text: &str,
    timeout: Duration,
) -> Result<Condition, BoxError> {
    let found = hepbatch_tests::wait::until(
        &bed.api,
        name,
        "the ShardsNotCreated condition",
        timeout,
        |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "ShardsNotCreated" && c.message.contains(text))
            })
        },
    )
    .await;
    let aj = bed.operator.explain(found)?;
    Ok(aj
        .status
        .into_iter()
        .flat_map(|s| s.conditions)
        .find(|c| c.type_ == "ShardsNotCreated")
        .ok_or("the condition went")?)
}

/// The notes of the Events with `reason` regarding `name`.
async fn notes(ctx: &TestContext, name: &str, reason: &str) -> Result<Vec<String>, BoxError> {
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect())
}

async fn host_path_under_restricted(ctx: TestContext) -> TestResult {
    enforce_pod_security(&ctx, "restricted").await?;
    let bed = start_configured(&ctx, "cvmfs:\n  provider: hostPath\n").await?;
    let began = std::time::Instant::now();
    create(
        &bed.api,
        "host-cvmfs",
        quick(
            json!({"platform": "el9", "script": "ls /cvmfs/cms.cern.ch", "shards": 2,
            "cvmfs": {"repositories": ["cms.cern.ch"]}}),
        ),
    )
    .await?;
    let condition = not_created(&bed, "host-cvmfs", "restricted", Duration::from_secs(60)).await?;
    println!(
        "hostPath under restricted: reported {:.1?} after the AnalysisJob was created",
        began.elapsed()
    );
    assert_eq!(condition.reason, "PodSecurity");
    for words in [
        "the Job controller cannot create shards' pods: Error creating: the pod is forbidden",
        "violates PodSecurity \"restricted:latest\"",
        "hostPath",
        "the shards' pods meet Pod Security privileged at best (volume cvmfs is a hostPath, \
         which only privileged admits), so their namespace must admit privileged",
    ] {
        assert!(
            condition.message.contains(words),
            "{words:?} not in {}",
            condition.message
        );
    }
    let aj = bed.api.get("host-cvmfs").await?;
    let status = aj.status.expect("status");
    assert_eq!(
        status.pod_security,
        Some(hepbatch_crds::PodSecurityLevel::Privileged)
    );
    assert_eq!(status.phase, Some(Phase::Pending));
    eventually(
        "the ShardsNotCreated Event",
        Duration::from_secs(10),
        || async {
            Ok(!notes(&ctx, "host-cvmfs", "ShardsNotCreated")
                .await?
                .is_empty())
        },
    )
    .await?;
    // baseline forbids hostPath volumes too.
    enforce_pod_security(&ctx, "baseline").await?;
    not_created(
        &bed,
        "host-cvmfs",
        "baseline:latest",
        Duration::from_secs(150),
    )
    .await?;
    // A namespace admitting privileged gets the pods: the condition goes, the fleet runs.
    enforce_pod_security(&ctx, "privileged").await?;
    let done = bed.operator.explain(
        wait_phase(
            &bed.api,
            "host-cvmfs",
            Phase::Succeeded,
            Duration::from_secs(120),
        )
        .await,
    )?;
    let status = done.status.expect("status");
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "ShardsNotCreated"),
        "{:?}",
        status.conditions
    );
    eventually(
        "the ShardsCreated Event",
        Duration::from_secs(10),
        || async { Ok(!notes(&ctx, "host-cvmfs", "ShardsCreated").await?.is_empty()) },
    )
    .await?;
    Ok(())
}

async fn quota_of_one_pod(ctx: TestContext) -> TestResult {
    let quotas: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "one-pod"}, "spec": {"hard": {"pods": "1"}},
    }))?;
    quotas.create(&PostParams::default(), &quota).await?;
    // The quota admits pods once the quota controller has counted what is there.
    eventually("the quota counted", Duration::from_secs(30), || async {
        let quota = quotas.get("one-pod").await?;
        Ok(quota.status.and_then(|s| s.used).is_some())
    })
    .await?;
    let bed = start_configured(&ctx, "").await?;
    let began = std::time::Instant::now();
    create(
        &bed.api,
        "fleet",
        scripted(
            json!({"image": "busybox", "command": ["true"], "shards": 6, "parallelism": 3}),
            json!({annotations::RUN_DURATION: "1s"}),
        ),
    )
    .await?;
    let condition = not_created(&bed, "fleet", "exceeded quota", Duration::from_secs(60)).await?;
    println!(
        "quota of one pod: reported {:.1?} after the AnalysisJob was created",
        began.elapsed()
    );
    assert_eq!(condition.reason, "ResourceQuota");
    assert!(
        condition
            .message
            .starts_with("the Job controller cannot create shards' pods")
            && condition.message.contains("limited: pods=1"),
        "{}",
        condition.message
    );
    // The Warning follows the status write that it announces.
    eventually(
        "the ShardsNotCreated Warning",
        Duration::from_secs(10),
        || async {
            let warnings = notes(&ctx, "fleet", "ShardsNotCreated").await?;
            Ok(warnings.iter().any(|n| n.contains("exceeded quota")))
        },
    )
    .await?;
    // The admin raises the quota: pods are created, the condition goes, the fleet ends.
    let raised = json!({"spec": {"hard": {"pods": "10"}}});
    quotas
        .patch("one-pod", &PatchParams::default(), &Patch::Merge(&raised))
        .await?;
    let raised_at = std::time::Instant::now();
    let done = bed.operator.explain(
        wait_phase(
            &bed.api,
            "fleet",
            Phase::Succeeded,
            Duration::from_secs(150),
        )
        .await,
    )?;
    println!(
        "quota raised: the fleet of 6 succeeded {:.1?} later",
        raised_at.elapsed()
    );
    let status = done.status.expect("status");
    assert_eq!(status.succeeded, 6);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "ShardsNotCreated"),
        "{:?}",
        status.conditions
    );
    Ok(())
}
