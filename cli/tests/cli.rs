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
use hepbatch_crds::analysis_job::{RESUBMIT_OF_LABEL, RESUBMIT_OF_UID_ANNOTATION};
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::objects::env_value;
use hepbatch_tests::testbed::{Failure, Failures, TestbedOptions, annotations};
use hepbatch_tests::wait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::api::ListParams;
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
            test(
                "resubmit_runs_exactly_the_failed_shards_with_their_original_inputs",
                resubmit_failed_shards,
            ),
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

async fn resubmit_failed_shards(ctx: TestContext) -> TestResult {
    let _operator = start_operator(&ctx).await?;
    let files: Vec<String> = (0..10).map(|i| format!("/store/f{i}.root")).collect();
    let failures = Failures(vec![Failure::shards(&[3, 7]).code(42)]);
    create(
        &ctx,
        "skim",
        json!({
            "image": "busybox",
            "script": "cat \"$HEPBATCH_INPUT_FILES\"",
            "inputs": {"files": files, "filesPerShard": 1},
            "maxRetriesPerShard": 0,
            "podMetadata": {"annotations": {
                annotations::FAILURES: failures.annotation(),
                annotations::RUN_DURATION: "200ms",
            }},
        }),
    )
    .await?;
    let watched = plugin(&ctx, &["watch", "skim"], Duration::from_secs(120)).await?;
    assert_eq!(watched.code, Some(1), "{watched}");
    assert!(watched.stderr.contains("failed shards: 3,7"), "{watched}");

    let resubmitted = plugin(
        &ctx,
        &["resubmit", "skim", "--failed"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(resubmitted.code, Some(0), "{resubmitted}");
    assert!(
        resubmitted
            .stdout
            .contains("analysisjob.hepbatch.io/skim-r1 created: shards 3,7 of skim again"),
        "{resubmitted}"
    );
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let (original, again) = (api.get("skim").await?, api.get("skim-r1").await?);
    assert_eq!(again.spec.shard_indexes.as_deref(), Some("3,7"));
    assert_eq!(again.spec.inputs, original.spec.inputs, "the same list");
    assert_eq!(
        again.labels().get(RESUBMIT_OF_LABEL).map(String::as_str),
        Some("skim")
    );
    assert_eq!(
        again.annotations().get(RESUBMIT_OF_UID_ANNOTATION),
        original.uid().as_ref()
    );

    // The shards run again as completions 0 and 1, which the failure rules (shards 3 and
    // 7) do not match: they succeed, and the status speaks of shards 3 and 7.
    let watched = plugin(&ctx, &["watch", "skim-r1"], Duration::from_secs(120)).await?;
    assert_eq!(watched.code, Some(0), "{watched}");
    let status = api.get_status("skim-r1").await?.status.ok_or("no status")?;
    assert_eq!((status.shards, status.succeeded), (2, 2));
    assert_eq!(status.completed_shards.as_deref(), Some("3,7"));

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let job = jobs.get("skim-r1").await?;
    let spec = job.spec.ok_or("no job spec")?;
    assert_eq!(spec.completions, Some(2));
    let container = &spec.template.spec.ok_or("no pod spec")?.containers[0];
    let env = |name: &str| env_value(container, name);
    assert_eq!(env("HEPBATCH_SHARD_INDEXES").as_deref(), Some("3,7"));
    assert_eq!(env("HEPBATCH_SHARDS").as_deref(), Some("10"));
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let lists: Vec<(String, String)> = config_maps
        .list(&ListParams::default().labels("hepbatch.io/analysis-job=skim-r1"))
        .await?
        .items
        .into_iter()
        .flat_map(|c| c.data.unwrap_or_default())
        .collect();
    assert_eq!(
        lists,
        [
            ("shard-3".to_owned(), "/store/f3.root\n".to_owned()),
            ("shard-7".to_owned(), "/store/f7.root\n".to_owned()),
        ],
        "only the two shards' lists, under their own keys"
    );

    let logs = plugin(
        &ctx,
        &["logs", "skim-r1", "--shard", "5"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(logs.code, Some(2), "{logs}");
    assert!(
        logs.stderr.contains("has shards 3,7; there is no shard 5"),
        "{logs}"
    );
    let again = plugin(
        &ctx,
        &["resubmit", "skim-r1", "--shards", "7", "--dry-run"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(again.code, Some(0), "{again}");
    assert!(
        again.stdout.contains("name: skim-r2"),
        "the family's next name: {again}"
    );
    assert!(
        again
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("shardIndexes:")
                && (l.ends_with("'7'") || l.ends_with("\"7\""))),
        "{again}"
    );
    Ok(())
}
