//! A real kubelet node on the testbed: pods from the analysis base image really run
//! (`kubectl logs` and `kubectl exec` work), emptyDir and hostPath volumes work, pods
//! reach the apiserver at its service IP and host services the node exposes, and a
//! hostPath lands in the node's own `/var`, never on the host. The harness then checks
//! that the stopped node left no process, mount, cgroup, namespace or file behind.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is a failed test

use std::process::ExitCode;
use std::time::Duration;

use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::node::{ANALYSIS_BASE_IMAGE, REAL_NODE_LABEL, measure_pod_starts};
use hepbatch_tests::testbed::{RealNode, TestbedOptions};
use hepbatch_tests::wait;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::AsyncWriteExt;

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::one_real_node(),
        vec![
            test(
                "node_registers_ready_with_its_ip_label_and_images",
                node_registers_ready,
            ),
            test(
                "bash_pod_from_the_analysis_base_succeeds_and_kubectl_logs_shows_its_output",
                bash_pod_succeeds_with_logs,
            ),
            test("kubectl_exec_runs_in_a_running_pod", kubectl_exec_works),
            test(
                "emptydir_carries_files_from_the_init_container_to_the_main_one",
                emptydir_works,
            ),
            test(
                "hostpath_volume_lands_in_the_nodes_own_var_not_the_hosts",
                hostpath_works,
            ),
            test(
                "a_mount_made_on_the_node_later_appears_in_a_host_to_container_volume",
                host_to_container_propagation_works,
            ),
            test(
                "pods_reach_the_apiserver_service_ip_and_an_exposed_host_service",
                pods_reach_apiserver_and_exposed_service,
            ),
            test(
                "pod_start_measurement_reports_every_pod",
                pod_start_measurement,
            ),
        ],
    )
}

fn node(ctx: &TestContext) -> &RealNode {
    ctx.testbed
        .real_nodes()
        .first()
        .expect("the suite asks for one real node")
}

/// A pod on the real node running `script` with bash from the analysis base image.
fn bash_pod(name: &str, script: &str, restart: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": ANALYSIS_BASE_IMAGE,
                "command": ["bash", "-c", script],
            }],
        },
    }))
    .unwrap()
}

async fn create(ctx: &TestContext, pod: &Pod) -> Result<Api<Pod>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    pods.create(&PostParams::default(), pod).await?;
    Ok(pods)
}

/// `kubectl logs` of a pod's container, through the apiserver and the kubelet.
fn kubectl_logs(ctx: &TestContext, pod: &str, container: &str) -> Result<String, String> {
    let output = ctx
        .testbed
        .kubectl()
        .args(["logs", "-n", &ctx.namespace, pod, "-c", container])
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

const POD_TIMEOUT: Duration = Duration::from_secs(60);

async fn node_registers_ready(ctx: TestContext) -> TestResult {
    let real = node(&ctx);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let object = nodes.get(real.name()).await?;
    assert!(hepbatch_tests::testbed::node_is_ready(&object));
    let addresses = object.status.as_ref().unwrap().addresses.clone().unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == real.ip().to_string()),
        "addresses: {addresses:?}"
    );
    let labels = object.metadata.labels.unwrap();
    assert_eq!(
        labels.get(REAL_NODE_LABEL.0).map(String::as_str),
        Some(REAL_NODE_LABEL.1)
    );
    assert!(
        real.images().iter().any(|i| i == ANALYSIS_BASE_IMAGE),
        "imported: {:?}",
        real.images()
    );
    let pids = real.pids();
    let names: Vec<&str> = pids.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["node-0-namespaces", "node-0-containerd", "node-0-kubelet"]
    );
    Ok(())
}

async fn bash_pod_succeeds_with_logs(ctx: TestContext) -> TestResult {
    let script = "echo \"analysis on $(. /etc/os-release; echo $ID) with bash $BASH_VERSION\"; \
                  for shard in 1 2 3; do echo shard-$shard; done";
    let pods = create(&ctx, &bash_pod("analysis", script, "Never")).await?;
    wait::pod_phase(&pods, "analysis", "Succeeded", POD_TIMEOUT).await?;
    let logs = kubectl_logs(&ctx, "analysis", "main")?;
    assert!(
        logs.contains("analysis on debian with bash 5."),
        "logs: {logs}"
    );
    assert!(logs.contains("shard-1\nshard-2\nshard-3\n"), "logs: {logs}");
    Ok(())
}

async fn kubectl_exec_works(ctx: TestContext) -> TestResult {
    let pods = create(&ctx, &bash_pod("shell", "sleep 3600", "Never")).await?;
    wait::pod_phase(&pods, "shell", "Running", POD_TIMEOUT).await?;
    let output = ctx
        .testbed
        .kubectl()
        .args(["exec", "-n", &ctx.namespace, "shell", "--"])
        .args([
            "bash",
            "-c",
            "echo inside $(hostname); cat /proc/1/cmdline | tr '\\0' ' '",
        ])
        .output()?;
    assert!(
        output.status.success(),
        "kubectl exec failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("inside shell"), "exec output: {stdout}");
    assert!(stdout.contains("sleep 3600"), "exec output: {stdout}");
    Ok(())
}

async fn emptydir_works(ctx: TestContext) -> TestResult {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "scratch" },
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{ "name": "scratch", "emptyDir": {} }],
            "initContainers": [{
                "name": "produce",
                "image": ANALYSIS_BASE_IMAGE,
                "command": ["bash", "-c", "seq 1 5 > /scratch/events.txt"],
                "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }],
            }],
            "containers": [{
                "name": "consume",
                "image": ANALYSIS_BASE_IMAGE,
                "command": ["bash", "-c", "echo \"sum=$(( $(paste -sd+ /scratch/events.txt) ))\""],
                "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }],
            }],
        },
    }))?;
    let pods = create(&ctx, &pod).await?;
    wait::pod_phase(&pods, "scratch", "Succeeded", POD_TIMEOUT).await?;
    let logs = kubectl_logs(&ctx, "scratch", "consume")?;
    assert_eq!(logs.trim(), "sum=15");
    Ok(())
}

async fn hostpath_works(ctx: TestContext) -> TestResult {
    let real = node(&ctx);
    let below_var = format!("lib/hepbatch-hostpath-test/{}", ctx.namespace);
    let host_dir = std::path::Path::new("/var").join(&below_var);
    // A file the node provides, written from inside the node's namespaces (its /var is
    // the host's with the node's own writes on top).
    let status = real
        .command("sh")
        .arg("-c")
        .arg(format!(
            "mkdir -p {dir} && echo 'alignment v7' > {dir}/calibration.txt",
            dir = host_dir.display()
        ))
        .status()?;
    assert!(status.success(), "seeding the node's /var failed: {status}");
    assert!(!host_dir.exists(), "the seed appeared on the host");
    let seeded = real.var_upper_dir().join(&below_var);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "hostpath" },
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{ "name": "data", "hostPath": { "path": host_dir, "type": "Directory" } }],
            "containers": [{
                "name": "main",
                "image": ANALYSIS_BASE_IMAGE,
                "command": ["bash", "-c", "cat /data/calibration.txt; echo written-by-pod > /data/output.txt"],
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
            }],
        },
    }))?;
    let pods = create(&ctx, &pod).await?;
    wait::pod_phase(&pods, "hostpath", "Succeeded", POD_TIMEOUT).await?;
    let logs = kubectl_logs(&ctx, "hostpath", "main")?;
    assert_eq!(logs.trim(), "alignment v7");
    assert_eq!(
        std::fs::read_to_string(seeded.join("output.txt"))?,
        "written-by-pod\n",
        "the pod's write is in the node's /var"
    );
    assert!(
        !host_dir.exists(),
        "{} appeared on the host",
        host_dir.display()
    );
    Ok(())
}

/// What the CSI plugin relies on: the node's mounts are shared, so a mount made on the
/// node after a pod started shows up in the pod's `HostToContainer` volume.
async fn host_to_container_propagation_works(ctx: TestContext) -> TestResult {
    let real = node(&ctx);
    let dir = format!("/var/lib/hepbatch-propagation/{}", ctx.namespace);
    let status = real
        .command("mkdir")
        .args(["-p", &format!("{dir}/late")])
        .status()?;
    assert!(status.success());
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "propagation" },
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{ "name": "repo", "hostPath": { "path": dir, "type": "Directory" } }],
            "containers": [{
                "name": "main",
                "image": ANALYSIS_BASE_IMAGE,
                "command": ["bash", "-c",
                    "for i in $(seq 600); do [ -f /repo/late/marker ] && exec cat /repo/late/marker; sleep 0.1; done; exit 1"],
                "volumeMounts": [{ "name": "repo", "mountPath": "/repo", "mountPropagation": "HostToContainer" }],
            }],
        },
    }))?;
    let pods = create(&ctx, &pod).await?;
    wait::pod_phase(&pods, "propagation", "Running", POD_TIMEOUT).await?;
    let status = real
        .command("sh")
        .arg("-c")
        .arg(format!(
            "mount -t tmpfs hepbatch-late {dir}/late && echo mounted-later > {dir}/late/marker"
        ))
        .status()?;
    assert!(status.success(), "mounting on the node failed: {status}");
    wait::pod_phase(&pods, "propagation", "Succeeded", POD_TIMEOUT).await?;
    let logs = kubectl_logs(&ctx, "propagation", "main")?;
    assert_eq!(logs.trim(), "mounted-later");
    Ok(())
}

async fn pods_reach_apiserver_and_exposed_service(ctx: TestContext) -> TestResult {
    let real = node(&ctx);
    // A host-only service on 127.0.0.1, made reachable on the node.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"stratum says hello\n").await;
        }
    });
    let exposed = real.expose(port)?;
    assert_eq!(exposed.ip(), std::net::IpAddr::V4(real.ip()));
    let script = format!(
        "exec 3<>/dev/tcp/$KUBERNETES_SERVICE_HOST/$KUBERNETES_SERVICE_PORT && \
         echo apiserver-at-$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; \
         exec 4<>/dev/tcp/{ip}/{port} && head -1 <&4",
        ip = exposed.ip(),
        port = exposed.port(),
    );
    let pods = create(&ctx, &bash_pod("network", &script, "Never")).await?;
    let outcome = wait::pod_phase(&pods, "network", "Succeeded", POD_TIMEOUT).await;
    server.abort();
    let logs = kubectl_logs(&ctx, "network", "main")?;
    outcome.map_err(|e| format!("{e}; logs: {logs}"))?;
    assert!(logs.contains("apiserver-at-10.96.0.1:443"), "logs: {logs}");
    assert!(logs.contains("stratum says hello"), "logs: {logs}");
    Ok(())
}

async fn pod_start_measurement(ctx: TestContext) -> TestResult {
    let real = node(&ctx);
    let starts = measure_pod_starts(
        &ctx.client,
        &ctx.namespace,
        real.name(),
        ANALYSIS_BASE_IMAGE,
        3,
        Duration::from_secs(90),
    )
    .await?;
    assert_eq!(starts.len(), 3);
    for start in &starts {
        assert!(start.created_to_running > Duration::ZERO, "{start:?}");
    }
    eprintln!(
        "pod starts on {}: {:?}",
        real.name(),
        starts
            .iter()
            .map(|s| s.created_to_running)
            .collect::<Vec<_>>()
    );
    Ok(())
}
