//! `hepbatch-csi`: the CVMFS CSI plugin (node and controller). See the library documentation for the design.

use std::time::Duration;

use clap::Parser;
use hepbatch_csi::config::Config;

/// How long blocking work (a mount, a probe of a hung client) may delay the exit after
/// the servers stopped: the process ends even when such a thread never returns.
const EXIT_GRACE: Duration = Duration::from_secs(1);

fn main() -> std::process::ExitCode {
    // Before any thread or socket exists: every file the plugin creates (the sockets above
    // all) is private to root from the moment it appears.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let config = Config::parse();
    hepbatch_runtime::logging::init(config.log_format);
    // The kernel treats our process group as the daemon of our on-demand volumes: it must
    // be ours alone, or the processes sharing it would never trigger a mount.
    if let Err(e) = own_process_group() {
        tracing::error!(error = %e, "cannot start a process group of our own");
        return std::process::ExitCode::FAILURE;
    }
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hepbatch-csi: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        hepbatch_csi::server::run(config, hepbatch_runtime::shutdown::on_signals()).await
    });
    runtime.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "hepbatch-csi stopped");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Makes this process the leader of a new process group unless it leads one already (as
/// a session leader or a container's first process does).
fn own_process_group() -> nix::Result<()> {
    use nix::unistd::{Pid, getpgrp, getpid, setpgid};
    if getpgrp() == getpid() {
        return Ok(());
    }
    setpgid(Pid::from_raw(0), Pid::from_raw(0))
}

/// One descriptor per on-demand volume is held open: take the hard limit as the soft one.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
    }
}
