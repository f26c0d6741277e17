//! Publishing a volume at a target, and mounting the client instances it needs.
//!
//! Explicit list: every instance is mounted first, then the holder (tmpfs) with one empty
//! directory per repository, sealed read-only, made shared, and one read-only bind per
//! repository beneath it. On demand: pinned instances are mounted first (so a bad pin is
//! refused here, in words, rather than as ENOENT later), then the autofs mount is made and
//! shared; repositories arrive on first access ([`super::lookup`]).
//!
//! A publish that fails half-way leaves nothing: whatever it mounted at the target is
//! detached and the directory it created removed. Repeating a publish with the same
//! volume and spec succeeds without changes; another volume or spec is a conflict.

use std::path::{Path, PathBuf};

use tracing::info;

use super::published::{self, VolumeKind};
use super::specs::SpecStore;
use super::{Topology, TopologyError, io_error};
use crate::backend::BackendError;
use crate::mount::ops;
use crate::mount::table::MountTable;
use crate::volume::{Instance, VolumeSpec};

impl Topology {
    /// Publishes the volume `volume_id` with `spec` at `target`.
    pub fn publish(
        &self,
        volume_id: &str,
        spec: &VolumeSpec,
        target: &Path,
    ) -> Result<(), TopologyError> {
        let label = Self::volume_label(volume_id);
        let _target_guard = self.targets.lock(target.to_owned());
        let table = MountTable::read()?;
        if let Some(existing) = table.at(target) {
            return match self.published_volume(existing) {
                Some(volume)
                    if volume.label == label && volume.spec_key == SpecStore::key(spec) =>
                {
                    Ok(())
                }
                Some(_) => Err(TopologyError::Conflict {
                    target: target.to_owned(),
                }),
                None => Err(TopologyError::ForeignMount(target.to_owned())),
            };
        }
        if VolumeKind::of(spec) == VolumeKind::OnDemand && self.autofs.is_none() {
            return Err(TopologyError::OnDemandUnavailable);
        }
        let _gate = self.reap_gate.read().unwrap_or_else(|p| p.into_inner());
        let key = self.specs.record(spec)?;
        let source = published::source(&label, &key);
        let built = match VolumeKind::of(spec) {
            VolumeKind::Listed => self.publish_listed(spec, &source, target, &table),
            VolumeKind::OnDemand => self.publish_on_demand(spec, &source, target, &table),
        };
        if built.is_err() {
            discard(target);
            self.forget_spec_if_unused(&key);
        }
        built
    }

    fn publish_listed(
        &self,
        spec: &VolumeSpec,
        source: &str,
        target: &Path,
        table: &MountTable,
    ) -> Result<(), TopologyError> {
        let mut dirs = Vec::new();
        for instance in spec.listed_instances() {
            let dir = self.ensure_instance(&instance, table)?;
            dirs.push((instance, dir));
        }
        std::fs::create_dir_all(target).map_err(io_error(target))?;
        ops::mount_holder(target, source)?;
        for (instance, _) in &dirs {
            let child = target.join(instance.repository.as_str());
            std::fs::create_dir(&child).map_err(io_error(&child))?;
        }
        ops::seal_holder(target)?;
        ops::make_shared(target)?;
        for (instance, dir) in &dirs {
            ops::bind_read_only(dir, &target.join(instance.repository.as_str()))?;
        }
        Ok(())
    }

    fn publish_on_demand(
        &self,
        spec: &VolumeSpec,
        source: &str,
        target: &Path,
        table: &MountTable,
    ) -> Result<(), TopologyError> {
        let autofs = self
            .autofs
            .as_ref()
            .ok_or(TopologyError::OnDemandUnavailable)?;
        for repository in spec.pins.keys() {
            self.ensure_instance(&spec.instance(repository), table)?;
        }
        std::fs::create_dir_all(target).map_err(io_error(target))?;
        let dev = autofs.mount(target, source)?;
        ops::make_shared(target).inspect_err(|_| autofs.forget(dev))?;
        Ok(())
    }

    /// Mounts `instance` unless it is mounted; returns its directory. An instance that
    /// `known` (a table read by the caller, under the reap gate) shows mounted is bound as
    /// it is, without a lock or a probe: the watchdog probes every instance every pass, so
    /// a publish that races with a crash binds the dead mount and the next pass replaces
    /// it. Only mounting takes the instance's lock.
    pub(crate) fn ensure_instance(
        &self,
        instance: &Instance,
        known: &MountTable,
    ) -> Result<PathBuf, TopologyError> {
        let dir = self.instance_dir(instance);
        if known.at(&dir).is_some() {
            return Ok(dir);
        }
        let _guard = self.instances.lock(instance.dir_name());
        let table = MountTable::read()?;
        if table.at(&dir).is_some() {
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        if let Err(e) = self.backend.mount(instance, &dir) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e.into());
        }
        let snapshot = self.snapshot(&dir);
        if let (Some(pin), Some(shown)) = (&instance.pin, &snapshot)
            && !shown.satisfies(pin)
        {
            let _ = ops::unmount_lazy(&dir);
            let _ = std::fs::remove_dir(&dir);
            return Err(BackendError::WrongRevision {
                instance: instance.to_string(),
                shown: shown.clone(),
            }
            .into());
        }
        match &snapshot {
            Some(shown) => {
                self.backend.remember(instance, shown);
                info!(instance = %instance, dir = %dir.display(), shows = %shown, "mounted repository")
            }
            None => info!(instance = %instance, dir = %dir.display(), "mounted repository"),
        }
        Ok(dir)
    }
}

impl Topology {
    /// Removes the record `key` unless a published volume names it (after a failed
    /// publish, so that it leaves no file behind).
    fn forget_spec_if_unused(&self, key: &str) {
        if let Ok(table) = MountTable::read()
            && !self
                .published_volumes(&table)
                .iter()
                .any(|v| v.spec_key == key)
        {
            self.specs.forget(key);
        }
    }
}

/// Removes what a failed publish left at `target`: every mount at or beneath it, then the
/// directory.
fn discard(target: &Path) {
    if let Ok(table) = MountTable::read()
        && table.at(target).is_some()
    {
        let _ = ops::unmount_lazy(target);
    }
    let _ = std::fs::remove_dir(target);
}
