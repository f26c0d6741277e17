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

use super::TestbedError;

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
        let log = log_dir.join(format!("{name}.log"));
        let io_err = |what: String| move |source| TestbedError::Io { what, source };
        let out = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("duplicating {}", log.display())))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_tied_to_process(command)
            .map_err(io_err(format!("starting {name} ({})", program.display())))?;
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
            signal_group(self.child.id(), libc::SIGTERM);
        }
    }

    /// Waits until `deadline` for the component to exit, then kills it.
    pub fn finish_stop(&mut self, deadline: Instant) {
        while self.exited().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if self.exited().is_none() {
            signal_group(self.child.id(), libc::SIGKILL);
            let _ = self.child.wait();
        }
        // Children of the component (none expected) share its process group.
        signal_group(self.child.id(), libc::SIGKILL);
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

#[allow(unsafe_code)]
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; the group id is the pid of a
    // child we started with setpgid(0, 0) and have not yet reaped, or reaped just now (in
    // which case the call fails with ESRCH and nothing happens).
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Something that must not outlive this process: a component, a file or a directory.
#[derive(Debug)]
pub enum Registered {
    /// A component's process (group) id.
    Process(u32),
    /// A file or directory to remove.
    Path(PathBuf),
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
            signal_group(*pid, libc::SIGTERM);
        }
    }
    thread::sleep(Duration::from_secs(1));
    for item in &items {
        match item {
            Registered::Process(pid) => signal_group(*pid, libc::SIGKILL),
            Registered::Path(path) => {
                let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
            }
        }
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Forks `command` from the long-lived spawner thread, in its own process group, with
/// SIGKILL as its parent-death signal.
fn spawn_tied_to_process(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(spawn_in_own_group(&mut command));
                }
            })
            .ok();
        Mutex::new(requests)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn spawn_in_own_group(command: &mut Command) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (setpgid, prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::other("parent exited during start"));
            }
            Ok(())
        });
    }
    command.spawn()
}
