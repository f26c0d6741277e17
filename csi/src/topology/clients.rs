//! The client processes behind instance mounts.
//!
//! A client that is replaced while it still runs (hung, or moved off its pin) must stop:
//! a live `cvmfs2` keeps its workspace lock, and the new client for the same repository and
//! workspace would wait for it forever. Clients are found by the mount directory they were
//! started with (every backend passes it as an argument), read from `/proc`.

use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::info;

/// Kills (SIGKILL) every process started with `dir` as an argument; returns how many.
pub fn stop_clients(dir: &Path) -> usize {
    let wanted = dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut stopped = 0;
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
            && kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
        {
            stopped += 1;
        }
    }
    if stopped > 0 {
        info!(dir = %dir.display(), stopped, "stopped the clients of a replaced mount");
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_found_by_their_directory_argument() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .arg(dir.path())
            .spawn()
            .unwrap_or_else(|_| {
                std::process::Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .unwrap()
            });
        // `sleep 60 <dir>` fails at once on GNU sleep; use a shell that keeps the argument.
        let _ = child.kill();
        let _ = child.wait();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 60", "client"])
            .arg(dir.path())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(stop_clients(dir.path()), 1);
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert_eq!(stop_clients(dir.path()), 0);
    }
}
