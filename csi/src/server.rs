//! Runtime wiring: sockets, gRPC services, the watchdog, the admin HTTP server, shutdown.
//!
//! Start-up order: make the mount root shared, run one healing pass (after a restart this
//! repairs what died with the previous process before anyone asks), then serve. On SIGTERM
//! the sockets close and are removed; mounts stay, so running pods keep their /cvmfs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tracing::info;

use crate::config::Config;
use crate::controller::ControllerService;
use crate::identity::IdentityService;
use crate::metrics::Metrics;
use crate::node::NodeService;
use crate::proto::csi::controller_server::ControllerServer;
use crate::proto::csi::identity_server::IdentityServer;
use crate::proto::csi::node_server::NodeServer;
use crate::proto::registration::registration_server::RegistrationServer;
use crate::registration::RegistrationService;
use crate::topology::{Topology, TopologyError};
use crate::watchdog;

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
    /// A server failed.
    #[error("serving: {0}")]
    Serve(String),
}

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

/// Runs the plugin until `shutdown` completes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = Metrics::new();
    let topology = Arc::new(Topology::new(
        config.mount_root.clone(),
        config.backend(),
        config.idle_delay(),
        config.on_demand.then_some(config.state_dir.as_path()),
    ));
    {
        let topology = topology.clone();
        tokio::task::spawn_blocking(move || topology.init())
            .await
            .map_err(|e| ServerError::Serve(e.to_string()))??;
    }
    watchdog::pass(&topology, &metrics).await;
    let watchdog = tokio::spawn(watchdog::run(
        topology.clone(),
        metrics.clone(),
        config.heal_interval(),
    ));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();

    let csi_listener = bind_socket(&config.endpoint)?;
    let node = NodeService::new(
        topology.clone(),
        config.kubelet_dir.clone(),
        config.node_id.clone(),
        metrics.clone(),
    );
    let identity = IdentityService::new(topology.clone());
    let mut csi_stop = stopped.clone();
    servers.spawn(async move {
        Server::builder()
            .add_service(IdentityServer::new(identity))
            .add_service(NodeServer::new(node))
            .add_service(ControllerServer::new(ControllerService))
            .serve_with_incoming_shutdown(UnixListenerStream::new(csi_listener), async move {
                let _ = csi_stop.changed().await;
            })
            .await
            .map_err(|e| ServerError::Serve(format!("CSI: {e}")))
    });
    info!(endpoint = %config.endpoint.display(), node = %config.node_id, backend = topology.backend().name(), "serving CSI");

    let registration_socket = config.registration_socket();
    if config.kubelet_registration {
        let listener = bind_socket(&registration_socket)?;
        let endpoint = config
            .kubelet_endpoint
            .clone()
            .unwrap_or_else(|| config.endpoint.clone());
        let mut reg_stop = stopped.clone();
        servers.spawn(async move {
            Server::builder()
                .add_service(RegistrationServer::new(RegistrationService::new(endpoint)))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = reg_stop.changed().await;
                })
                .await
                .map_err(|e| ServerError::Serve(format!("registration: {e}")))
        });
        info!(socket = %registration_socket.display(), "serving kubelet registration");
    }

    if let Some(address) = config.admin_address {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Socket {
                path: PathBuf::from(address.to_string()),
                source,
            })?;
        let app = admin_router(topology.clone(), metrics.clone());
        let mut admin_stop = stopped.clone();
        servers.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = admin_stop.changed().await;
                })
                .await
                .map_err(|e| ServerError::Serve(format!("admin: {e}")))
        });
        info!(%address, "serving /healthz and /metrics");
    }

    let mut result = Ok(());
    tokio::select! {
        () = shutdown => info!("shutting down; mounts stay in place"),
        Some(done) = servers.join_next() => {
            result = done.map_err(|e| ServerError::Serve(e.to_string())).and_then(|r| r);
        }
    }
    let _ = stop.send(true);
    while servers.join_next().await.is_some() {}
    watchdog.abort();
    let _ = std::fs::remove_file(&config.endpoint);
    if config.kubelet_registration {
        let _ = std::fs::remove_file(&registration_socket);
    }
    result
}

/// `/healthz` (the same checks as Probe) and `/metrics`.
pub fn admin_router(topology: Arc<Topology>, metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new()
        .route(
            "/healthz",
            axum::routing::get(move || {
                let topology = topology.clone();
                async move {
                    match tokio::task::spawn_blocking(move || IdentityService::check(&topology))
                        .await
                    {
                        Ok(Ok(())) => (StatusCode::OK, "ok\n".to_owned()),
                        Ok(Err(why)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
}
