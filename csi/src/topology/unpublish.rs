//! Unpublishing a target: detach the volume with everything beneath it, remove the
//! directory. A target that is not mounted, or is already gone, counts as done, so a
//! publish that failed half-way (and cleaned up after itself) unpublishes fine too.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::{BlockingRetryable, ConstantBuilder};
use tracing::warn;

use super::published::VolumeKind;
use super::{Topology, TopologyError};
use crate::mount::ops;
use crate::mount::table::MountTable;

/// How often removing a target that is still busy is tried, and how long apart.
const REMOVE_ATTEMPTS: usize = 5;
const REMOVE_DELAY: Duration = Duration::from_millis(20);

impl Topology {
    /// Unpublishes `target`.
    pub fn unpublish(&self, target: &Path) -> Result<(), TopologyError> {
        let _target_guard = self.targets.lock(target.to_owned());
        let table = MountTable::read()?;
        if let Some(mount) = table.at(target) {
            let Some(volume) = self.published_volume(mount) else {
                return Err(TopologyError::ForeignMount(target.to_owned()));
            };
            ops::unmount_lazy(target)?;
            if volume.kind == VolumeKind::OnDemand
                && let Some(autofs) = &self.autofs
                && let Ok(dev) = device_number(&volume.mount.device)
            {
                autofs.forget(dev);
            }
        }
        remove_target(target)
    }
}

/// Removes the target directory; when it is still busy, whatever is still mounted at or
/// beneath it is detached before the next attempt.
fn remove_target(target: &Path) -> Result<(), TopologyError> {
    let attempt = || match std::fs::remove_dir(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            detach_leftovers(target);
            Err(e)
        }
    };
    attempt
        .retry(
            ConstantBuilder::default()
                .with_delay(REMOVE_DELAY)
                .with_max_times(REMOVE_ATTEMPTS),
        )
        .notify(
            |e, _| warn!(target = %target.display(), error = %e, "target still busy after unmount"),
        )
        .call()
        .map_err(|source| TopologyError::Io {
            path: target.to_owned(),
            source,
        })
}

fn detach_leftovers(target: &Path) {
    let Ok(table) = MountTable::read() else {
        return;
    };
    let mut left: Vec<PathBuf> = table
        .beneath(target)
        .map(|m| m.mount_point.clone())
        .collect();
    left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in left {
        let _ = ops::unmount_lazy(&path);
    }
    if table.at(target).is_some() {
        let _ = ops::unmount_lazy(target);
    }
}

/// The `st_dev` encoding of a mountinfo `major:minor`.
pub(crate) fn device_number(device: &str) -> Result<u32, std::num::ParseIntError> {
    let (major, minor) = device.split_once(':').unwrap_or((device, "0"));
    let (major, minor): (u32, u32) = (major.parse()?, minor.parse()?);
    Ok((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autofs::kernel::device_text;

    #[test]
    fn device_numbers_round_trip_with_mountinfo() {
        for text in ["0:42", "8:1", "0:300", "259:70000"] {
            assert_eq!(device_text(device_number(text).unwrap()), text);
        }
    }
}
