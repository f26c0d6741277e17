//! Prometheus metrics of the plugin. Label values come from small fixed enums (or validated
//! repository names), so cardinality stays bounded.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Which RPC an observation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Operation {
    /// NodePublishVolume.
    Publish,
    /// NodeUnpublishVolume.
    Unpublish,
    /// CreateVolume (StorageClass provisioning).
    CreateVolume,
    /// DeleteVolume.
    DeleteVolume,
}

/// Fixed error categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ErrorCategory {
    /// Bad request (attributes, target path, capability).
    InvalidArgument,
    /// The CVMFS client (backend) failed.
    Backend,
    /// A mount operation or the mount table failed.
    Mount,
    /// Conflicting publish.
    Conflict,
    /// A healing pass could not repair something.
    Heal,
    /// The controller's volume records could not be read or written.
    Store,
}

/// Label set `{operation}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation.
    pub operation: Operation,
}

/// Label set `{category}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The category.
    pub category: ErrorCategory,
}

/// Label set `{repository}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RepositoryLabels {
    /// A validated repository name.
    pub repository: String,
}

/// All metrics, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Successful operations by kind.
    pub operations: Family<OperationLabels, Counter>,
    /// Duration of successful operations in seconds.
    pub latency: Family<OperationLabels, Histogram>,
    /// Errors by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Repositories re-mounted or re-bound by the watchdog.
    pub heals: Counter,
    /// Client instances mounted, by repository.
    pub mounts: Family<RepositoryLabels, Gauge>,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("hepbatch_csi");
        let operations = Family::<OperationLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
            ])
        });
        let errors = Family::<ErrorLabels, Counter>::default();
        let heals = Counter::default();
        let mounts = Family::<RepositoryLabels, Gauge>::default();
        registry.register(
            "operations",
            "Successful operations (publish, unpublish, create and delete volume)",
            operations.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Duration of successful operations",
            latency.clone(),
        );
        registry.register("errors", "Errors by category", errors.clone());
        registry.register(
            "heals",
            "Repositories re-mounted or re-bound by the watchdog",
            heals.clone(),
        );
        registry.register(
            "mounts",
            "CVMFS client instances mounted, by repository",
            mounts.clone(),
        );
        Arc::new(Self {
            registry,
            operations,
            latency,
            errors,
            heals,
            mounts,
        })
    }

    /// Records the outcome of one `operation` begun at `started`: counted with its latency
    /// when it succeeded (`error` is `None`), counted by error category when it failed.
    pub fn record(
        &self,
        operation: Operation,
        started: std::time::Instant,
        error: Option<ErrorCategory>,
    ) {
        let labels = OperationLabels { operation };
        match error {
            None => {
                self.operations.get_or_create(&labels).inc();
                self.latency
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
            }
            Some(category) => self.error(category),
        }
    }

    /// Counts one error.
    pub fn error(&self, category: ErrorCategory) {
        self.errors.get_or_create(&ErrorLabels { category }).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}
