//! Load tests: 1,000 publish/unpublish cycles and 64 concurrent publishes of distinct and
//! identical volumes, each ending with the mount table back at its baseline.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Node;
use common::mixed::{self, ContainerReader};

/// What a mountinfo line says about the topology: mount point, file system type and
/// source. Mount ids are left out: a repository remounted by the watchdog gets a new id,
/// which is a heal, not a leaked mount.
fn normalized(line: &str) -> String {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields
        .iter()
        .position(|f| *f == "-")
        .unwrap_or(fields.len());
    let mount_point = fields.get(4).copied().unwrap_or_default();
    let fs_type = fields.get(separator + 1).copied().unwrap_or_default();
    let source = fields.get(separator + 2).copied().unwrap_or_default();
    format!("{mount_point} {fs_type} {source}")
}

/// The mount table as a sorted list of normalized lines (mount order may change when a
/// repository is remounted).
fn comparable(lines: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = lines.iter().map(|l| normalized(l)).collect();
    lines.sort();
    lines
}

async fn wait_for_baseline(node: &Node, baseline: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let baseline = comparable(baseline);
    loop {
        let now = comparable(&node.mountinfo());
        if now == baseline {
            return;
        }
        let extra: Vec<_> = now.iter().filter(|l| !baseline.contains(l)).collect();
        let missing: Vec<_> = baseline.iter().filter(|l| !now.contains(l)).collect();
        assert!(
            Instant::now() < deadline,
            "mount table did not return to its baseline: extra {extra:#?}, missing \
             {missing:#?}; now {now:#?}, baseline {baseline:#?}\n{}",
            node.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_publish_unpublish_cycles() {
    let node = Node::start().await;
    let mut client = node.node_client().await;
    let baseline = node.mountinfo();
    let attrs = [
        ("repositories", "cms.cern.ch,sft.cern.ch"),
        ("pins", "cms.cern.ch@tag=v1"),
    ];
    // Keep the repositories mounted, as in the benchmark: a volume that stays published.
    let keeper = node.target("keeper");
    node.publish(&mut client, "keeper", &keeper, &attrs)
        .await
        .unwrap();
    for cycle in 0..1000 {
        let target = node.target(&format!("cycle-{}", cycle % 7));
        node.publish(&mut client, "cycle", &target, &attrs)
            .await
            .unwrap_or_else(|e| panic!("publish {cycle}: {e:?}"));
        node.unpublish(&mut client, "cycle", &target)
            .await
            .unwrap_or_else(|e| panic!("unpublish {cycle}: {e:?}"));
    }
    // Still one client per repository and revision on the node.
    for instance in ["cms.cern.ch@tag-v1", "sft.cern.ch"] {
        assert_eq!(node.client_mounts(instance), 1, "{instance}");
    }
    node.unpublish(&mut client, "keeper", &keeper)
        .await
        .unwrap();
    wait_for_baseline(&node, &baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_publishes_of_distinct_and_identical_volumes() {
    let node = Node::start().await;
    let client = node.node_client().await;
    let baseline = node.mountinfo();
    let variants: [&[(&str, &str)]; 6] = [
        &[("repositories", "cms.cern.ch")],
        &[
            ("repositories", "cms.cern.ch,sft.cern.ch"),
            ("pins", "cms.cern.ch@tag=v2"),
        ],
        &[("repositories", "atlas.cern.ch,sft.cern.ch")],
        &[
            ("repositories", "cms.cern.ch"),
            ("pins", "cms.cern.ch@tag=v1"),
        ],
        // Every repository on demand, with and without a pin.
        &[],
        &[("pins", "cms.cern.ch@tag=v2")],
    ];
    // 32 distinct volumes, each published twice at once on its target (identical requests).
    let requests: Vec<_> = (0..64)
        .map(|i| {
            let volume = i / 2;
            (
                format!("vol-{volume}"),
                node.target(&format!("pod-{volume}")),
                variants[volume % variants.len()],
            )
        })
        .collect();
    for (_, target, _) in &requests {
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    }
    let publishes = requests.iter().map(|(volume, target, attrs)| {
        let mut client = client.clone();
        let request = common::publish_request(volume, target, attrs);
        async move { client.node_publish_volume(request).await }
    });
    for result in futures::future::join_all(publishes).await {
        result.unwrap();
    }
    for (i, (_, target, _)) in requests.iter().enumerate().step_by(2) {
        let expected = match i / 2 % variants.len() {
            1 | 5 => "cms v2\n",
            3 => "cms v1\n",
            2 => "",
            _ => "cms latest\n",
        };
        if !expected.is_empty() {
            assert_eq!(
                node.read(&target.join("cms.cern.ch/version")).unwrap(),
                expected
            );
        }
        assert!(!node.list(target).unwrap().is_empty());
    }
    let unpublishes = requests.iter().map(|(volume, target, _)| {
        let mut client = client.clone();
        let (volume, target) = (volume.clone(), target.clone());
        async move {
            client
                .node_unpublish_volume(hepbatch_csi::proto::csi::NodeUnpublishVolumeRequest {
                    volume_id: volume,
                    target_path: target.display().to_string(),
                })
                .await
        }
    });
    for result in futures::future::join_all(unpublishes).await {
        result.unwrap();
    }
    wait_for_baseline(&node, &baseline).await;
}

/// 1,000 publish/unpublish cycles of mixed volumes ([`common::mixed`]), `parallel` at a
/// time, while a container reads an on-demand volume in a loop: no error, the reader
/// never fails for longer than a healing interval, the mount table back at its baseline.
/// Prints the publish latencies (docs/benchmarks.md has the figures).
async fn mixed_cycles_with_a_reader(parallel: usize) {
    let mut node = Node::start().await;
    let mut client = node.node_client().await;
    let baseline = node.mountinfo();
    let (reader_target, container) = node.publish_in_container(&mut client, "reader", &[]).await;
    assert_eq!(
        container.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    let reader = ContainerReader::start(&container, "sft.cern.ch/version", "sft latest\n");
    let node = Arc::new(node);
    let run = mixed::mixed_cycles(&node, parallel).await;
    let reads = reader.stop();
    eprintln!(
        "{} mixed cycles, {parallel} in parallel, {:?} backend: {:?}; publish p50 {:?}, p99 {:?}, max {:?}; reader: {} reads, {} failed, longest failure {:?}",
        mixed::CYCLES,
        node.backend,
        run.took,
        run.at(0.5),
        run.at(0.99),
        run.max(),
        reads.reads,
        reads.failures,
        reads.longest_failure,
    );
    assert_eq!(run.latencies.len(), mixed::CYCLES);
    assert!(
        reads.longest_failure <= Duration::from_millis(node.heal_interval_ms),
        "the reader failed for {:?}",
        reads.longest_failure
    );
    node.unpublish(&mut client, "reader", &reader_target)
        .await
        .unwrap();
    wait_for_baseline(&node, &baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cycles_sixteen_at_a_time_with_a_reader() {
    mixed_cycles_with_a_reader(16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cycles_sixty_four_at_a_time_with_a_reader() {
    mixed_cycles_with_a_reader(64).await;
}
