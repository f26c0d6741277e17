//! A shard that reads `/cvmfs` in a loop and logs each change between readable and not,
//! and what its log says: how long `/cvmfs` was unreadable. The end-to-end tests and the
//! real-node benchmark disturb the CVMFS client or the plugin while it reads.

use std::time::Duration;

/// A shell loop that reads `file` every 50 ms and prints `ok <unix time>` or
/// `fail <unix time>` whenever that changes, until `/tmp/stop` exists; then `stopped`.
pub fn read_loop(file: &str) -> String {
    format!(
        "state=; while [ ! -e /tmp/stop ]; do \
           if cat {file} >/dev/null 2>&1; then now=ok; else now=fail; fi; \
           if [ \"$now\" != \"$state\" ]; then echo \"$now $(date +%s.%N)\"; state=$now; fi; \
           sleep 0.05; done; echo stopped"
    )
}

/// One stretch during which the loop could not read: from its first `fail` line to the
/// `ok` line after it (unix times in seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    /// When the loop first failed.
    pub from: f64,
    /// When it read again.
    pub to: f64,
}

impl Outage {
    /// How long it lasted.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64((self.to - self.from).max(0.0))
    }
}

/// Every finished outage in a log of [`read_loop`]; an outage still going at the end of
/// the log is not in the list.
pub fn outages(log: &str) -> Vec<Outage> {
    let mut failing_since: Option<f64> = None;
    let mut found = Vec::new();
    for (state, time) in log.lines().filter_map(|line| {
        let (state, time) = line.split_once(' ')?;
        Some((state, time.parse::<f64>().ok()?))
    }) {
        match state {
            "fail" => {
                failing_since.get_or_insert(time);
            }
            "ok" => {
                if let Some(from) = failing_since.take() {
                    found.push(Outage { from, to: time });
                }
            }
            _ => {}
        }
    }
    found
}

/// The longest outage in a log of [`read_loop`] (zero when there was none).
pub fn longest_outage(log: &str) -> Duration {
    outages(log)
        .iter()
        .map(Outage::duration)
        .max()
        .unwrap_or_default()
}

/// Whether the last state the log shows is readable.
pub fn reads_now(log: &str) -> bool {
    log.lines()
        .rev()
        .find(|l| l.starts_with("ok ") || l.starts_with("fail "))
        .is_some_and(|l| l.starts_with("ok "))
}

/// Kills (SIGKILL) every CVMFS client (`cvmfs2`, or the stand-in's `squashfuse`) whose
/// command line serves `repository` from the plugin's state (`…/repos/<repository>`);
/// how many. Real nodes share the host's PID namespace, so their processes are in our
/// `/proc`: with several nodes (or CSI mount tests) running, theirs match too.
pub fn kill_clients(repository: &str) -> usize {
    let suffix = format!("/repos/{repository}");
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let client = args
            .first()
            .is_some_and(|a| a.ends_with(b"cvmfs2") || a.ends_with(b"squashfuse"));
        if client
            && args.iter().any(|a| a.ends_with(suffix.as_bytes()))
            && nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_read_from_the_changes() {
        let log = "ok 10.0\nfail 11.0\nok 11.5\nfail 20.0\nok 22.25\nfail 30.0\n";
        assert_eq!(
            outages(log),
            vec![
                Outage {
                    from: 11.0,
                    to: 11.5
                },
                Outage {
                    from: 20.0,
                    to: 22.25
                }
            ]
        );
        assert_eq!(longest_outage(log), Duration::from_millis(2250));
        assert!(!reads_now(log));
        assert!(reads_now("ok 1.0\nfail 2.0\nok 3.0\nstopped\n"));
        assert_eq!(longest_outage("ok 1.0\n"), Duration::ZERO);
    }
}
