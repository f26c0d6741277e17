//! The HEP layer on the real testbed: platforms (and configuration reloads), CMSSW (the
//! generated script taken from the real pod and run with bash against a stub
//! `/cvmfs/cms.cern.ch`), `/cvmfs` volumes of each provider with pins, outputs, input
//! splitting and run-time limits. Every check inspects the pods the Job controller
//! created, not just the Job template.

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hepbatch_crds::{AnalysisJob, Phase};
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::http::{self, free_address, metric};
use hepbatch_tests::objects::env_value;
use hepbatch_tests::testbed::{TestbedOptions, annotations};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use common::{
    Operator, accepted_false_reason, create, event_reasons, eventually, install_crd, pods_of,
    start_configured as start, wait_phase,
};

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::default(),
        vec![
            test("platform_selects_the_light_weight_image", platform_image),
            test(
                "unknown_platform_is_reported_and_a_config_reload_fixes_it",
                unknown_platform_then_reload,
            ),
            test(
                "cmssw_script_from_the_real_pod_sets_up_the_release",
                cmssw_script_runs,
            ),
            test(
                "cvmfs_providers_give_the_right_volumes_and_pins_need_csi",
                cvmfs_providers,
            ),
            test(
                "inputs_split_into_shards_each_with_its_own_files",
                input_splitting,
            ),
            test(
                "inputs_from_a_config_map_wait_for_it_to_exist",
                inputs_from_config_map,
            ),
            test("output_and_max_runtime_reach_the_pods", output_and_runtime),
            test(
                "unschedulable_shards_are_explained_on_the_analysis_job",
                unschedulable_explained,
            ),
            test(
                "shards_waiting_for_room_in_a_full_cluster_are_not_unschedulable",
                waiting_for_room,
            )
            .with_timeout(Duration::from_secs(240)),
            test("every_example_runs_to_succeeded", examples_succeed)
                .with_timeout(Duration::from_secs(240)),
        ],
    )
}

/// A spec whose fake pods run briefly and succeed.
fn quick(mut spec: Value) -> Value {
    spec["podMetadata"] = json!({"annotations": {annotations::RUN_DURATION: "200ms"}});
    spec
}

fn shard_container(pod: &Pod) -> &Container {
    &pod.spec.as_ref().expect("pod spec").containers[0]
}

/// No shard container may be privileged or gain capabilities for CVMFS.
fn assert_unprivileged(pod: &Pod) {
    for container in &pod.spec.as_ref().expect("spec").containers {
        if let Some(context) = &container.security_context {
            assert_ne!(context.privileged, Some(true), "privileged container");
            let added = context
                .capabilities
                .as_ref()
                .and_then(|c| c.add.clone())
                .unwrap_or_default();
            assert!(added.is_empty(), "capabilities added: {added:?}");
        }
    }
}

async fn platform_image(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    create(
        &bed.api,
        "el9-job",
        quick(json!({"platform": "el9", "script": "true", "shards": 2})),
    )
    .await?;
    let done = bed.operator.explain(
        wait_phase(
            &bed.api,
            "el9-job",
            Phase::Succeeded,
            Duration::from_secs(60),
        )
        .await,
    )?;
    let status = done.status.expect("status");
    assert_eq!(status.image.as_deref(), Some("docker.io/cmssw/el9:x86_64"));
    let pods = pods_of(&ctx, "el9-job").await?;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(
            shard_container(pod).image.as_deref(),
            Some("docker.io/cmssw/el9:x86_64")
        );
        // No /cvmfs was asked for, so none is mounted.
        assert!(
            pod.spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_none_or(|v| v.iter().all(|v| v.name != "cvmfs"))
        );
    }
    // `image` overrides the platform.
    create(
        &bed.api,
        "override",
        quick(json!({"platform": "el9", "image": "registry.example/own:1", "script": "true"})),
    )
    .await?;
    bed.operator.explain(
        wait_phase(
            &bed.api,
            "override",
            Phase::Succeeded,
            Duration::from_secs(60),
        )
        .await,
    )?;
    let pods = pods_of(&ctx, "override").await?;
    assert_eq!(
        shard_container(&pods[0]).image.as_deref(),
        Some("registry.example/own:1")
    );
    Ok(())
}

async fn unknown_platform_then_reload(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    create(
        &bed.api,
        "alma10",
        quick(json!({"platform": "alma10", "script": "true"})),
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let rejected = bed.operator.explain(
        eventually(
            "the Accepted=False condition",
            Duration::from_secs(30),
            || {
                let api = bed.api.clone();
                async move {
                    let aj = api.get("alma10").await?;
                    Ok(aj.status.as_ref().is_some_and(|s| {
                        s.conditions.iter().any(|c| {
                            c.type_ == "Accepted"
                                && c.status == "False"
                                && c.reason == "UnknownPlatform"
                        })
                    }))
                }
            },
        )
        .await,
    );
    rejected?;
    let aj = bed.api.get("alma10").await?;
    let status = aj.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Pending));
    let message = &status.conditions[0].message;
    assert!(
        message.contains("\"alma10\" is not configured") && message.contains("cc7, el8, el9"),
        "{message}"
    );
    assert!(jobs.get_opt("alma10").await?.is_none(), "a Job was created");
    assert!(
        event_reasons(&ctx, "alma10")
            .await?
            .contains(&"UnknownPlatform".to_owned())
    );

    // The admin adds the platform; the running operator picks it up.
    std::fs::write(
        &bed.config,
        "platforms:\n  alma10: registry.example/alma10:latest\n",
    )?;
    let done = bed.operator.explain(
        wait_phase(
            &bed.api,
            "alma10",
            Phase::Succeeded,
            Duration::from_secs(60),
        )
        .await,
    )?;
    let status = done.status.expect("status");
    assert!(status.conditions.iter().all(|c| c.type_ != "Accepted"));
    let pods = pods_of(&ctx, "alma10").await?;
    assert_eq!(
        shard_container(&pods[0]).image.as_deref(),
        Some("registry.example/alma10:latest")
    );
    Ok(())
}

/// Runs `argv` (a shard's command) the way the container would, with a stub CMS
/// repository on a tmpfs at `/cvmfs/cms.cern.ch`, in a private mount namespace (nothing
/// shows outside it; only the empty `/cvmfs` mount point is created on the host if
/// missing), in `work_dir`.
fn run_with_stub_cvmfs(
    argv: &[String],
    fixture: &Path,
    work_dir: &Path,
) -> std::io::Result<std::process::Output> {
    std::fs::create_dir_all("/cvmfs")?;
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "bash", "-c"])
        .arg(
            "set -e; mount -t tmpfs hepbatch-test /cvmfs; cp -a \"$1\" /cvmfs/cms.cern.ch; \
             cd \"$2\"; shift 2; exec \"$@\"",
        )
        .arg("stub-cvmfs")
        .arg(fixture)
        .arg(work_dir)
        .args(argv)
        .env_remove("SCRAM_ARCH")
        .output()
}

async fn cmssw_script_runs(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    create(
        &bed.api,
        "zpeak",
        quick(json!({
            "platform": "cc7",
            "cmssw": {"release": "CMSSW_10_6_30", "scramArch": "slc7_amd64_gcc700"},
            "script": "echo \"$SCRAM_ARCH $CMSSW_VERSION $CMSSW_RUNTIME $(pwd)\"",
        })),
    )
    .await?;
    bed.operator
        .explain(wait_phase(&bed.api, "zpeak", Phase::Succeeded, Duration::from_secs(60)).await)?;
    let pods = pods_of(&ctx, "zpeak").await?;
    let pod = &pods[0];
    assert_unprivileged(pod);
    let container = shard_container(pod);
    assert_eq!(
        container.image.as_deref(),
        Some("gitlab-registry.cern.ch/cms-cloud/cmssw-docker/cc7-cms:latest")
    );
    assert_eq!(container.working_dir.as_deref(), Some("/srv/work"));
    // cmssw implies exactly the cms.cern.ch repository, read-only and rslave.
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .expect("volumes");
    let cvmfs = volumes
        .iter()
        .find(|v| v.name == "cvmfs")
        .expect("cvmfs volume");
    let csi = cvmfs.csi.as_ref().expect("a CSI volume");
    assert_eq!(csi.driver, "cvmfs.hepbatch.io");
    assert_eq!(
        csi.volume_attributes.as_ref().expect("attributes")["repositories"],
        "cms.cern.ch"
    );
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "cvmfs")
        .expect("mounted");
    assert_eq!(
        (
            mount.mount_path.as_str(),
            mount.read_only,
            mount.mount_propagation.as_deref()
        ),
        ("/cvmfs", Some(true), Some("HostToContainer"))
    );

    // Run the real pod's command against the stub repository.
    let argv = container.command.clone().expect("command");
    let dir = tempfile::tempdir()?;
    let fixture = dir.path().join("cms.cern.ch");
    hepbatch_tests::fixtures::cms_repository(&fixture, false)?;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work)?;
    let output = run_with_stub_cvmfs(&argv, &fixture, &work)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "script failed: {stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "slc7_amd64_gcc700 CMSSW_10_6_30 ok {}",
            work.join("CMSSW_10_6_30/src").display()
        ),
        "stderr: {stderr}"
    );

    // The same script fails fast when scram fails, before the user's commands.
    let broken = dir.path().join("broken");
    hepbatch_tests::fixtures::cms_repository(&broken, true)?;
    let output = run_with_stub_cvmfs(&argv, &broken, &work)?;
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stdout).trim().is_empty());
    Ok(())
}

fn cvmfs_volume(pod: &Pod) -> k8s_openapi::api::core::v1::Volume {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .into_iter()
        .flatten()
        .find(|v| v.name == "cvmfs")
        .expect("a cvmfs volume")
}

async fn cvmfs_providers(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    let pinned = json!({
        "platform": "el9", "script": "ls /cvmfs",
        "cvmfs": {"repositories": ["sft.cern.ch", "cms.cern.ch"],
                  "pin": {"sft.cern.ch": {"tag": "v2"},
                          "cms.cern.ch": {"date": "2025-06-01T00:00:00Z"}}},
    });
    create(&bed.api, "pinned", quick(pinned.clone())).await?;
    create(
        &bed.api,
        "on-demand",
        quick(json!({"platform": "el9", "script": "ls /cvmfs/sft.cern.ch", "cvmfs": {}})),
    )
    .await?;
    for name in ["pinned", "on-demand"] {
        bed.operator
            .explain(wait_phase(&bed.api, name, Phase::Succeeded, Duration::from_secs(60)).await)?;
    }
    let pod = &pods_of(&ctx, "pinned").await?[0];
    assert_unprivileged(pod);
    let attributes = cvmfs_volume(pod)
        .csi
        .and_then(|c| c.volume_attributes)
        .expect("attributes");
    assert_eq!(attributes["repositories"], "cms.cern.ch,sft.cern.ch");
    assert_eq!(
        attributes["pins"],
        "cms.cern.ch@date=2025-06-01T00:00:00Z;sft.cern.ch@tag=v2"
    );
    let pod = &pods_of(&ctx, "on-demand").await?[0];
    let csi = cvmfs_volume(pod).csi.expect("csi");
    assert_eq!(csi.volume_attributes, None, "on demand: no list, no pins");

    // The admin switches to an existing cvmfs-csi PVC: one subPath per repository.
    std::fs::write(&bed.config, "cvmfs:\n  provider: pvc\n  claimName: cvmfs\n")?;
    bed.operator
        .wait_for_log("configuration changed; reloaded", Duration::from_secs(20))
        .await?;
    create(
        &bed.api,
        "via-pvc",
        quick(json!({"platform": "el9", "script": "true",
            "cvmfs": {"repositories": ["cms.cern.ch", "sft.cern.ch"]}})),
    )
    .await?;
    // The PVC does not exist in the testbed, so the pod stays unscheduled; its spec is
    // what matters.
    let pod = {
        let mut found = None;
        for _ in 0..150 {
            if let Some(pod) = pods_of(&ctx, "via-pvc").await?.into_iter().next() {
                found = Some(pod);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        found.ok_or("no pod for via-pvc")?
    };
    let volume = cvmfs_volume(&pod);
    assert_eq!(
        volume.persistent_volume_claim.expect("pvc").claim_name,
        "cvmfs"
    );
    let mounts: BTreeSet<(String, Option<String>)> = shard_container(&pod)
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name == "cvmfs")
        .map(|m| (m.mount_path.clone(), m.sub_path.clone()))
        .collect();
    assert_eq!(
        mounts,
        BTreeSet::from([
            (
                "/cvmfs/cms.cern.ch".to_owned(),
                Some("cms.cern.ch".to_owned())
            ),
            (
                "/cvmfs/sft.cern.ch".to_owned(),
                Some("sft.cern.ch".to_owned())
            ),
        ])
    );
    // A pin cannot be honoured by a PVC: reported, no Job.
    create(&bed.api, "pinned-pvc", quick(pinned)).await?;
    let reason = bed
        .operator
        .explain(accepted_false_reason(&bed.api, "pinned-pvc").await)?;
    assert!(
        reason.starts_with("CvmfsPinUnsupported: spec.cvmfs.pin needs the csi CVMFS provider"),
        "{reason}"
    );
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    assert!(jobs.get_opt("pinned-pvc").await?.is_none());
    Ok(())
}

async fn input_splitting(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    let files: Vec<String> = (0..10)
        .map(|i| format!("root://eospublic.cern.ch//eos/opendata/cms/file{i}.root"))
        .collect();
    create(
        &bed.api,
        "split",
        quick(
            json!({"platform": "el9", "script": "cat \"$HEPBATCH_INPUT_FILES\"",
            "inputs": {"files": files, "filesPerShard": 3}}),
        ),
    )
    .await?;
    let done = bed
        .operator
        .explain(wait_phase(&bed.api, "split", Phase::Succeeded, Duration::from_secs(60)).await)?;
    assert_eq!(done.status.expect("status").shards, 4);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let lists = config_maps.get("split-inputs-0").await?;
    assert_eq!(lists.immutable, Some(true));
    let data = lists.data.expect("data");
    let mut seen = Vec::new();
    for shard in 0..4 {
        seen.extend(data[&format!("shard-{shard}")].lines().map(str::to_owned));
    }
    assert_eq!(seen, files, "every file exactly once, in order");
    let pods = pods_of(&ctx, "split").await?;
    assert_eq!(pods.len(), 4);
    for pod in &pods {
        let container = shard_container(pod);
        assert_eq!(
            env_value(container, "HEPBATCH_INPUT_FILES").as_deref(),
            Some("/etc/hepbatch/inputs/shard-$(HEPBATCH_SHARD_INDEX)")
        );
        let index_env = container
            .env
            .iter()
            .flatten()
            .position(|e| e.name == "HEPBATCH_SHARD_INDEX")
            .expect("index env");
        let files_env = container
            .env
            .iter()
            .flatten()
            .position(|e| e.name == "HEPBATCH_INPUT_FILES")
            .expect("files env");
        assert!(
            index_env < files_env,
            "$(HEPBATCH_SHARD_INDEX) must be defined first"
        );
        let projected = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name == "hepbatch-inputs"))
            .and_then(|v| v.projected.clone())
            .expect("projected volume");
        assert_eq!(
            projected.sources.expect("sources")[0]
                .config_map
                .as_ref()
                .expect("config map")
                .name,
            "split-inputs-0"
        );
    }
    Ok(())
}

async fn inputs_from_config_map(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    create(
        &bed.api,
        "listed",
        quick(json!({"platform": "el9", "script": "true",
            "inputs": {"fromConfigMap": {"name": "dataset", "key": "files.txt"},
                       "filesPerShard": 2}})),
    )
    .await?;
    let reason = bed
        .operator
        .explain(accepted_false_reason(&bed.api, "listed").await)?;
    assert!(
        reason.starts_with("InvalidInputs: spec.inputs.fromConfigMap: ConfigMap dataset"),
        "{reason}"
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let list: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "dataset"},
        "data": {"files.txt": "# Run2024C\n/store/a.root\n/store/b.root\n\n/store/c.root\n"},
    }))?;
    config_maps.create(&PostParams::default(), &list).await?;
    let done = bed.operator.explain(
        wait_phase(
            &bed.api,
            "listed",
            Phase::Succeeded,
            Duration::from_secs(60),
        )
        .await,
    )?;
    assert_eq!(done.status.expect("status").shards, 2);
    let data = config_maps
        .get("listed-inputs-0")
        .await?
        .data
        .expect("data");
    assert_eq!(data["shard-0"], "/store/a.root\n/store/b.root\n");
    assert_eq!(data["shard-1"], "/store/c.root\n");
    Ok(())
}

async fn output_and_runtime(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    create(
        &bed.api,
        "with-output",
        quick(
            json!({"platform": "el8", "script": "touch $ANALYSIS_OUTDIR/x",
            "output": {"path": "/output"}, "maxRuntime": "espresso"}),
        ),
    )
    .await?;
    bed.operator.explain(
        wait_phase(
            &bed.api,
            "with-output",
            Phase::Succeeded,
            Duration::from_secs(60),
        )
        .await,
    )?;
    let pod = &pods_of(&ctx, "with-output").await?[0];
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.active_deadline_seconds, Some(20 * 60));
    let container = shard_container(pod);
    assert_eq!(
        env_value(container, "ANALYSIS_OUTDIR").as_deref(),
        Some("/output")
    );
    let output = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "output")
        .expect("output volume");
    assert!(output.empty_dir.is_some());
    assert!(
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "output" && m.mount_path == "/output" && m.read_only != Some(true))
    );
    Ok(())
}

/// Every file in examples/ is accepted by the apiserver and, with the default
/// configuration, runs to Succeeded on the testbed (the GPU example on a GPU node).
async fn examples_succeed(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    let names = common::create_examples(&bed).await?;
    for name in &names {
        bed.operator.explain(
            wait_phase(&bed.api, name, Phase::Succeeded, Duration::from_secs(180))
                .await
                .map_err(|e| format!("example {name}: {e}")),
        )?;
    }
    for pod in pods_of(&ctx, "pytorch-gpu").await? {
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("gpu-a100-0"),
            "the GPU example runs on the A100-80GB node"
        );
    }
    Ok(())
}

/// Shards no node can take: the AnalysisJob's phase is Unschedulable and it says why,
/// quoting the scheduler.
/// A fleet bigger than the cluster's free room waits its turn: the look at its waiting
/// shards finds a node that could hold them once empty, so the AnalysisJob raises neither
/// the `ShardsUnschedulable` condition nor its Warning, and its phase stays `Running`.
async fn waiting_for_room(ctx: TestContext) -> TestResult {
    install_crd(&ctx.client).await?;
    let address = free_address()?;
    let operator =
        Operator::start_with(&ctx, "operator", &address, &["--no-leader-election"]).await?;
    // The metrics are polled below: not before the admin server listens (a refused
    // connection would end the wait at once on a busy machine).
    operator
        .wait_for_log("admin server listening", Duration::from_secs(30))
        .await?;
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    // 40 of a CPU node's 64 cores: one shard per node, so of five shards on the four CPU
    // nodes one waits (GPU nodes are tainted), for longer than the look waits.
    create(
        &api,
        "full",
        json!({"platform": "el9", "script": "true", "shards": 5, "parallelism": 5,
            "resources": {"cpu": "40"},
            "podMetadata": {"annotations": {annotations::RUN_DURATION: "150s"}}}),
    )
    .await?;
    let looked = operator.explain(
        eventually(
            "a look that finds shards waiting for room",
            Duration::from_secs(150),
            || async {
                let (_, body) = http::get(&address, "/metrics").await?;
                let sample = "hepbatch_operator_scheduling_looks_total{outcome=\"WaitingForRoom\"}";
                Ok(metric(&body, sample).is_some_and(|looks| looks >= 1.0))
            },
        )
        .await,
    );
    looked?;
    let reasons = event_reasons(&ctx, "full").await?;
    assert!(
        !reasons.contains(&"ShardsUnschedulable".to_owned()),
        "{reasons:?}"
    );
    let aj = api.get("full").await?;
    let status = aj.status.ok_or("no status")?;
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.type_ != "ShardsUnschedulable"),
        "{:?}",
        status.conditions
    );
    assert_ne!(status.phase, Some(Phase::Unschedulable), "{status:?}");
    let pending = pods_of(&ctx, "full")
        .await?
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
        .count();
    assert_eq!(pending, 1, "one shard waits for room");
    api.delete("full", &Default::default()).await?;
    Ok(())
}

async fn unschedulable_explained(ctx: TestContext) -> TestResult {
    let bed = start(&ctx, "").await?;
    create(
        &bed.api,
        "too-big",
        quick(json!({"platform": "el9", "script": "true", "shards": 2,
            "resources": {"memory": "100Ti"}})),
    )
    .await?;
    let reasons = bed.operator.explain(
        eventually(
            "a ShardsUnschedulable Event",
            Duration::from_secs(120),
            || async {
                Ok(event_reasons(&ctx, "too-big")
                    .await?
                    .contains(&"ShardsUnschedulable".to_owned()))
            },
        )
        .await,
    );
    reasons?;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let note = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("ShardsUnschedulable"))
        .and_then(|e| e.note)
        .unwrap_or_default();
    assert!(
        note.contains("2 shards wait for resources") && note.contains("Insufficient memory"),
        "{note}"
    );
    let aj = bed.operator.explain(
        wait_phase(
            &bed.api,
            "too-big",
            Phase::Unschedulable,
            Duration::from_secs(30),
        )
        .await,
    )?;
    let status = aj.status.ok_or("no status")?;
    assert_eq!(status.phase, Some(Phase::Unschedulable), "{status:?}");
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "ShardsUnschedulable" && c.message.contains("Insufficient memory")),
        "{:?}",
        status.conditions
    );
    Ok(())
}
