//! Health: of a path (does the client answer?), of a published volume (every repository it
//! shows), and of the node (what Probe and `/healthz` report).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::published::{PublishedVolume, VolumeKind};
use super::unpublish::device_number;
use super::{Topology, TopologyError};
use crate::backend::{BackendError, Snapshot};
use crate::mount::table::{MountTable, TableError};
use crate::volume::RepositoryName;

/// How long reading a repository's root may take before it counts as hung.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Health of one repository as seen through a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The path answers.
    Healthy,
    /// The path fails (ENOTCONN, EIO, ...) or hangs; the message says how.
    Broken(String),
}

/// Why [`timed`] work gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum TimedError {
    /// The helper thread could not be started.
    #[error("cannot start probe: {0}")]
    Spawn(#[source] std::io::Error),
    /// The work did not finish within [`PROBE_TIMEOUT`] (or its thread died).
    #[error("no answer within {PROBE_TIMEOUT:?}")]
    Timeout,
}

/// Runs `work` on a helper thread and waits at most [`PROBE_TIMEOUT`], so a hung FUSE
/// client cannot block the caller (the thread stays behind until the client answers).
pub fn timed<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TimedError> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .map_err(TimedError::Spawn)?;
    receiver
        .recv_timeout(PROBE_TIMEOUT)
        .map_err(|_| TimedError::Timeout)
}

/// Reads the directory `path` (on a helper thread, see [`timed`]). Opening and reading
/// reaches the client, unlike stat, which FUSE may answer from its attribute cache.
pub fn probe(path: &Path) -> Health {
    let owned = path.to_owned();
    match timed(move || {
        std::fs::read_dir(&owned).and_then(|mut entries| entries.next().transpose().map(|_| ()))
    }) {
        Ok(Ok(())) => Health::Healthy,
        Ok(Err(e)) => Health::Broken(e.to_string()),
        Err(why) => Health::Broken(why.to_string()),
    }
}

impl Topology {
    /// What the client mounted at `dir` shows, if the backend can tell (see [`timed`]).
    pub fn snapshot(&self, dir: &Path) -> Option<Snapshot> {
        let backend = self.backend.clone();
        let owned = dir.to_owned();
        timed(move || backend.snapshot(&owned)).ok().flatten()
    }
}

/// Why the node is not ready.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// The mount table cannot be read.
    #[error("{0}")]
    MountTable(#[source] TableError),
    /// The mount root is not a mount point.
    #[error("{} is not a mount point", .0.display())]
    RootNotMounted(PathBuf),
    /// The mount root is not a shared mount, so binds would not reach containers.
    #[error("{} is not a shared mount", .0.display())]
    RootNotShared(PathBuf),
    /// The directory of the client mounts is something else.
    #[error("{} is not a directory", .0.display())]
    ReposNotADirectory(PathBuf),
    /// The directory of the client mounts cannot be looked at.
    #[error("{}: {source}", path.display())]
    ReposUnusable {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client programs are missing.
    #[error("{0}")]
    Client(#[source] BackendError),
    /// An on-demand volume is not served: lookups of new names fail until it is taken over.
    #[error("on-demand volume at {} is not served (taking it over)", .0.display())]
    OnDemandNotServed(PathBuf),
}

impl Topology {
    /// Checks what the node service needs (Probe and `/healthz`).
    pub fn readiness(&self) -> Result<(), NotReady> {
        let table = MountTable::read().map_err(NotReady::MountTable)?;
        match table.at(&self.root) {
            None => return Err(NotReady::RootNotMounted(self.root.clone())),
            Some(m) if m.shared.is_none() => {
                return Err(NotReady::RootNotShared(self.root.clone()));
            }
            Some(_) => {}
        }
        let repos = self.repos_dir();
        match std::fs::metadata(&repos) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(NotReady::ReposNotADirectory(repos)),
            Err(source) => {
                return Err(NotReady::ReposUnusable {
                    path: repos,
                    source,
                });
            }
        }
        self.backend.check_client().map_err(NotReady::Client)?;
        for volume in self.published_volumes(&table) {
            if !self.is_served(&volume) {
                return Err(NotReady::OnDemandNotServed(
                    volume.mount.mount_point.clone(),
                ));
            }
        }
        Ok(())
    }

    /// Whether lookups of `volume` reach this process (always true for explicit lists):
    /// it is connected to our pipe, and the kernel does not show it catatonic (`fd=-1`).
    pub fn is_served(&self, volume: &PublishedVolume) -> bool {
        if volume.kind != VolumeKind::OnDemand {
            return true;
        }
        let connected = match (&self.autofs, device_number(&volume.mount.device)) {
            (Some(autofs), Ok(dev)) => autofs.is_connected(dev),
            _ => false,
        };
        connected && volume.mount.autofs_pipe != Some(-1)
    }

    /// What `volume` shows and what is wrong with it: one problem per repository that is
    /// broken or missing, one when on-demand lookups are not served.
    pub fn volume_report(&self, volume: &PublishedVolume) -> Result<VolumeReport, TopologyError> {
        let table = MountTable::read()?;
        let mut report = VolumeReport::default();
        let Some(spec) = &volume.spec else {
            report.problems.push(VolumeProblem::RecordMissing {
                key: volume.spec_key.clone(),
            });
            return Ok(report);
        };
        if !self.is_served(volume) {
            report.problems.push(VolumeProblem::NotServed);
        }
        for repository in volume.expected_children(&table) {
            let child = volume.mount.mount_point.join(repository.as_str());
            match table.at(&child) {
                Some(m) if m.parent == volume.mount.id => match probe(&child) {
                    Health::Healthy => {
                        let snapshot = self.snapshot(&child);
                        if let Some(shown) = snapshot.as_ref().filter(|s| s.io_errors > 0) {
                            report.problems.push(VolumeProblem::IoErrors {
                                repository: repository.clone(),
                                explained: self.backend.explain_io_errors(shown),
                            });
                        }
                        report.shown.push((repository, snapshot));
                    }
                    Health::Broken(why) => report.problems.push(VolumeProblem::Broken {
                        repository,
                        pinned: false,
                        why,
                    }),
                },
                _ => report.problems.push(VolumeProblem::NotMounted {
                    repository,
                    pinned: false,
                }),
            }
        }
        if volume.kind == VolumeKind::OnDemand {
            for repository in spec.pins.keys() {
                let dir = self.instance_dir(&spec.instance(repository));
                if table.at(&dir).is_none() {
                    report.problems.push(VolumeProblem::NotMounted {
                        repository: repository.clone(),
                        pinned: true,
                    });
                } else if let Health::Broken(why) = probe(&dir) {
                    report.problems.push(VolumeProblem::Broken {
                        repository: repository.clone(),
                        pinned: true,
                        why,
                    });
                }
            }
        }
        Ok(report)
    }
}

/// One thing wrong with a published volume; its message is the volume condition's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeProblem {
    /// The state directory has no record of the volume's attributes.
    #[error("the record of this volume's attributes ({key}) is missing from the state directory")]
    RecordMissing {
        /// The record's key.
        key: String,
    },
    /// The on-demand volume is not served by this process (yet).
    #[error(
        "repositories not accessed yet cannot be mounted: the on-demand volume is not served (the plugin is taking it over)"
    )]
    NotServed,
    /// A repository answers but its client counted I/O errors.
    #[error("repository {repository} is readable but had {explained}")]
    IoErrors {
        /// The repository.
        repository: RepositoryName,
        /// The backend's account of the errors.
        explained: String,
    },
    /// A repository (a pinned one: its instance) fails or hangs.
    #[error("{}repository {repository} is broken: {why}", pinned_prefix(*.pinned))]
    Broken {
        /// The repository.
        repository: RepositoryName,
        /// Whether it is pinned to a revision.
        pinned: bool,
        /// How it fails.
        why: String,
    },
    /// A repository (a pinned one: its instance) is not mounted.
    #[error("{}repository {repository} is not mounted", pinned_prefix(*.pinned))]
    NotMounted {
        /// The repository.
        repository: RepositoryName,
        /// Whether it is pinned to a revision.
        pinned: bool,
    },
}

fn pinned_prefix(pinned: bool) -> &'static str {
    if pinned { "pinned " } else { "" }
}

/// What a published volume shows ([`Topology::volume_report`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VolumeReport {
    /// What is wrong; empty means healthy.
    pub problems: Vec<VolumeProblem>,
    /// The readable repositories and the snapshot each shows (when the backend tells).
    pub shown: Vec<(RepositoryName, Option<Snapshot>)>,
}

impl VolumeReport {
    /// The volume condition message: the problems, or what every repository shows.
    pub fn message(&self) -> String {
        if !self.problems.is_empty() {
            let problems: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
            return problems.join("; ");
        }
        let shown: Vec<String> = self
            .shown
            .iter()
            .filter_map(|(repository, snapshot)| {
                Some(format!("{repository} at {}", snapshot.as_ref()?))
            })
            .collect();
        if shown.is_empty() {
            "all repositories readable".to_owned()
        } else {
            format!("all repositories readable: {}", shown.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_work_answers_with_its_result_or_says_why_not() {
        assert_eq!(timed(|| 7).unwrap(), 7);
        assert_eq!(
            TimedError::Timeout.to_string(),
            format!("no answer within {PROBE_TIMEOUT:?}")
        );
    }
}
