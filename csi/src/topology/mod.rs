//! The mount topology of a node and every operation on it.
//!
//! ```text
//! <mount root>/                       shared (bound onto itself, MS_SHARED)
//!   repos/cms.cern.ch                 FUSE: the node's one client for cms, latest revision
//!   repos/cms.cern.ch@tag-v2          FUSE: a private client pinned to tag v2
//!
//! <kubelet dir>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount       (a target)
//!   explicit list: tmpfs holder, read-only, shared
//!   on demand:     autofs served by the plugin itself, shared
//!   source "hepbatch-cvmfs:<volume label>:<spec key>"
//!   ├── cms.cern.ch   read-only bind of repos/cms.cern.ch@tag-v2
//!   └── sft.cern.ch   read-only bind of repos/sft.cern.ch
//! ```
//!
//! The kubelet binds a target into containers `rslave`: the target never dies and the
//! repositories live *beneath* it, so a bind replaced during healing, or made on first
//! access, reaches running containers. A repository's FUSE mount is never the target.
//!
//! The kernel's mount table is the source of truth: published volumes are recognised by
//! their mount source, client instances by their directory under `repos/`, references by
//! binds of the same device. The one thing kept beside it is the text of each distinct
//! volume spec, content-addressed under the state directory ([`specs`]), because a mount
//! source is limited to a page. Every operation starts from a fresh [`MountTable`].
//!
//! - [`publish`]: holders, on-demand volumes, client instances; nothing left on failure.
//! - [`lookup`]: first access of a name in an on-demand volume.
//! - [`unpublish`]: detach a target with everything beneath it.
//! - [`heal`]: remount broken clients, re-bind stale binds, take over on-demand volumes.
//! - [`reap`]: unmount clients nobody uses, forget unused spec records.
//! - [`probe`](mod@probe): health of a path, of a volume and of the node.

pub mod clients;
pub mod heal;
pub mod lookup;
pub mod probe;
pub mod publish;
pub mod published;
pub mod reap;
pub mod specs;
pub mod unpublish;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::autofs::{Autofs, AutofsError};
use crate::backend::{Backend, BackendError};
use crate::locks::KeyedLocks;
use crate::mount::ops::{self, MountError};
use crate::mount::table::{Mount, MountTable, TableError};
use crate::volume::Instance;

pub use heal::{HealFailure, HealReport};
pub use probe::{Health, VolumeProblem, probe};
pub use published::{PublishedVolume, VolumeKind};
use specs::{SpecError, SpecStore};

/// A failed topology operation.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The mount table could not be read.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A mount operation failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The backend could not mount a repository.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The on-demand machinery (autofs) failed.
    #[error(transparent)]
    Autofs(#[from] AutofsError),
    /// A volume spec could not be recorded.
    #[error(transparent)]
    Specs(#[from] SpecError),
    /// A directory could not be created or removed.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The target is already published with another volume or spec.
    #[error("target {target} is already published with different volume attributes")]
    Conflict {
        /// The target.
        target: PathBuf,
    },
    /// The target is a mount point that the plugin did not make.
    #[error("target {0} is a mount point that this plugin did not create")]
    ForeignMount(PathBuf),
    /// The volume is on-demand but this node runs without on-demand support.
    #[error(
        "volume has no {:?} attribute (every repository on demand), which this plugin instance does not offer; list the repositories",
        hepbatch_crds::CSI_ATTRIBUTE_REPOSITORIES
    )]
    OnDemandUnavailable,
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TopologyError + '_ {
    move |source| TopologyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How a [`Topology`] is set up.
#[derive(Clone)]
pub struct TopologyOptions {
    /// The shared mount root (created and made shared by [`Topology::init`]).
    pub root: PathBuf,
    /// The plugin's state directory (spec records live in `specs/` beneath it).
    pub state_dir: PathBuf,
    /// How client instances are mounted.
    pub backend: Arc<dyn Backend>,
    /// How long an unused client instance stays mounted.
    pub idle_delay: Duration,
    /// Whether volumes without a repository list are offered.
    pub on_demand: bool,
}

/// The node's mount topology; shared behind an `Arc`. All methods block.
pub struct Topology {
    root: PathBuf,
    backend: Arc<dyn Backend>,
    autofs: Option<Autofs>,
    specs: SpecStore,
    idle_delay: Duration,
    targets: KeyedLocks<PathBuf>,
    instances: KeyedLocks<String>,
    /// Publishes (and lookups) hold it shared from recording a spec or ensuring an
    /// instance until their binds exist; reaping holds it exclusively, so nothing is
    /// reaped between being ensured and being bound.
    reap_gate: RwLock<()>,
    idle_since: Mutex<HashMap<String, Instant>>,
    last_spec_sweep: Mutex<Option<Instant>>,
}

impl Topology {
    /// A topology as `options` describe; nothing is touched until [`Topology::init`].
    pub fn new(options: TopologyOptions) -> Result<Self, TopologyError> {
        let autofs = options.on_demand.then(Autofs::new).transpose()?;
        Ok(Self {
            specs: SpecStore::new(options.state_dir.join("specs")),
            root: options.root,
            backend: options.backend,
            autofs,
            idle_delay: options.idle_delay,
            targets: KeyedLocks::default(),
            instances: KeyedLocks::default(),
            reap_gate: RwLock::new(()),
            idle_since: Mutex::new(HashMap::new()),
            last_spec_sweep: Mutex::new(None),
        })
    }

    /// The mount root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The autofs daemon side, when on-demand volumes are offered.
    pub fn autofs(&self) -> Option<&Autofs> {
        self.autofs.as_ref()
    }

    fn repos_dir(&self) -> PathBuf {
        self.root.join("repos")
    }

    /// Where `instance` is mounted: `repos/<dir name>`, one per node for the latest
    /// revision of a repository (explicit and on-demand volumes share it), one per pin.
    pub fn instance_dir(&self, instance: &Instance) -> PathBuf {
        self.repos_dir().join(instance.dir_name())
    }

    /// Creates the mount root and makes it a shared mount, prepares the backend and takes
    /// over the on-demand volumes a previous plugin process served (idempotent).
    pub fn init(&self) -> Result<(), TopologyError> {
        let repos = self.repos_dir();
        std::fs::create_dir_all(&repos).map_err(io_error(&repos))?;
        let table = MountTable::read()?;
        match table.at(&self.root) {
            Some(mount) if mount.shared.is_some() => {}
            Some(_) => ops::make_shared_root(&self.root, true)?,
            None => ops::make_shared_root(&self.root, false)?,
        }
        self.backend.prepare()?;
        let report = self.heal_connections(&*MountTable::read()?);
        for failure in report {
            tracing::warn!(error = %failure, "taking over an on-demand volume failed; retrying");
        }
        Ok(())
    }

    /// The label a published volume records for `volume_id` (a stable hash, so any id fits).
    pub fn volume_label(volume_id: &str) -> String {
        crate::hash::fnv1a_hex(volume_id.as_bytes())
    }

    /// Mounted client instances: what each is and its mount.
    pub(crate) fn mounted_instances(&self, table: &MountTable) -> Vec<(Instance, Mount)> {
        let repos = self.repos_dir();
        table
            .mounts()
            .iter()
            .filter(|m| m.mount_point.parent() == Some(repos.as_path()))
            .filter_map(|m| {
                let name = m.mount_point.file_name()?.to_str()?;
                Some((Instance::from_dir_name(name).ok()?, m.clone()))
            })
            .collect()
    }

    /// Mounted instances per repository (for metrics).
    pub fn mounts_by_repository(&self) -> Result<HashMap<String, u64>, TopologyError> {
        let table = MountTable::read()?;
        let mut counts = HashMap::new();
        for (instance, _) in self.mounted_instances(&table) {
            *counts.entry(instance.repository.to_string()).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

impl Topology {
    /// The revision each mounted instance shows, for the instances whose client tells.
    pub fn revisions(&self) -> Vec<(String, u64)> {
        let Ok(table) = MountTable::read() else {
            return Vec::new();
        };
        self.mounted_instances(&table)
            .into_iter()
            .filter_map(|(instance, mount)| {
                Some((
                    instance.dir_name(),
                    self.snapshot(&mount.mount_point)?.revision,
                ))
            })
            .collect()
    }
}
