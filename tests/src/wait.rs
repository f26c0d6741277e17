//! Waiting for objects to reach a condition, with a timeout that says what was awaited;
//! and the one polling loop ([`Poll`], [`eventually`]) for what cannot be watched.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::Api;
use kube::runtime::wait::{Condition, await_condition};
use serde::de::DeserializeOwned;

/// Why waiting failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The condition did not hold in time; `last_seen` is the object as last fetched.
    #[error("timed out after {timeout:?} waiting for {name} to be {what}; last seen: {last_seen}")]
    Timeout {
        /// Object name.
        name: String,
        /// Description of the condition.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The object's JSON (status part when present) at the time of the timeout.
        last_seen: String,
    },
    /// The watch behind the wait failed.
    #[error("watching {name}: {source}")]
    Watch {
        /// Object name.
        name: String,
        /// The underlying error.
        source: kube::runtime::wait::Error,
    },
}

/// How often [`eventually`] asks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A polling loop ran out of time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}")]
pub struct TimedOut {
    /// What was awaited.
    pub what: String,
    /// How long.
    pub timeout: Duration,
}

/// The deadline and pace of one polling loop: check, then [`Poll::next`], until the check
/// holds or `next` says time is up.
#[derive(Debug)]
pub struct Poll {
    what: String,
    timeout: Duration,
    interval: Duration,
    deadline: Instant,
}

impl Poll {
    /// A loop waiting at most `timeout` for `what`, asking every `interval`.
    pub fn new(what: &str, timeout: Duration, interval: Duration) -> Self {
        Poll {
            what: what.to_owned(),
            timeout,
            interval,
            deadline: Instant::now() + timeout,
        }
    }

    /// Sleeps one interval; [`TimedOut`] once the deadline has passed.
    pub async fn next(&mut self) -> Result<(), TimedOut> {
        if Instant::now() > self.deadline {
            return Err(TimedOut {
                what: self.what.clone(),
                timeout: self.timeout,
            });
        }
        tokio::time::sleep(self.interval).await;
        Ok(())
    }
}

/// Polls `check` every [`POLL_INTERVAL`] until it returns true or `timeout` passes; an
/// error of `check` ends the wait at once.
pub async fn eventually<F, Fut, E>(what: &str, timeout: Duration, mut check: F) -> Result<(), E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, E>>,
    E: From<TimedOut>,
{
    let mut poll = Poll::new(what, timeout, POLL_INTERVAL);
    loop {
        if check().await? {
            return Ok(());
        }
        poll.next().await?;
    }
}

/// Waits until the object `name` satisfies `condition`, for at most `timeout`, and
/// returns it. `what` describes the condition for the error message.
pub async fn until<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    condition: impl Condition<K>,
) -> Result<K, WaitError>
where
    K: Resource + Clone + Debug + DeserializeOwned + serde::Serialize + Send + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => Ok(object),
        Ok(Ok(None)) => Err(WaitError::Timeout {
            name: name.to_owned(),
            what: what.to_owned(),
            timeout,
            last_seen: "deleted".to_owned(),
        }),
        Ok(Err(source)) => Err(WaitError::Watch {
            name: name.to_owned(),
            source,
        }),
        Err(_) => {
            let last_seen = match api.get_opt(name).await {
                Ok(Some(object)) => describe(&object),
                Ok(None) => "not found".to_owned(),
                Err(error) => format!("(could not fetch: {error})"),
            };
            Err(WaitError::Timeout {
                name: name.to_owned(),
                what: what.to_owned(),
                timeout,
                last_seen,
            })
        }
    }
}

/// Waits until the pod `name` reaches `phase` (`Running`, `Succeeded`, `Failed`, ...).
pub async fn pod_phase(
    pods: &Api<Pod>,
    name: &str,
    phase: &str,
    timeout: Duration,
) -> Result<Pod, WaitError> {
    let wanted = phase.to_owned();
    until(pods, name, phase, timeout, move |pod: Option<&Pod>| {
        pod.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some(wanted.as_str())
    })
    .await
}

fn describe<K: serde::Serialize>(object: &K) -> String {
    let value = serde_json::to_value(object).unwrap_or_default();
    let shown = value.get("status").cloned().unwrap_or(value);
    serde_json::to_string(&shown).unwrap_or_default()
}
