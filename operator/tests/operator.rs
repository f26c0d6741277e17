//! The operator on the real testbed: the `hepbatch-operator` binary is started per test,
//! watching only the test's namespace (and holding a Lease there), so tests can run side
//! by side, SIGKILL it and restart it. kwok plays the kubelet; pods are scripted through
//! the AnalysisJob's `podMetadata.annotations`.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use hepbatch_crds::{AnalysisJob, Phase};
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::http::{self, free_address, metric};
use hepbatch_tests::testbed::{Failure, Failures, TestbedOptions, annotations};
use hepbatch_tests::wait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{
    BoxError, Operator, event_reasons, eventually, scripted, setup, wait_gone, wait_phase,
};

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::default(),
        vec![
            test(
                "analysis_job_runs_as_one_indexed_job_to_succeeded",
                runs_to_succeeded,
            ),
            test(
                "shard_failing_beyond_its_retries_fails_the_analysis_job",
                shard_fails_beyond_retries,
            ),
            test("fatal_exit_code_fails_the_shard_at_once", fatal_exit_code),
            test(
                "shards_that_failed_and_then_succeeded_are_recorded_as_retried",
                retried_shards_recorded,
            ),
            test(
                "a_shard_failed_for_good_stays_described_and_retried_shards_do_not",
                failed_for_good_stays_and_retried_shards_go,
            ),
            test(
                "an_evicted_shard_is_rerun_without_using_a_retry",
                eviction_is_not_a_failure,
            ),
            test("suspend_and_resume_propagate_to_the_job", suspend_resume),
            test("kubectl_scale_changes_the_parallelism", kubectl_scale),
            test("deleting_the_analysis_job_deletes_its_job", cascade_delete),
            test("ttl_deletes_a_finished_analysis_job", ttl_deletes),
            test(
                "sigkill_during_a_200_shard_run_keeps_exactly_one_job_and_exact_counts",
                sigkill_restarts,
            )
            .with_timeout(Duration::from_secs(420)),
            test(
                "two_replicas_only_the_leader_reconciles_and_hands_over",
                leader_handover,
            ),
            test("probes_and_metrics_are_served", probes_and_metrics),
        ],
    )
}

async fn runs_to_succeeded(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "script": "echo $HEPBATCH_SHARD_INDEX", "shards": 6,
               "parallelism": 3, "maxRetriesPerShard": 2}),
        json!({annotations::RUN_DURATION: "300ms"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("hello", spec)?,
    )
    .await?;

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let job = wait::until(
        &jobs,
        "hello",
        "created",
        Duration::from_secs(30),
        |j: Option<&Job>| j.is_some(),
    )
    .await?;
    let spec = job.spec.clone().ok_or("the Job has no spec")?;
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(spec.completions, Some(6));
    assert_eq!(spec.parallelism, Some(3));
    assert_eq!(spec.backoff_limit_per_index, Some(2));
    assert_eq!(spec.pod_replacement_policy.as_deref(), Some("Failed"));
    let owner = job
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.controller == Some(true))
        .ok_or("the Job has no controller")?;
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("AnalysisJob", "hello")
    );

    let done = operator
        .explain(wait_phase(&api, "hello", Phase::Succeeded, Duration::from_secs(90)).await)?;
    let status = done.status.ok_or("no status")?;
    assert_eq!(
        (
            status.shards,
            status.succeeded,
            status.failed,
            status.active
        ),
        (6, 6, 0, 0)
    );
    assert_eq!(status.completed_shards.as_deref(), Some("0-5"));
    assert_eq!(status.job_name.as_deref(), Some("hello"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );
    assert!(status.completion_time.is_some());
    assert_eq!(status.observed_generation, done.metadata.generation);

    let jobs_in_namespace = jobs.list(&ListParams::default()).await?.items.len();
    assert_eq!(jobs_in_namespace, 1, "exactly one Job");
    eventually(
        "JobCreated and Succeeded events",
        Duration::from_secs(10),
        || async {
            let reasons = event_reasons(&ctx, "hello").await?;
            Ok(reasons.iter().any(|r| r == "JobCreated")
                && reasons.iter().any(|r| r == "Succeeded"))
        },
    )
    .await?;
    operator.kill().await
}

async fn shard_fails_beyond_retries(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["false"], "shards": 2, "maxRetriesPerShard": 1}),
        json!({annotations::RUN_DURATION: "200ms", annotations::EXIT_CODE: "7"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("failing", spec)?,
    )
    .await?;
    let failed = operator
        .explain(wait_phase(&api, "failing", Phase::Failed, Duration::from_secs(90)).await)?;
    // Details may be filled one reconcile after the phase: wait for them.
    let mut status = failed.status.ok_or("no status")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status.failed_shard_details.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        status = api.get("failing").await?.status.ok_or("no status")?;
    }
    assert_eq!(status.failed_shards.as_deref(), Some("0,1"));
    assert_eq!(
        (status.failed, status.retries),
        (2, 2),
        "FAILED counts the two shards, RETRIES their first attempts"
    );
    assert_eq!(status.failed_shard_details.len(), 2, "{status:?}");
    for (index, shard) in status.failed_shard_details.iter().enumerate() {
        assert_eq!(shard.index, i32::try_from(index)?);
        assert_eq!(shard.attempts, 2, "{shard:?}");
        assert_eq!(shard.last_exit_code, Some(7), "{shard:?}");
        assert!(shard.node.is_some(), "{shard:?}");
        assert!(shard.reason.is_some(), "{shard:?}");
        assert!(shard.pod.is_some(), "{shard:?}");
    }
    assert!(status.retried_shards.is_empty(), "{status:?}");
    let failed_condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .ok_or("no Failed condition")?;
    assert_eq!(failed_condition.reason, "FailedIndexes");
    let counted = eventually(
        "ShardFailed and Failed events",
        Duration::from_secs(10),
        || async {
            let reasons = event_reasons(&ctx, "failing").await?;
            Ok(reasons.iter().filter(|r| *r == "ShardFailed").count() == 2
                && reasons.iter().any(|r| r == "Failed"))
        },
    )
    .await;
    if let Err(error) = counted {
        let notes = shard_failed_notes(&ctx, "failing").await?;
        return Err(format!("{error}; ShardFailed Events: {notes:?}").into());
    }
    // Each shard's own Event names it, and none is a series repeating another's text.
    let notes = shard_failed_notes(&ctx, "failing").await?;
    for index in 0..2 {
        let prefix = format!("shard {index} failed after 2 attempts, exit code 7");
        assert!(
            notes.iter().any(|(note, _)| note.starts_with(&prefix)),
            "no Event says {prefix:?}: {notes:?}"
        );
    }
    assert!(
        notes.iter().all(|(_, count)| *count <= 1),
        "a ShardFailed Event became a series: {notes:?}"
    );
    operator.kill().await
}

/// Note and series count of each ShardFailed Event regarding the object `name`.
async fn shard_failed_notes(ctx: &TestContext, name: &str) -> Result<Vec<(String, i32)>, BoxError> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some("ShardFailed"))
        .map(|e| {
            (
                e.note.unwrap_or_default(),
                e.series.map_or(1, |series| series.count),
            )
        })
        .collect())
}

async fn fatal_exit_code(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["false"], "shards": 1, "maxRetriesPerShard": 5,
               "fatalExitCodes": [42]}),
        json!({annotations::RUN_DURATION: "200ms", annotations::EXIT_CODE: "42"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("fatal", spec)?,
    )
    .await?;
    operator.explain(wait_phase(&api, "fatal", Phase::Failed, Duration::from_secs(60)).await)?;
    let mut status = api.get("fatal").await?.status.ok_or("no status")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status.failed_shard_details.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        status = api.get("fatal").await?.status.ok_or("no status")?;
    }
    assert_eq!(
        (status.failed, status.retries),
        (1, 0),
        "no retry after a fatal exit code"
    );
    let shard = status.failed_shard_details.first().ok_or("no detail")?;
    assert_eq!((shard.attempts, shard.last_exit_code), (1, Some(42)));
    operator.kill().await
}

/// Shards 0 to 2 fail once, shard 3 twice, then each succeeds (scripted per shard on
/// kwok): the fleet succeeds with FAILED 0 (no shard failed for good) and RETRIES 5, and
/// the status records each retried shard with its failed attempts and last exit code.
async fn retried_shards_recorded(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let failures = Failures(vec![
        Failure::shards(&[3]).times(2).code(3),
        Failure::shards(&[0, 1, 2]).times(1).code(3),
    ]);
    let spec = scripted(
        json!({"image": "busybox", "command": ["false"], "shards": 4, "maxRetriesPerShard": 3}),
        json!({annotations::RUN_DURATION: "300ms", annotations::FAILURES: failures.annotation()}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("flaky", spec)?,
    )
    .await?;
    let done = operator
        .explain(wait_phase(&api, "flaky", Phase::Succeeded, Duration::from_secs(90)).await)?;
    let status = done.status.ok_or("no status")?;
    assert_eq!(
        (status.succeeded, status.failed, status.retries),
        (4, 0, 5),
        "FAILED counts shards failed for good, RETRIES the failed attempts run again"
    );
    let record: Vec<(i32, i32, Option<i32>)> = status
        .retried_shards
        .iter()
        .map(|r| (r.index, r.failed_attempts, r.last_exit_code))
        .collect();
    assert_eq!(
        record,
        vec![
            (0, 1, Some(3)),
            (1, 1, Some(3)),
            (2, 1, Some(3)),
            (3, 2, Some(3))
        ],
        "{status:?}"
    );
    assert!(status.failed_shard_details.is_empty(), "{status:?}");
    operator.kill().await
}

/// Of 40 shards with 3 attempts each, every 10th fails twice and then succeeds, shard 7
/// fails every attempt with exit code 42 (scripted per shard on kwok): the detail, kept
/// from the watch of failed pods, ends with shard 7 alone failed for good (its exit code,
/// 3 attempts, its last pod) and the four others only retried.
async fn failed_for_good_stays_and_retried_shards_go(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let failures = Failures(vec![
        Failure::shards(&[7]).code(42),
        Failure::every(10).times(2).code(3),
    ]);
    let spec = scripted(
        json!({"image": "busybox", "command": ["true"], "shards": 40, "parallelism": 10,
            "maxRetriesPerShard": 2}),
        json!({annotations::RUN_DURATION: "200ms", annotations::FAILURES: failures.annotation()}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("mixed", spec)?,
    )
    .await?;
    let done = operator
        .explain(wait_phase(&api, "mixed", Phase::Failed, Duration::from_secs(120)).await)?;
    let status = done.status.ok_or("no status")?;
    assert_eq!(
        (status.succeeded, status.failed, status.retries),
        (39, 1, 10),
        "{status:?}"
    );
    assert_eq!(status.failed_shards.as_deref(), Some("7"));
    let failed: Vec<(i32, i32, Option<i32>)> = status
        .failed_shard_details
        .iter()
        .map(|f| (f.index, f.attempts, f.last_exit_code))
        .collect();
    assert_eq!(failed, vec![(7, 3, Some(42))], "{status:?}");
    assert!(
        status.failed_shard_details[0]
            .pod
            .as_deref()
            .is_some_and(|p| p.starts_with("mixed-7-")),
        "{status:?}"
    );
    let retried: Vec<(i32, i32, Option<i32>)> = status
        .retried_shards
        .iter()
        .map(|r| (r.index, r.failed_attempts, r.last_exit_code))
        .collect();
    assert_eq!(
        retried,
        vec![
            (0, 2, Some(3)),
            (10, 2, Some(3)),
            (20, 2, Some(3)),
            (30, 2, Some(3))
        ],
        "{status:?}"
    );
    operator.kill().await
}

/// An eviction marks the pod `DisruptionTarget` before deleting it; the default rule
/// ignores such failures, so a shard with no retries left still runs again and succeeds.
async fn eviction_is_not_a_failure(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["true"], "shards": 1, "maxRetriesPerShard": 0}),
        json!({annotations::RUN_DURATION: "6s"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("evicted", spec)?,
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let selector = ListParams::default().labels("batch.kubernetes.io/job-name=evicted");
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.is_none() && Instant::now() < deadline {
        first = pods
            .list(&selector)
            .await?
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.ok_or("the shard's pod never ran")?;
    let first_name = first.metadata.name.clone().ok_or("pod without name")?;
    pods.evict(&first_name, &EvictParams::default()).await?;

    let done = operator
        .explain(wait_phase(&api, "evicted", Phase::Succeeded, Duration::from_secs(90)).await)?;
    let status = done.status.ok_or("no status")?;
    assert_eq!(
        (status.succeeded, status.failed, status.retries),
        (1, 0, 0),
        "eviction counted as a failure"
    );
    assert!(
        status.retried_shards.is_empty(),
        "an evicted shard recorded as retried: {:?}",
        status.retried_shards
    );
    let all = pods.list(&selector).await?.items;
    assert!(
        all.iter()
            .all(|p| p.metadata.name.as_deref() != Some(first_name.as_str())
                || p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded")),
        "the evicted pod itself claims success"
    );
    operator.kill().await
}

async fn suspend_resume(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["sleep", "60"], "shards": 4}),
        json!({annotations::RUN_DURATION: "120s"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("pausable", spec)?,
    )
    .await?;
    wait::until(
        &api,
        "pausable",
        "running 4 shards",
        Duration::from_secs(60),
        |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref())
                .is_some_and(|s| s.active == 4)
        },
    )
    .await?;
    let params = PatchParams::default();
    api.patch(
        "pausable",
        &params,
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await?;
    let waited = wait::until(
        &api,
        "pausable",
        "suspended with no active shard",
        Duration::from_secs(60),
        |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref())
                .is_some_and(|s| s.phase == Some(Phase::Suspended) && s.active == 0)
        },
    )
    .await;
    operator.explain(waited)?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    assert_eq!(
        jobs.get("pausable").await?.spec.and_then(|s| s.suspend),
        Some(true)
    );
    api.patch(
        "pausable",
        &params,
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await?;
    wait::until(
        &api,
        "pausable",
        "running again",
        Duration::from_secs(60),
        |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref())
                .is_some_and(|s| s.phase == Some(Phase::Running) && s.active == 4)
        },
    )
    .await?;
    eventually(
        "Suspended and Resumed events",
        Duration::from_secs(10),
        || async {
            let reasons = event_reasons(&ctx, "pausable").await?;
            Ok(reasons.iter().any(|r| r == "Suspended") && reasons.iter().any(|r| r == "Resumed"))
        },
    )
    .await?;
    operator.kill().await
}

async fn kubectl_scale(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["sleep", "60"], "shards": 10, "parallelism": 2}),
        json!({annotations::RUN_DURATION: "120s"}),
    );
    api.create(&PostParams::default(), &common::analysis_job("wide", spec)?)
        .await?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    wait::until(
        &jobs,
        "wide",
        "created",
        Duration::from_secs(30),
        |j: Option<&Job>| j.is_some(),
    )
    .await?;
    let output = ctx
        .testbed
        .kubectl()
        .args(["scale", "aj/wide", "--replicas=5", "-n", &ctx.namespace])
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "kubectl scale failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let waited = wait::until(
        &jobs,
        "wide",
        "parallelism 5",
        Duration::from_secs(30),
        |j: Option<&Job>| j.and_then(|j| j.spec.as_ref()).and_then(|s| s.parallelism) == Some(5),
    )
    .await;
    operator.explain(waited)?;
    wait::until(
        &api,
        "wide",
        "5 active",
        Duration::from_secs(60),
        |aj: Option<&AnalysisJob>| {
            aj.and_then(|a| a.status.as_ref())
                .is_some_and(|s| s.active == 5)
        },
    )
    .await?;
    operator.kill().await
}

async fn cascade_delete(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["sleep", "60"], "shards": 3}),
        json!({annotations::RUN_DURATION: "120s"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("doomed", spec)?,
    )
    .await?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    wait::until(
        &jobs,
        "doomed",
        "created",
        Duration::from_secs(30),
        |j: Option<&Job>| j.is_some(),
    )
    .await?;
    api.delete("doomed", &DeleteParams::background()).await?;
    wait_gone(&jobs, "doomed", Duration::from_secs(60)).await?;
    operator.kill().await
}

async fn ttl_deletes(ctx: TestContext) -> TestResult {
    let (operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["true"], "shards": 2,
               "ttlSecondsAfterFinished": 2}),
        json!({annotations::RUN_DURATION: "100ms"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("shortlived", spec)?,
    )
    .await?;
    wait_phase(
        &api,
        "shortlived",
        Phase::Succeeded,
        Duration::from_secs(60),
    )
    .await?;
    operator.explain(wait_gone(&api, "shortlived", Duration::from_secs(30)).await)?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    wait_gone(&jobs, "shortlived", Duration::from_secs(60)).await?;
    operator.kill().await
}

/// A pseudo-random delay from the clock (enough to vary the moments of the kills).
fn random_delay(max_ms: u64) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    Duration::from_millis(200 + nanos % max_ms)
}

async fn sigkill_restarts(ctx: TestContext) -> TestResult {
    let (mut operator, api) = setup(&ctx).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["true"], "shards": 200, "parallelism": 40}),
        json!({annotations::RUN_DURATION: "500ms"}),
    );
    api.create(&PostParams::default(), &common::analysis_job("big", spec)?)
        .await?;
    for round in 0..5 {
        tokio::time::sleep(random_delay(2500)).await;
        operator.kill().await?;
        tokio::time::sleep(random_delay(800)).await;
        operator = Operator::start(&ctx, &format!("operator-{round}"), "127.0.0.1:0").await?;
    }
    let done = operator
        .explain(wait_phase(&api, "big", Phase::Succeeded, Duration::from_secs(300)).await)?;
    let status = done.status.ok_or("no status")?;
    assert_eq!(
        (status.shards, status.succeeded, status.failed),
        (200, 200, 0)
    );
    assert_eq!(status.completed_shards.as_deref(), Some("0-199"));
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    assert_eq!(
        jobs.list(&ListParams::default()).await?.items.len(),
        1,
        "exactly one Job"
    );
    operator.kill().await
}

async fn lease_holder(ctx: &TestContext) -> Result<Option<String>, BoxError> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    Ok(leases
        .get_opt("hepbatch-operator")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

async fn leader_handover(ctx: TestContext) -> TestResult {
    common::install_crd(&ctx.client).await?;
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let first = Operator::start(&ctx, "replica-a", "127.0.0.1:0").await?;
    eventually("replica-a leads", Duration::from_secs(20), || async {
        Ok(lease_holder(&ctx).await?.as_deref() == Some("replica-a"))
    })
    .await?;
    let standby_metrics = free_address()?;
    let second = Operator::start(&ctx, "replica-b", &standby_metrics).await?;
    let spec = scripted(
        json!({"image": "busybox", "command": ["true"], "shards": 2}),
        json!({annotations::RUN_DURATION: "100ms"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("one", spec.clone())?,
    )
    .await?;
    wait_phase(&api, "one", Phase::Succeeded, Duration::from_secs(60)).await?;
    // Only the leader reconciled: the standby's own counters say it never ran a reconcile.
    assert_eq!(lease_holder(&ctx).await?.as_deref(), Some("replica-a"));
    let (_, standby) = http::get(&standby_metrics, "/metrics").await?;
    assert_eq!(
        metric(&standby, "hepbatch_operator_reconciles_total"),
        Some(0.0),
        "the standby reconciled:\n{standby}"
    );
    assert_eq!(metric(&standby, "hepbatch_operator_leader"), Some(0.0));

    let killed_at = Instant::now();
    first.kill().await?;
    eventually("replica-b leads", Duration::from_secs(15), || async {
        Ok(lease_holder(&ctx).await?.as_deref() == Some("replica-b"))
    })
    .await?;
    let handover = killed_at.elapsed();
    println!("leader handover took {handover:.1?}");
    api.create(&PostParams::default(), &common::analysis_job("two", spec)?)
        .await?;
    second.explain(wait_phase(&api, "two", Phase::Succeeded, Duration::from_secs(60)).await)?;
    assert!(
        handover <= Duration::from_secs(15),
        "handover took {handover:?}"
    );
    second.kill().await
}

async fn probes_and_metrics(ctx: TestContext) -> TestResult {
    common::install_crd(&ctx.client).await?;
    let address = free_address()?;
    let operator = Operator::start(&ctx, "metrics", &address).await?;
    eventually("/livez answers", Duration::from_secs(20), || async {
        Ok(http::get(&address, "/livez")
            .await
            .is_ok_and(|(code, _)| code == 200))
    })
    .await?;
    let api: Api<AnalysisJob> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let spec = scripted(
        json!({"image": "busybox", "command": ["true"], "shards": 1}),
        json!({annotations::RUN_DURATION: "100ms"}),
    );
    api.create(
        &PostParams::default(),
        &common::analysis_job("measured", spec)?,
    )
    .await?;
    wait_phase(&api, "measured", Phase::Succeeded, Duration::from_secs(60)).await?;
    let (code, _) = http::get(&address, "/readyz").await?;
    assert_eq!(code, 200, "ready after the watches synced");
    eventually(
        "metrics report the phase",
        Duration::from_secs(15),
        || async {
            let (code, body) = http::get(&address, "/metrics").await?;
            Ok(code == 200
                && body.contains("hepbatch_operator_reconciles_total")
                && body.contains("hepbatch_operator_reconcile_duration_seconds_bucket")
                && body.contains("hepbatch_operator_analysis_jobs{phase=\"Succeeded\"} 1")
                && body.contains("hepbatch_operator_status_writes_total{change=\"First\"} 1")
                && body.contains("hepbatch_operator_leader 1"))
        },
    )
    .await
    .map_err(|e| format!("{e}\nlog:\n{}", operator.log_tail()))?;
    operator.kill().await
}
