//! Helpers of the plugin's integration suites: the CRD, the operator process, and
//! running `kubectl-hepbatch` against the test's namespace.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hepbatch_crds::AnalysisJob;
use hepbatch_crds::testing;
use hepbatch_tests::harness::TestContext;
use hepbatch_tests::testbed;
use hepbatch_tests::wait;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Client, CustomResourceExt};
use serde_json::Value;
use tokio::process::{Child, Command};

/// Error type of the tests.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Installs the AnalysisJob CRD and waits until its endpoint serves.
pub async fn install_crd(client: &Client) -> Result<(), BoxError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "analysisjobs.hepbatch.io";
    crds.patch(
        name,
        &PatchParams::apply("hepbatch-cli-tests").force(),
        &Patch::Apply(&AnalysisJob::crd()),
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
    let api: Api<AnalysisJob> = Api::all(client.clone());
    wait::eventually("the AnalysisJob endpoint", Duration::from_secs(10), || {
        let api = api.clone();
        async move { Ok::<_, BoxError>(api.list(&ListParams::default().limit(1)).await.is_ok()) }
    })
    .await
}

/// The operator binary of this workspace (see the module documentation).
pub fn operator_binary() -> Result<PathBuf, BoxError> {
    Ok(hepbatch_tests::workspace::operator_binary()?)
}

/// The operator watching the test's namespace; killed when dropped.
pub struct Operator {
    _child: Child,
    _registration: testbed::RegistrationGuard,
}

pub async fn start_operator(ctx: &TestContext) -> Result<Operator, BoxError> {
    install_crd(&ctx.client).await?;
    let log = ctx
        .testbed
        .log_dir()
        .join(format!("operator-{}.log", ctx.namespace));
    let file = std::fs::File::create(&log)?;
    let mut command = Command::new(operator_binary()?);
    command
        .arg("--kubeconfig")
        .arg(ctx.testbed.kubeconfig())
        .args(["--namespaces", &ctx.namespace])
        .args(["--lease-namespace", &ctx.namespace])
        .args(["--lease-duration-seconds", "6"])
        .args(["--identity", "operator"])
        .args(["--metrics-address", "127.0.0.1:0"])
        .env("RUST_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true);
    let (child, registration) = testbed::spawn_registered(&mut command)?;
    Ok(Operator {
        _child: child,
        _registration: registration,
    })
}

/// What one run of the plugin did.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `kubectl-hepbatch <args>` against the test's namespace, at most `timeout`.
pub async fn plugin(ctx: &TestContext, args: &[&str], timeout: Duration) -> Result<Run, BoxError> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-hepbatch"));
    command
        .arg("--kubeconfig")
        .arg(ctx.testbed.kubeconfig())
        .args(["-n", &ctx.namespace])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .map_err(|_| format!("kubectl-hepbatch {args:?} still ran after {timeout:?}"))??;
    Ok(Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

pub async fn create(ctx: &TestContext, name: &str, spec: Value) -> Result<(), BoxError> {
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    api.create(
        &PostParams::default(),
        &testing::analysis_job(name, spec).build()?,
    )
    .await?;
    Ok(())
}
