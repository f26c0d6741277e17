//! The plugin is the autofs daemon of its on-demand volumes.
//!
//! An on-demand volume's target is an indirect autofs mount made by the plugin itself with
//! mount(2), served through one pipe for all of them: a process that looks up
//! `/cvmfs/<name>` in a container makes the kernel write a packet to the pipe and wait; the
//! plugin mounts the repository (if it is not mounted yet), binds it read-only at
//! `<target>/<name>` (the bind propagates into the container's rslave copy) and answers
//! READY, or FAIL for a name that is not a repository (the process gets ENOENT).
//!
//! Publishing mounts one file system and reloads nothing, and a restarted plugin takes its
//! volumes over in place ([`Autofs::take_over`]: the `/dev/autofs` CATATONIC + SETPIPEFD
//! ioctls), so running containers keep the very mount they hold and new names work again
//! as soon as the plugin is back. Why not `automount(8)`: docs/csi.md, "On-demand volumes".
//!
//! The kernel treats the process group given at mount (ours) as the daemon ("oz mode"):
//! its lookups never trigger and it may create the `<name>` directories. The plugin
//! therefore runs in its own process group, and its pipe is close-on-exec so no child keeps
//! a dead plugin's pipe open. Expiry is never requested, so the kernel never expires a
//! bind; binds live until the volume is unpublished.

pub mod kernel;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};

use kernel::{Control, Packet};

/// A failure of the on-demand machinery.
#[derive(Debug, thiserror::Error)]
pub enum AutofsError {
    /// The pipe could not be created or read.
    #[error("autofs pipe: {0}")]
    Pipe(#[source] io::Error),
    /// mount(2) of the autofs file system failed.
    #[error("mounting autofs at {path}: {source}")]
    Mount {
        /// The target.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// The mount could not be opened or controlled.
    #[error("autofs mount {path}: {what}: {source}")]
    Control {
        /// The mount point.
        path: PathBuf,
        /// What was attempted.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel speaks another protocol.
    #[error(
        "autofs at {path} speaks protocol {version}, the plugin speaks {}",
        kernel::PROTOCOL
    )]
    Protocol {
        /// The mount point.
        path: PathBuf,
        /// The kernel's version.
        version: u32,
    },
}

/// Bytes of the packet pipe (about 3,400 pending lookups).
const PIPE_SIZE: i32 = 1 << 20;

/// How a lookup ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The name is mounted: the waiting process follows it.
    Ready,
    /// The name does not exist: the waiting process gets ENOENT.
    Fail,
}

/// A connected volume: a descriptor on its autofs root, for READY/FAIL/CATATONIC.
#[derive(Debug)]
struct Connection {
    root: OwnedFd,
    path: PathBuf,
}

/// The autofs daemon side of the plugin; shared behind an `Arc`, all methods block.
#[derive(Debug)]
pub struct Autofs {
    reader: Mutex<File>,
    writer: OwnedFd,
    pgrp: i32,
    control: Mutex<Option<Arc<Control>>>,
    /// Connected volumes by superblock device (`st_dev` encoding, as in packets).
    connections: Mutex<HashMap<u32, Connection>>,
}

impl Autofs {
    /// Creates the pipe. The plugin must already lead its own process group.
    pub fn new() -> Result<Self, AutofsError> {
        let (reader, writer) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| AutofsError::Pipe(e.into()))?;
        // A default pipe holds 16 packets; beyond that, processes looking up names block
        // in the kernel until the reader catches up. Room for a few thousand instead.
        if let Err(e) = nix::fcntl::fcntl(&reader, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            tracing::debug!(error = %e, "cannot enlarge the autofs pipe");
        }
        Ok(Self {
            reader: Mutex::new(File::from(reader)),
            writer,
            pgrp: nix::unistd::getpgrp().as_raw(),
            control: Mutex::new(None),
            connections: Mutex::new(HashMap::new()),
        })
    }

    fn control(&self) -> io::Result<Arc<Control>> {
        let mut control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(control) = control.as_ref() {
            return Ok(control.clone());
        }
        let opened = Arc::new(Control::open()?);
        *control = Some(opened.clone());
        Ok(opened)
    }

    /// Mounts a new on-demand volume at the existing, empty directory `target`, labelled
    /// `source` in the mount table, and starts serving it.
    pub fn mount(&self, target: &Path, source: &str) -> Result<u32, AutofsError> {
        let options = kernel::mount_options(self.writer.as_raw_fd(), self.pgrp);
        mount(
            Some(source),
            target,
            Some("autofs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|source| AutofsError::Mount {
            path: target.to_owned(),
            source,
        })?;
        let control = |what| {
            move |source| AutofsError::Control {
                path: target.to_owned(),
                what,
                source,
            }
        };
        let root = File::open(target).map_err(control("open"))?;
        let dev = root.metadata().map_err(control("stat"))?.dev() as u32;
        let version =
            kernel::protocol_version(root.as_fd()).map_err(control("protocol version"))?;
        if version != kernel::PROTOCOL {
            return Err(AutofsError::Protocol {
                path: target.to_owned(),
                version,
            });
        }
        self.connect(dev, root.into(), target);
        Ok(dev)
    }

    fn connect(&self, dev: u32, root: OwnedFd, path: &Path) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                dev,
                Connection {
                    root,
                    path: path.to_owned(),
                },
            );
    }

    /// Whether the volume of device `dev` is served by this process.
    pub fn is_connected(&self, dev: u32) -> bool {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&dev)
    }

    /// Takes over the autofs mount at `target` (device `dev`) from a daemon that died or
    /// stopped: waiting processes are released, then the mount is served by this process.
    /// Returns false when this process already served it and it was live.
    pub fn take_over(&self, target: &Path, dev: u32) -> Result<bool, AutofsError> {
        let error = |what| {
            move |source| AutofsError::Control {
                path: target.to_owned(),
                what,
                source,
            }
        };
        let control = self.control().map_err(error("open /dev/autofs"))?;
        let connected = self.is_connected(dev);
        let root = control.open_mount(target, dev).map_err(error("open"))?;
        if connected {
            // Ours and live (EBUSY), unless someone made it catatonic since.
            match control.set_pipe(root.as_fd(), self.writer.as_fd()) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => return Ok(false),
                Err(e) => return Err(error("set pipe")(e)),
                Ok(()) => return Ok(true),
            }
        }
        if let Err(e) = control.catatonic(root.as_fd()) {
            tracing::debug!(target = %target.display(), error = %e, "catatonic before take-over");
        }
        control
            .set_pipe(root.as_fd(), self.writer.as_fd())
            .map_err(error("set pipe"))?;
        self.connect(dev, root, target);
        Ok(true)
    }

    /// Stops serving the volume of device `dev` (it has been unmounted).
    pub fn forget(&self, dev: u32) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&dev);
    }

    /// Waits for the next lookup of any volume.
    pub fn next_packet(&self) -> Result<Packet, AutofsError> {
        let mut buffer = [0u8; 512];
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let n = (&*reader).read(&mut buffer).map_err(AutofsError::Pipe)?;
            match Packet::parse(&buffer[..n]) {
                Ok(packet) => return Ok(packet),
                Err(why) => tracing::warn!(%why, "ignoring an autofs packet"),
            }
        }
    }

    /// Answers the lookup `packet`. Fails when the volume is no longer served (it was
    /// unpublished: the kernel released the waiter when it unmounted).
    pub fn answer(&self, packet: &Packet, answer: Answer) -> io::Result<()> {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let connection = connections
            .get(&packet.dev)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "volume not served"))?;
        match answer {
            Answer::Ready => kernel::ready(connection.root.as_fd(), packet.token),
            Answer::Fail => kernel::fail(connection.root.as_fd(), packet.token),
        }
    }

    /// Releases every waiting process and stops serving (shutdown): lookups of new names
    /// fail until the next plugin takes the volumes over; mounted repositories stay.
    pub fn release_all(&self) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for (_, connection) in connections.drain() {
            if let Err(e) = kernel::catatonic(connection.root.as_fd()) {
                tracing::warn!(target = %connection.path.display(), error = %e,
                    "could not release the waiters of an on-demand volume");
            }
        }
    }
}
