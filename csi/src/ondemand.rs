//! Every repository on demand, with autofs.
//!
//! One `automount` daemon (started with `setsid`, so it survives plugin restarts and never
//! shares the plugin's process group) serves two kinds of indirect program maps:
//!
//! ```text
//! <mount root>/auto            node map: key → the backend's client mount (one per node)
//!   └── sft.cern.ch            FUSE, appears on first access, expires when idle
//! <target> (per volume)        volume map: key → read-only bind of
//!   ├── sft.cern.ch              <mount root>/auto/sft.cern.ch     (latest), or
//!   └── cms.cern.ch              <mount root>/repos/cms.cern.ch@tag-v2 (pinned)
//! ```
//!
//! The per-volume autofs mount at the target never dies and is made shared; the kubelet binds
//! it into containers `rslave`. A lookup in a container's copy reaches the daemon, whose bind
//! at `<target>/<key>` propagates to the copy. Healing unmounts a dead mount (and the binds of
//! it); the next access mounts a fresh one. The map files live under the state directory; the
//! kernel names each volume's map file as its autofs mount's source, so published volumes are
//! still found through mountinfo.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::mount::table::{Mount, MountTable};
use crate::volume::{Repositories, VolumeSpec};

/// A failure of the on-demand machinery.
#[derive(Debug, thiserror::Error)]
pub enum AutofsError {
    /// A map or the master map could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The daemon could not be started or signalled.
    #[error("automount: {0}")]
    Daemon(String),
    /// The daemon did not mount the volume's map in time.
    #[error("automount did not mount {0} within 10 s")]
    NotMounted(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> AutofsError + '_ {
    move |source| AutofsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The autofs side of the plugin.
#[derive(Debug)]
pub struct Autofs {
    dir: PathBuf,
    auto_root: PathBuf,
    repos: PathBuf,
    timeout: Duration,
    node_map: String,
    /// Serialises master-map edits and daemon reloads.
    master: Mutex<()>,
}

impl Autofs {
    /// Autofs state under `state_dir/autofs`, the node map at `mount_root/auto` with the
    /// map program text `node_map`, idle expiry after `timeout`.
    pub fn new(state_dir: &Path, mount_root: &Path, node_map: String, timeout: Duration) -> Self {
        Self {
            dir: state_dir.join("autofs"),
            auto_root: mount_root.join("auto"),
            repos: mount_root.join("repos"),
            timeout,
            node_map,
            master: Mutex::new(()),
        }
    }

    fn master_path(&self) -> PathBuf {
        self.dir.join("auto.master")
    }

    fn pid_path(&self) -> PathBuf {
        self.dir.join("automount.pid")
    }

    fn volumes_dir(&self) -> PathBuf {
        self.dir.join("volumes")
    }

    /// Where the node's on-demand repositories appear.
    pub fn auto_root(&self) -> &Path {
        &self.auto_root
    }

    fn write_executable(path: &Path, text: &str) -> Result<(), AutofsError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).map_err(io_error(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(path))
    }

    /// A master-map line; `expire` false means the daemon never expires its mounts.
    fn master_line(&self, mount_point: &Path, map: &Path, expire: bool) -> String {
        let timeout = if expire {
            self.timeout.as_secs().max(1)
        } else {
            0
        };
        format!(
            "{} program:{} --timeout={timeout}\n",
            mount_point.display(),
            map.display(),
        )
    }

    /// Writes the node map and the master map and starts the daemon unless it runs.
    pub fn init(&self) -> Result<(), AutofsError> {
        let volumes = self.volumes_dir();
        std::fs::create_dir_all(&volumes).map_err(io_error(&volumes))?;
        std::fs::create_dir_all(&self.auto_root).map_err(io_error(&self.auto_root))?;
        let node_map = self.dir.join("node.map");
        Self::write_executable(&node_map, &self.node_map)?;
        let _guard = self.master.lock().unwrap_or_else(|p| p.into_inner());
        let master = self.master_path();
        // The node line is rewritten at every start (settings may have changed); volume
        // lines of published volumes are kept. The node's clients never expire behind our
        // back: binds of them in holders do not count as "busy" for autofs, so the plugin's
        // reaper, which counts them, unmounts idle clients instead.
        let node_prefix = format!("{} program:", self.auto_root.display());
        let existing = std::fs::read_to_string(&master).unwrap_or_default();
        let mut text = self.master_line(&self.auto_root, &node_map, false);
        for line in existing.lines().filter(|l| !l.starts_with(&node_prefix)) {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&master, text).map_err(io_error(&master))?;
        self.ensure_daemon()
    }

    fn daemon_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.pid_path()).ok()?;
        let pid = Pid::from_raw(text.trim().parse().ok()?);
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "automount").then_some(pid)
    }

    /// Whether the daemon runs.
    pub fn daemon_alive(&self) -> bool {
        self.daemon_pid().is_some()
    }

    /// Starts the daemon if it does not run (also used by the watchdog).
    pub fn ensure_daemon(&self) -> Result<(), AutofsError> {
        if self.daemon_alive() {
            return Ok(());
        }
        let log = self.dir.join("automount.log");
        // Appended to, so that the log of a daemon that died survives its restart.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_error(&log))?;
        let err_file = log_file.try_clone().map_err(io_error(&log))?;
        Command::new("setsid")
            .args(["automount", "-f", "-p"])
            .arg(self.pid_path())
            .arg(self.master_path())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| AutofsError::Daemon(format!("cannot start: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.daemon_alive() {
            if Instant::now() > deadline {
                return Err(AutofsError::Daemon(format!(
                    "did not start; see {}",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_for_mount(&self.auto_root)
    }

    fn reload(&self) -> Result<(), AutofsError> {
        let pid = self
            .daemon_pid()
            .ok_or_else(|| AutofsError::Daemon("not running".into()))?;
        kill(pid, Signal::SIGHUP).map_err(|e| AutofsError::Daemon(format!("reload: {e}")))
    }

    fn wait_for_mount(&self, mount_point: &Path) -> Result<(), AutofsError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(table) = MountTable::read()
                && table.at(mount_point).is_some_and(|m| m.fs_type == "autofs")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(AutofsError::NotMounted(mount_point.to_owned()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The map file of the volume published at `target`.
    fn volume_map(&self, label: &str) -> PathBuf {
        self.volumes_dir().join(format!("{label}.map"))
    }

    /// The map program of an on-demand volume: pinned keys bind their pinned instance,
    /// every other valid key binds the node's on-demand mount of that repository.
    pub fn volume_map_text(&self, spec: &VolumeSpec) -> String {
        let mut text = format!(
            "#!/bin/sh\n# Generated by hepbatch-csi; do not edit.\n# spec: {}\nkey=\"$1\"\ncase \"$key\" in\n",
            spec.canonical()
        );
        for (repository, pin) in &spec.pins {
            let instance = spec.instance(repository);
            text.push_str(&format!(
                "  {repository}) echo \"-fstype=bind,ro,nosuid,nodev :{}\"; exit 0 ;; # {pin}\n",
                self.repos.join(instance.dir_name()).display()
            ));
        }
        // The map runs in the daemon's process group, whose lookups never trigger automounts
        // ("oz mode"), so the node map's mount is triggered from a new session first; an
        // unknown key fails here and the lookup gets ENOENT.
        text.push_str(&format!(
            "  *[!a-z0-9.-]*|.*|*..*|-*|'') exit 1 ;;\nesac\nsetsid -w ls \"{auto}/$key/\" >/dev/null 2>&1 || exit 1\necho \"-fstype=bind,ro,nosuid,nodev :{auto}/$key\"\n",
            auto = self.auto_root.display()
        ));
        text
    }

    /// Reads the spec back from a volume's autofs mount (its source is the map file).
    pub fn published_spec(&self, mount: &Mount) -> Option<VolumeSpec> {
        if mount.fs_type != "autofs" {
            return None;
        }
        let map = Path::new(&mount.source);
        if map.parent() != Some(self.volumes_dir().as_path()) {
            return None;
        }
        let text = std::fs::read_to_string(map).ok()?;
        let canonical = text.lines().find_map(|l| l.strip_prefix("# spec: "))?;
        VolumeSpec::from_canonical(canonical).ok()
    }

    /// Publishes an on-demand volume at `target` (which exists and is not a mount point).
    pub fn publish(
        &self,
        label: &str,
        spec: &VolumeSpec,
        target: &Path,
    ) -> Result<(), AutofsError> {
        debug_assert!(spec.repositories == Repositories::OnDemand);
        let map = self.volume_map(label);
        Self::write_executable(&map, &self.volume_map_text(spec))?;
        {
            let _guard = self.master.lock().unwrap_or_else(|p| p.into_inner());
            let master = self.master_path();
            let mut text = std::fs::read_to_string(&master).map_err(io_error(&master))?;
            let line = self.master_line(target, &map, true);
            if !text.contains(&line) {
                text.push_str(&line);
                std::fs::write(&master, text).map_err(io_error(&master))?;
            }
            self.ensure_daemon()?;
            self.reload()?;
        }
        self.wait_for_mount(target)
    }

    /// Removes the volume at `target` from the master map (the caller has detached it).
    pub fn forget(&self, target: &Path, map: &Path) -> Result<(), AutofsError> {
        let _guard = self.master.lock().unwrap_or_else(|p| p.into_inner());
        let master = self.master_path();
        let text = std::fs::read_to_string(&master).map_err(io_error(&master))?;
        let prefix = format!("{} program:", target.display());
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&master, kept).map_err(io_error(&master))?;
        let _ = std::fs::remove_file(map);
        if self.daemon_alive() {
            self.reload()?;
        }
        Ok(())
    }

    /// Mounts made by the node map (on-demand repositories).
    pub fn node_mounts<'a>(&'a self, table: &'a MountTable) -> impl Iterator<Item = &'a Mount> {
        table
            .mounts()
            .iter()
            .filter(move |m| m.mount_point.parent() == Some(self.auto_root.as_path()))
    }

    /// Whether `mount` is a volume's autofs mount made by this plugin.
    pub fn is_volume_mount(&self, mount: &Mount) -> bool {
        mount.fs_type == "autofs"
            && Path::new(&mount.source).parent() == Some(self.volumes_dir().as_path())
    }
}
