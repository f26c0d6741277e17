//! hepbatch end to end on a real node: the chart a cluster admin installs (operator
//! Deployment and CSI DaemonSet, registered with the real kubelet), AnalysisJobs whose shard
//! pods really run and read `/cvmfs` through the plugin, from the real CVMFS client
//! against a real stratum 0 (`HEPBATCH_E2E_BACKEND=squashfuse`: the stand-in, serving the
//! same fixtures from squashfs images on the node).
//!
//! One testbed with one real node and the operator and CSI images (`make images`) runs
//! the suite; the chart is installed once, by the first test that needs it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is a failed test

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hepbatch_crds::{AnalysisJob, CSI_DRIVER_NAME, Phase, testing};
use hepbatch_tests::chart::{self, Backend, NAMESPACE, RELEASE, chart_dir as chart};
use hepbatch_tests::cvmfs::{Stratum, content};
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::reader;
use hepbatch_tests::testbed::node::ANALYSIS_BASE_IMAGE;
use hepbatch_tests::testbed::{RealNode, TestbedOptions};
use hepbatch_tests::wait;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::storage::v1::CSINode;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// How long a shard pod may take to run to the end.
const JOB_TIMEOUT: Duration = Duration::from_secs(180);

fn backend() -> Backend {
    match std::env::var("HEPBATCH_E2E_BACKEND").as_deref() {
        Ok("squashfuse") => Backend::Squashfuse,
        _ => Backend::Cvmfs,
    }
}

/// The stratum of the real backend, made before the testbed and removed after it.
static STRATUM: Mutex<Option<Arc<Stratum>>> = Mutex::new(None);

fn stratum() -> Arc<Stratum> {
    STRATUM
        .lock()
        .unwrap()
        .clone()
        .expect("the real backend's stratum was started in main")
}

fn main() -> ExitCode {
    let images = match chart::image_archives() {
        Ok(images) => images,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::FAILURE;
        }
    };
    if backend() == Backend::Cvmfs {
        match Stratum::start(&content::standard()) {
            Ok(stratum) => *STRATUM.lock().unwrap() = Some(Arc::new(stratum)),
            Err(e) => {
                eprintln!("starting the test stratum: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut options = TestbedOptions::one_real_node();
    options.images = images;
    let long = Duration::from_secs(420);
    let code = harness::run(
        options,
        vec![
            test(
                "the_chart_runs_on_the_real_node_and_the_kubelet_registers_the_plugin",
                chart_runs_and_plugin_registers,
            )
            .with_timeout(long),
            test(
                "shards_read_listed_repositories_and_nothing_stays_mounted",
                shards_read_listed_repositories,
            )
            .with_timeout(long),
            test(
                "a_repository_first_touched_by_a_running_shard_appears",
                on_demand_in_a_real_pod,
            )
            .with_timeout(long),
            test(
                "two_fleets_pin_one_repository_at_two_revisions_at_once",
                two_pinned_fleets,
            )
            .with_timeout(long),
            test(
                "the_cmssw_bootstrap_runs_in_a_real_container",
                cmssw_bootstrap,
            )
            .with_timeout(long),
            test(
                "cvmfs_is_read_only_and_the_shard_unprivileged",
                security_from_inside,
            )
            .with_timeout(long),
            test(
                "bad_volume_attributes_leave_the_pod_creating_with_the_plugins_message",
                bad_attributes_in_a_pod,
            )
            .with_timeout(long),
            test(
                "a_reading_shard_survives_a_client_kill_a_plugin_restart_and_an_upgrade",
                healing_in_a_real_pod,
            )
            .with_timeout(Duration::from_secs(600)),
        ],
    );
    drop(STRATUM.lock().unwrap().take());
    code
}

fn node(ctx: &TestContext) -> &RealNode {
    ctx.testbed
        .real_nodes()
        .first()
        .expect("the suite asks for one real node")
}

/// Runs a command to success; its stdout.
fn run(command: &mut std::process::Command) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn kubectl(ctx: &TestContext, args: &[&str]) -> Result<String, String> {
    run(ctx.testbed.kubectl().args(args))
}

fn helm(ctx: &TestContext) -> std::process::Command {
    let mut command = std::process::Command::new(ctx.testbed.binaries().path("helm"));
    command.arg("--kubeconfig").arg(ctx.testbed.kubeconfig());
    command
}

/// The chart's values for the suite's node and backend.
fn values(ctx: &TestContext) -> Result<serde_json::Value, chart::ChartError> {
    let stratum = (backend() == Backend::Cvmfs).then(stratum);
    chart::values(node(ctx), backend(), stratum.as_deref())
}

/// The installed chart: installed once by the first test that needs it.
static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Held for reading by every test while it runs, for writing by the one that restarts and
/// upgrades the plugin: the others count the plugin's metrics and must not see them reset.
static CALM: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

type Calm = tokio::sync::RwLockReadGuard<'static, ()>;

/// The chart installed, and the plugin left alone while the guard lives.
async fn installed(ctx: &TestContext) -> Result<Calm, Box<dyn std::error::Error + Send + Sync>> {
    INSTALLED
        .get_or_try_init(|| async { chart::install(&ctx.testbed, node(ctx), &values(ctx)?).await })
        .await?;
    Ok(CALM.read().await)
}

async fn wait_for_registration(ctx: &TestContext) -> Result<CSINode, chart::ChartError> {
    chart::wait_for_registration(&ctx.client, node(ctx).name()).await
}

/// Creates an AnalysisJob from a spec and waits for `phase`.
async fn analysis_job(
    ctx: &TestContext,
    name: &str,
    spec: serde_json::Value,
    phase: Phase,
) -> Result<AnalysisJob, Box<dyn std::error::Error + Send + Sync>> {
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let job = testing::analysis_job(name, spec).build()?;
    api.create(&PostParams::default(), &job).await?;
    let wanted = phase;
    Ok(wait::until(
        &api,
        name,
        &format!("phase {phase:?}"),
        JOB_TIMEOUT,
        move |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref()).and_then(|s| s.phase) == Some(wanted)
        },
    )
    .await?)
}

/// The logs of every shard pod of `job`, in shard order.
fn shard_logs(ctx: &TestContext, job: &str) -> Result<Vec<String>, String> {
    let names = kubectl(
        ctx,
        &[
            "get",
            "pods",
            "-n",
            &ctx.namespace,
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
            "--sort-by=.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    )?;
    names
        .split_whitespace()
        .map(|pod| kubectl(ctx, &["logs", "-n", &ctx.namespace, pod]))
        .collect()
}

/// The plugin's metrics, through the apiserver's pod proxy.
async fn plugin_metrics(ctx: &TestContext) -> Result<String, String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=csi"))
        .await
        .map_err(|e| e.to_string())?;
    let pod = list
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .and_then(|p| p.metadata.name.clone())
        .ok_or("no running plugin pod")?;
    kubectl(
        ctx,
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}:9808/proxy/metrics"),
        ],
    )
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Mounts of the node's CSI volumes of pods (targets under the kubelet directory).
fn csi_targets_on_node(real: &RealNode) -> Result<Vec<String>, String> {
    let mountinfo = run(real.command("cat").arg("/proc/self/mountinfo"))?;
    let pods = real.kubelet_dir().join("pods");
    let pods = pods.display().to_string();
    Ok(mountinfo
        .lines()
        .filter(|l| l.contains(&pods) && l.contains("kubernetes.io~csi"))
        .map(str::to_owned)
        .collect())
}

async fn chart_runs_and_plugin_registers(ctx: TestContext) -> TestResult {
    let _calm = installed(&ctx).await?;
    let csinode = wait_for_registration(&ctx).await?;
    let driver = csinode
        .spec
        .drivers
        .iter()
        .find(|d| d.name == CSI_DRIVER_NAME)
        .unwrap();
    assert_eq!(driver.node_id, node(&ctx).name());
    // Both workloads really run: the operator's pod and the plugin's.
    for (kind, name) in [
        ("deployment", "hepbatch-operator"),
        ("daemonset", "hepbatch-csi-node"),
    ] {
        kubectl(
            &ctx,
            &[
                "-n",
                NAMESPACE,
                "rollout",
                "status",
                &format!("{kind}/{name}"),
                "--timeout=120s",
            ],
        )?;
    }
    let log = kubectl(
        &ctx,
        &["-n", NAMESPACE, "logs", "daemonset/hepbatch-csi-node"],
    )?;
    assert!(log.contains("registered with the kubelet"), "{log}");
    Ok(())
}

async fn shards_read_listed_repositories(ctx: TestContext) -> TestResult {
    let _calm = installed(&ctx).await?;
    let before = plugin_metrics(&ctx).await?;
    let job = analysis_job(
        &ctx,
        "listed",
        json!({
            "image": ANALYSIS_BASE_IMAGE,
            "cvmfs": {"repositories": ["cms.cern.ch", "sft.cern.ch"]},
            "script": "cat /cvmfs/cms.cern.ch/version /cvmfs/sft.cern.ch/version; ls /cvmfs",
            "shards": 3,
            "parallelism": 3,
        }),
        Phase::Succeeded,
    )
    .await?;
    assert_eq!(job.status.unwrap().succeeded, 3);
    for log in shard_logs(&ctx, "listed")? {
        assert_eq!(
            log, "cms latest\nsft latest\ncms.cern.ch\nsft.cern.ch\n",
            "{log}"
        );
    }
    // The kubelet called the plugin for every shard pod; once the pods are gone, so are
    // their mounts.
    let after = plugin_metrics(&ctx).await?;
    let publishes = |m: &str| {
        metric(
            m,
            "hepbatch_csi_operations_total{operation=\"Publish\",outcome=\"Ok\"}",
        )
    };
    assert!(publishes(&after) >= publishes(&before) + 3, "{after}");
    kubectl(
        &ctx,
        &[
            "delete",
            "analysisjob",
            "listed",
            "-n",
            &ctx.namespace,
            "--wait=true",
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = kubectl(&ctx, &["get", "pods", "-n", &ctx.namespace, "-o", "name"])?;
        if pods.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "shard pods not gone: {pods}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = csi_targets_on_node(node(&ctx))?;
        let unpublishes = metric(
            &plugin_metrics(&ctx).await?,
            "hepbatch_csi_operations_total{operation=\"Unpublish\",outcome=\"Ok\"}",
        );
        if left.iter().all(|l| !l.contains(&ctx.namespace)) && unpublishes >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "still mounted: {left:#?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

async fn on_demand_in_a_real_pod(ctx: TestContext) -> TestResult {
    let _calm = installed(&ctx).await?;
    analysis_job(
        &ctx,
        "on-demand",
        json!({
            "image": ANALYSIS_BASE_IMAGE,
            "cvmfs": {},
            "script": "ls /cvmfs; cat /cvmfs/atlas.cern.ch/version; ls /cvmfs; \
                       cat /cvmfs/unpacked.cern.ch/registry.hub.docker.com/library/debian:bookworm-slim/etc/os-release | head -1; \
                       test ! -e /cvmfs/no-such-repository.cern.ch && echo absent",
            "shards": 1,
        }),
        Phase::Succeeded,
    )
    .await?;
    let log = shard_logs(&ctx, "on-demand")?.concat();
    // Nothing before the first access; the repository after it.
    assert!(log.starts_with("atlas latest\natlas.cern.ch\n"), "{log}");
    assert!(
        log.contains("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\""),
        "{log}"
    );
    assert!(log.ends_with("absent\n"), "{log}");
    Ok(())
}

async fn two_pinned_fleets(ctx: TestContext) -> TestResult {
    let _calm = installed(&ctx).await?;
    let spec = |tag: &str| {
        json!({
            "image": ANALYSIS_BASE_IMAGE,
            "cvmfs": {"repositories": ["cms.cern.ch"], "pin": {"cms.cern.ch": {"tag": tag}}},
            // Both fleets run at the same time: each waits until the other has started.
            "script": "cat /cvmfs/cms.cern.ch/version; sleep 8; cat /cvmfs/cms.cern.ch/version",
            "shards": 2,
            "parallelism": 2,
        })
    };
    let (v1, v2) = tokio::join!(
        analysis_job(&ctx, "pinned-v1", spec("v1"), Phase::Succeeded),
        analysis_job(&ctx, "pinned-v2", spec("v2"), Phase::Succeeded),
    );
    let (v1, v2) = (v1?, v2?);
    let (s1, s2) = (v1.status.unwrap(), v2.status.unwrap());
    // The fleets overlapped in time.
    let (start1, end1) = (s1.start_time.unwrap().0, s1.completion_time.unwrap().0);
    let (start2, end2) = (s2.start_time.unwrap().0, s2.completion_time.unwrap().0);
    assert!(start1 < end2 && start2 < end1, "the fleets did not overlap");
    for log in shard_logs(&ctx, "pinned-v1")? {
        assert_eq!(log, "cms v1\ncms v1\n");
    }
    for log in shard_logs(&ctx, "pinned-v2")? {
        assert_eq!(log, "cms v2\ncms v2\n");
    }
    Ok(())
}

async fn cmssw_bootstrap(ctx: TestContext) -> TestResult {
    let _calm = installed(&ctx).await?;
    analysis_job(
        &ctx,
        "cmssw",
        json!({
            "platform": "el9",
            "cmssw": {"release": "CMSSW_13_0_13", "scramArch": "el9_amd64_gcc11"},
            "script": "echo \"$CMSSW_VERSION $CMSSW_RUNTIME $SCRAM_ARCH $(basename \"$PWD\")\"",
            "shards": 1,
        }),
        Phase::Succeeded,
    )
    .await?;
    let log = shard_logs(&ctx, "cmssw")?.concat();
    assert!(
        log.contains("CMSSW_13_0_13 ok el9_amd64_gcc11 src"),
        "{log}"
    );
    Ok(())
}

async fn security_from_inside(ctx: TestContext) -> TestResult {
    let _calm = installed(&ctx).await?;
    analysis_job(
        &ctx,
        "inside",
        json!({
            "image": ANALYSIS_BASE_IMAGE,
            "cvmfs": {"repositories": ["cms.cern.ch"]},
            "script": "touch /cvmfs/cms.cern.ch/x 2>/dev/null && echo writable || echo read-only; \
                       grep ' /cvmfs ' /proc/self/mountinfo | grep -q ' ro,' && echo mounted-ro; \
                       grep ' /cvmfs ' /proc/self/mountinfo | grep -q 'master:' && echo slave; \
                       grep ' /cvmfs ' /proc/self/mountinfo | grep -qv 'shared:' && echo not-shared; \
                       mkdir -p /tmp/m && (mount -t tmpfs none /tmp/m 2>/dev/null && echo mounted || echo no-mount); \
                       echo caps=$(grep CapEff /proc/self/status | cut -f2); \
                       echo uid=$(id -u) gid=$(id -g); \
                       grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status && echo no-new-privs",
            "shards": 1,
        }),
        Phase::Succeeded,
    )
    .await?;
    let log = shard_logs(&ctx, "inside")?.concat();
    for expected in [
        "read-only\n",
        "mounted-ro\n",
        "slave\n",
        "not-shared\n",
        "no-mount\n",
    ] {
        assert!(log.contains(expected), "{expected:?} missing:\n{log}");
    }
    let caps = log
        .lines()
        .find_map(|l| l.strip_prefix("caps="))
        .ok_or("no capability line")?;
    let caps = u64::from_str_radix(caps, 16)?;
    // Pod Security restricted: every capability dropped, no privilege escalation, and
    // the configuration's default user (the shard's image names none).
    assert_eq!(caps, 0, "the shard has capabilities: {caps:x}");
    assert!(log.contains("uid=1000 gid=1000\n"), "{log}");
    assert!(log.contains("no-new-privs\n"), "{log}");
    // What the pod mounted (nothing, it may not) never reached the node.
    let mountinfo = run(node(&ctx).command("cat").arg("/proc/self/mountinfo"))?;
    assert!(!mountinfo.contains("/tmp/m "), "{mountinfo}");
    Ok(())
}

async fn bad_attributes_in_a_pod(ctx: TestContext) -> TestResult {
    let _calm = installed(&ctx).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad-attributes"},
        "spec": {
            "containers": [{
                "name": "main",
                "image": ANALYSIS_BASE_IMAGE,
                "command": ["sleep", "60"],
                "volumeMounts": [{"name": "cvmfs", "mountPath": "/cvmfs", "mountPropagation": "HostToContainer"}],
            }],
            "volumes": [{"name": "cvmfs", "csi": {"driver": CSI_DRIVER_NAME, "readOnly": true,
                "volumeAttributes": {"repos": "cms.cern.ch"}}}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let events = kubectl(
            &ctx,
            &[
                "get",
                "events",
                "-n",
                &ctx.namespace,
                "--field-selector",
                "involvedObject.name=bad-attributes",
                "-o",
                "jsonpath={.items[*].message}",
            ],
        )?;
        if events.contains("InvalidArgument")
            && events.contains("unknown volume attribute \\\"repos\\\"")
            || events.contains("unknown volume attribute \"repos\"")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no InvalidArgument event: {events}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let pod = pods.get("bad-attributes").await?;
    let waiting = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().cloned())
        .and_then(|c| c.state)
        .and_then(|s| s.waiting)
        .and_then(|w| w.reason);
    assert_eq!(waiting.as_deref(), Some("ContainerCreating"));
    Ok(())
}

async fn healing_in_a_real_pod(ctx: TestContext) -> TestResult {
    drop(installed(&ctx).await?);
    let _alone = CALM.write().await;
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let job = testing::analysis_job(
        "reader",
        json!({
            "image": ANALYSIS_BASE_IMAGE,
            "cvmfs": {"repositories": ["cms.cern.ch"]},
            // Reads in a loop, logging each change between readable and not, until told
            // to stop.
            "script": reader::read_loop("/cvmfs/cms.cern.ch/version"),
            "shards": 1,
        }),
    )
    .build()?;
    api.create(&PostParams::default(), &job).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pod = loop {
        let list = pods
            .list(&ListParams::default().labels("batch.kubernetes.io/job-name=reader"))
            .await?;
        if let Some(pod) = list
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        {
            break pod.metadata.name.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let log = || kubectl(&ctx, &["logs", "-n", &ctx.namespace, &pod]);
    // After a disruption: a few seconds for it to show, then the shard must read again
    // (the outages are measured from its log).
    let settle_and_read = || async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = log()?;
            if reader::reads_now(&text) {
                return Ok::<String, String>(text);
            }
            if Instant::now() > deadline {
                return Err(format!("the shard did not read again:\n{text}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let outage_since = |text: &str, lines: usize| {
        reader::longest_outage(&text.lines().skip(lines).collect::<Vec<_>>().join("\n"))
    };
    settle_and_read().await?;
    let mut outages = Vec::new();

    // 1. The client dies: its process on the node is killed.
    let lines = log()?.lines().count();
    let killed = reader::kill_clients("cms.cern.ch");
    assert!(killed > 0, "no client of cms.cern.ch found on the node");
    let text = settle_and_read().await?;
    outages.push((
        "client killed",
        outage_since(&text, lines.saturating_sub(1)),
    ));

    // 2. The plugin restarts (a rollout restart replaces its pod).
    let lines = log()?.lines().count();
    kubectl(
        &ctx,
        &[
            "-n",
            NAMESPACE,
            "rollout",
            "restart",
            "daemonset/hepbatch-csi-node",
        ],
    )?;
    kubectl(
        &ctx,
        &[
            "-n",
            NAMESPACE,
            "rollout",
            "status",
            "daemonset/hepbatch-csi-node",
            "--timeout=120s",
        ],
    )?;
    let text = settle_and_read().await?;
    outages.push((
        "plugin restarted",
        outage_since(&text, lines.saturating_sub(1)),
    ));

    // 3. The plugin is upgraded to another image tag with helm.
    run(node(&ctx).ctr().args([
        "-n",
        "k8s.io",
        "images",
        "tag",
        "--force",
        "localhost/hepbatch-csi:0.1.0",
        "localhost/hepbatch-csi:0.1.0-next",
    ]))?;
    let lines = log()?.lines().count();
    run(helm(&ctx).args(["upgrade", RELEASE]).arg(chart()).args([
        "--namespace",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "csi.image.tag=0.1.0-next",
        "--wait",
        "--timeout",
        "180s",
    ]))?;
    let text = settle_and_read().await?;
    outages.push((
        "plugin upgraded",
        outage_since(&text, lines.saturating_sub(1)),
    ));
    eprintln!("reader log:\n{text}");

    kubectl(
        &ctx,
        &[
            "exec",
            "-n",
            &ctx.namespace,
            &pod,
            "--",
            "touch",
            "/tmp/stop",
        ],
    )?;
    let job = wait::until(
        &api,
        "reader",
        "phase Succeeded",
        JOB_TIMEOUT,
        |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref()).and_then(|s| s.phase) == Some(Phase::Succeeded)
        },
    )
    .await?;
    assert_eq!(job.status.unwrap().failed, 0);
    let pod = pods.get(&pod).await?;
    let restarts: i32 = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "the shard's container restarted");
    eprintln!("outages seen by the reading shard: {outages:?}");
    for (what, outage) in outages {
        assert!(
            outage <= Duration::from_secs(5),
            "{what}: unreadable for {outage:?}"
        );
    }
    Ok(())
}
