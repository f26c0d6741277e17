//! `testbed`: the hepbatch test cluster for humans.
//!
//! `testbed build` builds the components (once; cached outside the clone).
//! `testbed up` starts a cluster, writes its kubeconfig and stays up until Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hepbatch_tests::testbed::{self, Binaries, Registered, Testbed, TestbedOptions};

#[derive(Parser)]
#[command(about = "A real Kubernetes control plane with fake (kwok) CPU and GPU nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the component binaries if the cache does not have them; print their directory.
    Build,
    /// Start a cluster and keep it running until Ctrl-C.
    Up {
        /// Where to write the admin kubeconfig.
        #[arg(long, env = "HEPBATCH_TESTBED_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
}

fn default_kubeconfig() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("hepbatch/testbed/kubeconfig")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let binaries = match Binaries::ensure_built() {
        Ok(binaries) => binaries,
        Err(error) => {
            eprintln!("testbed: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Build => {
            println!("{}", binaries.dir().display());
            ExitCode::SUCCESS
        }
        Command::Up { kubeconfig } => {
            up(binaries, kubeconfig.unwrap_or_else(default_kubeconfig)).await
        }
    }
}

async fn up(binaries: Binaries, kubeconfig: PathBuf) -> ExitCode {
    eprintln!(
        "testbed: starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok ..."
    );
    let testbed = match Testbed::start_with(binaries, TestbedOptions::default()).await {
        Ok(testbed) => testbed,
        Err(error) => {
            eprintln!("testbed: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(parent) = kubeconfig.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(error) = std::fs::copy(testbed.kubeconfig(), &kubeconfig) {
        eprintln!("testbed: cannot write {}: {error}", kubeconfig.display());
        return ExitCode::FAILURE;
    }
    let registration = testbed::register(Registered::Path(kubeconfig.clone()));
    let nodes: Vec<&str> = testbed.nodes().iter().map(|n| n.name.as_str()).collect();
    println!(
        "testbed ready in {:.1?}: {} with nodes {}\n\n  export KUBECONFIG={}\n  export PATH={}:$PATH\n  kubectl get nodes\n\nwork directory: {}\nlogs: {}\nCtrl-C stops the cluster and removes its files.",
        testbed.started_in(),
        testbed.server(),
        nodes.join(", "),
        kubeconfig.display(),
        testbed.binaries().dir().display(),
        testbed.work_dir().display(),
        testbed.log_dir().display(),
    );
    // The testbed's signal handler stops every component and removes every registered
    // file on SIGINT/SIGTERM/SIGHUP; until then, serve.
    let _ = tokio::signal::ctrl_c().await;
    drop(testbed);
    let _ = std::fs::remove_file(&kubeconfig);
    testbed::unregister(registration);
    ExitCode::SUCCESS
}
