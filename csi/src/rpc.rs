//! The one instrumentation layer of every CSI RPC that changes something: a span, a timer,
//! the outcome in the metrics and one log line, errors at `warn`.

use std::future::Future;
use std::time::Instant;

use tonic::Status;
use tracing::{Instrument, Span, info, warn};

use crate::metrics::{ErrorCategory, Metrics, Operation, Outcome};

/// An RPC's error: a message for the caller, a gRPC code and a metrics category.
pub trait RpcError: std::fmt::Display + Into<Status> {
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
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match &result {
        Ok(_) => info!(elapsed_ms, "{operation:?} done"),
        Err(e) => warn!(elapsed_ms, error = %e, "{operation:?} refused or failed"),
    });
    result.map_err(Into::into)
}
