//! The healing watchdog: runs [`Topology::heal`] on a blocking thread at a fixed interval,
//! logs what it repaired and updates the metrics.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::metrics::{ErrorCategory, InstanceLabels, Metrics, RepositoryLabels};
use crate::topology::Topology;

/// Heals forever (until the task is dropped), one pass every `interval`.
pub async fn run(topology: Arc<Topology>, metrics: Arc<Metrics>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        pass(&topology, &metrics).await;
    }
}

/// One healing pass.
pub async fn pass(topology: &Arc<Topology>, metrics: &Metrics) {
    let topology = topology.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let report = topology.heal();
        (
            report,
            topology.mounts_by_repository(),
            topology.revisions(),
        )
    })
    .await;
    let (report, mounts, revisions) = match outcome {
        Ok(done) => done,
        Err(e) => {
            warn!(error = %e, "healing pass died");
            metrics.error(ErrorCategory::Heal);
            return;
        }
    };
    let repaired = report.repairs();
    if repaired > 0 {
        metrics.heals.inc_by(repaired as u64);
        info!(
            remounted = ?report.remounted,
            rebound = report.rebound.len(),
            taken_over = report.taken_over.len(),
            "healed"
        );
    }
    for failure in &report.failures {
        metrics.error(ErrorCategory::Heal);
        warn!(error = %failure, "healing failed, retrying next pass");
    }
    metrics.revisions.clear();
    for (instance, revision) in revisions {
        metrics
            .revisions
            .get_or_create(&InstanceLabels { instance })
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }
    if let Ok(mounts) = mounts {
        metrics.mounts.clear();
        for (repository, count) in mounts {
            metrics
                .mounts
                .get_or_create(&RepositoryLabels { repository })
                .set(count as i64);
        }
    }
}
