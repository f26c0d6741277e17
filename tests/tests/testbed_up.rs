//! `testbed up` as a person uses it: it prints a kubeconfig the built kubectl can use,
//! and stopping it — with Ctrl-C, or even with SIGKILL — leaves no component process and
//! no file of the cluster behind.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test code: a failed expectation is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hepbatch_tests::testbed::Binaries;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

struct Launched {
    child: Child,
    kubeconfig: PathBuf,
    work_dir: PathBuf,
    log_dir: PathBuf,
}

/// Starts `testbed up` and reads its output until it reports the cluster ready.
fn launch(dir: &Path) -> Launched {
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .args(["up", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start testbed up");
    let stdout = child.stdout.take().expect("piped stdout");
    let (mut work_dir, mut log_dir) = (None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read testbed output");
        if let Some(path) = line.strip_prefix("work directory: ") {
            work_dir = Some(PathBuf::from(path));
        }
        if let Some(path) = line.strip_prefix("logs: ") {
            log_dir = Some(PathBuf::from(path));
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    Launched {
        child,
        kubeconfig,
        work_dir: work_dir.expect("testbed up printed no work directory"),
        log_dir: log_dir.expect("testbed up printed no log directory"),
    }
}

/// Processes whose command line mentions `needle` (every component's does: its
/// certificates, kubeconfig or data live in the work directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for testbed") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "testbed up did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_nothing_left(launched: &Launched) {
    let needle = launched.work_dir.to_string_lossy().into_owned();
    // Orphans killed by the kernel may take a moment to be reaped by init.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = processes_mentioning(&needle);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_mentioning(&needle);
    }
    assert!(
        left.is_empty(),
        "component processes left behind:\n{}",
        left.join("\n")
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    assert!(
        !mounts.contains(&needle),
        "a mount below the work directory is left"
    );
}

fn send(child: &Child, signal: Signal) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    kill(Pid::from_raw(pid), signal).expect("kill failed");
}

#[test]
fn up_serves_kubectl_and_ctrl_c_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut launched = launch(dir.path());
    assert!(launched.work_dir.is_dir());

    let kubectl = Binaries::locate().unwrap().path("kubectl");
    let output = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&launched.kubeconfig)
        .args(["get", "nodes", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let nodes = String::from_utf8_lossy(&output.stdout);
    assert!(nodes.contains("node/gpu-a100-0"), "nodes: {nodes}");

    send(&launched.child, Signal::SIGINT);
    wait_for_exit(&mut launched.child, Duration::from_secs(30));
    assert_nothing_left(&launched);
    assert!(!launched.work_dir.exists(), "work directory left behind");
    assert!(!launched.log_dir.exists(), "log directory left behind");
    assert!(!launched.kubeconfig.exists(), "kubeconfig left behind");
}

#[test]
fn sigkilled_launcher_takes_its_components_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut launched = launch(dir.path());
    send(&launched.child, Signal::SIGKILL);
    wait_for_exit(&mut launched.child, Duration::from_secs(10));
    assert_nothing_left(&launched);
    // Files cannot be removed by a SIGKILLed process; clean up for it.
    let _ = std::fs::remove_dir_all(&launched.work_dir);
    let _ = std::fs::remove_dir_all(&launched.log_dir);
}
