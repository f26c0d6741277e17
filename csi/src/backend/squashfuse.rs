//! A stand-in CVMFS client for tests and demos: each instance is a squashfs image
//! `<images>/<instance dir name>.squashfs` (`cms.cern.ch.squashfs` for the latest revision,
//! `cms.cern.ch@tag-v2.squashfs` for a pinned one), served read-only by `squashfuse`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Backend, BackendError, find_program, run};
use crate::volume::Instance;

/// Serves fixture repositories from squashfs images through real FUSE mounts.
#[derive(Debug, Clone)]
pub struct SquashfuseBackend {
    images: PathBuf,
}

impl SquashfuseBackend {
    /// A backend serving the images in `images`.
    pub fn new(images: impl Into<PathBuf>) -> Self {
        Self {
            images: images.into(),
        }
    }

    /// The image that serves `instance`.
    pub fn image(&self, instance: &Instance) -> PathBuf {
        self.images
            .join(format!("{}.squashfs", instance.dir_name()))
    }
}

impl Backend for SquashfuseBackend {
    fn name(&self) -> &'static str {
        "squashfuse"
    }

    fn check_client(&self) -> Result<(), BackendError> {
        find_program("squashfuse")
            .map(|_| ())
            .ok_or_else(|| BackendError::ClientMissing("squashfuse is not in PATH".into()))?;
        if !self.images.is_dir() {
            return Err(BackendError::ClientMissing(format!(
                "image directory {} is missing",
                self.images.display()
            )));
        }
        Ok(())
    }

    fn mount(&self, instance: &Instance, dir: &Path) -> Result<(), BackendError> {
        let image = self.image(instance);
        if !image.is_file() {
            return Err(BackendError::NotFound {
                instance: instance.to_string(),
                reason: format!("no image {}", image.display()),
            });
        }
        run(
            Command::new("squashfuse")
                .arg("-o")
                .arg("ro,allow_other")
                .arg(&image)
                .arg(dir),
            instance,
        )
    }
}
