//! Waiting for the AnalysisJob CustomResourceDefinition before the watches start.
//!
//! Watches of a resource the apiserver does not serve fail with `404 page not found` and
//! retry forever at debug level, so an operator started before the CRD was applied would
//! look idle for no visible reason. Instead the process watches the one CRD by name
//! ([`wait_established`]): it says clearly at warning level that the CRD is missing and
//! what to apply, logs when it appears, and returns once the CRD is `Established`. The
//! caller races this against SIGTERM/SIGINT, so the process stops promptly while it waits.
//!
//! [`state`] (what a CRD object says) and [`announcement`] (what is worth a log line
//! between two looks) are pure and unit-tested.

use futures::StreamExt;
use hepbatch_crds::AnalysisJob;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, CustomResourceExt};
use tracing::{info, warn};

use crate::k8s::{ConditionStatus, CrdCondition};

/// Where the AnalysisJob CRD stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrdState {
    /// Not installed.
    Missing,
    /// Installed, but the apiserver does not serve it yet (names not accepted or not
    /// `Established`).
    NotEstablished,
    /// Served.
    Established,
}

/// What the CRD object `crd` (absent: not installed) says.
pub fn state(crd: Option<&CustomResourceDefinition>) -> CrdState {
    let Some(crd) = crd else {
        return CrdState::Missing;
    };
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                CrdCondition::Established.is(&c.type_) && ConditionStatus::True.is(&c.status)
            })
        });
    if established {
        CrdState::Established
    } else {
        CrdState::NotEstablished
    }
}

/// What to log when the CRD was last seen in `before` (`None`: not looked yet) and is now
/// in `now`; `None` when nothing changed.
pub fn announcement(before: Option<CrdState>, now: CrdState) -> Option<Announcement> {
    if before == Some(now) {
        return None;
    }
    Some(match now {
        CrdState::Missing => Announcement::Missing,
        CrdState::NotEstablished => Announcement::NotEstablished,
        CrdState::Established if before.is_none() => return None,
        CrdState::Established => Announcement::Established,
    })
}

/// A log line about the CRD (see [`announcement`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// The CRD is not installed: warn, saying what to apply.
    Missing,
    /// The CRD exists but is not served yet.
    NotEstablished,
    /// The CRD the operator waited for is served now.
    Established,
}

/// Why the CRD could not be waited for.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The watch of the CRD ended, which a watch with backoff never does.
    #[error("the watch of the CustomResourceDefinition {name} ended")]
    WatchEnded {
        /// The CRD's name.
        name: String,
    },
}

/// Name of the AnalysisJob CRD, `analysisjobs.hepbatch.io`.
pub fn crd_name() -> String {
    AnalysisJob::crd_name().to_owned()
}

/// Returns once the AnalysisJob CRD is `Established`, logging what it waits for. A
/// client not allowed to read CRDs (RBAC) cannot tell; it gets a warning and no wait.
pub async fn wait_established(client: Client) -> Result<(), CrdError> {
    let name = crd_name();
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let mut stream = std::pin::pin!(watcher::watch_object(api, &name).default_backoff());
    let mut seen = None;
    while let Some(item) = stream.next().await {
        let crd = match item {
            Ok(crd) => crd,
            Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
            | Err(watcher::Error::WatchStartFailed(kube::Error::Api(status)))
                if status.code == 403 =>
            {
                warn!(
                    crd = %name,
                    error = %status.message,
                    "not allowed to read CustomResourceDefinitions; starting without knowing \
                     whether the AnalysisJob CRD is installed"
                );
                return Ok(());
            }
            Err(error) => {
                warn!(crd = %name, %error, "cannot watch the AnalysisJob CRD; retrying");
                continue;
            }
        };
        let now = state(crd.as_ref());
        match announcement(seen, now) {
            Some(Announcement::Missing) => warn!(
                crd = %name,
                "the AnalysisJob CRD is not installed; apply it with `kubectl apply \
                 --server-side -f crds/analysisjob.yaml` (the Helm chart installs it too); \
                 waiting for it"
            ),
            Some(Announcement::NotEstablished) => {
                info!(crd = %name, "the AnalysisJob CRD is not established yet; waiting")
            }
            Some(Announcement::Established) => {
                info!(crd = %name, "the AnalysisJob CRD is established")
            }
            None => {}
        }
        if now == CrdState::Established {
            return Ok(());
        }
        seen = Some(now);
    }
    Err(CrdError::WatchEnded { name })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(conditions: serde_json::Value) -> CustomResourceDefinition {
        let mut crd = AnalysisJob::crd();
        crd.status = serde_json::from_value(json!({"conditions": conditions})).expect("status");
        crd
    }

    #[test]
    fn only_an_established_crd_is_served() {
        assert_eq!(state(None), CrdState::Missing);
        assert_eq!(state(Some(&crd(json!([])))), CrdState::NotEstablished);
        let names_accepted = json!([{"type": "NamesAccepted", "status": "True"}]);
        assert_eq!(state(Some(&crd(names_accepted))), CrdState::NotEstablished);
        let established = json!([{"type": "NamesAccepted", "status": "True"},
                                 {"type": "Established", "status": "True"}]);
        assert_eq!(state(Some(&crd(established))), CrdState::Established);
        let not = json!([{"type": "Established", "status": "False"}]);
        assert_eq!(state(Some(&crd(not))), CrdState::NotEstablished);
    }

    #[test]
    fn a_missing_crd_is_announced_once_and_its_arrival_too() {
        assert_eq!(
            announcement(None, CrdState::Missing),
            Some(Announcement::Missing)
        );
        assert_eq!(
            announcement(Some(CrdState::Missing), CrdState::Missing),
            None
        );
        assert_eq!(
            announcement(Some(CrdState::Missing), CrdState::Established),
            Some(Announcement::Established)
        );
        assert_eq!(
            announcement(None, CrdState::Established),
            None,
            "a CRD that was there from the start is not news"
        );
        assert_eq!(
            announcement(Some(CrdState::Missing), CrdState::NotEstablished),
            Some(Announcement::NotEstablished)
        );
    }
}
