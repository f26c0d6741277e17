//! Operator at scale on the testbed (a benchmark that prints figures, never a test):
//! N Indexed Jobs created directly (the baseline), then N AnalysisJobs of the same shape
//! through the operator, in the same process — each half on its own fresh testbed, so the
//! second half does not also carry the first half's finished pods.
//!
//! Reports time to all finished for both and their ratio, the status lag per AnalysisJob
//! (the bench's watch sees the Job `Complete` → it sees the AnalysisJob `Succeeded`;
//! p50/p99), the operator's peak RSS (`VmHWM`), and the requests the apiserver served in
//! each half (`apiserver_request_total`), which shows what the operator adds.
//!
//! ```sh
//! cargo bench -p hepbatch-operator --bench scale
//! HEPBATCH_BENCH_JOBS=100 HEPBATCH_BENCH_SHARDS=20 cargo bench -p hepbatch-operator --bench scale
//! ```

use std::collections::HashMap;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use hepbatch_crds::{AnalysisJob, Phase};
use hepbatch_operator::config::OperatorConfig;
use hepbatch_tests::testbed::{Testbed, TestbedOptions, annotations};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Creations in flight at once.
const CONCURRENCY: usize = 16;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn analysis_job(name: &str, shards: usize) -> Result<AnalysisJob, BoxError> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "hepbatch.io/v1alpha1",
        "kind": "AnalysisJob",
        "metadata": {"name": name},
        "spec": {
            "image": "busybox", "command": ["true"], "shards": shards,
            "podMetadata": {"annotations": {annotations::RUN_DURATION: "1s"}},
        },
    }))?)
}

async fn namespace(client: &Client, name: &str) -> Result<(), BoxError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    api.create(&PostParams::default(), &namespace).await?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run() -> Result<(), BoxError> {
    let jobs = env_number("HEPBATCH_BENCH_JOBS", 500);
    let shards = env_number("HEPBATCH_BENCH_SHARDS", 20);
    eprintln!("starting the baseline's testbed ...");
    let testbed = Testbed::start(TestbedOptions::default()).await?;
    let client = testbed.client();

    // Baseline: the same Jobs the operator would create, without owner.
    namespace(&client, "bench-baseline").await?;
    let job_api: Api<Job> = Api::namespaced(client.clone(), "bench-baseline");
    let mut templates = Vec::new();
    for i in 0..jobs {
        let mut aj = analysis_job(&format!("job-{i}"), shards)?;
        aj.metadata.namespace = Some("bench-baseline".to_owned());
        aj.metadata.uid = Some(format!("bench-{i}"));
        let mut job = hepbatch_operator::build::job(&aj, &OperatorConfig::default(), None)?;
        job.metadata.owner_references = None;
        templates.push(job);
    }
    let completed = tokio::spawn(watch_jobs_complete(job_api.clone(), jobs));
    let baseline_before = apiserver_requests(&client).await?;
    let started = Instant::now();
    stream::iter(templates)
        .map(|job| {
            let api = job_api.clone();
            async move { api.create(&PostParams::default(), &job).await.map(|_| ()) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    completed.await??;
    let baseline = started.elapsed();
    let baseline_requests = apiserver_requests(&client).await?.minus(&baseline_before);
    eprintln!("baseline: {jobs} Jobs × {shards} shards complete in {baseline:.1?}");
    drop(client);
    drop(testbed);

    eprintln!("starting the operator's testbed ...");
    let testbed = Testbed::start(TestbedOptions::default()).await?;
    let client = testbed.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "analysisjobs.hepbatch.io",
        &PatchParams::apply("hepbatch-bench").force(),
        &Patch::Apply(AnalysisJob::crd()),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests_before = apiserver_requests(&client).await?;

    // Through the operator.
    namespace(&client, "bench-operator").await?;
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_hepbatch-operator"))
        .arg("--kubeconfig")
        .arg(testbed.kubeconfig())
        .args(["--namespaces", "bench-operator", "--no-leader-election"])
        .args(["--metrics-address", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = operator.id().ok_or("the operator exited at once")?;
    let aj_api: Api<AnalysisJob> = Api::namespaced(client.clone(), "bench-operator");
    let op_job_api: Api<Job> = Api::namespaced(client.clone(), "bench-operator");
    let job_done = tokio::spawn(watch_jobs_complete(op_job_api, jobs));
    let aj_done = tokio::spawn(watch_analysis_jobs_succeeded(aj_api.clone(), jobs));
    let started = Instant::now();
    let objects: Vec<AnalysisJob> = (0..jobs)
        .map(|i| analysis_job(&format!("aj-{i}"), shards))
        .collect::<Result<_, _>>()?;
    stream::iter(objects)
        .map(|aj| {
            let api = aj_api.clone();
            async move { api.create(&PostParams::default(), &aj).await.map(|_| ()) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let succeeded = aj_done.await??;
    let through_operator = started.elapsed();
    let completes = job_done.await??;
    let operator_requests = apiserver_requests(&client).await?.minus(&requests_before);
    let peak_rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let cpu = process_cpu_seconds(pid)?;
    operator.kill().await?;

    let mut lags: Vec<Duration> = succeeded
        .iter()
        .filter_map(|(name, at)| {
            completes
                .get(name)
                .map(|complete| at.saturating_duration_since(*complete))
        })
        .collect();
    lags.sort();
    println!("jobs: {jobs}, shards each: {shards}");
    println!("baseline (Indexed Jobs directly): {baseline:.1?}");
    println!("through the operator:             {through_operator:.1?}");
    println!(
        "ratio: {:.3}",
        through_operator.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "status lag (Job Complete seen → AnalysisJob Succeeded seen), {} jobs: p50 {} ms, p99 {} ms, max {} ms",
        lags.len(),
        percentile(&lags, 50.0).as_millis(),
        percentile(&lags, 99.0).as_millis(),
        lags.last().copied().unwrap_or_default().as_millis()
    );
    println!("operator peak RSS: {:.1} MiB", peak_rss_kib as f64 / 1024.0);
    println!(
        "operator CPU time: {cpu:.1} s ({:.0} % of one core over the run)",
        100.0 * cpu / through_operator.as_secs_f64()
    );
    println!(
        "apiserver requests: baseline half {:.0}, operator half {:.0}, ratio {:.2}",
        baseline_requests.total(),
        operator_requests.total(),
        operator_requests.total() / baseline_requests.total()
    );
    let mut extra: Vec<(String, f64, f64)> = operator_requests
        .0
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                *v,
                baseline_requests.0.get(k).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, op, base)| op - base >= 1.0)
        .collect();
    extra.sort_by(|a, b| (b.1 - b.2).total_cmp(&(a.1 - a.2)));
    println!("requests the operator half made in excess, by verb and resource:");
    for (key, op, base) in extra.iter().take(10) {
        println!("  {key:<40} {op:>8.0} vs {base:>8.0} (+{:.0})", op - base);
    }
    Ok(())
}

/// User plus system CPU seconds a process has used (`/proc/<pid>/stat`, clock ticks of
/// 1/100 s as on every Linux configuration this runs on).
fn process_cpu_seconds(pid: u32) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("odd stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .ok_or("short stat")?
        .iter()
        .map(|f| f.parse::<f64>())
        .sum::<Result<f64, _>>()?;
    Ok(ticks / 100.0)
}

/// Requests the apiserver has served so far, by verb and resource (from
/// `apiserver_request_total`).
async fn apiserver_requests(client: &Client) -> Result<Requests, BoxError> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = Requests::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let key = format!(
            "{} {}{}",
            label("verb"),
            label("resource"),
            Some(label("subresource"))
                .filter(|s| !s.is_empty())
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        );
        *counts.0.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

/// Request counts by "verb resource[/subresource]".
#[derive(Clone, Debug, Default)]
struct Requests(HashMap<String, f64>);

impl Requests {
    fn total(&self) -> f64 {
        self.0.values().sum()
    }

    fn minus(&self, earlier: &Requests) -> Requests {
        Requests(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }
}

/// Watches Jobs until `count` of them are Complete; returns when each was first seen so.
async fn watch_jobs_complete(
    api: Api<Job>,
    count: usize,
) -> Result<HashMap<String, Instant>, BoxError> {
    let mut seen = HashMap::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
    while let Some(job) = events.try_next().await? {
        let complete = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            });
        if complete {
            seen.entry(job.name_any()).or_insert_with(Instant::now);
            if seen.len() >= count {
                break;
            }
        }
    }
    Ok(seen)
}

/// Watches AnalysisJobs until `count` of them succeeded; returns when each was first seen so.
async fn watch_analysis_jobs_succeeded(
    api: Api<AnalysisJob>,
    count: usize,
) -> Result<HashMap<String, Instant>, BoxError> {
    let mut seen = HashMap::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
    while let Some(aj) = events.try_next().await? {
        if aj.status.as_ref().and_then(|s| s.phase) == Some(Phase::Succeeded) {
            seen.entry(aj.name_any()).or_insert_with(Instant::now);
            if seen.len() >= count {
                break;
            }
        }
    }
    Ok(seen)
}
