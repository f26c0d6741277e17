//! First access of a name in an on-demand volume.
//!
//! The kernel writes a packet for each name looked up and not yet mounted beneath an
//! on-demand target; one reader thread takes the packets off the pipe and hands each to a
//! blocking task, which finds the volume by the packet's device, mounts the repository's
//! instance if needed, binds it read-only at `<target>/<name>` and answers. Names that are
//! not repository names, repositories the backend cannot mount and volumes that are gone
//! are answered FAIL: the process that looked gets "No such file or directory".

use std::path::Path;
use std::sync::Arc;

use tracing::{debug, warn};

use super::published::VolumeKind;
use super::{Topology, TopologyError};
use crate::autofs::Answer;
use crate::autofs::kernel::{self, Packet};
use crate::mount::ops;
use crate::mount::table::MountTable;
use crate::volume::{Bounded, RepositoryName};

/// How one lookup ended (for logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The repository is bound beneath the target.
    Mounted,
    /// Not a repository name: refused without trying.
    NotARepository,
    /// The volume is no longer published (a lookup racing its unpublish).
    VolumeGone,
    /// The repository could not be mounted or bound; the message says why.
    Failed(String),
}

impl Topology {
    /// Serves one lookup packet and answers the kernel.
    pub fn serve_lookup(&self, packet: &Packet) -> LookupOutcome {
        let outcome = match self.lookup(packet) {
            Ok(outcome) => outcome,
            Err(e) => LookupOutcome::Failed(e.to_string()),
        };
        let answer = if outcome == LookupOutcome::Mounted {
            Answer::Ready
        } else {
            Answer::Fail
        };
        if let Some(autofs) = &self.autofs
            && let Err(e) = autofs.answer(packet, answer)
        {
            debug!(error = %e, "answering a lookup");
        }
        let name = String::from_utf8_lossy(&packet.name);
        match &outcome {
            LookupOutcome::Mounted => {
                debug!(name = %Bounded(&name), pid = packet.pid, "mounted on first access")
            }
            LookupOutcome::NotARepository | LookupOutcome::VolumeGone => {
                debug!(name = %Bounded(&name), outcome = ?outcome, "lookup refused")
            }
            LookupOutcome::Failed(why) => {
                warn!(name = %Bounded(&name), pid = packet.pid, error = %why, "on-demand mount failed")
            }
        }
        outcome
    }

    fn lookup(&self, packet: &Packet) -> Result<LookupOutcome, TopologyError> {
        if packet.kind != kernel::PACKET_MISSING_INDIRECT {
            return Ok(LookupOutcome::NotARepository);
        }
        let device = kernel::device_text(packet.dev);
        let table = MountTable::read()?;
        let Some(volume) = table
            .of_device(&device)
            .filter_map(|m| self.published_volume(m))
            .find(|v| v.kind == VolumeKind::OnDemand)
        else {
            return Ok(LookupOutcome::VolumeGone);
        };
        let Some(spec) = &volume.spec else {
            return Ok(LookupOutcome::Failed(
                "the volume's spec record is missing".to_owned(),
            ));
        };
        let Some(repository) = std::str::from_utf8(&packet.name)
            .ok()
            .and_then(|name| RepositoryName::parse(name).ok())
        else {
            return Ok(LookupOutcome::NotARepository);
        };
        let instance = spec.instance(&repository);
        let _gate = self.reap_gate.read().unwrap_or_else(|p| p.into_inner());
        let dir = self.ensure_instance(&instance, &table)?;
        let target = volume.mount.mount_point.clone();
        let _target_guard = self.targets.lock(target.clone());
        // The volume may have been unpublished (or republished) while the instance mounted.
        let table = MountTable::read()?;
        if table.at(&target).map(|m| m.id) != Some(volume.mount.id) {
            return Ok(LookupOutcome::VolumeGone);
        }
        let child = target.join(repository.as_str());
        let wanted = table.at(&dir).map(|m| m.device.clone());
        let current = table
            .at(&child)
            .filter(|m| m.parent == volume.mount.id)
            .map(|m| m.device.clone());
        if current.is_some() && current == wanted {
            return Ok(LookupOutcome::Mounted);
        }
        bind_child(&dir, &child)?;
        Ok(LookupOutcome::Mounted)
    }
}

/// Binds `dir` at `child` beneath an on-demand target (whose directory the daemon may
/// create), replacing a stale bind.
pub(crate) fn bind_child(dir: &Path, child: &Path) -> Result<(), TopologyError> {
    match std::fs::create_dir(child) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if MountTable::read()?.at(child).is_some() {
                ops::unmount_lazy(child)?;
            }
        }
        Err(e) => return Err(super::io_error(child)(e)),
    }
    ops::bind_read_only(dir, child)?;
    Ok(())
}

/// Reads lookup packets until the process ends, serving each on a blocking task of
/// `runtime`. Returns at once (`None`) when on-demand volumes are off.
pub fn spawn_server(
    topology: Arc<Topology>,
    runtime: tokio::runtime::Handle,
) -> Option<std::thread::JoinHandle<()>> {
    topology.autofs.as_ref()?;
    let spawned = std::thread::Builder::new()
        .name("autofs".into())
        .spawn(move || {
            let Some(autofs) = topology.autofs.as_ref() else {
                return;
            };
            loop {
                match autofs.next_packet() {
                    Ok(packet) => {
                        let topology = topology.clone();
                        runtime.spawn_blocking(move || topology.serve_lookup(&packet));
                    }
                    Err(e) => {
                        warn!(error = %e, "reading autofs packets failed; retrying");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            warn!(error = %e, "cannot start the autofs reader");
            None
        }
    }
}
