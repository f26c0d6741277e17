//! The Helm chart on a testbed with real nodes, the way the end-to-end tests, the
//! benchmark and `make demo` install it: the operator and CSI images built by
//! `images/build.sh` (imported into the nodes, never pulled), the node's kubelet directory,
//! and either the real CVMFS client against a test [`Stratum`] exposed on the node or the
//! squashfuse stand-in serving the same fixtures from images on the node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hepbatch_crds::CSI_DRIVER_NAME;
use k8s_openapi::api::storage::v1::CSINode;
use kube::Api;
use serde_json::json;

use crate::cvmfs::{Stratum, content};
use crate::testbed::node::ANALYSIS_BASE_IMAGE;
use crate::testbed::{RealNode, Testbed, TestbedError};
use crate::wait::WaitError;

/// Why the chart could not be prepared or installed.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// An image archive is not built.
    #[error("{} is missing: build the images with `make images` (images/build.sh)", .0.display())]
    ImageMissing(PathBuf),
    /// The real backend was asked for without a stratum to point it at.
    #[error("the real backend needs a stratum")]
    NoStratum,
    /// The stratum could not be exposed on the node.
    #[error("{0}")]
    Expose(#[source] TestbedError),
    /// A file could not be read, written or created.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A program could not be started.
    #[error("{program}: {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed; `output` is what it printed.
    #[error("{what}: {output}")]
    Failed {
        /// What failed, e.g. `helm install failed`.
        what: &'static str,
        /// Its standard output and error.
        output: String,
    },
    /// The kubelet did not register the plugin in time.
    #[error("{0}")]
    Registration(#[source] WaitError),
}

/// A [`ChartError::File`] for `path`.
fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> ChartError + '_ {
    move |source| ChartError::File {
        path: path.to_owned(),
        source,
    }
}

/// The namespace the chart is installed into.
pub const NAMESPACE: &str = "hepbatch-system";
/// Its release name.
pub const RELEASE: &str = "hepbatch";

/// The chart's directory in this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/hepbatch")
}

/// Where `images/build.sh` writes its archives: `$CARGO_TARGET_DIR/images`.
pub fn images_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("images")
}

/// The operator and CSI image archives for real nodes; an error naming what to run when
/// they are not built.
pub fn image_archives() -> Result<Vec<PathBuf>, ChartError> {
    let archives: Vec<PathBuf> = ["hepbatch-operator", "hepbatch-csi"]
        .iter()
        .map(|name| images_dir().join(format!("{name}.docker.tar")))
        .collect();
    match archives.iter().find(|a| !a.is_file()) {
        Some(missing) => Err(ChartError::ImageMissing(missing.clone())),
        None => Ok(archives),
    }
}

/// The image tag the archives carry (the workspace version).
pub const IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");

/// Which client the plugin runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The real CVMFS client against a test stratum.
    Cvmfs,
    /// squashfuse serving squashfs images of the same fixtures from the node.
    Squashfuse,
}

/// The chart's values for `node`: local images (`pullPolicy: Never`), the node's kubelet
/// directory, text logs, the analysis base image for every platform, and the CVMFS
/// configuration of `backend` (the stratum's URL, exposed on the node, and its keys; or
/// the stand-in's images written into the node's `/var/lib/hepbatch/images`).
pub fn values(
    node: &RealNode,
    backend: Backend,
    stratum: Option<&Stratum>,
) -> Result<serde_json::Value, ChartError> {
    let platforms: BTreeMap<&str, &str> = ["cc7", "el8", "el9"]
        .into_iter()
        .map(|p| (p, ANALYSIS_BASE_IMAGE))
        .collect();
    let mut csi = json!({
        "image": {"repository": "localhost/hepbatch-csi", "tag": IMAGE_TAG, "pullPolicy": "Never"},
        "kubeletDir": node.kubelet_dir().display().to_string(),
        "healIntervalMs": 500,
        "logFormat": "text",
    });
    match (backend, stratum) {
        (Backend::Cvmfs, Some(stratum)) => {
            let exposed = node
                .expose(stratum.address().port())
                .map_err(ChartError::Expose)?;
            let mut keys = serde_json::Map::new();
            for repository in stratum.repositories() {
                let path = stratum.keys_dir().join(format!("{repository}.pub"));
                let key = std::fs::read_to_string(&path).map_err(file_error(&path))?;
                keys.insert(format!("{repository}.pub"), key.into());
            }
            csi["cvmfs"] = json!({
                "httpProxy": "DIRECT",
                "serverUrl": format!("http://{exposed}/cvmfs/@fqrn@"),
                "publicKeys": keys,
                "quotaLimitMib": 1000,
            });
        }
        (Backend::Cvmfs, None) => return Err(ChartError::NoStratum),
        (Backend::Squashfuse, _) => {
            csi["backend"] = "squashfuse".into();
            write_stand_in_images(node)?;
        }
    }
    Ok(json!({
        "operator": {
            "image": {"repository": "localhost/hepbatch-operator", "tag": IMAGE_TAG, "pullPolicy": "Never"},
            "logFormat": "text",
            "config": {"platforms": platforms},
        },
        "csi": csi,
    }))
}

/// The stand-in's images, one squashfs per repository and revision of the standard
/// fixtures, in the node's `/var/lib/hepbatch/images` (the chart's default
/// `csi.squashfuseImages`).
pub fn write_stand_in_images(node: &RealNode) -> Result<(), ChartError> {
    let images = node.var_upper_dir().join("lib/hepbatch/images");
    std::fs::create_dir_all(&images).map_err(file_error(&images))?;
    for repository in content::standard() {
        let count = repository.revisions.len();
        for (i, revision) in repository.revisions.iter().enumerate() {
            let instance = match (&revision.tag, i + 1 == count) {
                (_, true) => repository.name.clone(),
                (Some(tag), false) => format!("{}@tag-{tag}", repository.name),
                (None, false) => continue,
            };
            let tree = tempfile::tempdir().map_err(file_error(&images))?;
            revision
                .write(tree.path())
                .map_err(file_error(tree.path()))?;
            run(
                "mksquashfs",
                "mksquashfs",
                std::process::Command::new("mksquashfs")
                    .arg(tree.path())
                    .arg(images.join(format!("{instance}.squashfs")))
                    .args(["-noappend", "-quiet", "-no-progress", "-no-xattrs"]),
            )?;
        }
    }
    Ok(())
}

/// Runs `command` (the program `program`) to its end; a failure is `failed` with what the
/// program printed.
fn run(
    program: &'static str,
    failed: &'static str,
    command: &mut std::process::Command,
) -> Result<(), ChartError> {
    let output = command
        .output()
        .map_err(|source| ChartError::Spawn { program, source })?;
    if output.status.success() {
        return Ok(());
    }
    Err(ChartError::Failed {
        what: failed,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// `helm install` of the chart with `values` as release [`RELEASE`] in [`NAMESPACE`],
/// waiting for its workloads; then waits until the kubelet of `node` has registered the
/// plugin.
pub async fn install(
    testbed: &Testbed,
    node: &RealNode,
    values: &serde_json::Value,
) -> Result<(), ChartError> {
    let file = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .map_err(file_error(&std::env::temp_dir()))?;
    std::fs::write(file.path(), values.to_string()).map_err(file_error(file.path()))?;
    run(
        "helm",
        "helm install failed",
        std::process::Command::new(testbed.binaries().path("helm"))
            .arg("--kubeconfig")
            .arg(testbed.kubeconfig())
            .args(["install", RELEASE])
            .arg(chart_dir())
            .args(["--namespace", NAMESPACE, "--create-namespace", "--wait"])
            .args(["--timeout", "180s", "-f"])
            .arg(file.path()),
    )?;
    wait_for_registration(&testbed.client(), node.name())
        .await
        .map(drop)
}

/// Waits until the kubelet of `node` lists the driver in its CSINode object: proof that
/// it called the plugin's registration service and got its answer.
pub async fn wait_for_registration(
    client: &kube::Client,
    node: &str,
) -> Result<CSINode, ChartError> {
    let api: Api<CSINode> = Api::all(client.clone());
    crate::wait::until(
        &api,
        node,
        "the CSI driver registered with the kubelet",
        Duration::from_secs(120),
        |csinode: Option<&CSINode>| {
            csinode.is_some_and(|n| n.spec.drivers.iter().any(|d| d.name == CSI_DRIVER_NAME))
        },
    )
    .await
    .map_err(ChartError::Registration)
}
