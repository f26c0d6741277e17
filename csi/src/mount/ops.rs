//! The mount operations of the plugin, as thin wrappers over mount(2)/umount2(2) that
//! name the path in every error.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// A failed mount operation.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {path}: {errno}")]
pub struct MountError {
    /// What was attempted.
    pub operation: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// The kernel's answer.
    pub errno: Errno,
}

fn check(result: nix::Result<()>, operation: &'static str, path: &Path) -> Result<(), MountError> {
    result.map_err(|errno| MountError {
        operation,
        path: path.to_owned(),
        errno,
    })
}

/// Mounts a small read-write tmpfs holder at `target`, labelled `source`.
pub fn mount_holder(target: &Path, source: &str) -> Result<(), MountError> {
    check(
        mount(
            Some(source),
            target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0755,size=64k,nr_inodes=4096"),
        ),
        "mount holder tmpfs at",
        target,
    )
}

/// Remounts the holder at `target` read-only (its directories are in place).
pub fn seal_holder(target: &Path) -> Result<(), MountError> {
    check(
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some("mode=0755,size=64k,nr_inodes=4096"),
        ),
        "remount read-only",
        target,
    )
}

/// Bind-mounts `source` at `target` (non-recursive) and makes the bind read-only, nosuid,
/// nodev.
pub fn bind_read_only(source: &Path, target: &Path) -> Result<(), MountError> {
    check(
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ),
        "bind onto",
        target,
    )?;
    let sealed = check(
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        ),
        "remount bind read-only",
        target,
    );
    if sealed.is_err() {
        // Never leave a writable bind behind.
        let _ = unmount_lazy(target);
    }
    sealed
}

/// Bind-mounts `dir` onto itself if it is not a mount point yet (`is_mount_point`), then
/// makes it shared.
pub fn make_shared_root(dir: &Path, is_mount_point: bool) -> Result<(), MountError> {
    if !is_mount_point {
        check(
            mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>),
            "bind onto itself",
            dir,
        )?;
    }
    make_shared(dir)
}

/// Makes the mount at `path` shared, so mounts beneath it propagate to its copies.
pub fn make_shared(path: &Path) -> Result<(), MountError> {
    check(
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        ),
        "make shared",
        path,
    )
}

/// Detaches the mount at `path` now; it is freed when its last user leaves. "Not mounted"
/// counts as success.
pub fn unmount_lazy(path: &Path) -> Result<(), MountError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(MountError {
            operation: "unmount",
            path: path.to_owned(),
            errno,
        }),
    }
}
