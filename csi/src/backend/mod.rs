//! Mount backends: how one CVMFS client instance gets mounted at a directory.
//!
//! This is the plugin's single configuration point between "a repository must be mounted
//! here" and the program that serves it. [`cvmfs::CvmfsBackend`] drives the real CVMFS
//! client (one `cvmfs2` per instance with an explicit configuration chain; the shared
//! cache for latest revisions, a private one per pin) and reads back from the client which
//! snapshot a mount shows. [`squashfuse::SquashfuseBackend`] serves fixture repositories
//! from squashfs images through real FUSE mounts, a stand-in where the real client is not
//! installed: a killed client fails exactly like a killed `cvmfs2` ("Transport endpoint is
//! not connected"). Everything else (holders, binds, propagation, healing, bookkeeping) is
//! the same for both.

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
        #[source]
        source: std::io::Error,
    },
    /// The CVMFS client refused to mount, for a reason it told.
    #[error("repository {instance}: {cause}")]
    Cvmfs {
        /// The instance asked for.
        instance: String,
        /// What went wrong, in words.
        cause: cvmfs::Failure,
    },
    /// A pinned instance shows another revision than its pin asks for.
    #[error("repository {instance} shows {shown}, not the pinned revision; refusing it")]
    WrongRevision {
        /// The instance asked for.
        instance: String,
        /// What the mount shows.
        shown: Snapshot,
    },
}

/// Which snapshot of a repository a client mount shows, as the client itself reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The revision number.
    pub revision: u64,
    /// The root catalog hash (hex).
    pub root_hash: String,
    /// The named tag it was mounted by (a tag pin, or the tag a date pin resolved to).
    pub tag: Option<String>,
    /// Whether the root catalog is fixed (a pinned mount never moves on).
    pub fixed: bool,
    /// I/O errors the client counted since it was mounted.
    pub io_errors: u64,
    /// The client's last logged failure, when it counted I/O errors.
    pub last_failure: Option<String>,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revision {}", self.revision)?;
        if let Some(tag) = &self.tag {
            write!(f, " (tag {tag})")?;
        }
        let short: String = self.root_hash.chars().take(12).collect();
        write!(f, ", root hash {short}")
    }
}

impl Snapshot {
    /// Whether this snapshot is what `pin` asks for, as far as the client tells.
    pub fn satisfies(&self, pin: &crate::volume::Pin) -> bool {
        use crate::volume::Pin;
        match pin {
            Pin::Tag(tag) => self.tag.as_deref() == Some(tag.as_str()),
            Pin::RootHash(hash) => {
                let hex = hash.split_once('-').map_or(hash.as_str(), |(hex, _)| hex);
                self.root_hash == hex
            }
            // The client exposes no date: a date pin must at least have fixed the catalog.
            Pin::Date(_) => self.fixed,
        }
    }
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

    /// Which snapshot the client mounted at `dir` shows; `None` when this backend cannot
    /// tell. Blocks on a hung client: call it where a timeout guards the caller.
    fn snapshot(&self, _dir: &Path) -> Option<Snapshot> {
        None
    }

    /// Records what a freshly mounted pinned `instance` shows (see `shows_its_pin`).
    fn remember(&self, _instance: &Instance, _snapshot: &Snapshot) {}

    /// Whether `snapshot` is still the revision `instance` was mounted at: its pin holds,
    /// and the client has not moved on since.
    fn shows_its_pin(&self, instance: &Instance, snapshot: &Snapshot) -> bool {
        instance
            .pin
            .as_ref()
            .is_none_or(|pin| snapshot.satisfies(pin))
    }

    /// A sentence on the I/O errors `snapshot` counts, with the likely cause.
    fn explain_io_errors(&self, snapshot: &Snapshot) -> String {
        let last = snapshot.last_failure.as_deref().unwrap_or("no details");
        format!(
            "{} since it was mounted (last: {last})",
            io_errors(snapshot.io_errors)
        )
    }
}

/// "1 I/O error", "3 I/O errors".
pub fn io_errors(count: u64) -> String {
    if count == 1 {
        "1 I/O error".to_owned()
    } else {
        format!("{count} I/O errors")
    }
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
