//! `testbed up --real-node` stopped from the outside: with Ctrl-C it leaves no process,
//! mount, cgroup, namespace or file of the node behind, even with a pod running; after a
//! SIGKILL the containers and their shims outlive it in the node's cgroups (they
//! daemonize), and the cleanup every later start runs removes them. Needs root.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is a failed test

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hepbatch_tests::testbed::Binaries;
use hepbatch_tests::testbed::node::{ANALYSIS_BASE_IMAGE, remove_stale_nodes};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What `testbed up` printed about its real node.
struct Launched {
    child: Child,
    kubeconfig: PathBuf,
    work_dir: PathBuf,
    log_dir: PathBuf,
    cgroup_root: String,
    mount_ns: u64,
    net_ns: u64,
}

fn launch(dir: &Path) -> Launched {
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["up", "--real-node", "--nodes", "0", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start testbed up");
    let stdout = child.stdout.take().expect("piped stdout");
    let (mut work_dir, mut log_dir, mut cgroup_root, mut namespaces) = (None, None, None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read testbed output");
        let line = line.trim();
        if let Some(path) = line.strip_prefix("work directory: ") {
            work_dir = Some(PathBuf::from(path));
        }
        if let Some(path) = line.strip_prefix("logs: ") {
            log_dir = Some(PathBuf::from(path));
        }
        if let Some(root) = line.strip_prefix("cgroup root: /") {
            cgroup_root = Some(root.to_owned());
        }
        if let Some(ids) = line.strip_prefix("namespaces: mnt ") {
            let (mount, net) = ids.split_once(", net ").expect("mnt and net ids");
            namespaces = Some((mount.parse().unwrap(), net.parse().unwrap()));
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    let (mount_ns, net_ns) = namespaces.expect("testbed up printed no namespaces");
    Launched {
        child,
        kubeconfig,
        work_dir: work_dir.expect("testbed up printed no work directory"),
        log_dir: log_dir.expect("testbed up printed no log directory"),
        cgroup_root: cgroup_root.expect("testbed up printed no cgroup root"),
        mount_ns,
        net_ns,
    }
}

fn kubectl(launched: &Launched, args: &[&str]) -> String {
    let output = Command::new(Binaries::locate().unwrap().path("kubectl"))
        .arg("--kubeconfig")
        .arg(&launched.kubeconfig)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Starts a long-running pod and waits until it runs, so containers and shims exist.
fn run_pod(launched: &Launched) {
    kubectl(
        launched,
        &[
            "run",
            "worker",
            "--image",
            ANALYSIS_BASE_IMAGE,
            "--restart=Never",
            "--",
            "sleep",
            "3600",
        ],
    );
    kubectl(
        launched,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/worker",
            "--timeout=60s",
        ],
    );
}

fn send(child: &Child, signal: Signal) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    kill(Pid::from_raw(pid), signal).expect("kill failed");
}

fn wait_for_exit(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait for testbed").is_none() {
        assert!(Instant::now() < deadline, "testbed up did not exit in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Processes in the namespace with inode `id` that are the node's: namespace numbers
/// are reused once freed (other tests and builds make namespaces too), so a match
/// counts only with the node's cgroup root or work directory in sight.
fn pids_in_namespace(launched: &Launched, kind: &str, id: u64) -> Vec<String> {
    let work = launched.work_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| std::fs::metadata(e.path().join("ns").join(kind)).is_ok_and(|m| m.ino() == id))
        .filter(|e| {
            let cgroups = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
            let mounts = std::fs::read_to_string(e.path().join("mountinfo")).unwrap_or_default();
            cgroups.contains(&format!("/{}", launched.cgroup_root)) || mounts.contains(&work)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|hierarchy| hierarchy.path().join(root))
        .chain([Path::new("/sys/fs/cgroup").join(root)])
        .filter(|dir| dir.exists())
        .collect()
}

/// Everything of the node still on the machine (allowing a few seconds for reaping).
fn leftovers(launched: &Launched) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = Vec::new();
        for (kind, id) in [("mnt", launched.mount_ns), ("net", launched.net_ns)] {
            let pids = pids_in_namespace(launched, kind, id);
            if !pids.is_empty() {
                left.push(format!("{kind} namespace held by {pids:?}"));
            }
        }
        left.extend(
            cgroup_dirs(&launched.cgroup_root)
                .into_iter()
                .map(|d| format!("cgroup {}", d.display())),
        );
        let work = launched.work_dir.to_string_lossy().into_owned();
        left.extend(processes_mentioning(&work));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        left.extend(
            mounts
                .lines()
                .filter(|l| l.contains(&work))
                .map(str::to_owned),
        );
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ctrl_c_with_a_running_pod_leaves_nothing_of_the_node_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut launched = launch(dir.path());
    run_pod(&launched);
    assert!(
        !cgroup_dirs(&launched.cgroup_root).is_empty(),
        "the node's cgroups exist while it runs"
    );
    assert!(
        !pids_in_namespace(&launched, "mnt", launched.mount_ns).is_empty(),
        "the node's mount namespace is in use while it runs"
    );

    send(&launched.child, Signal::SIGINT);
    wait_for_exit(&mut launched.child, Duration::from_secs(60));
    let left = leftovers(&launched);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    assert!(!launched.work_dir.exists(), "work directory left behind");
    assert!(!launched.log_dir.exists(), "log directory left behind");
}

#[test]
fn after_a_sigkill_the_next_start_removes_the_orphaned_containers() {
    let dir = tempfile::tempdir().unwrap();
    let mut launched = launch(dir.path());
    run_pod(&launched);

    send(&launched.child, Signal::SIGKILL);
    wait_for_exit(&mut launched.child, Duration::from_secs(10));
    // The kubelet and containerd die with the testbed (parent-death signal); the shim
    // and its containers daemonized and are still there, in the node's cgroups.
    std::thread::sleep(Duration::from_secs(1));
    let shims: Vec<String> = processes_mentioning(&launched.work_dir.to_string_lossy())
        .into_iter()
        .filter(|p| p.contains("containerd-shim"))
        .collect();
    assert!(!shims.is_empty(), "no shim outlived the SIGKILL");
    assert!(!cgroup_dirs(&launched.cgroup_root).is_empty());

    remove_stale_nodes().unwrap();
    let left = leftovers(&launched);
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    // Files cannot be removed by a SIGKILLed process; clean up for it.
    let _ = std::fs::remove_dir_all(&launched.work_dir);
    let _ = std::fs::remove_dir_all(&launched.log_dir);
}
