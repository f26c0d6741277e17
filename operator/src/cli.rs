//! The operator process: flags and environment, logging, the admin server, waiting for
//! the AnalysisJob CRD ([`crate::crd`]), leader election, the controller, and a graceful
//! stop on SIGTERM or SIGINT in every one of these states (stop reconciling, release the
//! Lease, exit 0). Losing the Lease ends the process with a failure so that a supervisor
//! restarts it as a standby.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use futures::FutureExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use tracing::{error, info};

use crate::admin::{self, AdminState};
use crate::config::{ConfigWatch, OperatorConfig};
use crate::controller::{self, DEFAULT_MAX_CONCURRENT_RECONCILES, Namespaces, Scope};
use crate::crd::{self, CrdError};
use crate::leader::Elector;
use crate::metrics::Metrics;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `hepbatch-operator`; each has an environment variable too.
#[derive(Debug, Parser)]
#[command(
    name = "hepbatch-operator",
    version,
    about = "Runs AnalysisJobs as Indexed Jobs"
)]
pub struct Args {
    /// Kubeconfig file; absent: in-cluster config or the default kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces to watch, comma-separated; absent: all namespaces.
    #[arg(long, env = "HEPBATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// AnalysisJobs reconciled at once (in each watched namespace); bounds the operator's
    /// connections and memory when many AnalysisJobs change together.
    #[arg(
        long,
        env = "HEPBATCH_MAX_CONCURRENT_RECONCILES",
        default_value_t = DEFAULT_MAX_CONCURRENT_RECONCILES
    )]
    pub max_concurrent_reconciles: NonZeroU16,
    /// Log format.
    #[arg(long, env = "HEPBATCH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Address of `/livez`, `/readyz` and `/metrics`.
    #[arg(long, env = "HEPBATCH_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Disables leader election (only for a single replica).
    #[arg(long, env = "HEPBATCH_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "HEPBATCH_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "HEPBATCH_LEASE_NAME", default_value = "hepbatch-operator")]
    pub lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, env = "HEPBATCH_LEASE_DURATION_SECONDS", default_value_t = 10)]
    pub lease_duration_seconds: u64,
    /// Identity in the Lease; absent: `$POD_NAME`, else host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Cluster configuration file (platforms, CVMFS provider, GPU runtime); re-read when it
    /// changes. Absent: the built-in defaults.
    #[arg(long, env = "HEPBATCH_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Why the operator stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kubeconfig could not be read.
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: kube::config::KubeconfigError,
    },
    /// No client could be built.
    #[error("connecting to the apiserver: {0}")]
    Client(#[from] kube::Error),
    /// Client configuration failed.
    #[error("configuring the client: {0}")]
    ClientConfig(#[from] kube::config::InferConfigError),
    /// Client configuration from the kubeconfig failed.
    #[error("configuring the client from the kubeconfig: {0}")]
    KubeconfigConfig(#[from] kube::config::KubeconfigError),
    /// The admin server could not start.
    #[error("serving {address}: {source}")]
    Admin {
        /// The address.
        address: SocketAddr,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The Tokio runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    /// Leadership was lost.
    #[error(transparent)]
    Leader(#[from] crate::leader::LeaderError),
    /// The cluster configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The AnalysisJob CRD could not be waited for.
    #[error(transparent)]
    Crd(#[from] CrdError),
}

/// Runs the operator with `args` and returns the process exit code.
pub fn main(args: Args) -> ExitCode {
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(error = %RunError::Runtime(error), "cannot start");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "stopped");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, never in a file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn client(args: &Args) -> Result<Client, RunError> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| RunError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            error!(%error, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM; stopping"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT; stopping"),
    }
}

async fn run(args: Args) -> Result<(), RunError> {
    let config = match &args.config {
        Some(path) => ConfigWatch::start(path.clone())?,
        None => ConfigWatch::fixed(OperatorConfig::default()),
    };
    let client = client(&args).await?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    }
    .shared();
    tokio::spawn(async move {
        termination().await;
        let _ = stop_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(args.metrics_address)
        .await
        .map_err(|source| RunError::Admin {
            address: args.metrics_address,
            source,
        })?;
    // The address really bound: a configured port 0 means any free one.
    let address = listener.local_addr().unwrap_or(args.metrics_address);
    info!(%address, "admin server listening");
    let admin_state = AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let admin_stopped = stopped.clone();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, admin::router(admin_state))
            .with_graceful_shutdown(admin_stopped)
            .await
        {
            error!(%error, "admin server failed");
        }
    });

    let namespaces = if args.namespaces.is_empty() {
        Namespaces::All
    } else {
        Namespaces::Only(args.namespaces.clone())
    };
    let scope = Scope {
        namespaces,
        max_concurrent_reconciles: args.max_concurrent_reconciles,
    };
    let identity = args.identity.clone().unwrap_or_else(default_identity);

    // Without the CRD no watch can start; wait for it, and still stop on a signal.
    tokio::select! {
        waited = crd::wait_established(client.clone()) => waited?,
        () = stopped.clone() => return Ok(()),
    }

    if args.no_leader_election {
        let options = controller::Options {
            client,
            scope,
            config,
            metrics,
            ready,
            reporter_instance: identity,
        };
        controller::run(options, stopped).await;
        return Ok(());
    }

    let lease_duration = Duration::from_secs(args.lease_duration_seconds.max(2));
    let elector = Elector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        lease_duration,
        (lease_duration / 5).max(Duration::from_millis(500)),
    );
    // A standby is healthy and ready: it is doing its job by waiting.
    ready.store(true, Ordering::SeqCst);
    tokio::select! {
        () = elector.acquire() => {}
        () = stopped.clone() => return Ok(()),
    }
    metrics.leader.set(1);
    ready.store(false, Ordering::SeqCst);

    let (lost_tx, lost_rx) = watch::channel(false);
    let holder = elector.clone();
    let holding = tokio::spawn(async move {
        let lost = holder.hold().await;
        let _ = lost_tx.send(true);
        lost
    });
    let lost = {
        let mut lost_rx = lost_rx.clone();
        async move {
            let _ = lost_rx.wait_for(|lost| *lost).await;
        }
    };
    let stop_or_lost = {
        let stopped = stopped.clone();
        async move {
            tokio::select! {
                () = stopped => {}
                () = lost => {}
            }
        }
    };
    let options = controller::Options {
        client,
        scope,
        config,
        metrics: metrics.clone(),
        ready,
        reporter_instance: identity,
    };
    controller::run(options, stop_or_lost).await;
    metrics.leader.set(0);
    if *lost_rx.borrow() {
        return match holding.await {
            Ok(lost) => Err(lost.into()),
            Err(_) => Ok(()),
        };
    }
    holding.abort();
    elector.release().await;
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "hepbatch-operator".to_owned());
    format!("{host}-{}", std::process::id())
}
