//! Pod start times on a real node, for benchmarks: create N pods, watch them, report
//! how long each took from its creation to `Running`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Volume, VolumeMount};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event, watcher};

use crate::testbed::TestbedError;

/// One measured pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStart {
    /// The pod's name.
    pub name: String,
    /// From the create call's answer to the first watch event showing `Running`.
    pub created_to_running: Duration,
}

/// The label on every pod [`measure_pod_starts_of`] creates; its value names the run.
pub const MEASURED_LABEL: &str = "testbed.hepbatch.io/measure";

/// What the measured pods look like: a container running `sleep 3600` from `image`, with
/// `volumes` mounted into it.
#[derive(Debug, Clone, Default)]
pub struct PodShape {
    /// The container's image.
    pub image: String,
    /// Volumes of the pod, each with its mount in the container.
    pub volumes: Vec<(Volume, VolumeMount)>,
}

impl PodShape {
    /// A pod of `image` without volumes.
    pub fn plain(image: &str) -> PodShape {
        PodShape {
            image: image.to_owned(),
            volumes: Vec::new(),
        }
    }
}

/// Creates `count` pods running `sleep 3600` from `image` on the node `node` (through
/// the scheduler, with a `kubernetes.io/hostname` selector) in `namespace`, and returns
/// how long each took to reach `Running`, in creation order. The pods are left running
/// (delete the namespace). Fails after `timeout`.
pub async fn measure_pod_starts(
    client: &kube::Client,
    namespace: &str,
    node: &str,
    image: &str,
    count: usize,
    timeout: Duration,
) -> Result<Vec<PodStart>, TestbedError> {
    measure_pod_starts_of(
        client,
        namespace,
        node,
        &PodShape::plain(image),
        count,
        timeout,
    )
    .await
}

/// [`measure_pod_starts`] for pods of `shape`. Every measured pod carries the label
/// [`MEASURED_LABEL`] (delete them by it).
pub async fn measure_pod_starts_of(
    client: &kube::Client,
    namespace: &str,
    node: &str,
    shape: &PodShape,
    count: usize,
    timeout: Duration,
) -> Result<Vec<PodStart>, TestbedError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let run = {
        use rand::distr::{Alphanumeric, SampleString};
        let suffix = Alphanumeric.sample_string(&mut rand::rng(), 5);
        format!("start-{}", suffix.to_ascii_lowercase())
    };
    let selector = format!("{MEASURED_LABEL}={run}");
    let config = watcher::Config::default().labels(&selector);
    // The watch runs beside the creations, so no transition is seen late.
    let (ran, mut running_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (synced, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let watched = pods.clone();
    let watch = tokio::spawn(async move {
        let mut synced = Some(synced);
        let mut events = watcher(watched, config).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::InitDone) => {
                    if let Some(synced) = synced.take() {
                        let _ = synced.send(());
                    }
                }
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                    if phase == Some("Running") {
                        let _ = ran.send((pod.metadata.name.unwrap_or_default(), Instant::now()));
                    }
                }
                Ok(_) | Err(_) => {}
            }
        }
    });
    let result = async {
        tokio::time::timeout(timeout, synced_rx)
            .await
            .map_err(|_| TestbedError::Timeout {
                what: "the pod watch to sync".into(),
                timeout,
            })?
            .map_err(|_| TestbedError::Config("the pod watch ended".into()))?;
        let mut created: Vec<(String, Instant)> = Vec::with_capacity(count);
        for index in 0..count {
            let name = format!("{run}-{index}");
            let (volumes, mounts): (Vec<_>, Vec<_>) = shape.volumes.iter().cloned().unzip();
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "name": name, "labels": { MEASURED_LABEL: run } },
                "spec": {
                    "nodeSelector": { "kubernetes.io/hostname": node },
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "main",
                        "image": shape.image,
                        "command": ["sleep", "3600"],
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            }))
            .map_err(|e| TestbedError::Config(format!("building pod {name}: {e}")))?;
            pods.create(&PostParams::default(), &pod)
                .await
                .map_err(|source| TestbedError::Kube {
                    what: format!("creating pod {name}"),
                    source,
                })?;
            created.push((name, Instant::now()));
        }
        let mut running: HashMap<String, Instant> = HashMap::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while created.iter().any(|(name, _)| !running.contains_key(name)) {
            let (name, at) = tokio::time::timeout_at(deadline, running_rx.recv())
                .await
                .map_err(|_| TestbedError::Timeout {
                    what: format!("{count} pods to run on {node}"),
                    timeout,
                })?
                .ok_or_else(|| TestbedError::Config("the pod watch ended".into()))?;
            running.entry(name).or_insert(at);
        }
        Ok(created
            .into_iter()
            .map(|(name, at)| PodStart {
                created_to_running: running
                    .get(&name)
                    .map_or(Duration::ZERO, |ran| ran.saturating_duration_since(at)),
                name,
            })
            .collect())
    }
    .await;
    watch.abort();
    result
}
