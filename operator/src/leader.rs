//! Leader election with a `coordination.k8s.io/v1` Lease, so several replicas can run and
//! only one reconciles.
//!
//! The decision what to do with the Lease as seen now is pure ([`decide`]); the loop
//! around it ([`Elector`]) reads the Lease and writes it with its `resourceVersion` as a
//! precondition, so of two replicas racing for an expired Lease exactly one wins (the
//! other gets a 409 Conflict and keeps waiting). The leader renews every `retry` period;
//! a replica that cannot renew within the lease duration steps down; a replica that stops
//! on purpose releases the Lease so the next one takes over at once.
//!
//! [`Elector::run_while_leading`] is the whole hand-over for a caller: wait for the Lease
//! (or a stop), run the leader's work with a token that is cancelled on a stop or when
//! the Lease is lost, then release the Lease or report the loss.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What to do with the Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it or the holder stopped renewing: take it over.
    TakeOver,
    /// Someone else holds it: wait.
    Wait,
}

/// Decides what `identity` does with `lease` at `now`.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            let duration = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(15).max(1),
            ));
            let renewed = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            match renewed {
                Some(renewed) if renewed.checked_add(duration).is_ok_and(|end| end > now) => {
                    Decision::Wait
                }
                _ => Decision::TakeOver,
            }
        }
    }
}

/// Why leading stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be renewed in time, or another replica holds it now.
    #[error("lost the Lease {namespace}/{name}")]
    Lost {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
    },
}

/// Takes part in the election for one Lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    lease_duration: Duration,
    retry: Duration,
}

impl Elector {
    /// An elector for the Lease `namespace/name` under `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
        retry: Duration,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
            retry,
        }
    }

    /// Waits for the Lease, then runs `lead` while this replica holds it.
    ///
    /// `lead` gets a child of `stop` that is cancelled on a stop or when the Lease is
    /// lost, and must return soon after. A stop before the Lease is held returns at once
    /// without running `lead`; after a stop the Lease is released so another replica
    /// takes over without waiting for it to expire. A lost Lease is the error.
    #[tracing::instrument(name = "leader", skip_all, fields(lease = %self.name, identity = %self.identity))]
    pub async fn run_while_leading<F, Fut>(
        &self,
        stop: &CancellationToken,
        lead: F,
    ) -> Result<(), LeaderError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        tokio::select! {
            () = self.acquire() => {}
            () = stop.cancelled() => return Ok(()),
        }
        let leading = stop.child_token();
        let holding = {
            let holder = self.clone();
            let leading = leading.clone();
            tokio::spawn(async move {
                let lost = holder.hold().await;
                leading.cancel();
                lost
            })
        };
        lead(leading.clone()).await;
        // Only the holder cancels `leading` without `stop` being cancelled: the Lease is lost.
        if leading.is_cancelled() && !stop.is_cancelled() {
            return match holding.await {
                Ok(lost) => Err(lost),
                Err(_) => Ok(()),
            };
        }
        holding.abort();
        self.release().await;
        Ok(())
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "acquired the Lease; leading");
                    return;
                }
                Ok(false) => {}
                Err(error) => warn!(%error, "cannot read or write the Lease"),
            }
            tokio::time::sleep(self.retry).await;
        }
    }

    /// Renews the Lease until it is lost; returns only then.
    pub async fn hold(&self) -> LeaderError {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry).await;
            match self.try_hold().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => break,
                Err(error) => {
                    warn!(%error, "cannot renew the Lease");
                    // Step down before another replica may take over.
                    if last_renewal.elapsed() + self.retry >= self.lease_duration {
                        break;
                    }
                }
            }
        }
        LeaderError::Lost {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Gives the Lease up so another replica can lead at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                spec.acquire_time = None;
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => info!("released the Lease"),
                    Err(error) => warn!(%error, "cannot release the Lease"),
                }
            }
        }
    }

    /// One round: true when this replica holds the Lease afterwards.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let existing = self.api.get_opt(&self.name).await?;
        let decision = decide(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let duration_seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(15);
        let result = match (decision, existing) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration_seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::TakeOver {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration_seconds);
                spec.renew_time = Some(MicroTime(now));
                // `lease.metadata.resourceVersion` makes this a compare-and-swap.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(
        holder: Option<&str>,
        renewed_secs_ago: i64,
        duration: i32,
        now: Timestamp,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(
                now.checked_sub(SignedDuration::from_secs(renewed_secs_ago))
                    .expect("in range"),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn election_decisions() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 1, 10, now)), "a", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 1, 10, now)), "a", now),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 11, 10, now)), "a", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, 1, 10, now)), "a", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", now),
            Decision::TakeOver
        );
    }
}
