//! The operator process: logging, the admin server, waiting for the AnalysisJob CRD
//! ([`crate::crd`]), leader election ([`crate::leader`]), the controller, and a graceful
//! stop on SIGTERM or SIGINT in every one of these states (stop reconciling, release the
//! Lease, exit 0). Losing the Lease ends the process with a failure so that a supervisor
//! restarts it as a standby.
//!
//! Logging, signals and the admin server are [`hepbatch_runtime`]'s, shared with the CSI
//! plugin; this module only wires them to the operator's client, metrics and readiness.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hepbatch_runtime::CancellationToken;
use hepbatch_runtime::admin::{AdminError, AdminServer, Endpoints};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::error;

use crate::cli::Args;
use crate::config::{ConfigWatch, OperatorConfig};
use crate::controller::{self, Namespaces, Scope};
use crate::crd::{self, CrdError};
use crate::leader::Elector;
use crate::metrics::Metrics;

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
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The Tokio runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
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
    hepbatch_runtime::logging::init(args.log_format);
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

/// `/readyz` and `/healthz` follow `ready` (see [`controller::run`]); `/metrics` serves
/// `metrics`.
fn endpoints(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Endpoints {
    Endpoints::new(
        move || {
            if ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("watches not synced".to_owned())
            }
        },
        move || metrics.encode().ok(),
    )
}

/// Serves the admin endpoints until `stop`; a failure is logged, the operator goes on.
async fn serve_admin(admin: AdminServer, endpoints: Endpoints, stop: CancellationToken) {
    if let Err(error) = admin.serve(endpoints, stop).await {
        error!(%error, "admin server failed");
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
    let stop = hepbatch_runtime::shutdown::on_signals();

    let admin = AdminServer::bind(args.metrics_address).await?;
    let admin_endpoints = endpoints(metrics.clone(), ready.clone());
    tokio::spawn(serve_admin(admin, admin_endpoints, stop.clone()));

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
        () = stop.cancelled() => return Ok(()),
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
        controller::run(options, stop.cancelled_owned()).await;
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
    elector
        .run_while_leading(&stop, |leading: CancellationToken| async move {
            metrics.leader.set(1);
            ready.store(false, Ordering::SeqCst);
            let options = controller::Options {
                client,
                scope,
                config,
                metrics: metrics.clone(),
                ready,
                reporter_instance: identity,
            };
            controller::run(options, leading.cancelled_owned()).await;
            metrics.leader.set(0);
        })
        .await?;
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "hepbatch-operator".to_owned());
    format!("{host}-{}", std::process::id())
}
