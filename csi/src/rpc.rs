//! The one instrumentation layer of every CSI RPC with a request to act on: a span, a
//! timer, the outcome in the metrics (for the operations that are counted) and one log
//! line, errors at `warn`; and the capability entries the services announce.
//!
//! A service method builds its span (with the request's bounded identifiers) and hands
//! its work to [`observe`] (counted) or [`trace`] (read-only queries, not counted); the
//! error type of the work chooses the gRPC code and the metrics category ([`RpcError`]).

use std::fmt;
use std::future::Future;
use std::time::Instant;

use tonic::Status;
use tracing::{Instrument, Span, info, warn};

use crate::metrics::{ErrorCategory, Metrics, Operation, Outcome};
use crate::proto::csi::{
    ControllerServiceCapability, NodeServiceCapability, controller_service_capability,
    node_service_capability,
};

/// An RPC's error: a message for the caller, a gRPC code and a metrics category.
pub trait RpcError: fmt::Display + Into<Status> {
    /// The category the error is counted under.
    fn category(&self) -> ErrorCategory;
}

/// Runs `work` inside `span`, records its outcome and duration for `operation`, logs it
/// and turns an error into its gRPC status.
pub async fn observe<T, E: RpcError>(
    metrics: &Metrics,
    operation: Operation,
    span: Span,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Failed(e.category()),
    };
    metrics.record(operation, started, outcome);
    log(&span, &operation, started, &result);
    result.map_err(Into::into)
}

/// Runs `work` inside `span`, logs it as [`observe`] does and turns an error into its
/// gRPC status; nothing is counted.
pub async fn trace<T, E: RpcError>(
    span: Span,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    let name = span.metadata().map_or("rpc", |metadata| metadata.name());
    log(&span, &Name(name), started, &result);
    result.map_err(Into::into)
}

/// A span name shown as the operations are (`{:?}` without quotes).
struct Name(&'static str);

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

fn log<T, E: fmt::Display>(
    span: &Span,
    operation: &dyn fmt::Debug,
    started: Instant,
    result: &Result<T, E>,
) {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match result {
        Ok(_) => info!(elapsed_ms, "{operation:?} done"),
        Err(e) => warn!(elapsed_ms, error = %e, "{operation:?} refused or failed"),
    });
}

/// Defines a function building the capability entry of one RPC of a CSI service; the
/// Node and Controller services have the same shape of entry in two generated types.
macro_rules! rpc_capability {
    ($(#[$doc:meta])* $name:ident, $capability:ident, $module:ident) => {
        $(#[$doc])*
        pub fn $name(kind: $module::rpc::Type) -> $capability {
            $capability {
                r#type: Some($module::Type::Rpc($module::Rpc {
                    r#type: kind as i32,
                })),
            }
        }
    };
}

rpc_capability!(
    /// The NodeGetCapabilities entry announcing `kind`.
    node_capability,
    NodeServiceCapability,
    node_service_capability
);
rpc_capability!(
    /// The ControllerGetCapabilities entry announcing `kind`.
    controller_capability,
    ControllerServiceCapability,
    controller_service_capability
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_carry_the_rpc_type() {
        let node = node_capability(node_service_capability::rpc::Type::GetVolumeStats);
        assert_eq!(
            node.r#type,
            Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc {
                    r#type: node_service_capability::rpc::Type::GetVolumeStats as i32
                }
            ))
        );
        let controller =
            controller_capability(controller_service_capability::rpc::Type::CreateDeleteVolume);
        assert_eq!(
            controller.r#type,
            Some(controller_service_capability::Type::Rpc(
                controller_service_capability::Rpc {
                    r#type: controller_service_capability::rpc::Type::CreateDeleteVolume as i32
                }
            ))
        );
    }
}
