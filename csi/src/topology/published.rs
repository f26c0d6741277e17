//! Published volumes as the mount table shows them.
//!
//! A target the plugin published is a mount whose source is
//! `hepbatch-cvmfs:<volume label>:<spec key>`: a tmpfs holder for an explicit list, an
//! autofs mount for an on-demand volume. The label is a hash of the CSI volume id, the key
//! names the spec record.

use crate::mount::table::{Mount, MountTable};
use crate::volume::{Repositories, RepositoryName, VolumeSpec};

use super::Topology;

/// Mount source prefix of every published volume; they are recognised by it.
pub const SOURCE_PREFIX: &str = "hepbatch-cvmfs";

/// How a published volume is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// A read-only tmpfs with one bind per listed repository.
    Listed,
    /// An autofs mount served by the plugin (every repository on demand).
    OnDemand,
}

impl VolumeKind {
    /// The file-system type of the target's mount.
    pub fn fs_type(self) -> &'static str {
        match self {
            Self::Listed => "tmpfs",
            Self::OnDemand => "autofs",
        }
    }

    /// The kind a spec is published as.
    pub fn of(spec: &VolumeSpec) -> Self {
        match spec.repositories {
            Repositories::OnDemand => Self::OnDemand,
            Repositories::Listed(_) => Self::Listed,
        }
    }
}

/// A published volume found in the mount table.
#[derive(Debug, Clone)]
pub struct PublishedVolume {
    /// How it is built.
    pub kind: VolumeKind,
    /// The target's mount.
    pub mount: Mount,
    /// Hash of the volume id it was published for.
    pub label: String,
    /// Key of its spec record.
    pub spec_key: String,
    /// Its spec; `None` when the record is gone (the state directory was wiped).
    pub spec: Option<VolumeSpec>,
}

impl PublishedVolume {
    /// The repositories this volume should show beneath its target and the instance each
    /// one is: every listed repository, or what was looked up so far on demand.
    pub fn expected_children(&self, table: &MountTable) -> Vec<RepositoryName> {
        let Some(spec) = &self.spec else {
            return Vec::new();
        };
        match &spec.repositories {
            Repositories::Listed(names) => names.iter().cloned().collect(),
            Repositories::OnDemand => table
                .children(self.mount.id)
                .filter_map(|child| child.mount_point.file_name()?.to_str())
                .filter_map(|name| RepositoryName::parse(name).ok())
                .collect(),
        }
    }
}

/// The mount source of a volume published for `label` with spec record `key`.
pub fn source(label: &str, key: &str) -> String {
    format!("{SOURCE_PREFIX}:{label}:{key}")
}

impl Topology {
    /// Reads a published volume back from its mount, if `mount` is one.
    pub fn published_volume(&self, mount: &Mount) -> Option<PublishedVolume> {
        let kind = [VolumeKind::Listed, VolumeKind::OnDemand]
            .into_iter()
            .find(|k| k.fs_type() == mount.fs_type)?;
        let rest = mount
            .source
            .strip_prefix(SOURCE_PREFIX)?
            .strip_prefix(':')?;
        let (label, key) = rest.split_once(':')?;
        Some(PublishedVolume {
            kind,
            mount: mount.clone(),
            label: label.to_owned(),
            spec_key: key.to_owned(),
            spec: self.specs.load(key),
        })
    }

    /// Every published volume in `table`.
    pub fn published_volumes(&self, table: &MountTable) -> Vec<PublishedVolume> {
        table
            .mounts()
            .iter()
            .filter_map(|m| self.published_volume(m))
            .collect()
    }

    /// The volume published at `target`, if any.
    pub fn published(
        &self,
        target: &std::path::Path,
    ) -> Result<Option<PublishedVolume>, super::TopologyError> {
        let table = MountTable::read()?;
        Ok(table.at(target).and_then(|m| self.published_volume(m)))
    }
}
