//! Benchmark of the node plugin (prints figures; asserts nothing about speed):
//! - NodePublish/NodeUnpublish of an already-mounted repository, p50/p99 over 1,000 cycles;
//! - time from a killed client to a readable target, seen from an rslave container, for
//!   an explicit-list volume and an on-demand volume;
//! - plugin RSS when idle and at the peak of 64 parallel publishes.
//!
//! Runs as root, like the mount tests, in private mount namespaces (see tests/common).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::Node;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resident set size of the plugin process in KiB (VmRSS).
fn rss_kib(node: &Node) -> u64 {
    let pid = node.plugin.as_ref().unwrap().id();
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
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
    let idle = rss_kib(node);
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
        let pid = node.plugin.as_ref().unwrap().id();
        tokio::spawn(async move {
            loop {
                if let Some(kib) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    })
                {
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = Node::start().await;
        publish_cycles(&node, "latest via autofs").await;
        drop(node);
        // Baseline in the same session: no on-demand support, latest revisions mounted
        // directly by the backend.
        let node = Node::start_with(common::STANDARD, &["--on-demand", "false"]).await;
        publish_cycles(&node, "baseline, no autofs").await;
        drop(node);
        let mut node = Node::start().await;
        heal_times(&mut node, 10).await;
        drop(node);
        let node = Node::start().await;
        rss(&node).await;
    });
}
