//! One healing pass: what died is replaced beneath running containers.
//!
//! 1. Every mounted client instance is probed; a broken one is detached and mounted again
//!    in place.
//! 2. Every on-demand volume not served by this process is taken over (after a plugin
//!    restart, or when its mount went catatonic).
//! 3. Every bind beneath a published target that does not show its instance's current
//!    mount is replaced by a fresh bind. Containers hold an rslave copy of the target, so
//!    they see the repository again at once: no republish, no pod restart.
//! 4. The reaper unmounts instances nobody has used for the idle delay.

use std::path::PathBuf;

use tracing::{info, warn};

use super::probe::{Health, probe};
use super::published::{PublishedVolume, VolumeKind};
use super::unpublish::device_number;
use super::{Topology, TopologyError};
use crate::mount::ops;
use crate::mount::table::MountTable;
use crate::volume::RepositoryName;

/// What could not be repaired in a pass (the next pass tries again).
#[derive(Debug, thiserror::Error)]
pub enum HealFailure {
    /// The mount table could not be read.
    #[error("reading the mount table: {0}")]
    Table(#[source] TopologyError),
    /// A broken instance could not be mounted again.
    #[error("remounting {instance}: {source}")]
    Remount {
        /// The instance.
        instance: String,
        /// Why.
        #[source]
        source: TopologyError,
    },
    /// A bind beneath a target could not be replaced.
    #[error("re-binding {repository} beneath {target}: {source}")]
    Rebind {
        /// The target.
        target: PathBuf,
        /// The repository.
        repository: RepositoryName,
        /// Why.
        #[source]
        source: TopologyError,
    },
    /// An on-demand volume could not be taken over.
    #[error("taking over the on-demand volume at {target}: {source}")]
    TakeOver {
        /// The target.
        target: PathBuf,
        /// Why.
        #[source]
        source: TopologyError,
    },
    /// An idle instance could not be unmounted.
    #[error("unmounting idle {instance}: {source}")]
    Reap {
        /// The instance.
        instance: String,
        /// Why.
        #[source]
        source: TopologyError,
    },
}

/// What one healing pass did.
#[derive(Debug, Default)]
pub struct HealReport {
    /// Instances found broken and mounted again.
    pub remounted: Vec<String>,
    /// Binds beneath targets replaced.
    pub rebound: Vec<PathBuf>,
    /// On-demand volumes taken over.
    pub taken_over: Vec<PathBuf>,
    /// Instances unmounted after their idle delay.
    pub reaped: Vec<String>,
    /// What failed.
    pub failures: Vec<HealFailure>,
}

impl HealReport {
    /// How many repairs the pass made (remounts, re-binds, take-overs).
    pub fn repairs(&self) -> usize {
        self.remounted.len() + self.rebound.len() + self.taken_over.len()
    }
}

impl Topology {
    /// One healing pass.
    pub fn heal(&self) -> HealReport {
        let mut report = HealReport::default();
        match MountTable::read() {
            Ok(table) => self.heal_instances(&table, &mut report),
            Err(e) => report.failures.push(HealFailure::Table(e.into())),
        }
        match MountTable::read() {
            Ok(table) => {
                report.failures.extend(self.heal_connections(&table));
                self.heal_binds(&table, &mut report);
            }
            Err(e) => report.failures.push(HealFailure::Table(e.into())),
        }
        self.reap(&mut report);
        report
    }

    fn heal_instances(&self, table: &MountTable, report: &mut HealReport) {
        for (instance, mount) in self.mounted_instances(table) {
            let broken = match probe(&mount.mount_point) {
                Health::Broken(why) => Some(why),
                // A pinned client moved off its pin (`cvmfs_talk remount` does that):
                // mount it again at its pin.
                Health::Healthy => instance.pin.as_ref().and_then(|pin| {
                    let shown = self.snapshot(&mount.mount_point)?;
                    (!self.backend.shows_its_pin(&instance, &shown))
                        .then(|| format!("shows {shown}, not {pin}"))
                }),
            };
            if let Some(why) = broken {
                warn!(instance = %instance, reason = %why, "repository broken, remounting");
                match self.ensure_instance_fresh(&instance) {
                    Ok(()) => report.remounted.push(instance.dir_name()),
                    Err(source) => report.failures.push(HealFailure::Remount {
                        instance: instance.dir_name(),
                        source,
                    }),
                }
            }
        }
    }

    /// Detaches a broken instance and mounts it again.
    fn ensure_instance_fresh(
        &self,
        instance: &crate::volume::Instance,
    ) -> Result<(), TopologyError> {
        let dir = self.instance_dir(instance);
        {
            let _guard = self.instances.lock(instance.dir_name());
            let pinned_right = self
                .snapshot(&dir)
                .is_none_or(|shown| self.backend.shows_its_pin(instance, &shown));
            if probe(&dir) == Health::Healthy && pinned_right {
                return Ok(());
            }
            ops::unmount_lazy(&dir)?;
            super::clients::stop_clients(&dir);
        }
        self.ensure_instance(instance, &*MountTable::read()?)
            .map(drop)
    }

    /// Takes over every on-demand volume this process does not serve; returns failures.
    pub(crate) fn heal_connections(&self, table: &MountTable) -> Vec<HealFailure> {
        let Some(autofs) = &self.autofs else {
            return Vec::new();
        };
        let mut failures = Vec::new();
        for volume in self.published_volumes(table) {
            if volume.kind != VolumeKind::OnDemand || self.is_served(&volume) {
                continue;
            }
            let target = volume.mount.mount_point.clone();
            let Ok(dev) = device_number(&volume.mount.device) else {
                continue;
            };
            match autofs.take_over(&target, dev) {
                Ok(true) => info!(target = %target.display(), "serving on-demand volume"),
                Ok(false) => {}
                Err(e) => failures.push(HealFailure::TakeOver {
                    target,
                    source: e.into(),
                }),
            }
        }
        failures
    }

    fn heal_binds(&self, table: &MountTable, report: &mut HealReport) {
        for volume in self.published_volumes(table) {
            let Some(spec) = volume.spec.clone() else {
                continue;
            };
            for repository in volume.expected_children(table) {
                let instance = spec.instance(&repository);
                let child = volume.mount.mount_point.join(repository.as_str());
                let current = table
                    .at(&child)
                    .filter(|m| m.parent == volume.mount.id)
                    .map(|m| m.device.clone());
                let wanted = table
                    .at(&self.instance_dir(&instance))
                    .map(|m| m.device.clone());
                if current.is_some() && current == wanted {
                    continue;
                }
                match self.rebind(&volume, &repository) {
                    Ok(true) => {
                        info!(target = %volume.mount.mount_point.display(), repository = %repository,
                            "re-bound repository beneath published target");
                        report.rebound.push(child);
                    }
                    Ok(false) => {}
                    Err(source) => report.failures.push(HealFailure::Rebind {
                        target: volume.mount.mount_point.clone(),
                        repository,
                        source,
                    }),
                }
            }
        }
    }

    /// Replaces the bind of `repository` beneath `volume`; false when the volume was
    /// unpublished meanwhile.
    fn rebind(
        &self,
        volume: &PublishedVolume,
        repository: &RepositoryName,
    ) -> Result<bool, TopologyError> {
        let Some(spec) = &volume.spec else {
            return Ok(false);
        };
        let target = &volume.mount.mount_point;
        let _target_guard = self.targets.lock(target.clone());
        let table = MountTable::read()?;
        if table.at(target).map(|m| m.id) != Some(volume.mount.id) {
            return Ok(false);
        }
        let _gate = self.reap_gate.read().unwrap_or_else(|p| p.into_inner());
        let dir = self.ensure_instance(&spec.instance(repository), &table)?;
        let child = target.join(repository.as_str());
        match volume.kind {
            VolumeKind::Listed => {
                if table
                    .at(&child)
                    .is_some_and(|m| m.parent == volume.mount.id)
                {
                    ops::unmount_lazy(&child)?;
                }
                ops::bind_read_only(&dir, &child)?;
            }
            VolumeKind::OnDemand => super::lookup::bind_child(&dir, &child)?,
        }
        Ok(true)
    }
}
