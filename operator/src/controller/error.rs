//! Why a reconcile failed: one variant per stage, each with the apiserver's answer (or the
//! translation error) as its source, and a bounded [`ErrorCategory`] for metrics.

use crate::build::BuildError;
use crate::k8s;
use crate::metrics::ErrorCategory;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading what the cluster has failed.
    #[error("{what} for {key}: {source}")]
    Observe {
        /// What was read.
        what: &'static str,
        /// `namespace/name` of the AnalysisJob.
        key: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// The AnalysisJob cannot be translated, for a reason no user can fix.
    #[error("translating {key}: {source}")]
    Plan {
        /// `namespace/name` of the AnalysisJob.
        key: String,
        /// What was wrong.
        #[source]
        source: BuildError,
    },
    /// Writing the Job or its input ConfigMaps failed.
    #[error("{what} for {key}: {source}")]
    Apply {
        /// What was written.
        what: &'static str,
        /// `namespace/name` of the AnalysisJob.
        key: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
    /// Writing the status or deleting a finished AnalysisJob failed.
    #[error("{what} for {key}: {source}")]
    Report {
        /// What was written.
        what: &'static str,
        /// `namespace/name` of the AnalysisJob.
        key: String,
        /// The apiserver's answer.
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The bounded category used in metrics and for the retry.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Plan { .. } => ErrorCategory::Invalid,
            Error::Observe { source, .. }
            | Error::Apply { source, .. }
            | Error::Report { source, .. } => {
                if k8s::is_conflict(source) {
                    ErrorCategory::Conflict
                } else {
                    ErrorCategory::Api
                }
            }
        }
    }
}

/// A stage's request error for the AnalysisJob `key`, doing `what`.
pub(super) fn observe(key: &str, what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    let key = key.to_owned();
    move |source| Error::Observe { what, key, source }
}

/// See [`observe`].
pub(super) fn apply(key: &str, what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    let key = key.to_owned();
    move |source| Error::Apply { what, key, source }
}

/// See [`observe`].
pub(super) fn report(key: &str, what: &'static str) -> impl FnOnce(kube::Error) -> Error {
    let key = key.to_owned();
    move |source| Error::Report { what, key, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn conflicts_are_told_apart_from_other_api_errors() {
        assert_eq!(
            report("physics/higgs", "writing the status")(api_error(409)).category(),
            ErrorCategory::Conflict
        );
        assert_eq!(
            apply("physics/higgs", "applying the Job")(api_error(500)).category(),
            ErrorCategory::Api
        );
        let error = observe("physics/higgs", "reading the Job")(api_error(403));
        assert!(std::error::Error::source(&error).is_some());
    }
}
