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
//! `HEPBATCH_BENCH_ROUNDS` repeats the pair of halves, alternating which goes first; the
//! ratio is then that of the total times, with each round's ratio beside it, since two
//! runs of the same half on a two-core machine can differ by a fifth.
//!
//! `HEPBATCH_BENCH_HALVES=operator` runs the operator's half alone, for fleets too big to
//! run twice (it then reports no ratio), and `HEPBATCH_BENCH_PARALLELISM` sets each
//! AnalysisJob's `parallelism`, so a fleet of more shards than the testbed has pod places
//! can keep its pending pods few.
//!
//! `HEPBATCH_BENCH_FAILURES=1` scripts failures into every fleet, the same in both halves
//! ([`fleet_failures`]: 0.5 % of the shards fail for good, 5 % fail one to three times and
//! then succeed); fleets then end `Failed`, and the operator's half also reports how long
//! each failed attempt took to show in the AnalysisJob's counts (`failed + retries`).
//!
//! ```sh
//! cargo bench -p hepbatch-operator --bench scale
//! HEPBATCH_BENCH_JOBS=100 HEPBATCH_BENCH_SHARDS=20 cargo bench -p hepbatch-operator --bench scale
//! HEPBATCH_BENCH_ROUNDS=2 cargo bench -p hepbatch-operator --bench scale
//! HEPBATCH_BENCH_HALVES=operator HEPBATCH_BENCH_JOBS=1000 HEPBATCH_BENCH_SHARDS=100 \
//!   HEPBATCH_BENCH_PARALLELISM=1 cargo bench -p hepbatch-operator --bench scale
//! HEPBATCH_BENCH_FAILURES=1 HEPBATCH_BENCH_JOBS=1 HEPBATCH_BENCH_SHARDS=10000 \
//!   HEPBATCH_BENCH_PARALLELISM=1000 cargo bench -p hepbatch-operator --bench scale
//! ```

use std::collections::{BTreeMap, HashMap};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use hepbatch_crds::{AnalysisJob, testing};
use hepbatch_operator::config::OperatorConfig;
use hepbatch_tests::http::{free_address, metric};
use hepbatch_tests::testbed::{
    Failure, Failures, Testbed, TestbedOptions, annotations, spawn_registered,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
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

/// The fleet each half runs.
#[derive(Clone, Copy, Debug)]
struct Fleet {
    /// AnalysisJobs (or Jobs).
    jobs: usize,
    /// Shards of each.
    shards: usize,
    /// Each one's `parallelism`; the API's default when `None`.
    parallelism: Option<usize>,
    /// Whether shards fail as [`fleet_failures`] scripts.
    failures: bool,
}

/// The failures of `HEPBATCH_BENCH_FAILURES=1`: nested shares make bands, so 0.5 % of the
/// shards fail every attempt (for good, with the default 3 retries), and 1.5 % each fail
/// three times, twice and once before they succeed.
fn fleet_failures() -> Failures {
    Failures(vec![
        Failure::percent(0.5).code(3),
        Failure::percent(2.0).times(3),
        Failure::percent(3.5).times(2),
        Failure::percent(5.5).times(1),
    ])
}

impl Fleet {
    fn from_env() -> Fleet {
        Fleet {
            jobs: env_number("HEPBATCH_BENCH_JOBS", 500),
            shards: env_number("HEPBATCH_BENCH_SHARDS", 20),
            parallelism: std::env::var("HEPBATCH_BENCH_PARALLELISM")
                .ok()
                .and_then(|v| v.parse().ok()),
            failures: env_number("HEPBATCH_BENCH_FAILURES", 0) > 0,
        }
    }

    /// The fleet's AnalysisJob called `name`.
    fn analysis_job(&self, name: &str) -> Result<AnalysisJob, BoxError> {
        let mut spec = json!({
            "image": "busybox", "command": ["true"], "shards": self.shards,
            "podMetadata": {"annotations": {annotations::RUN_DURATION: "1s"}},
        });
        if let Some(parallelism) = self.parallelism {
            spec["parallelism"] = json!(parallelism);
        }
        if self.failures {
            spec["podMetadata"]["annotations"][annotations::FAILURES] =
                json!(fleet_failures().annotation());
        }
        Ok(testing::analysis_job(name, spec).build()?)
    }
}

/// Which halves each round runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halves {
    /// The baseline and the operator, for the ratio.
    Both,
    /// The operator alone.
    OperatorOnly,
}

impl Halves {
    fn from_env() -> Result<Halves, BoxError> {
        match std::env::var("HEPBATCH_BENCH_HALVES").as_deref() {
            Err(_) | Ok("both") => Ok(Halves::Both),
            Ok("operator") => Ok(Halves::OperatorOnly),
            Ok(other) => Err(format!(
                "HEPBATCH_BENCH_HALVES is \"{other}\"; use \"both\" (the default) or \"operator\""
            )
            .into()),
        }
    }
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
    let fleet = Fleet::from_env();
    let halves = Halves::from_env()?;
    let rounds = env_number("HEPBATCH_BENCH_ROUNDS", 1).max(1);
    let mut baselines = Vec::new();
    let mut operators = Vec::new();
    if halves == Halves::OperatorOnly {
        for _ in 1..=rounds {
            operators.push(operator_half(fleet).await?);
        }
        report_operator(fleet, &operators);
        return Ok(());
    }
    for round in 1..=rounds {
        // Alternate the order, so slow drift of the machine favours neither side.
        let (baseline, operator) = if round % 2 == 1 {
            let baseline = baseline_half(fleet).await?;
            (baseline, operator_half(fleet).await?)
        } else {
            let operator = operator_half(fleet).await?;
            (baseline_half(fleet).await?, operator)
        };
        println!(
            "round {round}: baseline {:.1?}, through the operator {:.1?}, ratio {:.3}",
            baseline.elapsed,
            operator.half.elapsed,
            operator.half.elapsed.as_secs_f64() / baseline.elapsed.as_secs_f64()
        );
        baselines.push(baseline);
        operators.push(operator);
    }
    report(fleet, &baselines, &operators);
    Ok(())
}

/// What one half of a round measured.
struct Half {
    /// From the first creation to the last object finished.
    elapsed: Duration,
    /// Requests the apiserver served meanwhile.
    requests: Requests,
    /// CPU the testbed's components used meanwhile.
    cpu: ComponentCpu,
    /// With scripted failures: how long failed pods took to be counted by their Job.
    job_failure_lags: Option<FailureLags>,
}

/// What the operator's half measured besides the common figures.
struct OperatorHalf {
    half: Half,
    /// Status lag of each AnalysisJob.
    lags: Vec<Duration>,
    /// With scripted failures: how long failed pods took to be counted by their
    /// AnalysisJob (`failed + retries`).
    failure_lags: Option<FailureLags>,
    /// The operator's `VmHWM`.
    peak_rss_kib: u64,
    /// The operator's user + system CPU seconds.
    cpu_seconds: f64,
    /// The operator's status writes by how the status changed, from its metrics.
    status_writes: BTreeMap<String, f64>,
}

/// Runs the fleet's Indexed Jobs directly on a fresh testbed.
async fn baseline_half(fleet: Fleet) -> Result<Half, BoxError> {
    let Fleet { jobs, shards, .. } = fleet;
    eprintln!("starting the baseline's testbed ...");
    let testbed = Testbed::start(TestbedOptions::default()).await?;
    let client = testbed.client();
    // The same Jobs the operator would create, without owner.
    namespace(&client, "bench-baseline").await?;
    let job_api: Api<Job> = Api::namespaced(client.clone(), "bench-baseline");
    let mut templates = Vec::new();
    for i in 0..jobs {
        let mut aj = fleet.analysis_job(&format!("job-{i}"))?;
        aj.metadata.namespace = Some("bench-baseline".to_owned());
        aj.metadata.uid = Some(format!("bench-{i}"));
        let mut job = hepbatch_operator::build::job(
            &aj,
            &OperatorConfig::default(),
            None,
            &hepbatch_operator::revision::Snapshot::new(),
        )?;
        job.metadata.owner_references = None;
        templates.push(job);
    }
    let completed = tokio::spawn(watch_jobs_finished(job_api.clone(), jobs));
    let pod_failures = fleet
        .failures
        .then(|| watch_pod_failures(Api::namespaced(client.clone(), "bench-baseline")));
    let requests_before = apiserver_requests(&client).await?;
    let cpu_before = component_cpu(&testbed)?;
    let started = Instant::now();
    stream::iter(templates)
        .map(|job| {
            let api = job_api.clone();
            async move { api.create(&PostParams::default(), &job).await.map(|_| ()) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let (_, job_counted) = completed.await?;
    let elapsed = started.elapsed();
    let failed = failed_pods_seen(pod_failures);
    let half = Half {
        elapsed,
        requests: apiserver_requests(&client).await?.minus(&requests_before),
        cpu: component_cpu(&testbed)?.minus(&cpu_before),
        job_failure_lags: fleet.failures.then(|| failure_lags(&failed, &job_counted)),
    };
    eprintln!("baseline: {jobs} Jobs × {shards} shards complete in {elapsed:.1?}");
    Ok(half)
}

/// Runs the fleet's AnalysisJobs through the release operator on a fresh testbed.
async fn operator_half(fleet: Fleet) -> Result<OperatorHalf, BoxError> {
    let Fleet { jobs, shards, .. } = fleet;
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
    let cpu_before = component_cpu(&testbed)?;

    namespace(&client, "bench-operator").await?;
    let metrics_address = free_address()?;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hepbatch-operator"));
    command
        .arg("--kubeconfig")
        .arg(testbed.kubeconfig())
        .args(["--namespaces", "bench-operator", "--no-leader-election"])
        .arg("--metrics-address")
        .arg(&metrics_address)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let (mut operator, _registration) = spawn_registered(&mut command)?;
    let pid = operator.id().ok_or("the operator exited at once")?;
    let aj_api: Api<AnalysisJob> = Api::namespaced(client.clone(), "bench-operator");
    let job_api: Api<Job> = Api::namespaced(client.clone(), "bench-operator");
    let job_done = tokio::spawn(watch_jobs_finished(job_api, jobs));
    let aj_done = tokio::spawn(watch_analysis_jobs_finished(aj_api.clone(), jobs));
    let pod_failures = fleet
        .failures
        .then(|| watch_pod_failures(Api::namespaced(client.clone(), "bench-operator")));
    let started = Instant::now();
    let objects: Vec<AnalysisJob> = (0..jobs)
        .map(|i| fleet.analysis_job(&format!("aj-{i}")))
        .collect::<Result<_, _>>()?;
    stream::iter(objects)
        .map(|aj| {
            let api = aj_api.clone();
            async move { api.create(&PostParams::default(), &aj).await.map(|_| ()) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let (succeeded, counted) = aj_done.await?;
    let elapsed = started.elapsed();
    let (completes, job_counted) = job_done.await?;
    let failed = failed_pods_seen(pod_failures);
    let job_failure_lags = fleet.failures.then(|| failure_lags(&failed, &job_counted));
    let failure_lags = fleet.failures.then(|| failure_lags(&failed, &counted));
    let requests = apiserver_requests(&client).await?.minus(&requests_before);
    let cpu = component_cpu(&testbed)?.minus(&cpu_before);
    let peak_rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let cpu_seconds = process_cpu_seconds(pid)?;
    let status_writes = status_writes(&metrics_address).await?;
    operator.kill().await?;
    eprintln!("operator: {jobs} AnalysisJobs × {shards} shards succeeded in {elapsed:.1?}");

    let lags = succeeded
        .iter()
        .filter_map(|(name, at)| {
            completes
                .get(name)
                .map(|complete| at.saturating_duration_since(*complete))
        })
        .collect();
    Ok(OperatorHalf {
        half: Half {
            elapsed,
            requests,
            cpu,
            job_failure_lags,
        },
        lags,
        failure_lags,
        peak_rss_kib,
        cpu_seconds,
        status_writes,
    })
}

/// When each failed pod was first seen failed, by its Job's name (the AnalysisJob's too).
type FailedPodsSeen = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// A watch of failed pods and what it saw so far.
type PodFailureWatch = (tokio::task::JoinHandle<()>, FailedPodsSeen);

/// Records when each pod of a Job is first seen failed, until the task is aborted.
fn watch_pod_failures(api: Api<Pod>) -> PodFailureWatch {
    let seen = FailedPodsSeen::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut known = std::collections::HashSet::new();
        let mut events = std::pin::pin!(applied(api));
        while let Some(pod) = events.next().await {
            let failed = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed");
            let Some(job) = pod.labels().get("batch.kubernetes.io/job-name") else {
                continue;
            };
            if failed
                && known.insert(pod.name_any())
                && let Ok(mut seen) = record.lock()
            {
                seen.entry(job.clone()).or_default().push(Instant::now());
            }
        }
    });
    (task, seen)
}

/// Stops the watch of failed pods and takes what it saw.
fn failed_pods_seen(watch: Option<PodFailureWatch>) -> HashMap<String, Vec<Instant>> {
    watch
        .map(|(task, seen)| {
            task.abort();
            seen.lock()
                .map(|mut s| std::mem::take(&mut *s))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// Each change of an object's count of failed attempts, with when it was seen, by name.
type Counted = HashMap<String, Vec<(Instant, i32)>>;

/// Appends `count` to `name`'s timeline in `counted` when it changed.
fn count_seen(counted: &mut Counted, name: String, count: i32) {
    let timeline = counted.entry(name).or_default();
    if timeline.last().is_none_or(|(_, last)| *last != count) {
        timeline.push((Instant::now(), count));
    }
}

/// For each failed pod, how long until its Job's (or AnalysisJob's) count of failed
/// attempts included it: the k-th failure of a Job is counted once the count reaches k.
fn failure_lags(failed: &HashMap<String, Vec<Instant>>, counted: &Counted) -> FailureLags {
    let mut lags = FailureLags::default();
    for (name, times) in failed {
        let mut times = times.clone();
        times.sort();
        let timeline = counted.get(name).map(Vec::as_slice).unwrap_or_default();
        for (k, failed_at) in times.iter().enumerate() {
            let k = i32::try_from(k + 1).unwrap_or(i32::MAX);
            match timeline.iter().find(|(_, count)| *count >= k) {
                Some((shown, _)) => lags.shown.push(shown.saturating_duration_since(*failed_at)),
                None => lags.never_shown += 1,
            }
        }
    }
    lags.shown.sort();
    lags
}

/// How long failed attempts took to show in the AnalysisJobs' counts.
#[derive(Clone, Debug, Default)]
struct FailureLags {
    /// One per failed pod that showed, sorted.
    shown: Vec<Duration>,
    /// Failed pods the counts never reached.
    never_shown: usize,
}

/// Prints the figures of all rounds of both halves.
fn report(fleet: Fleet, baselines: &[Half], operators: &[OperatorHalf]) {
    let operator_halves: Vec<&Half> = operators.iter().map(|o| &o.half).collect();
    let baseline_seconds = total_seconds(baselines.iter());
    let operator_seconds = total_seconds(operator_halves.iter().copied());
    let mut ratios: Vec<f64> = baselines
        .iter()
        .zip(operators)
        .map(|(b, o)| o.half.elapsed.as_secs_f64() / b.elapsed.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let rounds = operators.len() as f64;

    print_fleet(fleet, operators.len());
    println!(
        "baseline (Indexed Jobs directly): {:.1} s (mean of rounds)",
        baseline_seconds / rounds
    );
    println!(
        "through the operator:             {:.1} s (mean of rounds)",
        operator_seconds / rounds
    );
    println!(
        "ratio: {:.3} (total time); per round {}",
        operator_seconds / baseline_seconds,
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_failure_lags(
        "pod Failed seen → counted by its Job (status.failed), baseline half",
        baselines.iter().filter_map(|b| b.job_failure_lags.as_ref()),
    );
    print_operator_figures(operators);

    let (baseline_requests, baseline_cpu) = summed(baselines.iter());
    let (operator_requests, operator_cpu) = summed(operator_halves.iter().copied());
    println!("(request and CPU figures below are per round)");
    println!(
        "apiserver requests: baseline half {:.0}, operator half {:.0}, ratio {:.2}",
        baseline_requests.total() / rounds,
        operator_requests.total() / rounds,
        operator_requests.total() / baseline_requests.total()
    );
    println!("requests the operator half made in excess, by verb and resource:");
    for (key, op, base) in excess(&operator_requests.count, &baseline_requests.count, 1.0) {
        let (op, base) = (op / rounds, base / rounds);
        println!("  {key:<40} {op:>8.0} vs {base:>8.0} (+{:.0})", op - base);
    }
    println!(
        "apiserver time serving requests (latency summed): baseline half {:.0} s, operator half {:.0} s",
        baseline_requests.seconds.values().sum::<f64>() / rounds,
        operator_requests.seconds.values().sum::<f64>() / rounds
    );
    println!("apiserver time the operator half took in excess, by verb and resource:");
    for (key, op, base) in excess(&operator_requests.seconds, &baseline_requests.seconds, 0.5) {
        let (op, base) = (op / rounds, base / rounds);
        println!("  {key:<40} {op:>8.1} vs {base:>8.1} s (+{:.1})", op - base);
    }
    println!("CPU time by component (baseline half / operator half):");
    for (name, base) in &baseline_cpu.0 {
        let op = operator_cpu.0.get(name).copied().unwrap_or(0.0);
        println!(
            "  {name:<24} {:>7.1} s / {:>7.1} s",
            base / rounds,
            op / rounds
        );
    }
    let cpu: f64 = operators.iter().map(|o| o.cpu_seconds).sum();
    println!(
        "  {:<24} {:>7} / {:>7.1} s",
        "hepbatch-operator",
        "-",
        cpu / rounds
    );
}

/// Prints the figures of the operator's half run alone.
fn report_operator(fleet: Fleet, operators: &[OperatorHalf]) {
    let operator_halves: Vec<&Half> = operators.iter().map(|o| &o.half).collect();
    let rounds = operators.len() as f64;
    print_fleet(fleet, operators.len());
    println!(
        "through the operator: {:.1} s (mean of rounds; no baseline run)",
        total_seconds(operator_halves.iter().copied()) / rounds
    );
    print_operator_figures(operators);
    let (requests, cpu) = summed(operator_halves.iter().copied());
    println!(
        "apiserver requests per round: {:.0}",
        requests.total() / rounds
    );
    println!("CPU time by component per round:");
    for (name, seconds) in &cpu.0 {
        println!("  {name:<24} {:>7.1} s", seconds / rounds);
    }
}

/// Prints the fleet's shape.
fn print_fleet(fleet: Fleet, rounds: usize) {
    let parallelism = fleet
        .parallelism
        .map_or_else(|| "default".to_owned(), |p| p.to_string());
    println!(
        "jobs: {}, shards each: {}, parallelism: {parallelism}, rounds: {rounds}, scripted failures: {}",
        fleet.jobs,
        fleet.shards,
        if fleet.failures { "yes" } else { "no" }
    );
}

/// Prints what only the operator's halves measure: status lag, RSS, CPU, status writes.
fn print_operator_figures(operators: &[OperatorHalf]) {
    let mut lags: Vec<Duration> = operators.iter().flat_map(|o| o.lags.clone()).collect();
    lags.sort();
    let rounds = operators.len() as f64;
    let operator_seconds: f64 = operators.iter().map(|o| o.half.elapsed.as_secs_f64()).sum();
    let peak_rss_kib = operators.iter().map(|o| o.peak_rss_kib).max().unwrap_or(0);
    let cpu: f64 = operators.iter().map(|o| o.cpu_seconds).sum();
    println!(
        "status lag (Job finished seen → AnalysisJob finished seen), {} AnalysisJobs: p50 {} ms, p99 {} ms, max {} ms",
        lags.len(),
        percentile(&lags, 50.0).as_millis(),
        percentile(&lags, 99.0).as_millis(),
        lags.last().copied().unwrap_or_default().as_millis()
    );
    print_failure_lags(
        "pod Failed seen → counted by its Job (status.failed), operator half",
        operators
            .iter()
            .filter_map(|o| o.half.job_failure_lags.as_ref()),
    );
    print_failure_lags(
        "pod Failed seen → counted by its AnalysisJob (failed + retries)",
        operators.iter().filter_map(|o| o.failure_lags.as_ref()),
    );
    println!("operator peak RSS: {:.1} MiB", peak_rss_kib as f64 / 1024.0);
    println!(
        "operator CPU time: {:.1} s per round ({:.0} % of one core over the run)",
        cpu / rounds,
        100.0 * cpu / operator_seconds
    );
    let mut writes: BTreeMap<&str, f64> = BTreeMap::new();
    for (change, count) in operators.iter().flat_map(|o| &o.status_writes) {
        *writes.entry(change).or_default() += count;
    }
    let writes: Vec<String> = writes
        .iter()
        .map(|(change, sum)| format!("{change} {:.0}", sum / rounds))
        .collect();
    println!(
        "operator status writes per round, by change: {}",
        writes.join(", ")
    );
}

/// Prints the spread of failure lags, when there are any.
fn print_failure_lags<'a>(what: &str, lags: impl Iterator<Item = &'a FailureLags>) {
    let (mut shown, mut never) = (Vec::new(), 0);
    for lag in lags {
        shown.extend(lag.shown.iter().copied());
        never += lag.never_shown;
    }
    if shown.is_empty() && never == 0 {
        return;
    }
    shown.sort();
    println!(
        "failure lag, {what}, {} failed pods: p50 {} ms, p99 {} ms, max {} ms; never counted: {never}",
        shown.len(),
        percentile(&shown, 50.0).as_millis(),
        percentile(&shown, 99.0).as_millis(),
        shown.last().copied().unwrap_or_default().as_millis()
    );
}

/// Elapsed seconds of `halves`, added up.
fn total_seconds<'a>(halves: impl Iterator<Item = &'a Half>) -> f64 {
    halves.map(|h| h.elapsed.as_secs_f64()).sum()
}

/// Requests and component CPU of `halves`, added up.
fn summed<'a>(halves: impl Iterator<Item = &'a Half>) -> (Requests, ComponentCpu) {
    halves.fold(
        (Requests::default(), ComponentCpu::default()),
        |(requests, cpu), half| (requests.plus(&half.requests), cpu.plus(&half.cpu)),
    )
}

/// The ten keys with the largest excess of `operator` over `baseline` (at least
/// `threshold`), largest first, with both values.
fn excess(
    operator: &HashMap<String, f64>,
    baseline: &HashMap<String, f64>,
    threshold: f64,
) -> Vec<(String, f64, f64)> {
    let mut rows: Vec<(String, f64, f64)> = operator
        .iter()
        .map(|(k, v)| (k.clone(), *v, baseline.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, op, base)| op - base >= threshold)
        .collect();
    rows.sort_by(|a, b| (b.1 - b.2).total_cmp(&(a.1 - a.2)));
    rows.truncate(10);
    rows
}

/// CPU seconds used so far by each testbed component, by name.
#[derive(Clone, Debug, Default)]
struct ComponentCpu(BTreeMap<String, f64>);

impl ComponentCpu {
    fn plus(&self, other: &ComponentCpu) -> ComponentCpu {
        let mut sum = self.clone();
        for (name, seconds) in &other.0 {
            *sum.0.entry(name.clone()).or_default() += seconds;
        }
        sum
    }

    fn minus(&self, earlier: &ComponentCpu) -> ComponentCpu {
        ComponentCpu(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }
}

/// CPU seconds of each testbed component, and the machine's idle and steal time (time its
/// host gave to others: a noisy neighbour shows there, not in the components).
fn component_cpu(testbed: &Testbed) -> Result<ComponentCpu, BoxError> {
    let mut cpu = ComponentCpu::default();
    for (name, pid) in testbed.component_pids() {
        cpu.0.insert(name.to_owned(), process_cpu_seconds(pid)?);
    }
    let stat = std::fs::read_to_string("/proc/stat")?;
    // "cpu  user nice system idle iowait irq softirq steal ...", in ticks of 1/100 s.
    let totals: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .ok_or("odd /proc/stat")?
        .split_whitespace()
        .map(str::parse::<f64>)
        .collect::<Result<_, _>>()?;
    for (name, index) in [("(machine idle)", 3), ("(machine steal)", 7)] {
        let ticks = totals.get(index).ok_or("short /proc/stat")?;
        cpu.0.insert(name.to_owned(), ticks / 100.0);
    }
    Ok(cpu)
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

/// The operator's `status_writes_total` counters, by change, read from its metrics
/// endpoint.
async fn status_writes(address: &str) -> Result<BTreeMap<String, f64>, BoxError> {
    let (_, exposition) = hepbatch_tests::http::get(address, "/metrics").await?;
    Ok(["First", "News", "EndAnnounced", "Progress"]
        .into_iter()
        .filter_map(|change| {
            let sample = format!("hepbatch_operator_status_writes_total{{change=\"{change}\"}}");
            Some((change.to_owned(), metric(&exposition, &sample)?))
        })
        .collect())
}

/// Requests the apiserver has served so far and the time it spent on them, by verb and
/// resource (from `apiserver_request_total` and `apiserver_request_duration_seconds_sum`).
async fn apiserver_requests(client: &Client) -> Result<Requests, BoxError> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = Requests::default();
    for line in text.lines() {
        let (rest, into) = if let Some(rest) = line.strip_prefix("apiserver_request_total{") {
            (rest, &mut counts.count)
        } else if let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_sum{") {
            (rest, &mut counts.seconds)
        } else {
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
        *into.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

/// Request counts and seconds spent, by "verb resource[/subresource]".
#[derive(Clone, Debug, Default)]
struct Requests {
    count: HashMap<String, f64>,
    seconds: HashMap<String, f64>,
}

impl Requests {
    fn total(&self) -> f64 {
        self.count.values().sum()
    }

    fn plus(&self, other: &Requests) -> Requests {
        let mut sum = self.clone();
        for (key, count) in &other.count {
            *sum.count.entry(key.clone()).or_default() += count;
        }
        for (key, seconds) in &other.seconds {
            *sum.seconds.entry(key.clone()).or_default() += seconds;
        }
        sum
    }

    fn minus(&self, earlier: &Requests) -> Requests {
        let minus = |now: &HashMap<String, f64>, then: &HashMap<String, f64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0.0)))
                .collect()
        };
        Requests {
            count: minus(&self.count, &earlier.count),
            seconds: minus(&self.seconds, &earlier.seconds),
        }
    }
}

/// Every object as it is created or changed. A failed watch (e.g. "too old resource
/// version" on a busy apiserver) is reported and resumed: the watcher relists after a
/// backoff, so nothing is missed.
fn applied<K>(api: Api<K>) -> impl futures::Stream<Item = K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(|event| async move {
            event
                .map_err(|error| eprintln!("watch failed, resuming: {error}"))
                .ok()
        })
}

/// Whether the Job finished (`Complete` or `Failed`).
fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Watches Jobs until `count` of them are Complete or Failed; returns when each was first
/// seen so, and each change of its count of failed pods (`status.failed`).
async fn watch_jobs_finished(api: Api<Job>, count: usize) -> (HashMap<String, Instant>, Counted) {
    let mut seen = HashMap::new();
    let mut counted = Counted::new();
    let mut events = std::pin::pin!(applied(api));
    while let Some(job) = events.next().await {
        let failed = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
        count_seen(&mut counted, job.name_any(), failed);
        if job_finished(&job) {
            seen.entry(job.name_any()).or_insert_with(Instant::now);
            if seen.len() >= count {
                break;
            }
        }
    }
    (seen, counted)
}

/// What the bench saw of the AnalysisJobs: when each finished, and each change of its
/// count of failed attempts (`failed + retries`) with when it was seen.
type AnalysisJobsSeen = (
    HashMap<String, Instant>,
    HashMap<String, Vec<(Instant, i32)>>,
);

/// Watches AnalysisJobs until `count` of them finished (`Succeeded` or `Failed`).
async fn watch_analysis_jobs_finished(api: Api<AnalysisJob>, count: usize) -> AnalysisJobsSeen {
    let mut finished = HashMap::new();
    let mut counted = Counted::new();
    let mut events = std::pin::pin!(applied(api));
    while let Some(aj) = events.next().await {
        let Some(status) = aj.status.as_ref() else {
            continue;
        };
        count_seen(&mut counted, aj.name_any(), status.failed + status.retries);
        if status.phase.is_some_and(|p| p.is_finished()) {
            finished.entry(aj.name_any()).or_insert_with(Instant::now);
            if finished.len() >= count {
                break;
            }
        }
    }
    (finished, counted)
}
