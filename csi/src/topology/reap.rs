//! Unmounting what nobody uses.
//!
//! An instance is in use while a bind of it exists (beneath any target) or while a
//! published on-demand volume pins it (its binds come on first access). An instance out
//! of use for the idle delay is unmounted, under the exclusive reap gate, after a fresh
//! look at the mount table. Spec records no published volume names are removed in the same
//! pass.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tracing::info;

use super::Topology;
use super::heal::{HealFailure, HealReport};
use super::published::VolumeKind;
use crate::mount::ops;
use crate::mount::table::MountTable;

/// How often unused spec records are looked for.
pub const SPEC_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Topology {
    pub(crate) fn reap(&self, report: &mut HealReport) {
        let table = match MountTable::read() {
            Ok(table) => table,
            Err(e) => {
                report.failures.push(HealFailure::Table(e.into()));
                return;
            }
        };
        let now = Instant::now();
        let pinned = self.pinned_on_demand(&table);
        let mut idle_since = self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        let mut mounted = HashSet::new();
        for (instance, mount) in self.mounted_instances(&table) {
            let name = instance.dir_name();
            mounted.insert(name.clone());
            let used = table.of_device(&mount.device).any(|m| m.id != mount.id);
            if used || pinned.contains(&name) {
                idle_since.remove(&name);
                continue;
            }
            let since = *idle_since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) < self.idle_delay {
                continue;
            }
            let _gate = self.reap_gate.write().unwrap_or_else(|p| p.into_inner());
            let _guard = self.instances.lock(name.clone());
            let Ok(fresh) = MountTable::read() else {
                continue;
            };
            let Some(current) = fresh.at(&mount.mount_point) else {
                continue;
            };
            if fresh.of_device(&current.device).any(|m| m.id != current.id)
                || self.pinned_on_demand(&fresh).contains(&name)
            {
                continue;
            }
            match ops::unmount_lazy(&mount.mount_point) {
                Ok(()) => {
                    let _ = std::fs::remove_dir(&mount.mount_point);
                    idle_since.remove(&name);
                    info!(repository = %name, "unmounted idle repository");
                    report.reaped.push(name);
                }
                Err(e) => report.failures.push(HealFailure::Reap {
                    instance: name,
                    source: e.into(),
                }),
            }
        }
        idle_since.retain(|name, _| mounted.contains(name));
        drop(idle_since);
        self.forget_unused_specs();
    }

    /// Instances that published on-demand volumes pin.
    fn pinned_on_demand(&self, table: &MountTable) -> HashSet<String> {
        self.published_volumes(table)
            .into_iter()
            .filter(|v| v.kind == VolumeKind::OnDemand)
            .filter_map(|v| v.spec)
            .flat_map(|spec| {
                spec.pins
                    .keys()
                    .map(|r| spec.instance(r).dir_name())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Removes spec records no published volume names, at most once per
    /// [`SPEC_SWEEP_INTERVAL`]; publishes in flight hold the reap gate from recording their
    /// spec until their target is mounted, so they are safe.
    fn forget_unused_specs(&self) {
        {
            let mut last = self
                .last_spec_sweep
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < SPEC_SWEEP_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let _gate = self.reap_gate.write().unwrap_or_else(|p| p.into_inner());
        let Ok(table) = MountTable::read() else {
            return;
        };
        let keep: HashSet<String> = self
            .published_volumes(&table)
            .into_iter()
            .map(|v| v.spec_key)
            .collect();
        self.specs.retain(&keep);
    }
}
