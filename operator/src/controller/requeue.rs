//! When an AnalysisJob is looked at again: every interval of the controller, named in one
//! place, and the one [`Requeue`] value a reconcile ends with.

use std::time::Duration;

use kube::runtime::controller::Action;

use crate::metrics::ErrorCategory;

/// Changes of one AnalysisJob or its Job within this window are reconciled once (a burst
/// of watch events, such as a Job update and the echo of our own status write). Kept
/// short: it delays the Job's creation and the final status; the pacing of progress-only
/// status writes ([`crate::pacing`]) bounds the write rate.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// How often an AnalysisJob that cannot run as it stands is looked at again (a missing
/// input ConfigMap may appear; configuration reloads trigger at once anyway).
pub const REJECTED_RETRY: Duration = Duration::from_secs(10);

/// How often an AnalysisJob whose Job name is taken by another owner is looked at again.
pub const NAME_TAKEN_RETRY: Duration = Duration::from_secs(10);

/// How long shards may wait for a node before the AnalysisJob says why: batch shards
/// often wait for room a while, and a full cluster would otherwise cost a pod LIST per
/// AnalysisJob soon after its start.
pub const UNSCHEDULABLE_AFTER: Duration = Duration::from_secs(60);

/// How soon waiting shards are looked at again when the scheduler had not given up on any
/// yet.
pub const UNSCHEDULABLE_RECHECK: Duration = Duration::from_secs(120);

/// How soon waiting shards are looked at again after the reason was reported, or after
/// they were found waiting for room: looking more often costs a pod LIST per AnalysisJob
/// for news nobody needs.
pub const UNSCHEDULABLE_REPORTED_RECHECK: Duration = Duration::from_secs(600);

/// How long one list of the nodes' room serves every look at waiting shards: nodes come
/// and go in minutes, and a full cluster's waiting fleets would otherwise each list them.
pub const NODE_ROOM_MAX_AGE: Duration = Duration::from_secs(60);

/// How long a Job exists before its missing pods are looked into: the Job controller
/// creates the first pods within moments, and records a refusal at once.
pub const CREATION_LOOK_AFTER: Duration = Duration::from_secs(3);

/// How soon missing pods are looked into again after a refusal was reported, in case it
/// went stale: pods that are created clear the condition from the Job's counts, and a new
/// refusal's Event triggers a look by itself.
pub const CREATION_REPORTED_RECHECK: Duration = Duration::from_secs(60);

/// How often a healthy, unfinished AnalysisJob is looked at even without a change.
pub const RESYNC: Duration = Duration::from_secs(300);

/// Longest wait for the TTL after finishing; a longer TTL is looked at again meanwhile.
pub const TTL_MAX_WAIT: Duration = Duration::from_secs(3600);

/// How often the phase gauge is refreshed from the AnalysisJob store.
pub const PHASE_GAUGE_TICK: Duration = Duration::from_secs(5);

/// Retry after a write lost to another writer: the next try usually succeeds.
pub const CONFLICT_RETRY: Duration = Duration::from_millis(500);

/// Retry after an AnalysisJob could not be translated.
pub const INVALID_RETRY: Duration = Duration::from_secs(60);

/// Retry after the apiserver refused or failed a request.
pub const API_RETRY: Duration = Duration::from_secs(5);

/// When a reconciled AnalysisJob is looked at again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Only when it or its Job changes (or the configuration reloads).
    AwaitChange,
    /// After this long, or sooner on a change.
    After(Duration),
}

impl Requeue {
    /// The controller action of this requeue.
    pub fn action(self) -> Action {
        match self {
            Requeue::AwaitChange => Action::await_change(),
            Requeue::After(wait) => Action::requeue(wait),
        }
    }

    /// The retry after a failed reconcile of this category.
    pub fn after_error(category: ErrorCategory) -> Requeue {
        Requeue::After(match category {
            ErrorCategory::Conflict => CONFLICT_RETRY,
            ErrorCategory::Invalid => INVALID_RETRY,
            ErrorCategory::Api => API_RETRY,
        })
    }
}
