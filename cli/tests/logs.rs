//! `kubectl hepbatch logs` on a real node: the logs of a shard's failed attempts and
//! its successful one, read through the apiserver from a real kubelet (kwok serves no
//! logs). Needs root and the node images (`make node-images`), as the testbed's real
//! nodes do.

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::process::ExitCode;
use std::time::Duration;

use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::TestbedOptions;
use hepbatch_tests::testbed::node::ANALYSIS_BASE_IMAGE;
use serde_json::json;

use common::{BoxError, create, plugin, start_operator};
use hepbatch_crds::analysis_job::ANALYSIS_JOB_LABEL;
use hepbatch_tests::wait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::one_real_node(),
        vec![
            test(
                "logs_of_each_attempt_of_a_failing_shard_and_of_a_finished_one",
                logs_of_attempts,
            )
            .with_timeout(Duration::from_secs(240)),
            test(
                "resubmitted_shards_run_under_their_original_index_and_inputs",
                resubmitted_shards_keep_their_index,
            )
            .with_timeout(Duration::from_secs(240)),
            test(
                "follow_waits_for_a_starting_pod_and_ends_with_it",
                follow_a_running_shard,
            )
            .with_timeout(Duration::from_secs(120)),
        ],
    )
}

async fn logs_of_attempts(ctx: TestContext) -> TestResult {
    let _operator = start_operator(&ctx).await?;
    create(
        &ctx,
        "retry",
        json!({
            "image": ANALYSIS_BASE_IMAGE,
            "shards": 2,
            "maxRetriesPerShard": 1,
            "script": "echo \"shard $HEPBATCH_SHARD_INDEX ran in $(hostname)\"\n\
                       [ \"$HEPBATCH_SHARD_INDEX\" = 0 ] || { echo 'no input file' >&2; exit 3; }",
        }),
    )
    .await?;
    let watched = plugin(&ctx, &["watch", "retry"], Duration::from_secs(180)).await?;
    assert_eq!(watched.code, Some(1), "shard 1 fails for good: {watched}");

    let all = plugin(
        &ctx,
        &["logs", "retry", "--shard", "1", "--all-attempts"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(all.code, Some(0), "{all}");
    for attempt in [1, 2] {
        assert!(
            all.stdout
                .contains(&format!("==> shard 1 attempt {attempt} (pod retry-1-")),
            "a heading per attempt: {all}"
        );
    }
    assert_eq!(
        all.stdout.matches("Failed, exit code 3) <==").count(),
        2,
        "{all}"
    );
    assert_eq!(
        all.stdout.matches("shard 1 ran in retry-1\n").count(),
        2,
        "{all}"
    );
    assert_eq!(
        all.stdout.matches("no input file").count(),
        2,
        "stderr too: {all}"
    );

    let first = plugin(
        &ctx,
        &["logs", "retry", "--shard", "1", "--attempt", "1"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(first.code, Some(0), "{first}");
    assert!(
        !first.stdout.contains("==>"),
        "one attempt, no heading: {first}"
    );
    assert_eq!(first.stdout.lines().count(), 2, "{first}");

    // -f on a finished pod prints its log and returns.
    let followed = plugin(
        &ctx,
        &["logs", "retry", "--shard", "0", "-f"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(followed.code, Some(0), "{followed}");
    assert!(
        followed.stdout.starts_with("shard 0 ran in retry-0\n"),
        "{followed}"
    );

    let status = plugin(&ctx, &["status", "retry"], Duration::from_secs(30)).await?;
    let row = status
        .stdout
        .lines()
        .find(|l| l.starts_with("1 "))
        .ok_or_else(|| format!("no row of shard 1: {status}"))?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["1", "Failed", "2", "3", "Error", "node-0"],
        "{status}"
    );
    Ok(())
}

async fn follow_a_running_shard(ctx: TestContext) -> TestResult {
    let _operator = start_operator(&ctx).await?;
    create(
        &ctx,
        "ticks",
        json!({
            "image": ANALYSIS_BASE_IMAGE,
            "shards": 1,
            "maxRetriesPerShard": 0,
            "script": "for i in 1 2 3; do echo \"tick $i\"; sleep 1; done",
        }),
    )
    .await?;
    // Follow as soon as the pod exists: it is usually still being created then.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = format!("{ANALYSIS_JOB_LABEL}=ticks");
    wait::eventually("the shard's pod", Duration::from_secs(60), || {
        let pods = pods.clone();
        let selector = selector.clone();
        async move {
            Ok::<_, BoxError>(
                !pods
                    .list(&ListParams::default().labels(&selector))
                    .await?
                    .items
                    .is_empty(),
            )
        }
    })
    .await?;
    let followed = plugin(
        &ctx,
        &["logs", "ticks", "--shard", "0", "-f"],
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(followed.code, Some(0), "{followed}");
    assert_eq!(
        followed.stdout, "tick 1\ntick 2\ntick 3\n",
        "the whole log, and the command ended with the container: {followed}"
    );
    Ok(())
}

async fn resubmitted_shards_keep_their_index(ctx: TestContext) -> TestResult {
    let _operator = start_operator(&ctx).await?;
    // Shard 1 fails in the first run only: a resubmission's pods are named skim-r1-<k>.
    create(
        &ctx,
        "skim",
        json!({
            "image": ANALYSIS_BASE_IMAGE,
            "inputs": {"files": ["/store/f0.root", "/store/f1.root", "/store/f2.root"],
                       "filesPerShard": 1},
            "maxRetriesPerShard": 0,
            "env": [{"name": "OUTPUT", "value": "skim_$(HEPBATCH_SHARD_INDEX).root"}],
            "script": "echo \"shard $HEPBATCH_SHARD_INDEX of $HEPBATCH_SHARDS reads \
                       $(cat \"$HEPBATCH_INPUT_FILES\") into $OUTPUT\"\n\
                       case \"$(hostname)\" in *-r1-*) ;; \
                       *) [ \"$HEPBATCH_SHARD_INDEX\" != 1 ] || exit 42 ;; esac",
        }),
    )
    .await?;
    let watched = plugin(&ctx, &["watch", "skim"], Duration::from_secs(120)).await?;
    assert_eq!(watched.code, Some(1), "shard 1 fails: {watched}");
    let resubmitted = plugin(
        &ctx,
        &["resubmit", "skim", "--failed"],
        Duration::from_secs(30),
    )
    .await?;
    assert!(
        resubmitted
            .stdout
            .contains("skim-r1 created: shards 1 of skim"),
        "{resubmitted}"
    );
    let watched = plugin(&ctx, &["watch", "skim-r1"], Duration::from_secs(120)).await?;
    assert_eq!(
        watched.code,
        Some(0),
        "the resubmitted shard succeeds: {watched}"
    );
    let log = plugin(
        &ctx,
        &["logs", "skim-r1", "--shard", "1"],
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(log.code, Some(0), "{log}");
    assert_eq!(
        log.stdout, "shard 1 of 3 reads /store/f1.root into skim_1.root\n",
        "the original index, fleet size, input list and the user's variable: {log}"
    );
    Ok(())
}
