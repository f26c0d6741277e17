//! Helpers shared by the operator's integration suites: installing the CRD and building
//! AnalysisJobs from JSON.

#![allow(dead_code)]

use std::time::Duration;

use hepbatch_crds::AnalysisJob;
use hepbatch_tests::wait;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::wait::conditions;
use kube::{Client, CustomResourceExt};

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
pub fn analysis_job(name: &str, spec: serde_json::Value) -> Result<AnalysisJob, BoxError> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "hepbatch.io/v1alpha1",
        "kind": "AnalysisJob",
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}
