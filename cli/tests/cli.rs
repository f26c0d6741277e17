//! The `kubectl hepbatch` commands as a person runs them: the real binary against the
//! testbed, with the operator running and kwok playing the shards (pods scripted with
//! the testbed's annotations, docs/testbed.md).
//!
//! The operator binary is the one built next to these tests (`cargo build -p
//! hepbatch-operator`); `HEPBATCH_OPERATOR_BIN` overrides it. kwok's fake nodes serve no
//! container logs (the apiserver would dial their made-up node IP), so this suite reads
//! only what needs no kubelet: the explanations when no pod holds the log. Real logs of
//! failed attempts are read on a real node in `logs.rs`.

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::ExitCode;
use std::time::Duration;

use hepbatch_crds::AnalysisJob;
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::{TestbedOptions, annotations};
use hepbatch_tests::wait;
use kube::api::Api;
use serde_json::{Value, json};

use common::{create, plugin, start_operator};

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::default(),
        vec![
            test(
                "submit_applies_a_submit_file_and_watch_exits_0_on_success",
                submit_then_watch_succeeds,
            ),
            test(
                "watch_exits_1_on_failure_and_status_shows_the_exit_code",
                watch_fails_and_status_explains,
            ),
            test(
                "logs_explain_when_no_pod_holds_the_log",
                logs_explain_missing_pods,
            ),
            test("report_is_one_self_contained_page", report_page),
        ],
    )
}

async fn submit_then_watch_succeeds(ctx: TestContext) -> TestResult {
    let _operator = start_operator(&ctx).await?;
    let file = ctx
        .testbed
        .work_dir()
        .join(format!("{}-hello.sub", ctx.namespace));
    std::fs::write(
        &file,
        "universe = docker\ndocker_image = busybox\nexecutable = /bin/echo\n\
         arguments = hello $(Process)\noutput = hello.$(Process).out\nrequest_memory = 100\n\
         queue 3\n",
    )?;
    let file = file.display().to_string();
    let submitted = plugin(
        &ctx,
        &["submit", &file, "--name", "hello"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(submitted.code, Some(0), "{submitted}");
    assert!(
        submitted
            .stdout
            .contains("analysisjob.hepbatch.io/hello applied"),
        "{submitted}"
    );
    assert!(
        submitted
            .stderr
            .contains("line 5: output is not translated"),
        "the untranslated command is warned with its line: {submitted}"
    );
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let applied = api.get("hello").await?;
    assert_eq!(applied.spec.shards, Some(3));
    assert_eq!(
        applied.spec.args.as_deref(),
        Some(&["hello".to_owned(), "$(HEPBATCH_SHARD_INDEX)".to_owned()][..])
    );

    let watched = plugin(&ctx, &["watch", "hello"], Duration::from_secs(120)).await?;
    assert_eq!(watched.code, Some(0), "{watched}");
    let last = watched.stdout.lines().last().unwrap_or_default();
    assert!(last.contains("Succeeded: 3/3 succeeded"), "{watched}");

    let status = plugin(&ctx, &["status", "hello"], Duration::from_secs(30)).await?;
    assert_eq!(status.code, Some(0), "{status}");
    assert!(status.stdout.contains("Phase        Succeeded"), "{status}");
    assert!(
        status.stdout.contains("No shard needs attention."),
        "{status}"
    );
    Ok(())
}

async fn watch_fails_and_status_explains(ctx: TestContext) -> TestResult {
    let _operator = start_operator(&ctx).await?;
    create(
        &ctx,
        "broken",
        json!({
            "image": "busybox",
            "shards": 2,
            "maxRetriesPerShard": 1,
            "podMetadata": {"annotations": {
                annotations::EXIT_CODE: "3",
                annotations::RUN_DURATION: "200ms",
            }},
        }),
    )
    .await?;
    let watched = plugin(&ctx, &["watch", "broken"], Duration::from_secs(120)).await?;
    assert_eq!(
        watched.code,
        Some(1),
        "a failed AnalysisJob exits 1: {watched}"
    );
    assert!(watched.stderr.contains("failed shards: 0,1"), "{watched}");

    let status = plugin(&ctx, &["status", "broken"], Duration::from_secs(30)).await?;
    assert_eq!(status.code, Some(0), "{status}");
    assert!(status.stdout.contains("Phase        Failed"), "{status}");
    for index in ["0", "1"] {
        let row = status
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(index))
            .ok_or_else(|| format!("no row of shard {index}: {status}"))?;
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &cells[..5],
            [index, "Failed", "2", "3", "Error"],
            "state, attempts, exit code and reason: {status}"
        );
        assert!(cells[5].starts_with("cpu-"), "the node: {status}");
    }

    let json = plugin(
        &ctx,
        &["status", "broken", "-o", "json"],
        Duration::from_secs(30),
    )
    .await?;
    let report: Value = serde_json::from_str(&json.stdout).map_err(|e| format!("{e}: {json}"))?;
    assert_eq!(report["phase"], "Failed");
    assert_eq!(report["failed"], 2);
    assert_eq!(report["shardRows"][0]["lastExitCode"], 3);
    assert_eq!(report["shardRows"][0]["attempts"], 2);
    Ok(())
}

async fn logs_explain_missing_pods(ctx: TestContext) -> TestResult {
    let _operator = start_operator(&ctx).await?;
    create(
        &ctx,
        "held",
        json!({"image": "busybox", "shards": 2, "suspend": true}),
    )
    .await?;
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    wait::until(
        &api,
        "held",
        "Suspended",
        Duration::from_secs(30),
        |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref())
                .is_some_and(|s| s.phase == Some(hepbatch_crds::Phase::Suspended))
        },
    )
    .await?;
    let no_pod = plugin(
        &ctx,
        &["logs", "held", "--shard", "1"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(no_pod.code, Some(2), "{no_pod}");
    assert!(
        no_pod
            .stderr
            .contains("shard 1 of analysisjob held has no pod: it has not started yet"),
        "{no_pod}"
    );
    let no_shard = plugin(
        &ctx,
        &["logs", "held", "--shard", "5"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(no_shard.code, Some(2), "{no_shard}");
    assert!(
        no_shard
            .stderr
            .contains("analysisjob held has shards 0 to 1; there is no shard 5"),
        "{no_shard}"
    );
    let missing = plugin(
        &ctx,
        &["logs", "nothing", "--shard", "0"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(missing.code, Some(2), "{missing}");
    assert!(
        missing
            .stderr
            .contains("analysisjob nothing not found in namespace"),
        "{missing}"
    );
    Ok(())
}

async fn report_page(ctx: TestContext) -> TestResult {
    let _operator = start_operator(&ctx).await?;
    create(
        &ctx,
        "mixed",
        json!({
            "image": "busybox",
            "shards": 3,
            "maxRetriesPerShard": 0,
            "podMetadata": {"annotations": {
                annotations::EXIT_CODE: "2",
                annotations::RUN_DURATION: "300ms",
            }},
        }),
    )
    .await?;
    let watched = plugin(&ctx, &["watch", "mixed"], Duration::from_secs(120)).await?;
    assert_eq!(watched.code, Some(1), "{watched}");
    let report = plugin(&ctx, &["report", "mixed"], Duration::from_secs(30)).await?;
    assert_eq!(report.code, Some(0), "{report}");
    let page = &report.stdout;
    assert!(page.starts_with("<!DOCTYPE html>"), "{report}");
    for absent in ["<script src", "<link", "http://", "https://"] {
        assert!(
            !page.contains(absent),
            "the page loads nothing ({absent}): {page}"
        );
    }
    assert_eq!(
        page.matches("class=\"attempt failed\"").count(),
        3,
        "one failed bar per attempt: {page}"
    );
    assert!(
        page.contains("<td>2</td>"),
        "the exit code in the failure table: {page}"
    );
    Ok(())
}
