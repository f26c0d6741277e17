//! Benchmark of the node plugin (prints figures; asserts nothing about speed), with the
//! backend the mount tests use (the real CVMFS client by default, the stand-in with
//! `HEPBATCH_CSI_TEST_BACKEND=squashfuse`):
//! - NodePublish/NodeUnpublish of already-mounted repositories, p50/p99 over 1,000 cycles,
//!   alone and under 16- and 64-parallel mixed load (on-demand volumes looked up once)
//!   while a container reads an on-demand volume in a loop;
//! - time from a killed client to a readable target, seen from an rslave container, for
//!   an explicit-list volume and an on-demand volume;
//! - the first read of files through a published volume against a plain `cvmfs2` mount of
//!   the same repository on the node (real client only);
//! - plugin RSS when idle and at the peak of 64 parallel publishes.
//!
//! Runs as root, like the mount tests, in private mount namespaces (see tests/common).
//! Arguments choose parts: `cargo bench -p hepbatch-csi --bench node -- mixed heal`
//! (publish, mixed, first-read, heal, rss; all by default).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Node;
use common::mixed::{self, ContainerReader, percentile};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resident set size of process `pid` in KiB (VmRSS), if it still runs.
fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn publish_cycles(node: &Node, setup: &str) {
    let mut client = node.node_client().await;
    let attrs = [("repositories", "cms.cern.ch,sft.cern.ch")];
    let keeper = node.target("keeper");
    node.publish(&mut client, "keeper", &keeper, &attrs)
        .await
        .unwrap();
    let target = node.target("cycle");
    let (mut publish, mut unpublish) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let started = Instant::now();
        node.publish(&mut client, "cycle", &target, &attrs)
            .await
            .unwrap();
        publish.push(started.elapsed());
        let started = Instant::now();
        node.unpublish(&mut client, "cycle", &target).await.unwrap();
        unpublish.push(started.elapsed());
    }
    publish.sort();
    unpublish.sort();
    println!(
        "publish   (2 repositories, already mounted, {setup}), 1000 cycles: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&publish, 0.5)),
        ms(percentile(&publish, 0.99)),
        ms(*publish.last().unwrap())
    );
    println!(
        "unpublish (2 repositories, {setup}), 1000 cycles: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&unpublish, 0.5)),
        ms(percentile(&unpublish, 0.99)),
        ms(*unpublish.last().unwrap())
    );
    node.unpublish(&mut client, "keeper", &keeper)
        .await
        .unwrap();
}

async fn heal_times(node: &mut Node, rounds: usize) {
    // The production default watchdog period.
    node.kill_plugin();
    node.heal_interval_ms = 1000;
    node.start_plugin().await;
    let mut client = node.node_client().await;
    let listed = node.target("heal-listed");
    let all = node.target("heal-all");
    node.publish(
        &mut client,
        "heal-listed",
        &listed,
        &[("repositories", "cms.cern.ch")],
    )
    .await
    .unwrap();
    node.publish(&mut client, "heal-all", &all, &[])
        .await
        .unwrap();
    let c_listed = node.container(&listed);
    let c_all = node.container(&all);
    let limit = Duration::from_secs(60);
    let (mut listed_times, mut all_times) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        c_listed.wait_for("cms.cern.ch/version", "cms latest\n", limit);
        node.kill_client("cms.cern.ch");
        listed_times.push(c_listed.wait_for("cms.cern.ch/version", "cms latest\n", limit));
        c_all.wait_for("sft.cern.ch/version", "sft latest\n", limit);
        node.kill_client("sft.cern.ch");
        all_times.push(c_all.wait_for("sft.cern.ch/version", "sft latest\n", limit));
    }
    // The clients die with the plugin: time from starting the plugin again to readable.
    let mut restart_times = Vec::new();
    for _ in 0..rounds.min(5) {
        c_listed.wait_for("cms.cern.ch/version", "cms latest\n", limit);
        node.kill_plugin();
        node.kill_client("cms.cern.ch");
        let started = Instant::now();
        node.start_plugin().await;
        c_listed.wait_for("cms.cern.ch/version", "cms latest\n", limit);
        restart_times.push(started.elapsed());
    }
    restart_times.sort();
    println!(
        "plugin + client killed -> plugin started -> readable in container, {} restarts: median {:.0} ms, max {:.0} ms",
        restart_times.len(),
        ms(percentile(&restart_times, 0.5)),
        ms(*restart_times.last().unwrap())
    );
    for (name, mut times) in [("explicit list", listed_times), ("on demand", all_times)] {
        times.sort();
        println!(
            "client kill -> readable in container ({name}), {rounds} kills: median {:.0} ms, max {:.0} ms (heal interval {} ms)",
            ms(percentile(&times, 0.5)),
            ms(*times.last().unwrap()),
            node.heal_interval_ms
        );
    }
}

async fn rss(node: &Node) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = node.plugin.as_ref().unwrap().id();
    let idle = rss_kib(pid).unwrap();
    let client = node.node_client().await;
    let targets: Vec<_> = (0..64).map(|i| node.target(&format!("rss-{i}"))).collect();
    for target in &targets {
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    }
    let variants: [&[(&str, &str)]; 3] = [
        &[("repositories", "cms.cern.ch,sft.cern.ch")],
        &[
            ("repositories", "cms.cern.ch"),
            ("pins", "cms.cern.ch@tag=v2"),
        ],
        &[("repositories", "atlas.cern.ch")],
    ];
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = Instant::now();
    let publishes = targets.iter().enumerate().map(|(i, target)| {
        let mut client = client.clone();
        let request =
            common::publish_request(&format!("rss-{i}"), target, variants[i % variants.len()]);
        async move { client.node_publish_volume(request).await }
    });
    for result in futures::future::join_all(publishes).await {
        result.unwrap();
    }
    let took = started.elapsed();
    sampler.abort();
    println!(
        "plugin RSS: idle {:.1} MiB, peak during 64 parallel publishes {:.1} MiB (64 publishes took {:.0} ms)",
        idle as f64 / 1024.0,
        peak.load(std::sync::atomic::Ordering::Relaxed).max(idle) as f64 / 1024.0,
        ms(took)
    );
}

/// 1,000 publish/unpublish cycles of mixed volumes, `parallel` at a time
/// ([`common::mixed`]): the publish latencies.
async fn mixed_load(node: &std::sync::Arc<Node>, parallel: usize) {
    let run = mixed::mixed_cycles(node, parallel).await;
    println!(
        "publish under {parallel}-parallel mixed load ({} cycles, on demand looked up once, {:.1} s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        mixed::CYCLES,
        run.took.as_secs_f64(),
        ms(run.at(0.5)),
        ms(run.at(0.99)),
        ms(run.max())
    );
}

/// Runs `work` on a thread that entered the mount namespace of process `pid` (a thread of
/// its own file-system context, which setns needs in a multi-threaded process).
fn in_namespace_of<T: Send + 'static>(pid: u32, work: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        mixed::enter_mount_namespace_of(pid);
        work()
    })
    .join()
    .unwrap()
}

/// First reads of files through a published volume (in a container) against a plain
/// `cvmfs2` mount of the same repository on the node, each with a cold cache of its own.
async fn first_reads(stratum: std::sync::Arc<hepbatch_tests::cvmfs::Stratum>, files: usize) {
    let mut node = Node::start_with_stratum(stratum.clone(), &[]).await;
    let mut client = node.node_client().await;
    let (_, container) = node
        .publish_in_container(&mut client, "reads", &[("repositories", "data.cern.ch")])
        .await;
    // The plain mount: the same configuration as the plugin's client, another cache.
    let plain = node.dir.path().join("plain");
    let cache = node.dir.path().join("plain-cache");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    let config = node.dir.path().join("plain.conf");
    std::fs::write(
        &config,
        format!(
            "CVMFS_SERVER_URL={}\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_KEYS_DIR={}\nCVMFS_CACHE_BASE={c}\nCVMFS_SHARED_CACHE=no\nCVMFS_RELOAD_SOCKETS={c}\n",
            stratum.server_url(),
            stratum.keys_dir().display(),
            c = cache.display()
        ),
    )
    .unwrap();
    common::run_ok(
        node.in_ns("cvmfs2")
            .arg("-o")
            .arg(format!(
                "config=/etc/cvmfs/default.conf:{},allow_other,ro",
                config.display()
            ))
            .arg("data.cern.ch")
            .arg(&plain),
    );
    // File by file, alternating which of the two reads it first, so that drift (the
    // stratum's page cache, other work on the machine) hits both alike.
    let read = |pid: u32, path: std::path::PathBuf| {
        in_namespace_of(pid, move || {
            let started = Instant::now();
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.is_empty());
            started.elapsed()
        })
    };
    let (mut volume, mut host) = (Vec::new(), Vec::new());
    for i in 0..files {
        let name = format!("file-{i:03}");
        let through_volume = || {
            read(
                container.pid,
                container.mount.join("data.cern.ch").join(&name),
            )
        };
        let through_plain = || read(node.keeper.id(), plain.join(&name));
        if i % 2 == 0 {
            volume.push(through_volume());
            host.push(through_plain());
        } else {
            host.push(through_plain());
            volume.push(through_volume());
        }
    }
    volume.sort();
    host.sort();
    let (v, h) = (percentile(&volume, 0.5), percentile(&host, 0.5));
    let (v_total, h_total): (Duration, Duration) = (volume.iter().sum(), host.iter().sum());
    println!(
        "first read of {files} files of 256 KiB: through a published volume median {:.2} ms (total {:.0} ms), plain cvmfs2 mount median {:.2} ms (total {:.0} ms): ratio {:.3} (median), {:.3} (total)",
        ms(v),
        ms(v_total),
        ms(h),
        ms(h_total),
        v.as_secs_f64() / h.as_secs_f64(),
        v_total.as_secs_f64() / h_total.as_secs_f64()
    );
    let _ = common::run(node.in_ns("umount").arg("-l").arg(&plain));
    drop(container);
}

/// How many files the first-read comparison reads through each mount.
const FIRST_READ_FILES: usize = 100;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench -p hepbatch-csi --bench node -- mixed heal`: only those parts.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs = |part: &str| chosen.is_empty() || chosen.iter().any(|c| c == part);
    runtime.block_on(async {
        println!("backend: {:?}", common::TestBackend::chosen());
        if runs("publish") {
            let node = Node::start().await;
            publish_cycles(&node, "explicit list").await;
        }
        if runs("mixed") {
            let mut node = Node::start().await;
            let client = node.node_client().await;
            let (_, container) = node
                .publish_in_container(&mut client.clone(), "reader", &[])
                .await;
            let node = std::sync::Arc::new(node);
            for parallel in [16, 64] {
                let reader =
                    ContainerReader::start(&container, "sft.cern.ch/version", "sft latest\n");
                mixed_load(&node, parallel).await;
                let reads = reader.stop();
                println!(
                    "  container reading an on-demand volume every 10 ms meanwhile: {} reads, {} failed, longest failure {:.0} ms",
                    reads.reads,
                    reads.failures,
                    ms(reads.longest_failure)
                );
            }
        }
        if runs("first-read") && common::TestBackend::chosen() == common::TestBackend::Cvmfs {
            // Files of 256 KiB, hardly compressible, so each first read downloads.
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            let files: Vec<hepbatch_tests::cvmfs::File> = (0..FIRST_READ_FILES)
                .map(|i| {
                    let content: String = (0..262_144)
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            char::from(b'A' + (state % 58) as u8)
                        })
                        .collect();
                    hepbatch_tests::cvmfs::File::new(&format!("file-{i:03}"), &content)
                })
                .collect();
            let stratum =
                hepbatch_tests::cvmfs::Stratum::start(&[hepbatch_tests::cvmfs::Repository {
                    name: "data.cern.ch".into(),
                    revisions: vec![hepbatch_tests::cvmfs::Revision::untagged(files)],
                }])
                .unwrap();
            first_reads(std::sync::Arc::new(stratum), FIRST_READ_FILES).await;
        }
        if runs("heal") {
            let mut node = Node::start().await;
            heal_times(&mut node, 10).await;
        }
        if runs("rss") {
            let node = Node::start().await;
            rss(&node).await;
        }
    });
}
