//! Helpers shared by the operator's integration suites: installing the CRD, building
//! AnalysisJobs from JSON, running the operator binary and waiting for outcomes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hepbatch_crds::analysis_job::ANALYSIS_JOB_LABEL;
use hepbatch_crds::{AnalysisJob, Phase, testing};
use hepbatch_tests::harness::TestContext;
use hepbatch_tests::testbed;
use hepbatch_tests::wait;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Client, CustomResourceExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Error type of the test helpers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Installs (server-side applies) the AnalysisJob CRD and waits until it serves.
pub async fn install_crd(client: &Client) -> Result<(), BoxError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = AnalysisJob::crd();
    let name = "analysisjobs.hepbatch.io";
    crds.patch(
        name,
        &PatchParams::apply("hepbatch-tests").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait::until(
        &crds,
        name,
        "Established",
        Duration::from_secs(30),
        conditions::is_crd_established(),
    )
    .await?;
    // Established can come a moment before the endpoint serves.
    let api: Api<AnalysisJob> = Api::all(client.clone());
    for _ in 0..100 {
        if api.list(&ListParams::default().limit(1)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the AnalysisJob endpoint never served".into())
}

/// An AnalysisJob named `name` with `spec` given as JSON.
pub fn analysis_job(name: &str, spec: Value) -> Result<AnalysisJob, BoxError> {
    Ok(testing::analysis_job(name, spec).build()?)
}

/// The same, untyped: values the Rust types would refuse still reach the apiserver.
pub fn untyped_analysis_job(name: &str, spec: Value) -> Result<DynamicObject, BoxError> {
    Ok(serde_json::from_value(
        testing::analysis_job(name, spec).json(),
    )?)
}

/// AnalysisJobs of the test's namespace, untyped (see [`untyped_analysis_job`]).
pub fn untyped_api(ctx: &TestContext) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<AnalysisJob>(&());
    Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &resource)
}

/// Creates the AnalysisJob `name` with `spec`.
pub async fn create(api: &Api<AnalysisJob>, name: &str, spec: Value) -> Result<(), BoxError> {
    api.create(&PostParams::default(), &analysis_job(name, spec)?)
        .await?;
    Ok(())
}

/// The pods of the AnalysisJob `name` (by the label the operator puts on them).
pub async fn pods_of(ctx: &TestContext, name: &str) -> Result<Vec<Pod>, BoxError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(pods
        .list(&ListParams::default().labels(&format!("{ANALYSIS_JOB_LABEL}={name}")))
        .await?
        .items)
}

/// One running operator process, killed when dropped, and stopped by the testbed's
/// signal cleanup if a signal ends the test run.
pub struct Operator {
    child: Child,
    log: PathBuf,
    _registration: testbed::RegistrationGuard,
}

impl Operator {
    /// Starts the operator watching the test's namespace, with its Lease there.
    pub async fn start(ctx: &TestContext, identity: &str, metrics: &str) -> Result<Self, BoxError> {
        Operator::start_with(ctx, identity, metrics, &[]).await
    }

    /// Like [`Operator::start`], with extra flags.
    pub async fn start_with(
        ctx: &TestContext,
        identity: &str,
        metrics: &str,
        extra: &[&str],
    ) -> Result<Self, BoxError> {
        let log = ctx
            .testbed
            .log_dir()
            .join(format!("operator-{}-{identity}.log", ctx.namespace));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_hepbatch-operator"));
        command
            .arg("--kubeconfig")
            .arg(ctx.testbed.kubeconfig())
            .args(["--namespaces", &ctx.namespace])
            .args(["--lease-namespace", &ctx.namespace])
            .args(["--lease-duration-seconds", "6"])
            .args(["--identity", identity])
            .args(["--metrics-address", metrics])
            .args(extra)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        let (child, registration) = testbed::spawn_registered(&mut command)?;
        Ok(Operator {
            child,
            log,
            _registration: registration,
        })
    }

    /// Sends `signal` and waits up to `timeout` for the process to exit; its exit status.
    pub async fn stop_with(
        mut self,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus, BoxError> {
        let pid = self
            .child
            .id()
            .ok_or("the operator has already been reaped")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, signal)?;
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => Err(format!(
                "the operator still runs {timeout:?} after {signal}; its log:\n{}",
                self.log_tail()
            )
            .into()),
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(mut self) -> Result<(), BoxError> {
        self.child.kill().await?;
        Ok(())
    }

    pub fn log_tail(&self) -> String {
        testbed::tail(&self.log, 30)
    }

    /// Waits until the operator's log contains `text` (e.g. that it reloaded its
    /// configuration).
    pub async fn wait_for_log(&self, text: &str, timeout: Duration) -> Result<(), BoxError> {
        let log = self.log.clone();
        eventually(&format!("{text:?} in the operator log"), timeout, || {
            let log = log.clone();
            async move {
                Ok(std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(text))
            }
        })
        .await
    }

    /// Adds the operator's recent log to a failed wait, where it usually says why.
    pub fn explain<T, E: std::fmt::Display>(&self, result: Result<T, E>) -> Result<T, BoxError> {
        result.map_err(|e| format!("{e}\noperator log:\n{}", self.log_tail()).into())
    }
}

/// Installs the CRD and starts one operator for the test's namespace.
pub async fn setup(ctx: &TestContext) -> Result<(Operator, Api<AnalysisJob>), BoxError> {
    install_crd(&ctx.client).await?;
    let operator = Operator::start(ctx, "operator", "127.0.0.1:0").await?;
    Ok((
        operator,
        Api::namespaced(ctx.client.clone(), &ctx.namespace),
    ))
}

/// `spec` with pod annotations that script the kwok fake pods.
pub fn scripted(spec: Value, pod_annotations: Value) -> Value {
    let mut spec = spec;
    spec["podMetadata"] = json!({"annotations": pod_annotations});
    spec
}

/// Waits until the AnalysisJob `name` reaches `phase`.
pub async fn wait_phase(
    api: &Api<AnalysisJob>,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> Result<AnalysisJob, BoxError> {
    Ok(wait::until(
        api,
        name,
        phase.as_str(),
        timeout,
        move |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref()).and_then(|s| s.phase) == Some(phase)
        },
    )
    .await?)
}

/// Reasons of the Events regarding the object `name`.
pub async fn event_reasons(ctx: &TestContext, name: &str) -> Result<Vec<String>, BoxError> {
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect())
}

/// Waits until the object `name` no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<(), BoxError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    eventually(&format!("{name} to be deleted"), timeout, || async {
        Ok(api.get_opt(name).await?.is_none())
    })
    .await
}

/// [`wait::eventually`] with the suites' error type, so `check` needs no annotations.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, check: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, BoxError>>,
{
    wait::eventually(what, timeout, check).await
}

/// Every AnalysisJob of `examples/`, by file name order, with the file it came from.
pub fn examples() -> Result<Vec<(PathBuf, AnalysisJob)>, BoxError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    let mut examples = Vec::new();
    for path in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(&path)?;
        let example: AnalysisJob =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        examples.push((path, example));
    }
    Ok(examples)
}

/// Creates every example in the test's namespace; their names.
pub async fn create_examples(bed: &Configured) -> Result<Vec<String>, BoxError> {
    let mut names = Vec::new();
    for (path, example) in examples()? {
        let name = example
            .metadata
            .name
            .clone()
            .ok_or("example without a name")?;
        bed.api
            .create(&PostParams::default(), &example)
            .await
            .map_err(|e| format!("{} rejected: {e}", path.display()))?;
        names.push(name);
    }
    assert!(names.len() >= 6, "examples: {names:?}");
    Ok(names)
}

/// Labels the test's namespace so Pod Security admission enforces `level` on its pods
/// (`restricted`, `baseline` or `privileged`).
pub async fn enforce_pod_security(ctx: &TestContext, level: &str) -> Result<(), BoxError> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let labels = json!({"metadata": {"labels": {
        hepbatch_crds::security::POD_SECURITY_ENFORCE_LABEL: level,
    }}});
    namespaces
        .patch(
            &ctx.namespace,
            &PatchParams::default(),
            &Patch::Merge(&labels),
        )
        .await?;
    Ok(())
}

/// An operator with a configuration file in the test's work directory.
pub struct Configured {
    /// The operator (no leader election).
    pub operator: Operator,
    /// Its configuration file: write it to reconfigure the running operator.
    pub config: PathBuf,
    /// AnalysisJobs of the test's namespace.
    pub api: Api<AnalysisJob>,
}

/// Installs the CRD and starts an operator for the test's namespace with `config` as its
/// configuration file.
pub async fn start_configured(ctx: &TestContext, config: &str) -> Result<Configured, BoxError> {
    install_crd(&ctx.client).await?;
    let path = ctx
        .testbed
        .work_dir()
        .join(format!("operator-{}.yaml", ctx.namespace));
    std::fs::write(&path, config)?;
    let path_arg = path.display().to_string();
    let operator = Operator::start_with(
        ctx,
        "operator",
        "127.0.0.1:0",
        &["--config", &path_arg, "--no-leader-election"],
    )
    .await?;
    Ok(Configured {
        operator,
        config: path,
        api: Api::namespaced(ctx.client.clone(), &ctx.namespace),
    })
}

/// The `reason: message` of the AnalysisJob `name`'s `Accepted=False` condition, once it
/// has one (within 30 s).
pub async fn accepted_false_reason(api: &Api<AnalysisJob>, name: &str) -> Result<String, BoxError> {
    for _ in 0..150 {
        let aj = api.get(name).await?;
        if let Some(c) = aj
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == "Accepted" && c.status == "False")
        {
            return Ok(format!("{}: {}", c.reason, c.message));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{name} never got an Accepted=False condition").into())
}
