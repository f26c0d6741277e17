//! hepbatch on a real node (a benchmark that prints figures, never a test): the chart as
//! a site installs it (default values but for local images and the node's directories),
//! the real CVMFS client against a test stratum (`HEPBATCH_BENCH_BACKEND=squashfuse`: the
//! stand-in), one testbed with one real kubelet node.
//!
//! - **Pod start**: created → `Running` of a pod with the inline `/cvmfs` CSI volume
//!   (`repositories: cms.cern.ch`, as the operator writes it) against the same pod with an
//!   `emptyDir`, in alternating rounds of `HEPBATCH_BENCH_BATCH` pods created at once
//!   (default 10) until each kind has `HEPBATCH_BENCH_PODS` (default 60); p50/p99 of each
//!   and their difference.
//! - **Heal in a real pod**: a pod reads `/cvmfs/cms.cern.ch` in a loop while its CVMFS
//!   client is killed `HEPBATCH_BENCH_KILLS` times (default 10); from its log, how long
//!   each outage lasted and how long from the kill until it read again (median, max).
//! - **RSS** (`VmRSS`, and the peak seen while pods start) of the plugin and the operator
//!   processes in their containers.
//!
//! `HEPBATCH_BENCH_KEEP_LOGS=1` keeps the component logs (kubelet, containerd) and says
//! where.
//!
//! ```sh
//! make images && cargo bench -p hepbatch-tests --bench real_node
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation ends the bench

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hepbatch_crds::CSI_DRIVER_NAME;
use hepbatch_tests::chart::{self, Backend};
use hepbatch_tests::cvmfs::{Stratum, content};
use hepbatch_tests::reader;
use hepbatch_tests::testbed::node::{
    ANALYSIS_BASE_IMAGE, MEASURED_LABEL, PodShape, measure_pod_starts_of,
};
use hepbatch_tests::testbed::{RealNode, Testbed, TestbedOptions};
use k8s_openapi::api::core::v1::{Namespace, Pod, Volume, VolumeMount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The namespace of the measured pods.
const NAMESPACE: &str = "bench";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("real-node bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<(), BoxError> {
    let backend = match std::env::var("HEPBATCH_BENCH_BACKEND").as_deref() {
        Ok("squashfuse") => Backend::Squashfuse,
        _ => Backend::Cvmfs,
    };
    let images = chart::image_archives()?;
    let stratum = match backend {
        Backend::Cvmfs => Some(Stratum::start(&content::standard())?),
        Backend::Squashfuse => None,
    };
    let options = TestbedOptions {
        images,
        ..TestbedOptions::one_real_node()
    };
    let testbed = Testbed::start(options).await?;
    if std::env::var_os("HEPBATCH_BENCH_KEEP_LOGS").is_some() {
        testbed.keep_logs();
        println!("component logs: {}", testbed.log_dir().display());
    }
    let node = testbed.real_nodes().first().ok_or("no real node")?;
    let mut values = chart::values(node, backend, stratum.as_ref())?;
    // The chart's own heal interval, as a site runs it.
    values["csi"]
        .as_object_mut()
        .ok_or("csi values")?
        .remove("healIntervalMs");
    let installed = Instant::now();
    chart::install(&testbed, node, &values).await?;
    println!(
        "backend: {backend:?}; helm install to the plugin registered: {:.1} s",
        installed.elapsed().as_secs_f64()
    );
    let client = testbed.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;

    let processes = Processes::find(node)?;
    let peaks = processes.sample_peaks();
    pod_starts(&client, node).await?;
    let peaks = peaks.stop();
    heal(&client).await?;
    processes.report(&peaks);
    drop(testbed);
    drop(stratum);
    Ok(())
}

/// The volume of each kind the pod-start rounds compare.
fn shapes() -> [(&'static str, PodShape); 2] {
    let mount = |read_only: bool| VolumeMount {
        name: "data".into(),
        mount_path: "/cvmfs".into(),
        read_only: Some(read_only),
        mount_propagation: read_only.then(|| "HostToContainer".to_owned()),
        ..VolumeMount::default()
    };
    let csi: Volume = serde_json::from_value(json!({
        "name": "data",
        "csi": {"driver": CSI_DRIVER_NAME, "readOnly": true,
                "volumeAttributes": {"repositories": "cms.cern.ch"}},
    }))
    .expect("a CSI volume");
    let empty: Volume = serde_json::from_value(json!({"name": "data", "emptyDir": {}}))
        .expect("an emptyDir volume");
    [
        (
            "csi",
            PodShape {
                image: ANALYSIS_BASE_IMAGE.into(),
                volumes: vec![(csi, mount(true))],
            },
        ),
        (
            "emptyDir",
            PodShape {
                image: ANALYSIS_BASE_IMAGE.into(),
                volumes: vec![(empty, mount(false))],
            },
        ),
    ]
}

async fn pod_starts(client: &kube::Client, node: &RealNode) -> Result<(), BoxError> {
    let (pods, batch) = (
        env_number("HEPBATCH_BENCH_PODS", 60),
        env_number("HEPBATCH_BENCH_BATCH", 10).max(1),
    );
    let shapes = shapes();
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    // One unmeasured pod of each kind first: the first CSI pod also mounts the repository.
    for (_, shape) in &shapes {
        measure_pod_starts_of(client, NAMESPACE, node.name(), shape, 1, TIMEOUT).await?;
    }
    delete_measured(&api).await?;
    let mut round = 0;
    while times.iter().any(|t| t.len() < pods) {
        // Alternate which kind goes first, so drift over the run hits both alike.
        for k in [round % 2, 1 - round % 2] {
            let starts =
                measure_pod_starts_of(client, NAMESPACE, node.name(), &shapes[k].1, batch, TIMEOUT)
                    .await?;
            times[k].extend(starts.iter().map(|s| s.created_to_running));
            delete_measured(&api).await?;
        }
        round += 1;
    }
    println!(
        "pod start (created → Running), {pods} pods per kind in rounds of {batch} created at once:"
    );
    let mut medians = Vec::new();
    for (k, (kind, _)) in shapes.iter().enumerate() {
        times[k].sort();
        let (p50, p99) = (percentile(&times[k], 0.5), percentile(&times[k], 0.99));
        medians.push((p50, p99));
        println!(
            "  {kind:>8}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            ms(p50),
            ms(p99),
            ms(*times[k].last().unwrap())
        );
    }
    let (csi, empty) = (medians[0], medians[1]);
    println!(
        "  overhead of the CSI volume: p50 {:+.0} ms, p99 {:+.0} ms (ratio of medians {:.2})",
        ms(csi.0) - ms(empty.0),
        ms(csi.1) - ms(empty.1),
        csi.0.as_secs_f64() / empty.0.as_secs_f64()
    );
    Ok(())
}

/// How long one batch of pods may take to run.
const TIMEOUT: Duration = Duration::from_secs(180);

/// Deletes the measured pods and waits until they are gone (so unmounts happen between
/// rounds, not during one).
async fn delete_measured(api: &Api<Pod>) -> Result<(), BoxError> {
    let selector = ListParams::default().labels(MEASURED_LABEL);
    api.delete_collection(&DeleteParams::default().grace_period(0), &selector)
        .await?;
    let deadline = Instant::now() + TIMEOUT;
    while !api.list(&selector).await?.items.is_empty() {
        if Instant::now() > deadline {
            return Err("measured pods not gone".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn heal(client: &kube::Client) -> Result<(), BoxError> {
    let kills = env_number("HEPBATCH_BENCH_KILLS", 10);
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let [(_, shape), _] = shapes();
    let (volume, mount) = shape.volumes[0].clone();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "reader"},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "main",
                "image": ANALYSIS_BASE_IMAGE,
                "command": ["bash", "-c", reader::read_loop("/cvmfs/cms.cern.ch/version")],
                "volumeMounts": [mount],
            }],
            "volumes": [volume],
        },
    }))?;
    api.create(&PostParams::default(), &pod).await?;
    let log = || async {
        api.logs("reader", &Default::default())
            .await
            .unwrap_or_default()
    };
    let deadline = Instant::now() + TIMEOUT;
    while !reader::reads_now(&log().await) {
        if Instant::now() > deadline {
            return Err("the reader never read".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut outages, mut kill_to_read, mut unseen) = (Vec::new(), Vec::new(), 0);
    for _ in 0..kills {
        let before = reader::outages(&log().await).len();
        let killed_at = unix_now();
        if reader::kill_clients("cms.cern.ch") == 0 {
            return Err("no client of cms.cern.ch to kill".into());
        }
        // The loop reads every 50 ms: an outage shorter than that may pass unseen.
        let deadline = Instant::now() + Duration::from_secs(30);
        let outage = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let text = log().await;
            if let Some(outage) = reader::outages(&text).get(before).copied() {
                break Some(outage);
            }
            if Instant::now() > deadline {
                return Err(format!("no recovery within 30 s:\n{text}").into());
            }
            if reader::reads_now(&text) && Instant::now() + Duration::from_secs(25) > deadline {
                break None;
            }
        };
        match outage {
            Some(outage) => {
                outages.push(outage.duration());
                kill_to_read.push(Duration::from_secs_f64((outage.to - killed_at).max(0.0)));
            }
            None => unseen += 1,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    outages.sort();
    kill_to_read.sort();
    println!(
        "heal in a real pod, client killed {kills} times (chart's heal interval; {unseen} outages too short for a 50 ms read loop to see):"
    );
    if !outages.is_empty() {
        println!(
            "  unreadable in the pod: median {:.0} ms, max {:.0} ms",
            ms(percentile(&outages, 0.5)),
            ms(*outages.last().unwrap())
        );
        println!(
            "  kill → read again:     median {:.0} ms, max {:.0} ms",
            ms(percentile(&kill_to_read, 0.5)),
            ms(*kill_to_read.last().unwrap())
        );
    }
    Ok(())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The plugin's and the operator's processes: those of the node (its cgroup tree) with
/// these command names (real nodes share the host's PID namespace, so other nodes' or
/// tests' processes of the same name are in `/proc` too).
struct Processes {
    plugin: u32,
    operator: u32,
}

impl Processes {
    fn find(node: &RealNode) -> Result<Processes, BoxError> {
        let find = |name: &str| -> Result<u32, BoxError> {
            for entry in std::fs::read_dir("/proc")?.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let cgroups =
                    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                // comm is cut at 15 bytes: "hepbatch-operat".
                let comm = comm.trim_end();
                if !comm.is_empty()
                    && name.starts_with(comm)
                    && cgroups.contains(node.cgroup_root())
                {
                    return Ok(pid);
                }
            }
            Err(format!("no {name} process on {}", node.name()).into())
        };
        Ok(Processes {
            plugin: find("hepbatch-csi")?,
            operator: find("hepbatch-operator")?,
        })
    }

    /// Samples both processes' RSS every 20 ms until stopped; the peaks.
    fn sample_peaks(&self) -> Sampler {
        let running = Arc::new(AtomicBool::new(true));
        let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let (pids, r, p) = ([self.plugin, self.operator], running.clone(), peaks.clone());
        let thread = std::thread::spawn(move || {
            while r.load(Ordering::Relaxed) {
                for (i, pid) in pids.iter().enumerate() {
                    p[i].fetch_max(rss_kib(*pid), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            running,
            peaks,
            thread,
        }
    }

    fn report(&self, peaks: &[u64; 2]) {
        for (i, (name, pid)) in [("plugin", self.plugin), ("operator", self.operator)]
            .into_iter()
            .enumerate()
        {
            println!(
                "{name} RSS in its container: now {:.1} MiB, peak while pods started {:.1} MiB",
                rss_kib(pid) as f64 / 1024.0,
                peaks[i] as f64 / 1024.0
            );
        }
    }
}

struct Sampler {
    running: Arc<AtomicBool>,
    peaks: Arc<[AtomicU64; 2]>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn stop(self) -> [u64; 2] {
        self.running.store(false, Ordering::Relaxed);
        let _ = self.thread.join();
        [
            self.peaks[0].load(Ordering::Relaxed),
            self.peaks[1].load(Ordering::Relaxed),
        ]
    }
}

/// `VmRSS` of a process in KiB (0 when gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
