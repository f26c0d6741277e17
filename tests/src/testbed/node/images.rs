//! Container images on a real node without a registry.
//!
//! `images/node-images.sh` builds the pause image (containerd's sandbox image) and the
//! analysis base image into docker archives cached outside the clone; the testbed
//! imports those, and any archive a test passes (the operator and CSI images, built
//! elsewhere as OCI or docker archives), into the node's containerd with
//! `ctr images import`. Pods use them by name with the default pull policy: an image
//! that is present is never pulled.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::testbed::TestbedError;

/// containerd's sandbox image on every real node.
pub const PAUSE_IMAGE: &str = "localhost/hepbatch-pause:1";

/// A light-weight base OS with bash (Debian bookworm minbase), standing in for the
/// cc7/el8/el9 analysis images on real nodes.
pub const ANALYSIS_BASE_IMAGE: &str = "localhost/hepbatch-analysis-base:bookworm";

/// One image archive and the name it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    /// The image's name inside the archive.
    pub reference: String,
    /// The archive (docker-archive or oci-archive tar).
    pub path: PathBuf,
}

/// The recipe script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/node-images.sh")
}

/// Builds the node images if the cache lacks them (minutes the first time: debootstrap
/// downloads a Debian base system) and returns their archives; the script's progress
/// goes to our stderr.
pub fn ensure_built() -> Result<Vec<ImageArchive>, TestbedError> {
    let script = script();
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| TestbedError::Io {
            what: format!("running {}", script.display()),
            source,
        })?;
    if !output.status.success() {
        return Err(TestbedError::NotBuilt(format!(
            "the node images ({} failed: {})",
            script.display(),
            output.status
        )));
    }
    let archives = parse_listing(&String::from_utf8_lossy(&output.stdout));
    for wanted in [PAUSE_IMAGE, ANALYSIS_BASE_IMAGE] {
        if !archives.iter().any(|a| a.reference == wanted) {
            return Err(TestbedError::NotBuilt(format!(
                "{} did not report {wanted}",
                script.display()
            )));
        }
    }
    Ok(archives)
}

/// Reads the script's `<image> <archive>` lines.
fn parse_listing(text: &str) -> Vec<ImageArchive> {
    text.lines()
        .filter_map(|line| {
            let (reference, path) = line.trim().split_once(' ')?;
            Some(ImageArchive {
                reference: reference.to_owned(),
                path: PathBuf::from(path.trim()),
            })
        })
        .collect()
}

/// `ctr` for the containerd at `socket`, in the CRI's `k8s.io` namespace.
pub fn ctr(socket: &Path) -> Command {
    let mut command = Command::new("ctr");
    command.arg("--address").arg(socket).args(["-n", "k8s.io"]);
    command
}

/// The full name the CRI looks an image up by, as Docker normalizes it:
/// `hepbatch-operator:0.1.0` is `docker.io/library/hepbatch-operator:0.1.0`, a name
/// without tag or digest gets `:latest`, names with a registry host stay as they are.
pub fn normalize_reference(name: &str) -> String {
    let (first, _) = name.split_once('/').unwrap_or(("", name));
    let has_domain =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        name.to_owned()
    } else if first.is_empty() {
        format!("docker.io/library/{name}")
    } else {
        format!("docker.io/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}

/// Imports `archive` into the containerd at `socket`; returns the names it brought.
/// A name the archive carries in short form (an OCI archive written by `buildah push
/// oci-archive:…:hepbatch-operator:0.1.0` says just that) is renamed to its normalized
/// form: the CRI finds images only by those, and a short name even confuses its lookup
/// of other images with the same content.
pub fn import(socket: &Path, archive: &Path) -> Result<Vec<String>, TestbedError> {
    let before = list(socket)?;
    let output = ctr(socket)
        .args(["images", "import"])
        .arg(archive)
        .output()
        .map_err(|source| TestbedError::Io {
            what: "running ctr images import".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(TestbedError::Config(format!(
            "importing {}: {}",
            archive.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let after = list(socket)?;
    let mut names = Vec::new();
    for name in after.into_iter().filter(|i| !before.contains(i)) {
        if name.starts_with("sha256:") {
            continue; // the CRI's own entry by image id
        }
        let full = normalize_reference(&name);
        if full != name {
            run_ctr(socket, &["images", "tag", "--force", &name, &full])?;
            run_ctr(socket, &["images", "remove", &name])?;
        }
        names.push(full);
    }
    Ok(names)
}

fn run_ctr(socket: &Path, args: &[&str]) -> Result<(), TestbedError> {
    let output = ctr(socket)
        .args(args)
        .output()
        .map_err(|source| TestbedError::Io {
            what: format!("running ctr {}", args.join(" ")),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TestbedError::Config(format!(
            "ctr {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The image names containerd holds.
pub fn list(socket: &Path) -> Result<Vec<String>, TestbedError> {
    let output = ctr(socket)
        .args(["images", "list", "--quiet"])
        .output()
        .map_err(|source| TestbedError::Io {
            what: "running ctr images list".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(TestbedError::Config(format!(
            "listing images: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines_name_image_and_archive() {
        let listing = parse_listing(
            "localhost/hepbatch-pause:1 /c/hepbatch-pause-1.docker.tar\n\
             localhost/hepbatch-analysis-base:bookworm /c/base.docker.tar\n",
        );
        assert_eq!(listing.len(), 2);
        assert_eq!(listing[0].reference, PAUSE_IMAGE);
        assert_eq!(listing[1].path, PathBuf::from("/c/base.docker.tar"));
    }

    #[test]
    fn references_are_normalized_like_docker_does() {
        for (short, full) in [
            (
                "hepbatch-operator:0.1.0",
                "docker.io/library/hepbatch-operator:0.1.0",
            ),
            ("hepbatch/csi:0.1.0", "docker.io/hepbatch/csi:0.1.0"),
            ("busybox", "docker.io/library/busybox:latest"),
            (
                "ghcr.io/hepbatch/hepbatch-csi:0.1.0",
                "ghcr.io/hepbatch/hepbatch-csi:0.1.0",
            ),
            ("localhost/hepbatch-pause:1", "localhost/hepbatch-pause:1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            (
                "registry.example/a/b@sha256:00",
                "registry.example/a/b@sha256:00",
            ),
        ] {
            assert_eq!(normalize_reference(short), full, "{short}");
        }
        assert_eq!(normalize_reference(PAUSE_IMAGE), PAUSE_IMAGE);
        assert_eq!(
            normalize_reference(ANALYSIS_BASE_IMAGE),
            ANALYSIS_BASE_IMAGE
        );
    }

    #[test]
    fn the_script_builds_the_images_the_testbed_names() {
        let text = std::fs::read_to_string(script()).unwrap();
        assert!(text.contains(&format!("pause_image={PAUSE_IMAGE}\n")));
        assert!(text.contains(&format!("base_image={ANALYSIS_BASE_IMAGE}\n")));
    }
}
