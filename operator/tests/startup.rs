//! The operator started before the AnalysisJob CRD exists, on a testbed of its own (the
//! other suites install the CRD first): it says at warning level that the CRD is missing
//! and what to apply, stops promptly on SIGINT and SIGTERM while it waits, and once the
//! CRD is applied it reconciles as usual and still stops promptly.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use hepbatch_crds::AnalysisJob;
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::TestbedOptions;
use hepbatch_tests::wait;
use k8s_openapi::api::batch::v1::Job;
use kube::api::Api;
use nix::sys::signal::Signal;
use serde_json::json;

use common::{Operator, install_crd};

/// How long a stop may take: the operator has nothing to finish while it waits.
const PROMPT: Duration = Duration::from_secs(5);

/// The warning the operator logs while the CRD is missing.
const MISSING: &str = "the AnalysisJob CRD is not installed; apply it with";

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::default(),
        vec![test(
            "without_the_crd_the_operator_warns_waits_and_stops_on_sigint_and_sigterm",
            without_the_crd,
        )],
    )
}

async fn without_the_crd(ctx: TestContext) -> TestResult {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let operator = Operator::start(&ctx, &format!("waiting-{signal}"), "127.0.0.1:0").await?;
        operator
            .wait_for_log(MISSING, Duration::from_secs(20))
            .await?;
        assert!(
            operator.log_tail().contains("crds/analysisjob.yaml"),
            "the warning names the manifest to apply: {}",
            operator.log_tail()
        );
        let status = operator.stop_with(signal, PROMPT).await?;
        assert!(status.success(), "{signal} while waiting: exit {status}");
    }

    // Waiting, then the CRD arrives: the operator goes on to reconcile.
    let operator = Operator::start(&ctx, "arriving", "127.0.0.1:0").await?;
    operator
        .wait_for_log(MISSING, Duration::from_secs(20))
        .await?;
    install_crd(&ctx.client).await?;
    operator
        .wait_for_log("watches synced; ready", Duration::from_secs(30))
        .await?;
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    common::create(&api, "late", json!({"image": "busybox", "shards": 2})).await?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let created = wait::until(
        &jobs,
        "late",
        "created",
        Duration::from_secs(30),
        |job: Option<&Job>| job.is_some(),
    )
    .await;
    operator.explain(created)?;
    let status = operator.stop_with(Signal::SIGTERM, PROMPT).await?;
    assert!(
        status.success(),
        "SIGTERM after the CRD arrived: exit {status}"
    );
    Ok(())
}
