//! Component processes: started with their output in a log file, stopped on drop, and
//! never outliving the process that started them.
//!
//! Three things make sure no component is left behind:
//! - [`Component`]'s `Drop` stops it (SIGTERM, then SIGKILL after a grace period), which
//!   also runs when a test panics and unwinds;
//! - a signal thread catches SIGINT, SIGTERM and SIGHUP, stops every registered component,
//!   removes registered directories and exits (Ctrl-C on `testbed up` or on `cargo test`);
//! - every component gets `PR_SET_PDEATHSIG=SIGKILL`, so even a SIGKILLed parent takes its
//!   cluster with it. The kernel ties that signal to the *thread* that forked the child,
//!   so all components are forked from one spawner thread that lives as long as the
//!   process (test threads come and go).
//!
//! Components run in their own process group, so a terminal's Ctrl-C reaches only us and
//! we stop them in order.
//!
//! Processes that escape both the process group and the death signal (a real node's
//! container shims daemonize) are found another way: the signal cleanup also kills every
//! process in a registered cgroup tree or mount namespace, then removes the cgroups.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpid, getppid, write};

use super::TestbedError;
use super::node::{cgroups, namespaces};

/// How long a component gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running component of the testbed (etcd, kube-apiserver, ...).
#[derive(Debug)]
pub struct Component {
    name: String,
    child: Child,
    log: PathBuf,
    registration: u64,
}

impl Component {
    /// Starts `program` with `args`, writing stdout and stderr to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Self, TestbedError> {
        let mut command = Command::new(program);
        command.args(args);
        Self::spawn_command(name, command, log_dir, &[])
    }

    /// Starts `command` like [`Component::spawn`]; before it execs, the child writes its
    /// pid into each of `cgroup_procs` (`cgroup.procs` files), so it and everything it
    /// forks start inside those cgroups, with no window in which they run elsewhere.
    pub fn spawn_command(
        name: &str,
        mut command: Command,
        log_dir: &Path,
        cgroup_procs: &[PathBuf],
    ) -> Result<Self, TestbedError> {
        let log = log_dir.join(format!("{name}.log"));
        let io_err = |what: String| move |source| TestbedError::Io { what, source };
        let out = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("duplicating {}", log.display())))?;
        let placement = cgroup_procs
            .iter()
            .map(|path| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(format!("opening {}", path.display())))
            })
            .collect::<Result<Vec<File>, _>>()?;
        let program = command.get_program().to_string_lossy().into_owned();
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = spawn_tied_to_process(command, placement)
            .map_err(io_err(format!("starting {name} ({program})")))?;
        let registration = register(Registered::Process(child.id()));
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            registration,
        })
    }

    /// The component's name, as used for its log file.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id of the component.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the component's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(exit description)` when the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(format!("unknown state: {error}")),
        }
    }

    /// Asks the component to stop (SIGTERM to its process group) without waiting.
    pub fn request_stop(&mut self) {
        if self.exited().is_none() {
            signal_group(self.child.id(), Signal::SIGTERM);
        }
    }

    /// Waits until `deadline` for the component to exit, then kills it.
    pub fn finish_stop(&mut self, deadline: Instant) {
        while self.exited().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if self.exited().is_none() {
            signal_group(self.child.id(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
        // Children of the component (none expected) share its process group.
        signal_group(self.child.id(), Signal::SIGKILL);
        unregister(self.registration);
    }

    /// The last `lines` lines of the component's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.request_stop();
        self.finish_stop(Instant::now() + STOP_GRACE);
    }
}

/// Stops several components at once: all get SIGTERM, then share one grace period.
pub fn stop_all(components: &mut [Component]) {
    for component in components.iter_mut().rev() {
        component.request_stop();
    }
    let deadline = Instant::now() + STOP_GRACE;
    for component in components.iter_mut().rev() {
        component.finish_stop(deadline);
    }
}

/// The last `lines` lines of a text file (empty when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends `signal` to the process group `pid` leads. The group id is the pid of a child we
/// started in a group of its own and have not yet reaped, or reaped just now (then the
/// call fails with ESRCH and nothing happens).
fn signal_group(pid: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(pid) else {
        return;
    };
    let _ = killpg(Pid::from_raw(pid), signal);
}

/// Something that must not outlive this process: a component, a file or a directory, or
/// a real node's cgroups and mount namespace.
#[derive(Debug)]
pub enum Registered {
    /// A component's process (group) id.
    Process(u32),
    /// A file or directory to remove.
    Path(PathBuf),
    /// The same cgroup tree in each hierarchy (`/sys/fs/cgroup/<controller>/<root>`):
    /// kill every process in it, then remove its directories bottom-up.
    CgroupTree(Vec<PathBuf>),
    /// A mount namespace, by inode number (`stat /proc/<pid>/ns/mnt`): kill every
    /// process in it.
    MountNamespace(u64),
}

fn registry() -> &'static Mutex<HashMap<u64, Registered>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Registered>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        install_signal_cleanup();
        Mutex::new(HashMap::new())
    })
}

/// Registers something for cleanup on a fatal signal; returns a handle for [`unregister`].
pub fn register(item: Registered) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut map = registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.insert(id, item);
    id
}

/// Removes a registration once its owner has cleaned up itself.
pub fn unregister(id: u64) {
    let mut map = registry()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.remove(&id);
}

/// A registration for the signal cleanup that ends when the guard is dropped.
#[derive(Debug)]
pub struct RegistrationGuard(u64);

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        unregister(self.0);
    }
}

/// Starts a process that a test or benchmark runs beside the testbed (the operator under
/// test): in its own process group, which the signal cleanup stops while the guard lives,
/// so that a run stopped by a signal does not leave it behind. Set `kill_on_drop` on
/// `command` to stop it with its `Child` too.
pub fn spawn_registered(
    command: &mut tokio::process::Command,
) -> io::Result<(tokio::process::Child, RegistrationGuard)> {
    let child = command.process_group(0).spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the process exited at once"))?;
    Ok((child, RegistrationGuard(register(Registered::Process(pid)))))
}

fn install_signal_cleanup() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    thread::Builder::new()
        .name("testbed-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("testbed: signal {signal} received, stopping the cluster");
                cleanup_everything();
                std::process::exit(128 + signal);
            }
        })
        .ok();
}

fn cleanup_everything() {
    let items: Vec<Registered> = {
        let mut map = registry()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.drain().map(|(_, item)| item).collect()
    };
    for item in &items {
        if let Registered::Process(pid) = item {
            signal_group(*pid, Signal::SIGTERM);
        }
    }
    thread::sleep(Duration::from_secs(1));
    for item in &items {
        if let Registered::Process(pid) = item {
            signal_group(*pid, Signal::SIGKILL);
        }
    }
    // What escaped the process groups (container shims, containers) goes next, then the
    // cgroups it lived in, then the files.
    let deadline = Instant::now() + STOP_GRACE;
    for item in &items {
        if let Registered::MountNamespace(id) = item {
            namespaces::kill_mount_namespace(*id, deadline);
        }
    }
    for item in &items {
        if let Registered::CgroupTree(dirs) = item {
            let _ = cgroups::kill_and_remove(dirs, deadline);
        }
    }
    for item in &items {
        if let Registered::Path(path) = item {
            let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
        }
    }
}

type SpawnRequest = (Command, Vec<File>, mpsc::Sender<io::Result<Child>>);

/// Forks `command` from the long-lived spawner thread, in its own process group, with
/// SIGKILL as its parent-death signal, placed into the cgroups whose `cgroup.procs`
/// files `placement` holds open.
fn spawn_tied_to_process(command: Command, placement: Vec<File>) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut command, placement, reply) in incoming {
                    let _ = reply.send(spawn_in_own_group(&mut command, &placement));
                }
            })
            .ok();
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, placement, reply))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

fn spawn_in_own_group(command: &mut Command, placement: &[File]) -> io::Result<Child> {
    let parent = std::process::id();
    // Our own descriptors of the `cgroup.procs` files, moved into the closure: they stay
    // open as long as the command and close in the child at exec (O_CLOEXEC).
    let cgroup_procs = placement
        .iter()
        .map(File::try_clone)
        .collect::<io::Result<Vec<File>>>()?;
    command.process_group(0);
    let in_child = move || -> io::Result<()> {
        set_pdeathsig(Signal::SIGKILL)?;
        // The parent may have died between fork and prctl.
        if u32::try_from(getppid().as_raw()).ok() != Some(parent) {
            return Err(io::Error::other("parent exited during start"));
        }
        if !cgroup_procs.is_empty() {
            let mut digits = [0u8; 20];
            let start = format_decimal(getpid().as_raw().unsigned_abs(), &mut digits);
            let text = &digits[start..];
            for file in &cgroup_procs {
                write(file, text)?;
            }
        }
        Ok(())
    };
    #[allow(unsafe_code)]
    // SAFETY: `in_child` runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid, getpid, write) on memory it owns (descriptors opened
    // before the fork and a stack buffer); it allocates nothing.
    unsafe {
        command.pre_exec(in_child);
    }
    command.spawn()
}

/// Writes `value` in decimal at the end of `buffer` and returns where it starts; no
/// allocation, so it may run between fork and exec.
fn format_decimal(mut value: u32, buffer: &mut [u8; 20]) -> usize {
    let mut start = buffer.len();
    loop {
        start -= 1;
        // `value % 10` is below 10, so the cast cannot truncate.
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_formatting_matches_to_string() {
        for value in [0, 7, 10, 4_194_303, u32::MAX] {
            let mut buffer = [0u8; 20];
            let start = format_decimal(value, &mut buffer);
            assert_eq!(&buffer[start..], value.to_string().as_bytes());
        }
    }
}
