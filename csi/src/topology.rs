//! The mount topology and every operation on it: publish, unpublish, heal, reap.
//!
//! ```text
//! <mount root>/                      shared (bound onto itself, MS_SHARED)
//!   repos/cms.cern.ch                FUSE: the node's one client for cms, latest revision
//!   repos/cms.cern.ch@tag-v2         FUSE: a private client pinned to tag v2
//!
//! <kubelet dir>/pods/<uid>/volumes/kubernetes.io~csi/<pv>/mount     (the target)
//!   = holder tmpfs, read-only, shared; source "hepbatch-cvmfs:<volume>:<spec>"
//!   ├── cms.cern.ch   read-only bind of repos/cms.cern.ch@tag-v2
//!   └── sft.cern.ch   read-only bind of repos/sft.cern.ch
//! ```
//!
//! The kubelet binds the target into containers `rslave`: the holder never dies, and the
//! repositories live *beneath* it, so replacing a repository bind (heal) reaches running
//! containers. A repository's FUSE mount is never itself the target.
//!
//! No state is kept in memory that the kernel does not also hold: holders record their
//! volume id and spec in their mount source, repository instances are recognised by their
//! directory under `repos/`, and references are binds of the same device. Every operation
//! starts from a fresh [`MountTable`]. The only memory is when each instance became idle.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::backend::{Backend, BackendError};
use crate::locks::KeyedLocks;
use crate::mount::ops::{self, HOLDER_SOURCE_PREFIX, MountError};
use crate::mount::table::{Mount, MountTable, TableError};
use crate::ondemand::{Autofs, AutofsError};
use crate::volume::{Instance, Repositories, RepositoryName, VolumeSpec};

/// How long a stat of a repository may take before it counts as hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts at removing a target directory that is still busy after the unmount.
const UNPUBLISH_ATTEMPTS: usize = 5;

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
    /// A directory could not be created or removed.
    #[error("{path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The target is already published with another volume or spec.
    #[error("target {target} is already published with different volume attributes ({existing})")]
    Conflict {
        /// The target.
        target: PathBuf,
        /// What it holds.
        existing: String,
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

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TopologyError + '_ {
    move |source| TopologyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Health of one repository as seen through a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The path answers stat.
    Healthy,
    /// The path fails (ENOTCONN, EIO, ...) or hangs; the message says how.
    Broken(String),
}

/// Reads the directory `path` on a helper thread so a hung FUSE client cannot block the
/// caller.
pub fn probe(path: &Path) -> Health {
    let (sender, receiver) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    let spawned = std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            // Open and read the directory: unlike stat, which FUSE may answer from its
            // attribute cache, opendir/readdir always reach the client.
            let _ = sender.send(
                std::fs::read_dir(&owned)
                    .and_then(|mut entries| entries.next().transpose().map(|_| ())),
            );
        });
    if let Err(e) = spawned {
        return Health::Broken(format!("cannot start probe: {e}"));
    }
    match receiver.recv_timeout(PROBE_TIMEOUT) {
        Ok(Ok(())) => Health::Healthy,
        Ok(Err(e)) => Health::Broken(e.to_string()),
        Err(_) => Health::Broken(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}

/// What one healing pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HealReport {
    /// Instances found broken and remounted.
    pub instances_remounted: Vec<String>,
    /// Holder children re-bound.
    pub binds_replaced: Vec<PathBuf>,
    /// Instances unmounted after their idle delay.
    pub instances_reaped: Vec<String>,
    /// Failures (the next pass tries again).
    pub failures: Vec<String>,
}

/// How a published volume is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderKind {
    /// A read-only tmpfs with one bind per listed repository.
    Listed,
    /// A per-volume autofs mount (every repository on demand).
    OnDemand,
}

/// A published volume found in the mount table.
#[derive(Debug, Clone)]
pub struct Holder {
    /// How it is built.
    pub kind: HolderKind,
    /// Its mount.
    pub mount: Mount,
    /// Hash of the volume id it was published for.
    pub volume: String,
    /// The spec it carries.
    pub spec: VolumeSpec,
}

/// The node's mount topology; cheap to share behind an `Arc`. All methods block.
pub struct Topology {
    root: PathBuf,
    backend: Arc<dyn Backend>,
    autofs: Option<Autofs>,
    idle_delay: Duration,
    targets: KeyedLocks<PathBuf>,
    instances: KeyedLocks<String>,
    /// Publishes take it shared, reaping takes it exclusively, so an instance is never
    /// reaped between being ensured and being bound.
    reap_gate: RwLock<()>,
    idle_since: Mutex<HashMap<String, Instant>>,
}

impl Topology {
    /// A topology rooted at `root` (created and made shared by [`Topology::init`]), with
    /// on-demand volumes when `autofs_state` names a state directory for autofs.
    pub fn new(
        root: PathBuf,
        backend: Arc<dyn Backend>,
        idle_delay: Duration,
        autofs_state: Option<&Path>,
    ) -> Self {
        let autofs =
            autofs_state.map(|state| Autofs::new(state, &root, backend.autofs_map(), idle_delay));
        Self {
            root,
            backend,
            autofs,
            idle_delay,
            targets: KeyedLocks::default(),
            instances: KeyedLocks::default(),
            reap_gate: RwLock::new(()),
            idle_since: Mutex::new(HashMap::new()),
        }
    }

    /// The mount root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The backend.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Where `instance` is mounted.
    ///
    /// With on-demand support, the latest revision of every repository is the one autofs
    /// mounts under `auto/`, so explicit-list and on-demand volumes share one client per
    /// repository; pinned instances always live under `repos/`.
    pub fn instance_dir(&self, instance: &Instance) -> PathBuf {
        match (&self.autofs, &instance.pin) {
            (Some(autofs), None) => autofs.auto_root().join(instance.repository.as_str()),
            _ => self.root.join("repos").join(instance.dir_name()),
        }
    }

    /// Creates the mount root and makes it a shared mount (idempotent).
    pub fn init(&self) -> Result<(), TopologyError> {
        let repos = self.root.join("repos");
        std::fs::create_dir_all(&repos).map_err(io_error(&repos))?;
        let table = MountTable::read()?;
        match table.at(&self.root) {
            Some(mount) if mount.shared.is_some() => {}
            Some(_) => ops::make_shared_root(&self.root, true)?,
            None => ops::make_shared_root(&self.root, false)?,
        }
        self.backend.prepare()?;
        if let Some(autofs) = &self.autofs {
            autofs.init()?;
        }
        Ok(())
    }

    /// Checks that the mount root is a shared mount and writable (part of Probe).
    pub fn check_root(&self) -> Result<(), String> {
        let table = MountTable::read().map_err(|e| e.to_string())?;
        match table.at(&self.root) {
            None => return Err(format!("{} is not a mount point", self.root.display())),
            Some(m) if m.shared.is_none() => {
                return Err(format!("{} is not a shared mount", self.root.display()));
            }
            Some(_) => {}
        }
        let repos = self.root.join("repos");
        let metadata =
            std::fs::metadata(&repos).map_err(|e| format!("{}: {e}", repos.display()))?;
        if !metadata.is_dir() {
            return Err(format!("{} is not a directory", repos.display()));
        }
        if let Some(autofs) = &self.autofs
            && !autofs.daemon_alive()
        {
            return Err("the automount daemon is not running".to_owned());
        }
        Ok(())
    }

    /// The label a holder records for `volume_id` (a stable hash, so any id fits).
    pub fn volume_label(volume_id: &str) -> String {
        format!("{:016x}", fnv1a(volume_id.as_bytes()))
    }

    fn holder_source(volume_id: &str, spec: &VolumeSpec) -> String {
        format!(
            "{HOLDER_SOURCE_PREFIX}:{}:{}",
            Self::volume_label(volume_id),
            spec.canonical()
        )
    }

    /// Reads a holder back from its mount, if `mount` is one.
    pub fn holder(mount: &Mount) -> Option<Holder> {
        if mount.fs_type != "tmpfs" {
            return None;
        }
        let rest = mount
            .source
            .strip_prefix(HOLDER_SOURCE_PREFIX)?
            .strip_prefix(':')?;
        let (volume, canonical) = rest.split_once(':')?;
        let spec = VolumeSpec::from_canonical(canonical).ok()?;
        Some(Holder {
            kind: HolderKind::Listed,
            mount: mount.clone(),
            volume: volume.to_owned(),
            spec,
        })
    }

    /// Reads a published volume back from its mount (a holder or a volume autofs mount).
    pub fn published_volume(&self, mount: &Mount) -> Option<Holder> {
        if let Some(holder) = Self::holder(mount) {
            return Some(holder);
        }
        let autofs = self.autofs.as_ref()?;
        let spec = autofs.published_spec(mount)?;
        let stem = Path::new(&mount.source).file_stem()?.to_str()?;
        let volume = stem.split_once('-').map_or(stem, |(v, _)| v).to_owned();
        Some(Holder {
            kind: HolderKind::OnDemand,
            mount: mount.clone(),
            volume,
            spec,
        })
    }

    /// Every holder in the mount table.
    pub fn holders(table: &MountTable) -> Vec<Holder> {
        table.mounts().iter().filter_map(Self::holder).collect()
    }

    fn on_demand_label(volume_id: &str, target: &Path) -> String {
        format!(
            "{}-{:016x}",
            Self::volume_label(volume_id),
            fnv1a(target.as_os_str().as_encoded_bytes())
        )
    }

    /// Mounts `instance` unless it is already mounted and healthy; returns its directory.
    fn ensure_instance(&self, instance: &Instance) -> Result<PathBuf, TopologyError> {
        let dir = self.instance_dir(instance);
        let _guard = self.instances.lock(instance.dir_name());
        if self.autofs.is_some() && instance.pin.is_none() {
            return self.trigger_on_demand(instance, &dir);
        }
        let table = MountTable::read()?;
        if table.at(&dir).is_some() {
            if probe(&dir) == Health::Healthy {
                return Ok(dir);
            }
            ops::unmount_lazy(&dir)?;
        }
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        self.backend.mount(instance, &dir)?;
        info!(instance = %instance, dir = %dir.display(), "mounted repository");
        Ok(dir)
    }

    /// Mounts the latest revision through autofs by looking it up (the plugin is not in the
    /// daemon's process group, so its lookups trigger mounts); a dead mount is detached and
    /// looked up again once.
    fn trigger_on_demand(&self, instance: &Instance, dir: &Path) -> Result<PathBuf, TopologyError> {
        // Fast path: mounted and not known to be broken (the watchdog probes it).
        if MountTable::read()?.at(dir).is_some() {
            return Ok(dir.to_owned());
        }
        for _ in 0..2 {
            let health = probe(dir);
            let table = MountTable::read()?;
            match (health, table.at(dir)) {
                (Health::Healthy, Some(_)) => return Ok(dir.to_owned()),
                (_, Some(_)) => ops::unmount_lazy(dir)?,
                (Health::Healthy, None) | (Health::Broken(_), None) => {
                    return Err(BackendError::NotFound {
                        instance: instance.to_string(),
                        reason: "the on-demand map does not know it".to_owned(),
                    }
                    .into());
                }
            }
        }
        Err(BackendError::MountFailed {
            instance: instance.to_string(),
            message: "still broken after a fresh on-demand mount".to_owned(),
        }
        .into())
    }

    /// Publishes a volume at `target`: a holder with one read-only bind per repository.
    /// Repeating a publish with the same volume and spec succeeds without changes.
    pub fn publish(
        &self,
        volume_id: &str,
        spec: &VolumeSpec,
        target: &Path,
    ) -> Result<(), TopologyError> {
        let source = Self::holder_source(volume_id, spec);
        let _target_guard = self.targets.lock(target.to_owned());
        let table = MountTable::read()?;
        if let Some(existing) = table.at(target) {
            return match self.published_volume(existing) {
                Some(holder)
                    if holder.volume == Self::volume_label(volume_id) && holder.spec == *spec =>
                {
                    Ok(())
                }
                Some(_) => Err(TopologyError::Conflict {
                    target: target.to_owned(),
                    existing: existing.source.clone(),
                }),
                None => Err(TopologyError::ForeignMount(target.to_owned())),
            };
        }
        let _gate = self.reap_gate.read().unwrap_or_else(|p| p.into_inner());
        if spec.repositories == Repositories::OnDemand {
            let autofs = self
                .autofs
                .as_ref()
                .ok_or(TopologyError::OnDemandUnavailable)?;
            for repository in spec.pins.keys() {
                self.ensure_instance(&spec.instance(repository))?;
            }
            std::fs::create_dir_all(target).map_err(io_error(target))?;
            autofs.publish(&Self::on_demand_label(volume_id, target), spec, target)?;
            return Ok(ops::make_shared(target)?);
        }
        let instances = spec.listed_instances();
        let mut dirs = Vec::with_capacity(instances.len());
        for instance in &instances {
            dirs.push((instance, self.ensure_instance(instance)?));
        }
        std::fs::create_dir_all(target).map_err(io_error(target))?;
        ops::mount_holder(target, &source)?;
        let built = self.fill_holder(target, &dirs);
        if built.is_err() {
            let _ = ops::unmount_lazy(target);
        }
        built
    }

    fn fill_holder(
        &self,
        target: &Path,
        dirs: &[(&Instance, PathBuf)],
    ) -> Result<(), TopologyError> {
        for (instance, _) in dirs {
            let child = target.join(instance.repository.as_str());
            std::fs::create_dir(&child).map_err(io_error(&child))?;
        }
        ops::seal_holder(target)?;
        ops::make_shared(target)?;
        for (instance, dir) in dirs {
            ops::bind_read_only(dir, &target.join(instance.repository.as_str()))?;
        }
        Ok(())
    }

    /// Unpublishes `target`: detaches the holder with everything beneath it and removes
    /// the directory. A target that is not mounted (or missing) counts as done.
    pub fn unpublish(&self, target: &Path) -> Result<(), TopologyError> {
        let _target_guard = self.targets.lock(target.to_owned());
        let table = MountTable::read()?;
        if let Some(mount) = table.at(target) {
            let Some(holder) = self.published_volume(mount) else {
                return Err(TopologyError::ForeignMount(target.to_owned()));
            };
            // An on-demand volume leaves the master map first, so that no daemon reload
            // in between can mount it again.
            if let (HolderKind::OnDemand, Some(autofs)) = (holder.kind, &self.autofs) {
                autofs.forget(target, Path::new(&mount.source))?;
            }
            ops::unmount_lazy(target)?;
        }
        // Under load a second holder can end up stacked on the target (or a mount appear
        // beneath it) between the read of the table and the detach; detach whatever is
        // still there and try again before giving up.
        for attempt in 0..UNPUBLISH_ATTEMPTS {
            match std::fs::remove_dir(target) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if attempt + 1 < UNPUBLISH_ATTEMPTS => {
                    warn!(target = %target.display(), error = %e,
                        "target still busy after unmount; detaching what is left");
                    let table = MountTable::read()?;
                    let mut left: Vec<PathBuf> = table
                        .beneath(target)
                        .map(|m| m.mount_point.clone())
                        .collect();
                    left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
                    for path in left {
                        ops::unmount_lazy(&path)?;
                    }
                    if MountTable::read()?.at(target).is_some() {
                        ops::unmount_lazy(target)?;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(TopologyError::Io {
                        path: target.to_owned(),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    /// The holder published at `target`, if any.
    pub fn published(&self, target: &Path) -> Result<Option<Holder>, TopologyError> {
        let table = MountTable::read()?;
        Ok(table.at(target).and_then(|m| self.published_volume(m)))
    }

    /// Problems of the volume published at `target`: one message per repository that is
    /// broken or missing. Empty means healthy.
    pub fn volume_problems(&self, holder: &Holder) -> Result<Vec<String>, TopologyError> {
        let table = MountTable::read()?;
        let mut problems = Vec::new();
        if holder.kind == HolderKind::OnDemand {
            // Repositories mounted so far, and the pinned instances.
            for child in table.children(holder.mount.id) {
                if let Health::Broken(why) = probe(&child.mount_point) {
                    problems.push(format!("{} is broken: {why}", child.mount_point.display()));
                }
            }
            for repository in holder.spec.pins.keys() {
                let dir = self.instance_dir(&holder.spec.instance(repository));
                if table.at(&dir).is_none() {
                    problems.push(format!("pinned repository {repository} is not mounted"));
                } else if let Health::Broken(why) = probe(&dir) {
                    problems.push(format!("pinned repository {repository} is broken: {why}"));
                }
            }
            return Ok(problems);
        }
        for name in listed(&holder.spec) {
            let child = holder.mount.mount_point.join(name.as_str());
            match table.at(&child) {
                Some(m) if m.parent == holder.mount.id => {
                    if let Health::Broken(why) = probe(&child) {
                        problems.push(format!("repository {name} is broken: {why}"));
                    }
                }
                _ => problems.push(format!("repository {name} is not mounted")),
            }
        }
        Ok(problems)
    }

    /// One healing pass: remount broken instances, re-bind every holder child that does
    /// not show its healthy instance, and unmount instances idle for longer than the idle
    /// delay.
    pub fn heal(&self) -> HealReport {
        let mut report = HealReport::default();
        if let Err(e) = self.heal_instances(&mut report) {
            report.failures.push(e.to_string());
        }
        if let Err(e) = self.heal_on_demand(&mut report) {
            report.failures.push(e.to_string());
        }
        if let Err(e) = self.heal_holders(&mut report) {
            report.failures.push(e.to_string());
        }
        if let Err(e) = self.reap(&mut report) {
            report.failures.push(e.to_string());
        }
        report
    }

    /// Mounted instances: directory name and mount.
    fn mounted_instances(&self, table: &MountTable) -> Vec<(Instance, Mount)> {
        let repos = self.root.join("repos");
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

    fn heal_instances(&self, report: &mut HealReport) -> Result<(), TopologyError> {
        let table = MountTable::read()?;
        for (instance, mount) in self.mounted_instances(&table) {
            if let Health::Broken(why) = probe(&mount.mount_point) {
                warn!(instance = %instance, reason = %why, "repository broken, remounting");
                match self.ensure_instance(&instance) {
                    Ok(_) => report.instances_remounted.push(instance.dir_name()),
                    Err(e) => report.failures.push(format!("remount {instance}: {e}")),
                }
            }
        }
        Ok(())
    }

    fn heal_holders(&self, report: &mut HealReport) -> Result<(), TopologyError> {
        let table = MountTable::read()?;
        for holder in Self::holders(&table) {
            for name in listed(&holder.spec) {
                let instance = holder.spec.instance(name);
                let dir = self.instance_dir(&instance);
                let child = holder.mount.mount_point.join(name.as_str());
                let current = table
                    .at(&child)
                    .filter(|m| m.parent == holder.mount.id)
                    .map(|m| m.device.clone());
                let wanted = table.at(&dir).map(|m| m.device.clone());
                if current.is_some() && current == wanted {
                    continue;
                }
                if let Err(e) = self.rebind(&holder, &instance, &child) {
                    report
                        .failures
                        .push(format!("rebind {}: {e}", child.display()));
                } else {
                    info!(target = %holder.mount.mount_point.display(), repository = %name, "re-bound repository beneath published target");
                    report.binds_replaced.push(child);
                }
            }
        }
        Ok(())
    }

    /// On-demand volumes: a broken node-level repository mount is detached together with
    /// every bind of it, and broken binds in volume autofs mounts are detached; the next
    /// access mounts afresh. A dead daemon is restarted.
    fn heal_on_demand(&self, report: &mut HealReport) -> Result<(), TopologyError> {
        let Some(autofs) = &self.autofs else {
            return Ok(());
        };
        if !autofs.daemon_alive() {
            warn!("automount daemon is gone, restarting it");
            autofs.ensure_daemon()?;
        }
        let table = MountTable::read()?;
        for mount in autofs.node_mounts(&table) {
            if let Health::Broken(why) = probe(&mount.mount_point) {
                warn!(dir = %mount.mount_point.display(), reason = %why, "on-demand repository broken, detaching");
                for bind in table.of_device(&mount.device) {
                    ops::unmount_lazy(&bind.mount_point)?;
                    report.binds_replaced.push(bind.mount_point.clone());
                }
            }
        }
        let table = MountTable::read()?;
        for volume in table.mounts().iter().filter(|m| autofs.is_volume_mount(m)) {
            for child in table.children(volume.id) {
                if let Health::Broken(why) = probe(&child.mount_point) {
                    warn!(dir = %child.mount_point.display(), reason = %why, "bind broken, detaching");
                    ops::unmount_lazy(&child.mount_point)?;
                    report.binds_replaced.push(child.mount_point.clone());
                }
            }
        }
        Ok(())
    }

    fn rebind(
        &self,
        holder: &Holder,
        instance: &Instance,
        child: &Path,
    ) -> Result<(), TopologyError> {
        let _target_guard = self.targets.lock(holder.mount.mount_point.clone());
        // The holder may have been unpublished since the table was read.
        let table = MountTable::read()?;
        if table.at(&holder.mount.mount_point).map(|m| m.id) != Some(holder.mount.id) {
            return Ok(());
        }
        let _gate = self.reap_gate.read().unwrap_or_else(|p| p.into_inner());
        let dir = self.ensure_instance(instance)?;
        if table.at(child).is_some_and(|m| m.parent == holder.mount.id) {
            ops::unmount_lazy(child)?;
        }
        ops::bind_read_only(&dir, child)?;
        Ok(())
    }

    fn reap(&self, report: &mut HealReport) -> Result<(), TopologyError> {
        let table = MountTable::read()?;
        let now = Instant::now();
        let referenced = self.referenced_by_on_demand(&table);
        // Client mounts that can be idle: instances under repos/ and the on-demand
        // repositories under auto/ (whose expiry we do not leave to the daemon alone).
        let mut candidates: Vec<(String, Mount)> = self
            .mounted_instances(&table)
            .into_iter()
            .map(|(instance, mount)| (instance.dir_name(), mount))
            .collect();
        if let Some(autofs) = &self.autofs {
            candidates.extend(autofs.node_mounts(&table).filter_map(|m| {
                let name = m.mount_point.file_name()?.to_str()?;
                Some((format!("auto/{name}"), m.clone()))
            }));
        }
        let mut idle_since = self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        let mut still_mounted = Vec::new();
        for (name, mount) in candidates {
            still_mounted.push(name.clone());
            let users = table
                .of_device(&mount.device)
                .filter(|m| m.id != mount.id)
                .count();
            if users > 0 || referenced.contains(&name) {
                idle_since.remove(&name);
                continue;
            }
            let since = *idle_since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) < self.idle_delay {
                continue;
            }
            let _gate = self.reap_gate.write().unwrap_or_else(|p| p.into_inner());
            let _guard = self.instances.lock(name.clone());
            let fresh = MountTable::read()?;
            let Some(current) = fresh.at(&mount.mount_point) else {
                continue;
            };
            if fresh.of_device(&current.device).any(|m| m.id != current.id)
                || self.referenced_by_on_demand(&fresh).contains(&name)
            {
                continue;
            }
            ops::unmount_lazy(&mount.mount_point)?;
            if !name.starts_with("auto/") {
                let _ = std::fs::remove_dir(&mount.mount_point);
            }
            idle_since.remove(&name);
            info!(repository = %name, "unmounted idle repository");
            report.instances_reaped.push(name);
        }
        idle_since.retain(|name, _| still_mounted.contains(name));
        Ok(())
    }

    /// Pinned instances that published on-demand volumes bind on access.
    fn referenced_by_on_demand(&self, table: &MountTable) -> Vec<String> {
        let Some(autofs) = &self.autofs else {
            return Vec::new();
        };
        table
            .mounts()
            .iter()
            .filter_map(|m| autofs.published_spec(m))
            .flat_map(|spec| {
                spec.pins
                    .keys()
                    .map(|r| spec.instance(r).dir_name())
                    .collect::<Vec<_>>()
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
        if let Some(autofs) = &self.autofs {
            for mount in autofs.node_mounts(&table) {
                if let Some(name) = mount.mount_point.file_name().and_then(|n| n.to_str()) {
                    *counts.entry(name.to_owned()).or_insert(0) += 1;
                }
            }
        }
        Ok(counts)
    }
}

fn listed(spec: &VolumeSpec) -> Vec<&RepositoryName> {
    match &spec.repositories {
        Repositories::OnDemand => Vec::new(),
        Repositories::Listed(names) => names.iter().collect(),
    }
}

/// FNV-1a, a stable 64-bit hash for labelling holders (stable across builds, unlike
/// `DefaultHasher`).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_recognised_from_their_mount_source() {
        let spec =
            VolumeSpec::from_canonical("cms.cern.ch,sft.cern.ch|cms.cern.ch@tag=v2").unwrap();
        let mount = Mount {
            id: 7,
            parent: 1,
            device: "0:99".into(),
            mount_point: "/t".into(),
            fs_type: "tmpfs".into(),
            source: Topology::holder_source("vol-1", &spec),
            shared: Some(3),
        };
        let holder = Topology::holder(&mount).unwrap();
        assert_eq!(holder.spec, spec);
        let foreign = Mount {
            source: "tmpfs".into(),
            ..mount
        };
        assert!(Topology::holder(&foreign).is_none());
    }

    #[test]
    fn fnv1a_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
