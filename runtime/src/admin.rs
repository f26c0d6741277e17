//! The admin HTTP server of a binary.
//!
//! - `/livez`: the process serves HTTP (always `200 ok`);
//! - `/readyz` and `/healthz`: the binary's readiness check, `200 ok` or `503` with the
//!   reason; the check runs on a blocking thread, so it may look at the file system;
//! - `/metrics`: the binary's metrics in the OpenMetrics text format.
//!
//! The server stops accepting when the shutdown token is cancelled and lets requests in
//! flight finish.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the admin server stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("binding the admin server to {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving the admin endpoints on {address}: {source}")]
    Serve {
        /// The address.
        address: SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// Why a binary is not ready: any error, or a plain message.
pub type NotReady = Box<dyn std::error::Error + Send + Sync>;

type ReadyCheck = dyn Fn() -> Result<(), NotReady> + Send + Sync;
type MetricsText = dyn Fn() -> Option<String> + Send + Sync;

/// What the endpoints answer: the binary's readiness check and metrics encoder.
#[derive(Clone)]
pub struct Endpoints {
    ready: Arc<ReadyCheck>,
    metrics: Arc<MetricsText>,
}

impl Endpoints {
    /// Endpoints answering with `ready` (`Err` carries why not, shown as the body of the
    /// `503`) and `metrics` (`None` when encoding failed, answered with a 500).
    pub fn new<E: Into<NotReady>>(
        ready: impl Fn() -> Result<(), E> + Send + Sync + 'static,
        metrics: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Endpoints {
            ready: Arc::new(move || ready().map_err(Into::into)),
            metrics: Arc::new(metrics),
        }
    }

    /// The admin routes.
    pub fn router(self) -> Router {
        let ready = self.ready.clone();
        let health = self.ready;
        let metrics = self.metrics;
        Router::new()
            .route("/livez", get(|| async { "ok\n" }))
            .route("/readyz", get(move || readiness(ready.clone())))
            .route("/healthz", get(move || readiness(health.clone())))
            .route(
                "/metrics",
                get(move || {
                    let metrics = metrics.clone();
                    async move { metrics_response(metrics()) }
                }),
            )
    }
}

async fn readiness(check: Arc<ReadyCheck>) -> Response {
    match tokio::task::spawn_blocking(move || check()).await {
        Ok(result) => readiness_response(result),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

fn readiness_response(result: Result<(), NotReady>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

fn metrics_response(text: Option<String>) -> Response {
    match text {
        Some(text) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// An admin server bound to its address, not yet serving.
pub struct AdminServer {
    listener: TcpListener,
    address: SocketAddr,
}

impl AdminServer {
    /// Binds `address`; port 0 takes any free port ([`AdminServer::address`] tells which).
    pub async fn bind(address: SocketAddr) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| AdminError::Bind { address, source })?;
        let address = listener.local_addr().unwrap_or(address);
        Ok(AdminServer { listener, address })
    }

    /// The address really bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves `endpoints` until `shutdown` is cancelled.
    pub async fn serve(
        self,
        endpoints: Endpoints,
        shutdown: CancellationToken,
    ) -> Result<(), AdminError> {
        let address = self.address;
        tracing::info!(%address, "admin server listening");
        axum::serve(self.listener, endpoints.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|source| AdminError::Serve { address, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_path(endpoints: Endpoints, path: &str) -> (StatusCode, String) {
        let response = endpoints
            .router()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body");
        (
            status,
            String::from_utf8(body.to_bytes().to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn readiness_and_health_answer_from_the_check() {
        let ready = Endpoints::new(|| Ok::<_, NotReady>(()), || Some(String::new()));
        assert_eq!(
            get_path(ready.clone(), "/readyz").await,
            (StatusCode::OK, "ok\n".to_owned())
        );
        assert_eq!(get_path(ready, "/healthz").await.0, StatusCode::OK);
        let not_ready = Endpoints::new(|| Err("watches not synced".to_owned()), || None);
        assert_eq!(
            get_path(not_ready.clone(), "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "watches not synced\n".to_owned()
            )
        );
        assert_eq!(
            get_path(not_ready.clone(), "/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get_path(not_ready, "/livez").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_typed_reason_is_answered_with_its_message() {
        #[derive(Debug, thiserror::Error)]
        #[error("mount root {0} is not shared")]
        struct NotShared(&'static str);
        let endpoints = Endpoints::new(|| Err(NotShared("/var/lib/hepbatch")), || None);
        assert_eq!(
            get_path(endpoints, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "mount root /var/lib/hepbatch is not shared\n".to_owned()
            )
        );
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_or_fail_with_500() {
        let endpoints = Endpoints::new(|| Ok::<_, NotReady>(()), || Some("up 1\n".to_owned()));
        assert_eq!(
            get_path(endpoints, "/metrics").await,
            (StatusCode::OK, "up 1\n".to_owned())
        );
        let broken = Endpoints::new(|| Ok::<_, NotReady>(()), || None);
        assert_eq!(
            get_path(broken, "/metrics").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn readiness_bodies_end_with_a_newline() {
        let ok = readiness_response(Ok(()));
        assert_eq!(ok.status(), StatusCode::OK);
        let failing = readiness_response(Err("no mount root".into()));
        assert_eq!(failing.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
