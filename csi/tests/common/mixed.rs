//! The mixed load that the load tests check and the benchmark measures: 1,000
//! publish/unpublish cycles of mixed volumes, some in parallel, each on-demand volume
//! looked up once before it is unpublished, while a container reads an on-demand volume.
//!
//! Keepers hold every instance the cycles use, so the cycles measure publishing, not
//! client starts. Lookups come from threads inside the node's mount namespace
//! ([`NamespaceReaders`]): outside the plugin's process group, as a container's first
//! access is, without a process per read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::{Container, Node};

/// How many publish/unpublish cycles one run makes.
pub const CYCLES: usize = 1000;

/// The attribute sets the cycles publish, in turn: on demand (with and without a pin,
/// each looked up once), explicit lists (with and without a pin).
pub const VOLUMES: &[&[(&str, &str)]] = &[
    &[],
    &[("pins", "cms.cern.ch@tag=v2")],
    &[("repositories", "cms.cern.ch,sft.cern.ch")],
    &[
        ("repositories", "cms.cern.ch"),
        ("pins", "cms.cern.ch@tag=v1"),
    ],
    &[("repositories", "atlas.cern.ch")],
];

/// The volumes published for the whole run: between them every instance [`VOLUMES`] uses.
pub const KEEPERS: &[(&str, &[(&str, &str)])] = &[
    (
        "keeper-listed",
        &[("repositories", "atlas.cern.ch,cms.cern.ch,sft.cern.ch")],
    ),
    (
        "keeper-pins",
        &[
            ("repositories", "cms.cern.ch"),
            ("pins", "cms.cern.ch@tag=v1"),
        ],
    ),
    (
        "keeper-v2",
        &[
            ("repositories", "cms.cern.ch"),
            ("pins", "cms.cern.ch@tag=v2"),
        ],
    ),
];

/// The publish latencies of one run, sorted, and how long the run took.
pub struct MixedRun {
    pub latencies: Vec<Duration>,
    pub took: Duration,
}

impl MixedRun {
    /// The latency at quantile `q` (0.5 for the median).
    pub fn at(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }

    /// The longest latency.
    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }
}

/// The element of `sorted` at quantile `q`, rounded to the nearest index.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index]
}

/// Publishes the [`KEEPERS`], runs [`CYCLES`] cycles `parallel` at a time and unpublishes
/// the keepers again. Panics on the first failed publish, lookup or unpublish.
pub async fn mixed_cycles(node: &Arc<Node>, parallel: usize) -> MixedRun {
    let client = node.node_client().await;
    let mut setup = client.clone();
    for (name, attributes) in KEEPERS {
        node.publish(&mut setup, name, &node.target(name), attributes)
            .await
            .unwrap_or_else(|e| panic!("publish {name}: {e:?}"));
    }
    let readers = NamespaceReaders::start(node.keeper.id(), 8);
    let started = Instant::now();
    let workers = (0..parallel).map(|worker| {
        let node = node.clone();
        let readers = readers.clone();
        let mut client = client.clone();
        async move {
            let mut latencies = Vec::new();
            for cycle in (worker..CYCLES).step_by(parallel) {
                let attributes = VOLUMES[cycle % VOLUMES.len()];
                let volume = format!("mixed-{worker}");
                let target = node.target(&volume);
                let begun = Instant::now();
                node.publish(&mut client, &volume, &target, attributes)
                    .await
                    .unwrap_or_else(|e| panic!("publish {cycle} {attributes:?}: {e:?}"));
                latencies.push(begun.elapsed());
                if attributes.iter().all(|(k, _)| *k != "repositories") {
                    let read = readers.read(target.join("cms.cern.ch/version")).await;
                    assert!(read.is_ok(), "lookup in cycle {cycle}: {read:?}");
                }
                node.unpublish(&mut client, &volume, &target)
                    .await
                    .unwrap_or_else(|e| panic!("unpublish {cycle}: {e:?}"));
            }
            latencies
        }
    });
    let mut latencies: Vec<Duration> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let took = started.elapsed();
    latencies.sort();
    for (name, _) in KEEPERS {
        node.unpublish(&mut setup, name, &node.target(name))
            .await
            .unwrap_or_else(|e| panic!("unpublish {name}: {e:?}"));
    }
    MixedRun { latencies, took }
}

/// Moves the calling thread into the mount namespace of process `pid` (with a
/// file-system context of its own, which setns needs in a multi-threaded process).
pub fn enter_mount_namespace_of(pid: u32) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
}

/// A file to read and where to send what it held.
type ReadRequest = (
    PathBuf,
    tokio::sync::oneshot::Sender<std::io::Result<Vec<u8>>>,
);

/// Threads inside a mount namespace that read files on request.
#[derive(Clone)]
pub struct NamespaceReaders {
    requests: mpsc::Sender<ReadRequest>,
}

impl NamespaceReaders {
    /// `threads` readers in the mount namespace of process `pid`; they end when the last
    /// clone of the returned value is dropped.
    pub fn start(pid: u32, threads: usize) -> Self {
        let (requests, queue) = mpsc::channel::<ReadRequest>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            let queue = queue.clone();
            std::thread::spawn(move || {
                enter_mount_namespace_of(pid);
                loop {
                    let next = queue.lock().unwrap().recv();
                    let Ok((path, reply)) = next else { return };
                    let _ = reply.send(std::fs::read(&path));
                }
            });
        }
        Self { requests }
    }

    /// The content of `path`, read by one of the threads.
    pub async fn read(&self, path: PathBuf) -> std::io::Result<Vec<u8>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests.send((path, reply)).unwrap();
        answer.await.unwrap()
    }
}

/// What a [`ContainerReader`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    pub reads: u64,
    pub failures: u64,
    /// The longest run of failed reads, from the first failure to the next success.
    pub longest_failure: Duration,
}

/// A thread in a container's mount namespace reading one file every 10 ms, counting the
/// reads that fail or show other content and the longest run of them.
pub struct ContainerReader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Reads>,
}

impl ContainerReader {
    /// Reads `relative` beneath `container`'s copy of its target, expecting `expected`.
    pub fn start(container: &Container, relative: &str, expected: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let pid = container.pid;
        let path = container.mount.join(relative);
        let expected = expected.as_bytes().to_vec();
        let thread = std::thread::spawn(move || {
            enter_mount_namespace_of(pid);
            read_until(&stopping, &path, &expected)
        });
        Self { stop, thread }
    }

    /// Stops reading and tells what was seen.
    pub fn stop(self) -> Reads {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn read_until(stop: &AtomicBool, path: &Path, expected: &[u8]) -> Reads {
    let (mut reads, mut failures, mut longest) = (0, 0, Duration::ZERO);
    let mut failing_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        reads += 1;
        match std::fs::read(path) {
            Ok(bytes) if bytes == expected => {
                if let Some(since) = failing_since.take() {
                    longest = longest.max(since.elapsed());
                }
            }
            _ => {
                failures += 1;
                failing_since.get_or_insert_with(Instant::now);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(since) = failing_since {
        longest = longest.max(since.elapsed());
    }
    Reads {
        reads,
        failures,
        longest_failure: longest,
    }
}
