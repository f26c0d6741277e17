//! Prometheus metrics of the operator, with label values from small fixed enums only so
//! the number of series stays bounded whatever the cluster holds.

use std::sync::Arc;
use std::time::Duration;

use hepbatch_crds::Phase;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::pacing::StatusChange;

/// Why a reconcile failed, as a metric label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ErrorCategory {
    /// The AnalysisJob cannot be translated or is malformed.
    Invalid,
    /// Another writer changed the object first; retried.
    Conflict,
    /// The apiserver refused or failed the request.
    Api,
}

/// Label set of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's category.
    pub category: ErrorCategory,
}

/// Label value naming an AnalysisJob phase.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PhaseLabel {
    /// No status yet.
    Unknown,
    /// [`Phase::Pending`].
    Pending,
    /// [`Phase::Running`].
    Running,
    /// [`Phase::Unschedulable`].
    Unschedulable,
    /// [`Phase::Suspended`].
    Suspended,
    /// [`Phase::Succeeded`].
    Succeeded,
    /// [`Phase::Failed`].
    Failed,
}

impl From<Option<Phase>> for PhaseLabel {
    fn from(phase: Option<Phase>) -> Self {
        match phase {
            None => PhaseLabel::Unknown,
            Some(Phase::Pending) => PhaseLabel::Pending,
            Some(Phase::Running) => PhaseLabel::Running,
            Some(Phase::Unschedulable) => PhaseLabel::Unschedulable,
            Some(Phase::Suspended) => PhaseLabel::Suspended,
            Some(Phase::Succeeded) => PhaseLabel::Succeeded,
            Some(Phase::Failed) => PhaseLabel::Failed,
        }
    }
}

/// Label set of the phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The phase.
    pub phase: PhaseLabel,
}

/// Label set of the status-write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusWriteLabels {
    /// How the written status differed from the stored one.
    pub change: StatusChange,
}

/// What a look at the shards waiting for a node found, as a metric label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum LookOutcome {
    /// The scheduler had not given up on any waiting shard.
    Schedulable,
    /// Waiting shards would fit a node once it has room.
    WaitingForRoom,
    /// No node could ever hold the waiting shards.
    Unschedulable,
}

/// Label set of the look counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookLabels {
    /// What the look found.
    pub outcome: LookOutcome,
}

/// The operator's metrics and the registry that serves them.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Failed reconciles by category.
    pub errors: Family<ErrorLabels, Counter>,
    /// Seconds per reconcile.
    pub duration: Histogram,
    /// AnalysisJobs by phase, as last seen by the controller.
    pub analysis_jobs: Family<PhaseLabels, Gauge>,
    /// Status writes by how the status changed.
    pub status_writes: Family<StatusWriteLabels, Counter>,
    /// Looks at shards waiting for a node, by what they found.
    pub scheduling_looks: Family<LookLabels, Counter>,
    /// Whether this replica holds the leader Lease (1) or not (0).
    pub leader: Gauge,
    registry: Registry,
}

impl Metrics {
    /// Creates and registers every metric under the `hepbatch_operator` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("hepbatch_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
        let analysis_jobs = Family::<PhaseLabels, Gauge>::default();
        let status_writes = Family::<StatusWriteLabels, Counter>::default();
        let scheduling_looks = Family::<LookLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by category",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile",
            duration.clone(),
        );
        registry.register(
            "analysis_jobs",
            "AnalysisJobs by phase",
            analysis_jobs.clone(),
        );
        registry.register(
            "status_writes",
            "AnalysisJob status writes by how the status changed",
            status_writes.clone(),
        );
        registry.register(
            "scheduling_looks",
            "Looks at shards waiting for a node, by what they found",
            scheduling_looks.clone(),
        );
        registry.register("leader", "1 when this replica leads", leader.clone());
        Arc::new(Metrics {
            reconciles,
            errors,
            duration,
            analysis_jobs,
            status_writes,
            scheduling_looks,
            leader,
            registry,
        })
    }

    /// Records one reconcile that took `elapsed`.
    pub fn observe_reconcile(&self, elapsed: Duration) {
        self.reconciles.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Records a failed reconcile.
    pub fn observe_error(&self, category: ErrorCategory) {
        self.errors.get_or_create(&ErrorLabels { category }).inc();
    }

    /// Records a status write of a status that changed this way.
    pub fn observe_status_write(&self, change: StatusChange) {
        self.status_writes
            .get_or_create(&StatusWriteLabels { change })
            .inc();
    }

    /// Records a look at waiting shards that found `outcome`.
    pub fn observe_look(&self, outcome: LookOutcome) {
        self.scheduling_looks
            .get_or_create(&LookLabels { outcome })
            .inc();
    }

    /// Replaces the phase gauge with `phases` (one entry per AnalysisJob).
    pub fn set_phases(&self, phases: impl IntoIterator<Item = Option<Phase>>) {
        let mut counts = [0i64; 7];
        for phase in phases {
            counts[PhaseLabel::from(phase) as usize] += 1;
        }
        for (label, count) in [
            PhaseLabel::Unknown,
            PhaseLabel::Pending,
            PhaseLabel::Running,
            PhaseLabel::Unschedulable,
            PhaseLabel::Suspended,
            PhaseLabel::Succeeded,
            PhaseLabel::Failed,
        ]
        .into_iter()
        .zip(counts)
        {
            self.analysis_jobs
                .get_or_create(&PhaseLabels { phase: label })
                .set(count);
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_encode_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.observe_reconcile(Duration::from_millis(3));
        metrics.observe_error(ErrorCategory::Conflict);
        metrics.set_phases([Some(Phase::Running), Some(Phase::Running), None]);
        metrics.observe_status_write(StatusChange::Progress);
        metrics.observe_look(LookOutcome::WaitingForRoom);
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("hepbatch_operator_reconciles_total 1"));
        assert!(text.contains("hepbatch_operator_reconcile_errors_total{category=\"Conflict\"} 1"));
        assert!(text.contains("hepbatch_operator_analysis_jobs{phase=\"Running\"} 2"));
        assert!(text.contains("hepbatch_operator_analysis_jobs{phase=\"Unknown\"} 1"));
        assert!(text.contains("hepbatch_operator_status_writes_total{change=\"Progress\"} 1"));
        assert!(
            text.contains("hepbatch_operator_scheduling_looks_total{outcome=\"WaitingForRoom\"} 1")
        );
    }
}
