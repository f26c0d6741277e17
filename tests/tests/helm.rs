//! The Helm chart (`charts/hepbatch`) on the real testbed: what cluster admins run.
//!
//! - the chart's CRD is the generated `crds/analysisjob.yaml`, byte for byte;
//! - `helm template` with the default values and with `ci/all-options-values.yaml` (every
//!   option set) renders objects the real apiserver accepts (`kubectl apply
//!   --dry-run=server`);
//! - a values file that breaks the schema is refused with a message naming the key;
//! - Pod Security: with the plugin in a namespace of its own, every workload of the
//!   release namespace (operator, provisioner) and its pods pass `restricted` (server-side
//!   dry runs in a namespace enforcing and warning `restricted`), and the plugin's pods
//!   need `privileged`;
//! - `helm install` creates every object (the CRD and the CSIDriver served), `helm upgrade`
//!   changes the operator's arguments, `helm uninstall` removes the release but keeps the
//!   CRD;
//! - RBAC for real: the operator binary runs on this machine with a kubeconfig carrying a
//!   token of the chart's ServiceAccount (TokenRequest), completes `examples/hello.yaml`
//!   and `examples/split-1000-files.yaml` (its per-shard input-list ConfigMaps too), and
//!   its log must not show a single 403.
//!
//! Releases that run side by side disable the CSI driver except one, because the
//! CSIDriver object is cluster-wide and belongs to exactly one release.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use hepbatch_crds::{AnalysisJob, CSI_DRIVER_NAME, Phase};
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::TestbedOptions;
use hepbatch_tests::wait;
use hepbatch_tests::workspace::operator_binary;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::CSIDriver;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use tokio::process::Command;

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::default(),
        vec![
            test("chart_crd_is_the_generated_crd", chart_crd_is_generated_crd),
            test(
                "default_values_render_objects_the_apiserver_accepts",
                default_values_accepted,
            ),
            test(
                "all_options_render_objects_the_apiserver_accepts",
                all_options_accepted,
            ),
            test(
                "bad_values_are_refused_by_the_schema_with_a_message",
                bad_values_refused,
            ),
            test(
                "only_the_csi_plugin_needs_more_than_pod_security_restricted",
                pod_security,
            ),
            test(
                "install_upgrade_uninstall_create_change_and_remove_every_object",
                install_upgrade_uninstall,
            )
            .with_timeout(Duration::from_secs(180)),
            test(
                "operator_with_the_chart_service_account_completes_examples_without_403",
                operator_with_chart_rbac,
            )
            .with_timeout(Duration::from_secs(240)),
        ],
    )
}

/// The repository root.
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn chart() -> PathBuf {
    repository().join("charts/hepbatch")
}

/// What a finished command printed.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn run(command: &mut Command) -> Result<Ran, std::io::Error> {
    let output = command.stdin(Stdio::null()).output().await?;
    Ok(Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `command` and fails with its output unless it succeeds.
async fn run_ok(what: &str, command: &mut Command) -> Result<String, String> {
    let ran = run(command)
        .await
        .map_err(|error| format!("{what}: {error}"))?;
    if ran.success {
        Ok(ran.stdout)
    } else {
        Err(format!(
            "{what} failed:\nstdout:\n{}\nstderr:\n{}",
            ran.stdout, ran.stderr
        ))
    }
}

fn helm(ctx: &TestContext) -> Command {
    let mut command = Command::new(ctx.testbed.binaries().path("helm"));
    let home = ctx.testbed.work_dir().join("helm-home");
    command
        .arg("--kubeconfig")
        .arg(ctx.testbed.kubeconfig())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

fn kubectl(ctx: &TestContext) -> Command {
    let mut command = Command::new(ctx.testbed.binaries().path("kubectl"));
    command.arg("--kubeconfig").arg(ctx.testbed.kubeconfig());
    command
}

/// `helm template` output (CRDs included) applied with `--dry-run=server`.
async fn render_and_dry_run(ctx: &TestContext, release: &str, values: &[&str]) -> TestResult {
    let mut template = helm(ctx);
    template.args(["template", release]).arg(chart()).args([
        "--namespace",
        &ctx.namespace,
        "--include-crds",
    ]);
    for file in values {
        template.arg("--values").arg(chart().join(file));
    }
    let rendered = run_ok("helm template", &mut template).await?;
    let file = ctx
        .testbed
        .work_dir()
        .join(format!("{}-{release}.yaml", ctx.namespace));
    std::fs::write(&file, &rendered)?;
    let applied = run_ok(
        "kubectl apply --dry-run=server",
        kubectl(ctx)
            // Server-side apply: one PATCH per object, so a CRD that another test installs
            // at the same moment is no race.
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=hepbatch-helm-test",
                "--dry-run=server",
            ])
            .arg("-f")
            .arg(&file),
    )
    .await?;
    // Every rendered object was seen by the apiserver.
    let kinds = rendered.matches("\nkind: ").count();
    let accepted = applied
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .count();
    assert_eq!(
        accepted, kinds,
        "the apiserver accepted {accepted} of {kinds} objects:\n{applied}"
    );
    Ok(())
}

async fn chart_crd_is_generated_crd(_ctx: TestContext) -> TestResult {
    let generated = std::fs::read_to_string(repository().join("crds/analysisjob.yaml"))?;
    let in_chart = std::fs::read_to_string(chart().join("crds/analysisjob.yaml"))?;
    assert!(
        generated == in_chart,
        "charts/hepbatch/crds/analysisjob.yaml differs from crds/analysisjob.yaml; \
         copy it: cp crds/analysisjob.yaml charts/hepbatch/crds/"
    );
    Ok(())
}

async fn default_values_accepted(ctx: TestContext) -> TestResult {
    render_and_dry_run(&ctx, "defaults", &[]).await
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD, so that the
/// ServiceMonitor the chart renders can be checked by the apiserver.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor}
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
            x-kubernetes-preserve-unknown-fields: true
"#;

/// The paths of the leaves of a values tree (`operator.image.tag`, ...); an empty map is a
/// leaf too.
fn leaves(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(child, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

async fn all_options_accepted(ctx: TestContext) -> TestResult {
    // The values file really sets every option of values.yaml.
    let defaults: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml"))?)?;
    let all: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(
        chart().join("ci/all-options-values.yaml"),
    )?)?;
    let (mut default_keys, mut all_keys) = (Vec::new(), Vec::new());
    leaves(&defaults, "", &mut default_keys);
    leaves(&all, "", &mut all_keys);
    let missing: Vec<&String> = default_keys
        .iter()
        .filter(|key| {
            !all_keys
                .iter()
                .any(|k| k == *key || k.starts_with(&format!("{key}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "ci/all-options-values.yaml does not set {missing:?}"
    );

    let crd_file = ctx.testbed.work_dir().join("servicemonitor-crd.yaml");
    std::fs::write(&crd_file, SERVICE_MONITOR_CRD)?;
    run_ok(
        "installing the ServiceMonitor CRD",
        kubectl(&ctx)
            .args(["apply", "--server-side", "-f"])
            .arg(&crd_file),
    )
    .await?;
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    wait::until(
        &crds,
        "servicemonitors.monitoring.coreos.com",
        "Established",
        Duration::from_secs(30),
        conditions::is_crd_established(),
    )
    .await?;
    // The watched namespaces of the values file get RoleBindings: they must exist; so
    // must the CSI plugin's own, which the chart creates (a dry run creates nothing).
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    for name in ["hepbatch-all-a", "hepbatch-all-b", "hepbatch-all-csi"] {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    render_and_dry_run(&ctx, "all", &["ci/all-options-values.yaml"]).await
}

/// Labels `namespace` so Pod Security admission enforces and warns `level`.
async fn label_pod_security(ctx: &TestContext, namespace: &str, level: &str) -> TestResult {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let labels = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/warn": level,
    }}});
    namespaces
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&labels))
        .await?;
    Ok(())
}

/// The pod templates of the workloads in `rendered` (kind, name, namespace, pod spec).
fn pod_templates(rendered: &str) -> Result<Vec<(String, String, String, PodSpec)>, String> {
    let mut templates = Vec::new();
    let documents: Vec<serde_json::Value> =
        serde_yaml::from_multiple(rendered).map_err(|e| e.to_string())?;
    for object in documents {
        let kind = object["kind"].as_str().unwrap_or_default();
        if !["Deployment", "DaemonSet"].contains(&kind) {
            continue;
        }
        let spec: PodSpec = serde_json::from_value(object["spec"]["template"]["spec"].clone())
            .map_err(|e| format!("{kind}: {e}"))?;
        templates.push((
            kind.to_owned(),
            object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            spec,
        ));
    }
    Ok(templates)
}

/// A server-side dry run of a pod with `spec` in `namespace`: what Pod Security admission
/// says of it (`Ok` when admitted). The ServiceAccount is left out: it is not created by a
/// dry run, and Pod Security does not look at it.
async fn dry_run_pod(ctx: &TestContext, namespace: &str, spec: &PodSpec) -> Result<(), String> {
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("pod-security-".to_owned()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: None,
            ..spec.clone()
        }),
        status: None,
    };
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .create(&params, &pod)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(error) => Err(error.to_string()),
    }
}

async fn pod_security(ctx: TestContext) -> TestResult {
    let release_ns = ctx.namespace.clone();
    let csi_ns = format!("{release_ns}-csi");
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": csi_ns}}))?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    label_pod_security(&ctx, &release_ns, "restricted").await?;
    let mut template = helm(&ctx);
    template
        .args(["template", "hb"])
        .arg(chart())
        .args(["--namespace", &release_ns])
        .args(["--set", &format!("csi.namespace={csi_ns}")])
        .args(["--set", "csi.createNamespace=true"])
        .args(["--set", "csi.provisioner.enabled=true"]);
    let rendered = run_ok("helm template", &mut template).await?;
    let file = ctx
        .testbed
        .work_dir()
        .join(format!("{release_ns}-pod-security.yaml"));
    std::fs::write(&file, &rendered)?;
    // The plugin's namespace is the chart's, labelled privileged.
    assert!(
        rendered.contains(&format!("name: {csi_ns}"))
            && rendered.contains("pod-security.kubernetes.io/enforce: privileged"),
        "{rendered}"
    );
    // Workloads are checked against the namespace's warn level: kubectl prints
    // "would violate PodSecurity" for any that would not pass.
    let applied = run(kubectl(&ctx)
        .args([
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
        ])
        .args(["--field-manager=hepbatch-helm-test", "-f"])
        .arg(&file))
    .await?;
    assert!(applied.success, "{}{}", applied.stdout, applied.stderr);
    assert!(
        !applied.stderr.contains("would violate PodSecurity"),
        "{}",
        applied.stderr
    );
    // Their pods, as the apiserver admits pods: enforced.
    let templates = pod_templates(&rendered)?;
    let kinds: Vec<&str> = templates.iter().map(|(kind, ..)| kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "Deployment").count(),
        2,
        "{kinds:?}"
    );
    for (kind, name, namespace, spec) in &templates {
        if kind == "DaemonSet" {
            assert_eq!(namespace, &csi_ns, "the plugin runs in its own namespace");
            // Proof the check bites: the plugin's pods are refused under restricted...
            let Err(refused) = dry_run_pod(&ctx, &release_ns, spec).await else {
                return Err(format!("the privileged plugin {name} passed restricted").into());
            };
            assert!(
                refused.contains("violates PodSecurity \"restricted:latest\""),
                "{refused}"
            );
            assert!(refused.contains("privileged"), "{refused}");
            // ... and admitted where the chart puts them.
            label_pod_security(&ctx, &csi_ns, "privileged").await?;
            dry_run_pod(&ctx, &csi_ns, spec)
                .await
                .map_err(|e| format!("{kind} {name} in {csi_ns}: {e}"))?;
        } else {
            assert_eq!(namespace, &release_ns);
            dry_run_pod(&ctx, &release_ns, spec)
                .await
                .map_err(|e| format!("{kind} {name} under restricted: {e}"))?;
        }
    }
    assert!(kinds.contains(&"DaemonSet"), "{kinds:?}");
    Ok(())
}

async fn bad_values_refused(ctx: TestContext) -> TestResult {
    let file = ctx.testbed.work_dir().join("bad-values.yaml");
    std::fs::write(
        &file,
        "operator:\n  logFormat: xml\n  maxConcurrentReconciles: 0\n  watchNamespaces: [Not_A_Namespace]\n\
         csi:\n  kubeletDir: var/lib/kubelet\n  registration:\n    mode: both\n",
    )?;
    let ran = run(helm(&ctx)
        .args(["install", "bad"])
        .arg(chart())
        .args(["--namespace", &ctx.namespace, "--values"])
        .arg(&file))
    .await?;
    assert!(!ran.success, "helm installed bad values:\n{}", ran.stdout);
    for expected in [
        "values don't meet the specifications of the schema",
        "/operator/logFormat",
        "'text', 'json'",
        "/operator/maxConcurrentReconciles",
        "/operator/watchNamespaces/0",
        "/csi/kubeletDir",
        "/csi/registration/mode",
        "'inProcess', 'sidecar'",
    ] {
        assert!(
            ran.stderr.contains(expected),
            "the message does not mention {expected:?}:\n{}",
            ran.stderr
        );
    }
    // Nothing was installed.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    assert!(
        deployments
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );
    Ok(())
}

async fn install_upgrade_uninstall(ctx: TestContext) -> TestResult {
    let ns = ctx.namespace.clone();
    let release = "hb";
    run_ok(
        "helm install",
        helm(&ctx)
            .args(["install", release])
            .arg(chart())
            .args(["--namespace", &ns]),
    )
    .await?;

    // The CRD is served: AnalysisJobs can be listed.
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    wait::until(
        &crds,
        "analysisjobs.hepbatch.io",
        "Established",
        Duration::from_secs(30),
        conditions::is_crd_established(),
    )
    .await?;
    let analysis_jobs: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ns);
    let mut served = false;
    for _ in 0..50 {
        if analysis_jobs.list(&ListParams::default()).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "AnalysisJobs are not served after install");

    // The CSIDriver as the kubelet needs it.
    let driver = Api::<CSIDriver>::all(ctx.client.clone())
        .get(CSI_DRIVER_NAME)
        .await?;
    let spec = driver.spec;
    assert_eq!(spec.attach_required, Some(false));
    assert_eq!(spec.pod_info_on_mount, Some(true));
    assert_eq!(spec.fs_group_policy.as_deref(), Some("None"));
    assert_eq!(
        spec.volume_lifecycle_modes,
        Some(vec!["Persistent".to_owned(), "Ephemeral".to_owned()])
    );

    // Every namespaced and cluster-wide object of the release.
    let name = format!("{release}-hepbatch");
    let operator = format!("{name}-operator");
    let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get(&operator)
        .await?;
    let daemon_set = Api::<DaemonSet>::namespaced(ctx.client.clone(), &ns)
        .get(&format!("{name}-csi-node"))
        .await?;
    Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns)
        .get(&operator)
        .await?;
    Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .get(&format!("{operator}-metrics"))
        .await?;
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .get(&operator)
        .await?;
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .get(&format!("{name}-csi-node-cvmfs"))
        .await?;
    Api::<Role>::namespaced(ctx.client.clone(), &ns)
        .get(&format!("{operator}-leader-election"))
        .await?;
    Api::<RoleBinding>::namespaced(ctx.client.clone(), &ns)
        .get(&format!("{operator}-leader-election"))
        .await?;
    Api::<ClusterRole>::all(ctx.client.clone())
        .get(&operator)
        .await?;
    Api::<ClusterRoleBinding>::all(ctx.client.clone())
        .get(&operator)
        .await?;

    // The hardening the chart promises.
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .ok_or("the Deployment has no pod spec")?;
    let container = &pod.containers[0];
    let security = container
        .security_context
        .as_ref()
        .ok_or("the operator has no securityContext")?;
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
    assert!(
        container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some()
    );
    let args = container.args.clone().unwrap_or_default();
    assert!(
        args.contains(&format!("--lease-namespace={ns}")),
        "{args:?}"
    );
    assert!(args.contains(&"--log-format=json".to_owned()), "{args:?}");
    assert!(
        args.contains(&"--max-concurrent-reconciles=64".to_owned()),
        "{args:?}"
    );

    let node_pod = daemon_set
        .spec
        .and_then(|s| s.template.spec)
        .ok_or("the DaemonSet has no pod spec")?;
    assert_eq!(
        node_pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let plugin = &node_pod.containers[0];
    assert_eq!(
        plugin.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    let bidirectional: Vec<&str> = plugin
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.mount_propagation.as_deref() == Some("Bidirectional"))
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        bidirectional,
        ["/var/lib/kubelet", "/var/lib/hepbatch/cvmfs"],
        "Bidirectional mounts"
    );

    // Upgrade: a changed value reaches the Deployment, the release has revision 2.
    run_ok(
        "helm upgrade",
        helm(&ctx)
            .args(["upgrade", release])
            .arg(chart())
            .args(["--namespace", &ns, "--reuse-values"])
            .args(["--set", "operator.logFormat=text"]),
    )
    .await?;
    let upgraded = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get(&operator)
        .await?;
    let args = upgraded
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    assert!(args.contains(&"--log-format=text".to_owned()), "{args:?}");
    let history = run_ok(
        "helm history",
        helm(&ctx)
            .args(["history", release, "--namespace", &ns, "-o", "json"])
            .env_remove("HELM_NAMESPACE"),
    )
    .await?;
    let history: serde_json::Value = serde_json::from_str(&history)?;
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");

    // Uninstall: the workloads and cluster-wide objects go, the CRD stays.
    run_ok(
        "helm uninstall",
        helm(&ctx).args(["uninstall", release, "--namespace", &ns, "--wait"]),
    )
    .await?;
    assert!(
        Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&operator)
            .await?
            .is_none(),
        "the Deployment survived uninstall"
    );
    assert!(
        Api::<CSIDriver>::all(ctx.client.clone())
            .get_opt(CSI_DRIVER_NAME)
            .await?
            .is_none(),
        "the CSIDriver survived uninstall"
    );
    assert!(
        Api::<ClusterRole>::all(ctx.client.clone())
            .get_opt(&operator)
            .await?
            .is_none(),
        "the ClusterRole survived uninstall"
    );
    assert!(
        crds.get_opt("analysisjobs.hepbatch.io").await?.is_some(),
        "uninstall removed the CRD (it must keep it, and with it every AnalysisJob)"
    );
    Ok(())
}

/// A kubeconfig for the same cluster that authenticates with `token` only.
async fn token_kubeconfig(ctx: &TestContext, token: &str) -> Result<PathBuf, String> {
    let server = run_ok(
        "reading the server",
        kubectl(ctx).args([
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ]),
    )
    .await?;
    let ca = run_ok(
        "reading the CA",
        kubectl(ctx).args([
            "config",
            "view",
            "--raw",
            "--minify",
            "--flatten",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ]),
    )
    .await?;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    \
         server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: operator\n  \
         user:\n    token: {token}\ncontexts:\n- name: operator\n  context:\n    \
         cluster: testbed\n    user: operator\ncurrent-context: operator\n"
    );
    let path = ctx
        .testbed
        .work_dir()
        .join(format!("{}-operator.kubeconfig", ctx.namespace));
    std::fs::write(&path, kubeconfig).map_err(|e| e.to_string())?;
    Ok(path)
}

async fn operator_with_chart_rbac(ctx: TestContext) -> TestResult {
    let binary = operator_binary()?;
    let ns = ctx.namespace.clone();
    let release = "rbac";
    // The operator runs here, not in the (fake) cluster; the CSIDriver belongs to the
    // install test.
    run_ok(
        "helm install",
        helm(&ctx)
            .args(["install", release])
            .arg(chart())
            .args(["--namespace", &ns])
            .args(["--set", "operator.enabled=false,csi.enabled=false"]),
    )
    .await?;
    let operator = format!("{release}-hepbatch-operator");
    let token = run_ok(
        "kubectl create token",
        kubectl(&ctx).args(["create", "token", &operator, "--namespace", &ns]),
    )
    .await?;
    let kubeconfig = token_kubeconfig(&ctx, token.trim()).await?;

    // The token is the ServiceAccount's and no more: it may not read Secrets.
    let secrets = run(Command::new(ctx.testbed.binaries().path("kubectl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "secrets", "--namespace", &ns]))
    .await?;
    assert!(
        !secrets.success && secrets.stderr.contains("forbidden"),
        "the chart's ServiceAccount can read Secrets:\n{}{}",
        secrets.stdout,
        secrets.stderr
    );

    // The operator's configuration as the chart renders it.
    let config_map = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .get(&operator)
        .await?;
    let config = config_map
        .data
        .and_then(|d| d.get("config.yaml").cloned())
        .ok_or("the operator ConfigMap has no config.yaml")?;
    let config_file = ctx.testbed.work_dir().join(format!("{ns}-config.yaml"));
    std::fs::write(&config_file, config)?;

    let log_path = ctx.testbed.work_dir().join(format!("{ns}-operator.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(&binary)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--config")
        .arg(&config_file)
        .args(["--metrics-address", "127.0.0.1:0"])
        .args(["--namespaces", &ns])
        .args(["--lease-namespace", &ns, "--lease-name", &operator])
        .args(["--identity", "helm-rbac-test"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;

    let outcome = async {
        // hello: Job, pods, status, events; split-1000-files: input-file ConfigMaps read
        // and per-shard input lists applied.
        let analysis_jobs: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ns);
        for (example, name) in [("hello", "hello"), ("split-1000-files", "split-1000-files")] {
            run_ok(
                &format!("kubectl apply examples/{example}.yaml"),
                kubectl(&ctx)
                    .args(["apply", "--namespace", &ns, "-f"])
                    .arg(repository().join(format!("examples/{example}.yaml"))),
            )
            .await?;
            wait::until(
                &analysis_jobs,
                name,
                "Succeeded",
                Duration::from_secs(150),
                |object: Option<&AnalysisJob>| {
                    object
                        .and_then(|aj| aj.status.as_ref())
                        .is_some_and(|s| s.phase == Some(Phase::Succeeded))
                },
            )
            .await?;
        }
        TestResult::Ok(())
    }
    .await;

    // A graceful stop releases the Lease (an update: also covered by the Role).
    if let Some(pid) = child.id() {
        let _ = run(Command::new("kill").args(["-TERM", &pid.to_string()])).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let log = std::fs::read_to_string(&log_path)?;
    let forbidden: Vec<&str> = log
        .lines()
        .filter(|l| {
            let lower = l.to_lowercase();
            lower.contains("forbidden") || lower.contains(" 403") || lower.contains("code: 403")
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "the operator was refused with the chart's RBAC:\n{}",
        forbidden.join("\n")
    );
    outcome.map_err(|error| format!("{error}\noperator log:\n{log}"))?;
    // Leader election ran with the chart's Role: the Lease was created with this token.
    Api::<Lease>::namespaced(ctx.client.clone(), &ns)
        .get(&operator)
        .await
        .map_err(|error| format!("the operator's Lease: {error}"))?;
    Ok(())
}
