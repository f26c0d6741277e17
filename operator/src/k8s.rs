//! Kubernetes vocabulary the operator reads and writes: typed names of Job conditions, pod
//! phases and conditions, failure-policy actions and Job modes, so a misspelt `"Complete"`
//! is a compile error; and the apiserver answers the operator handles (`404`, `409`).
//!
//! Each name is an enum whose [`as_str`](JobCondition::as_str) is the exact string of the
//! Kubernetes API; the `is` helpers compare a field read from an object with it.

use k8s_openapi::api::batch::v1::Job;

/// Declares a closed set of Kubernetes API strings as an enum.
macro_rules! api_names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The name as the Kubernetes API spells it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Whether `value`, read from an object, is this name.
            pub fn is(self, value: &str) -> bool {
                value == self.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.as_str().to_owned()
            }
        }
    };
}

api_names! {
    /// The status of a condition.
    ConditionStatus {
        /// The condition holds.
        True = "True",
        /// The condition does not hold.
        False = "False",
    }
}

api_names! {
    /// Condition types of a `batch/v1` Job.
    JobCondition {
        /// All completions succeeded; pods have terminated.
        Complete = "Complete",
        /// The Job failed; pods have terminated.
        Failed = "Failed",
        /// The Job is suspended.
        Suspended = "Suspended",
        /// The success criteria are met; `Complete` follows once pods have terminated.
        SuccessCriteriaMet = "SuccessCriteriaMet",
        /// The failure criteria are met; `Failed` follows once pods have terminated.
        FailureTarget = "FailureTarget",
    }
}

api_names! {
    /// Phases of a pod.
    PodPhase {
        /// Accepted, not all containers running yet (not scheduled, pulling images, ...).
        Pending = "Pending",
        /// A container ended in failure, or the pod was terminated by the system.
        Failed = "Failed",
    }
}

api_names! {
    /// Condition types of a pod.
    PodCondition {
        /// Whether the scheduler placed the pod on a node.
        PodScheduled = "PodScheduled",
        /// The pod is being terminated by a disruption (eviction, preemption, ...).
        DisruptionTarget = "DisruptionTarget",
    }
}

api_names! {
    /// Reasons the operator reads from pod conditions.
    PodConditionReason {
        /// The scheduler found no node for the pod.
        Unschedulable = "Unschedulable",
    }
}

api_names! {
    /// Actions of a Job's `podFailurePolicy` rule.
    PodFailurePolicyAction {
        /// The failure is not counted against the backoff limit.
        Ignore = "Ignore",
        /// The shard (index) fails for good, without further retries.
        FailIndex = "FailIndex",
    }
}

api_names! {
    /// Operators of a node-selector requirement and of a `podFailurePolicy` exit-code rule.
    SelectorOperator {
        /// The value is one of the values.
        In = "In",
        /// The value, an integer, is greater than the one value.
        Gt = "Gt",
    }
}

api_names! {
    /// Operators of a toleration.
    TolerationOperator {
        /// Any value of the taint's key.
        Exists = "Exists",
    }
}

api_names! {
    /// Effects of a taint.
    TaintEffect {
        /// Pods without a toleration are not scheduled onto the node.
        NoSchedule = "NoSchedule",
    }
}

api_names! {
    /// Completion modes of a Job.
    CompletionMode {
        /// Each pod has a completion index, one per shard.
        Indexed = "Indexed",
    }
}

api_names! {
    /// Restart policies of a pod.
    RestartPolicy {
        /// A failed container is not restarted in place; the Job makes a new pod.
        Never = "Never",
    }
}

api_names! {
    /// When a Job replaces a pod.
    PodReplacementPolicy {
        /// Only once the old pod has failed (not while it terminates).
        Failed = "Failed",
    }
}

api_names! {
    /// How mounts made under a volume after the container started reach it.
    MountPropagation {
        /// Mounts made on the host later appear in the container (`rslave`).
        HostToContainer = "HostToContainer",
    }
}

api_names! {
    /// What a `hostPath` volume must be.
    HostPathType {
        /// An existing directory.
        Directory = "Directory",
    }
}

api_names! {
    /// Condition types of a CustomResourceDefinition.
    CrdCondition {
        /// The API is served.
        Established = "Established",
    }
}

/// Whether `job` has the condition `type_` with status `True`.
pub fn job_condition_is_true(job: &Job, type_: JobCondition) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| type_.is(&c.type_) && ConditionStatus::True.is(&c.status))
        })
}

/// Whether `job` has finished (`Complete` or `Failed`).
pub fn job_finished(job: &Job) -> bool {
    job_condition_is_true(job, JobCondition::Complete)
        || job_condition_is_true(job, JobCondition::Failed)
}

/// Whether the apiserver answered that the object does not exist (reason `NotFound` or
/// HTTP 404).
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found() || status.code == 404)
}

/// Whether the apiserver refused a write because another writer changed the object first
/// (reason `Conflict` or HTTP 409).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict() || status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_spelt_as_the_api_spells_them() {
        assert_eq!(
            JobCondition::SuccessCriteriaMet.as_str(),
            "SuccessCriteriaMet"
        );
        assert!(ConditionStatus::True.is("True"));
        assert!(!ConditionStatus::True.is("true"));
        assert_eq!(String::from(RestartPolicy::Never), "Never");
        assert_eq!(PodFailurePolicyAction::FailIndex.to_string(), "FailIndex");
    }

    #[test]
    fn a_job_is_finished_by_a_true_complete_or_failed_condition() {
        let job = |type_: &str, status: &str| -> Job {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "higgs"},
                "status": {"conditions": [{"type": type_, "status": status}]}
            }))
            .expect("a Job")
        };
        assert!(job_finished(&job("Complete", "True")));
        assert!(job_finished(&job("Failed", "True")));
        assert!(!job_finished(&job("Failed", "False")));
        assert!(!job_finished(&job("SuccessCriteriaMet", "True")));
    }

    #[test]
    fn not_found_and_conflict_are_recognised() {
        let error = |code| {
            kube::Error::Api(
                kube::core::Status::failure("no", "")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(is_not_found(&error(404)));
        assert!(!is_not_found(&error(409)));
        assert!(is_conflict(&error(409)));
        assert!(!is_conflict(&error(500)));
    }
}
