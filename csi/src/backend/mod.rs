//! Mount backends: how one CVMFS client instance gets mounted at a directory.
//!
//! This is the plugin's single configuration point between "a repository must be mounted
//! here" and the program that serves it. [`cvmfs::CvmfsBackend`] drives the real CVMFS client
//! (`mount -t cvmfs` for the shared latest revision, a private `cvmfs2` instance with a
//! generated config for each pinned revision). [`squashfuse::SquashfuseBackend`] serves
//! fixture repositories from squashfs images through real FUSE mounts, so a killed client
//! fails exactly like a killed `cvmfs2` ("Transport endpoint is not connected"). Everything
//! else (holders, binds, propagation, healing, bookkeeping) is the same for both.

pub mod cvmfs;
pub mod squashfuse;

use std::path::Path;
use std::process::Command;

use crate::volume::Instance;

/// A failure to mount a client instance.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The repository (or the pinned revision) does not exist.
    #[error("repository {instance} is not available: {reason}")]
    NotFound {
        /// The instance asked for.
        instance: String,
        /// Why.
        reason: String,
    },
    /// The client program is missing.
    #[error("CVMFS client not usable: {0}")]
    ClientMissing(String),
    /// The client ran and failed.
    #[error("mounting {instance} failed: {message}")]
    MountFailed {
        /// The instance asked for.
        instance: String,
        /// The client's own message.
        message: String,
    },
    /// A generated file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// How client instances are mounted. Implementations block; callers run them on a blocking
/// thread.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Prepares the node once at start-up (e.g. writes generated configuration).
    fn prepare(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Checks that the client program is present (part of Probe).
    fn check_client(&self) -> Result<(), BackendError>;

    /// Mounts `instance` at the existing, empty directory `dir`.
    fn mount(&self, instance: &Instance, dir: &Path) -> Result<(), BackendError>;
}

/// Finds `program` in `PATH` (or takes it as a path if it contains `/`).
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let path = Path::new(program);
        return path.is_file().then(|| path.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/sbin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs a client command to completion and turns a non-zero exit into
/// [`BackendError::MountFailed`] carrying its stderr.
pub(crate) fn run(command: &mut Command, instance: &Instance) -> Result<(), BackendError> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| BackendError::ClientMissing(format!("{command:?}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BackendError::MountFailed {
            instance: instance.to_string(),
            message: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}
