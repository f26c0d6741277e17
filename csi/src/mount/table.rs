//! A snapshot of this mount namespace's mount table, read from `/proc/self/mountinfo`
//! by the `procfs` crate.

use std::path::{Path, PathBuf};

use procfs::process::{MountOptFields, Process};

/// Failure to read the mount table.
#[derive(Debug, thiserror::Error)]
#[error("cannot read /proc/self/mountinfo: {0}")]
pub struct TableError(#[from] procfs::ProcError);

/// One mount, with the fields the plugin reasons about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Kernel mount id.
    pub id: i32,
    /// Mount id of the parent mount.
    pub parent: i32,
    /// `major:minor` of the filesystem: equal for a mount and every bind of it.
    pub device: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `tmpfs` or `fuse.squashfuse`.
    pub fs_type: String,
    /// Mount source as given to mount(2).
    pub source: String,
    /// Peer group id if the mount is shared.
    pub shared: Option<u32>,
    /// For autofs: the daemon's pipe as the kernel shows it (`fd=`); -1 once the mount is
    /// catatonic (its daemon is gone).
    pub autofs_pipe: Option<i64>,
}

/// All mounts of this mount namespace, in mountinfo order (parents before children).
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    mounts: Vec<Mount>,
}

impl MountTable {
    /// Reads the current mount table.
    pub fn read() -> Result<Self, TableError> {
        let infos = Process::myself()?.mountinfo()?;
        let mounts = infos
            .into_iter()
            .map(|m| Mount {
                autofs_pipe: (m.fs_type == "autofs")
                    .then(|| m.super_options.get("fd").cloned().flatten())
                    .flatten()
                    .and_then(|fd| fd.parse().ok()),
                id: m.mnt_id,
                parent: m.pid,
                device: m.majmin,
                mount_point: m.mount_point,
                fs_type: m.fs_type,
                source: m.mount_source.unwrap_or_default(),
                shared: m.opt_fields.iter().find_map(|f| match f {
                    MountOptFields::Shared(id) => Some(*id),
                    _ => None,
                }),
            })
            .collect();
        Ok(Self { mounts })
    }

    /// Every mount.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The topmost mount at `path`, if `path` is a mount point.
    pub fn at(&self, path: &Path) -> Option<&Mount> {
        self.mounts.iter().rev().find(|m| m.mount_point == path)
    }

    /// The mounts directly beneath mount `id`.
    pub fn children(&self, id: i32) -> impl Iterator<Item = &Mount> {
        self.mounts.iter().filter(move |m| m.parent == id)
    }

    /// Mounts whose mount point lies strictly beneath `dir`.
    pub fn beneath<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = &'a Mount> {
        self.mounts
            .iter()
            .filter(move |m| m.mount_point != dir && m.mount_point.starts_with(dir))
    }

    /// Mounts of the filesystem `device` (a mount and all its binds).
    pub fn of_device<'a>(&'a self, device: &'a str) -> impl Iterator<Item = &'a Mount> {
        self.mounts.iter().filter(move |m| m.device == device)
    }

    /// Number of mounts (the baseline the tests compare against).
    pub fn len(&self) -> usize {
        self.mounts.len()
    }

    /// Whether the table is empty (never, in a live namespace).
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_root_mount() {
        let table = MountTable::read().unwrap();
        assert!(table.at(Path::new("/")).is_some());
        assert!(!table.is_empty());
    }
}
