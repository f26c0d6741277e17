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

/// How an operation ended: `Ok` or the category of its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed (or was refused).
    Failed(ErrorCategory),
}

impl EncodeLabelValue for Outcome {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        match self {
            Self::Ok => EncodeLabelValue::encode(&"Ok", encoder),
            Self::Failed(category) => category.encode(encoder),
        }
    }
}

/// Label set `{operation, outcome}` of every call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallLabels {
    /// The operation.
    pub operation: Operation,
    /// How it ended.
    pub outcome: Outcome,
}

/// Label set `{operation}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationLabels {
    /// The operation.
    pub operation: Operation,
}

/// What became of a first access in an on-demand volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum LookupResult {
    /// The repository was bound beneath the target.
    Mounted,
    /// Not a repository name.
    NotARepository,
    /// The repository could not be mounted.
    Failed,
}

/// Label set `{result}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LookupLabels {
    /// What became of the lookup.
    pub result: LookupResult,
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
    /// Every call by operation and outcome.
    pub operations: Family<CallLabels, Counter>,
    /// Duration of every call in seconds, by operation.
    pub latency: Family<OperationLabels, Histogram>,
    /// First accesses in on-demand volumes, by result.
    pub lookups: Family<LookupLabels, Counter>,
    /// Errors by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Repositories re-mounted or re-bound by the watchdog.
    pub heals: Counter,
    /// Client instances mounted, by repository.
    pub mounts: Family<RepositoryLabels, Gauge>,
    /// The revision each mounted instance shows, as its client reports it.
    pub revisions: Family<InstanceLabels, Gauge>,
}

/// Label set `{instance}`: an instance's directory name (`cms.cern.ch`,
/// `cms.cern.ch@tag-v2`), bounded by what is mounted on the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct InstanceLabels {
    /// The instance.
    pub instance: String,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("hepbatch_csi");
        let operations = Family::<CallLabels, Counter>::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
            ])
        });
        let errors = Family::<ErrorLabels, Counter>::default();
        let heals = Counter::default();
        let mounts = Family::<RepositoryLabels, Gauge>::default();
        let revisions = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "operations",
            "Calls (publish, unpublish, create and delete volume) by outcome: Ok or the error category",
            operations.clone(),
        );
        registry.register(
            "operation_duration_seconds",
            "Duration of calls, successful or not",
            latency.clone(),
        );
        registry.register(
            "lookups",
            "First accesses of a name in an on-demand volume, by result",
            lookups.clone(),
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
        registry.register(
            "revision",
            "Revision each mounted client instance shows (user.revision), by instance",
            revisions.clone(),
        );
        Arc::new(Self {
            registry,
            operations,
            latency,
            lookups,
            errors,
            heals,
            mounts,
            revisions,
        })
    }

    /// Records one call of `operation` begun at `started`: counted by outcome, timed, and
    /// a failure also counted under its error category.
    pub fn record(&self, operation: Operation, started: std::time::Instant, outcome: Outcome) {
        self.operations
            .get_or_create(&CallLabels { operation, outcome })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
        if let Outcome::Failed(category) = outcome {
            self.error(category);
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
