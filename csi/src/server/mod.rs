//! Runtime wiring: sockets, gRPC services, the watchdog, the admin HTTP server, shutdown.
//!
//! `--services` chooses what runs: the node side (the DaemonSet), the controller (a
//! Deployment next to the external-provisioner) or both. Start-up order of the node side:
//! make the mount root shared, take over the on-demand volumes and run one healing pass
//! (after a restart this repairs what died with the previous process before anyone asks),
//! start serving on-demand lookups, then the sockets. Every accepted connection goes
//! through [`authority::LocalAuthority`], so clients that send a socket path as HTTP/2
//! authority (the kubelet's plugin watcher, grpc-core) are served like any other.
//!
//! On SIGTERM the sockets close and are removed and the on-demand volumes are released
//! (waiting lookups fail, new names fail until the next plugin takes over); mounts stay,
//! so running pods keep their /cvmfs.

pub mod authority;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use hepbatch_runtime::CancellationToken;
use hepbatch_runtime::admin::{AdminError, AdminServer, Endpoints};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tracing::info;

use crate::config::Config;
use crate::controller::ControllerService;
use crate::identity::{IdentityService, Readiness};
use crate::metrics::Metrics;
use crate::node::NodeService;
use crate::proto::csi::controller_server::ControllerServer;
use crate::proto::csi::identity_server::IdentityServer;
use crate::proto::csi::node_server::NodeServer;
use crate::proto::registration::registration_server::RegistrationServer;
use crate::registration::RegistrationService;
use crate::store::{StoreError, VolumeStore};
use crate::topology::{Topology, TopologyError, TopologyOptions, lookup};
use crate::watchdog;
use authority::LocalAuthority;

/// A failure that stops the plugin.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The mount root could not be prepared.
    #[error("preparing the mount root: {0}")]
    Topology(#[from] TopologyError),
    /// A socket could not be created.
    #[error("socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The controller's record directory could not be prepared.
    #[error("preparing the controller's volume records: {0}")]
    Store(#[from] StoreError),
    /// The node service runs without the node's name.
    #[error("configuration: --node-id (NODE_NAME) is required when the node service runs")]
    NodeIdMissing,
    /// The admin server failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// A gRPC server failed.
    #[error("serving: {server}: {source}")]
    Serve {
        /// Which server: `CSI` or `registration`.
        server: &'static str,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// A task of the plugin panicked or was cancelled.
    #[error("serving: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// How long open connections may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds a unix socket at `path`, replacing a stale one. The caller has set a umask of
/// 0o077, so the socket is created with mode 0600 (no window with wider permissions).
pub fn bind_socket(path: &Path) -> Result<UnixListener, ServerError> {
    let socket_error = |source| ServerError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(socket_error)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(socket_error(e)),
    }
    UnixListener::bind(path).map_err(socket_error)
}

/// The connections of `listener`, each with an acceptable HTTP/2 authority.
fn incoming(
    listener: UnixListener,
) -> impl futures::Stream<Item = std::io::Result<LocalAuthority<tokio::net::UnixStream>>> {
    UnixListenerStream::new(listener).map_ok(LocalAuthority::new)
}

/// Prepares the node side: the shared mount root, the on-demand volumes of a previous
/// process taken over, one healing pass (after a restart this repairs what died with the
/// previous process before anyone asks).
async fn start_node(config: &Config, metrics: &Arc<Metrics>) -> Result<Arc<Topology>, ServerError> {
    let topology = Arc::new(Topology::new(TopologyOptions {
        root: config.mount_root.clone(),
        state_dir: config.state_dir.clone(),
        backend: config.backend(),
        idle_delay: config.idle_delay(),
        on_demand: config.on_demand,
    })?);
    {
        let topology = topology.clone();
        tokio::task::spawn_blocking(move || topology.init()).await??;
    }
    watchdog::pass(&topology, metrics).await;
    Ok(topology)
}

/// The servers of one process, each stopping when `stop` is cancelled.
type Servers = tokio::task::JoinSet<Result<(), ServerError>>;

/// Serves `router` on the connections of `listener` as one of `servers` until `stop` is
/// cancelled; a failure names the server (`CSI`, `registration`).
fn spawn_grpc(
    servers: &mut Servers,
    server: &'static str,
    router: Router,
    listener: UnixListener,
    stop: &CancellationToken,
) {
    let stop = stop.clone();
    servers.spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming(listener), stop.cancelled_owned())
            .await
            .map_err(|source| ServerError::Serve { server, source })
    });
}

/// The node's name when the node service runs (required then), `None` otherwise.
fn node_id(config: &Config) -> Result<Option<String>, ServerError> {
    match (&config.node_id, config.services.node()) {
        (Some(id), true) if !id.is_empty() => Ok(Some(id.clone())),
        (_, true) => Err(ServerError::NodeIdMissing),
        (_, false) => Ok(None),
    }
}

/// What the node and controller sides run on: the topology (node) and the volume records
/// (controller), each present only when its side runs.
struct Sides {
    node_id: Option<String>,
    topology: Option<Arc<Topology>>,
    store: Option<Arc<VolumeStore>>,
}

impl Sides {
    async fn start(config: &Config, metrics: &Arc<Metrics>) -> Result<Self, ServerError> {
        let node_id = node_id(config)?;
        let topology = match node_id {
            Some(_) => Some(start_node(config, metrics).await?),
            None => None,
        };
        let store = if config.services.controller() {
            let store = Arc::new(VolumeStore::new(config.controller_dir()));
            store.prepare()?;
            Some(store)
        } else {
            None
        };
        Ok(Sides {
            node_id,
            topology,
            store,
        })
    }
}

/// Serves Identity, Controller and (on the node side) Node on the CSI socket.
fn spawn_csi(
    servers: &mut Servers,
    config: &Config,
    sides: &Sides,
    readiness: Arc<Readiness>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<(), ServerError> {
    let csi_listener = bind_socket(&config.endpoint)?;
    let node = match (&sides.topology, &sides.node_id) {
        (Some(topology), Some(node_id)) => Some(NodeServer::new(NodeService::new(
            topology.clone(),
            config.kubelet_dir.clone(),
            node_id.clone(),
            metrics.clone(),
        ))),
        _ => None,
    };
    let controller = match &sides.store {
        Some(store) => ControllerService::new(store.clone(), metrics.clone()),
        None => ControllerService::disabled(metrics.clone()),
    };
    let router = Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(readiness)))
        .add_service(ControllerServer::new(controller))
        .add_optional_service(node);
    spawn_grpc(servers, "CSI", router, csi_listener, stop);
    info!(
        endpoint = %config.endpoint.display(),
        services = ?config.services,
        node = config.node_id.as_deref().unwrap_or(""),
        backend = sides.topology.as_ref().map(|t| t.backend().name()).unwrap_or("none"),
        "serving CSI"
    );
    Ok(())
}

/// Serves the kubelet's plugin registration on its socket, when the node side registers;
/// returns whether it does.
fn spawn_registration(
    servers: &mut Servers,
    config: &Config,
    stop: &CancellationToken,
) -> Result<bool, ServerError> {
    if !(config.services.node() && config.kubelet_registration) {
        return Ok(false);
    }
    let registration_socket = config.registration_socket();
    let listener = bind_socket(&registration_socket)?;
    let endpoint = config
        .kubelet_endpoint
        .clone()
        .unwrap_or_else(|| config.endpoint.clone());
    let router =
        Server::builder().add_service(RegistrationServer::new(RegistrationService::new(endpoint)));
    spawn_grpc(servers, "registration", router, listener, stop);
    info!(socket = %registration_socket.display(), "serving kubelet registration");
    Ok(true)
}

/// Runs the plugin until `shutdown` is cancelled.
///
/// With `--services controller` nothing on the node is touched: no mount root, no client,
/// no watchdog, no kubelet registration; only the record directory under the state
/// directory is created.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServerError> {
    let metrics = Metrics::new();
    let sides = Sides::start(&config, &metrics).await?;
    if let Some(topology) = &sides.topology {
        lookup::spawn_server(topology.clone(), tokio::runtime::Handle::current());
    }
    let watchdog = sides.topology.as_ref().map(|topology| {
        tokio::spawn(watchdog::run(
            topology.clone(),
            metrics.clone(),
            config.heal_interval(),
        ))
    });
    let readiness = Arc::new(Readiness::new(sides.topology.clone(), sides.store.clone()));

    // Every server stops on `stop`: on `shutdown`, or when one of them fails.
    let stop = shutdown.child_token();
    let mut servers = Servers::new();
    spawn_csi(
        &mut servers,
        &config,
        &sides,
        readiness.clone(),
        &metrics,
        &stop,
    )?;
    let registered = spawn_registration(&mut servers, &config, &stop)?;
    if let Some(address) = config.admin_address {
        let admin = AdminServer::bind(address).await?;
        let endpoints = admin_endpoints(readiness, metrics.clone());
        let admin_stop = stop.clone();
        servers.spawn(async move { Ok(admin.serve(endpoints, admin_stop).await?) });
    }

    let mut result = Ok(());
    tokio::select! {
        () = shutdown.cancelled() => info!("shutting down; mounts stay in place"),
        Some(done) = servers.join_next() => {
            result = done.map_err(ServerError::from).and_then(|r| r);
        }
    }
    stop.cancel();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if let Some(autofs) = sides.topology.as_ref().and_then(|t| t.autofs()) {
        autofs.release_all();
    }
    // Connections in flight get a moment to finish; a server stuck behind a hung client
    // does not hold the shutdown up.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    let _ = std::fs::remove_file(&config.endpoint);
    if registered {
        let _ = std::fs::remove_file(config.registration_socket());
    }
    result
}

/// `/readyz` and `/healthz` (the same checks as Probe) and `/metrics`.
pub fn admin_endpoints(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Endpoints {
    Endpoints::new(move || readiness.check(), move || Some(metrics.encode()))
}
