//! Who the shards run as: the one part of the pods' security context a physicist may
//! choose.
//!
//! Every shard pod passes the Pod Security Standard `restricted` by default (non-root,
//! no privilege escalation, no capabilities, the runtime's seccomp profile); the operator
//! sets all of that and nothing of it is user-settable. What an image may need is another
//! user: [`RunAs`] names it (UID and GID; never root), and `runAsRoot: true` asks for root,
//! which the operator grants only where the cluster admin allows it. The rules here are
//! the ones that need no configuration; the operator checks the rest.

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::analysis_job::{Rule, set_rules};

/// Largest user or group ID accepted (the kernel's IDs are 32-bit; Kubernetes' API caps
/// them at 2^31 - 1).
pub const MAX_ID: i64 = 2_147_483_647;

/// The user and group every shard runs as.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunAs {
    /// UID of the shards' processes, e.g. `1000` (`cmsusr` in the CMS images); not 0.
    #[schemars(range(min = 0, max = 2_147_483_647), transform = user_rules)]
    pub user: i64,
    /// GID of the shards' processes and of their output volumes (`fsGroup`), so files
    /// they write are theirs. Absent: the same number as `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2_147_483_647))]
    pub group: Option<i64>,
}

impl RunAs {
    /// The user and group `user`:`group`.
    pub fn new(user: i64, group: i64) -> RunAs {
        RunAs {
            user,
            group: Some(group),
        }
    }

    /// The group: the one given, else the user's number.
    pub fn group(&self) -> i64 {
        self.group.unwrap_or(self.user)
    }
}

/// A Pod Security Standards level, from the strictest: in the status, the one the shards'
/// pods meet and their namespace must admit (`restricted`; `baseline` for root shards;
/// `privileged` with `hostPath` volumes).
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    /// Hardened: non-root, no escalation, no capabilities, seccomp, only safe volumes.
    Restricted,
    /// No known privilege escalation: root allowed, host namespaces and `hostPath` not.
    Baseline,
    /// Unrestricted.
    Privileged,
}

impl PodSecurityLevel {
    /// The level as the `pod-security.kubernetes.io/enforce` namespace label writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Restricted => "restricted",
            PodSecurityLevel::Baseline => "baseline",
            PodSecurityLevel::Privileged => "privileged",
        }
    }
}

/// Namespace label saying which Pod Security level admission enforces on the namespace's
/// pods.
pub const POD_SECURITY_ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";

/// The rule keeping `runAs` and `runAsRoot: true` apart.
pub(crate) fn run_as_root_rule() -> Rule {
    Rule::new(
        "!(has(self.runAs) && has(self.runAsRoot) && self.runAsRoot)",
        "spec.runAs and spec.runAsRoot: true exclude each other (root is UID 0): remove one",
    )
}

fn user_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self != 0",
            "spec.runAs.user must not be 0, root's UID: ask for spec.runAsRoot: true instead \
             (the cluster admin must allow it)",
        )],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_group_defaults_to_the_users_number() {
        let run_as: RunAs = serde_json::from_value(json!({"user": 1000})).expect("parses");
        assert_eq!((run_as.user, run_as.group()), (1000, 1000));
        assert_eq!(RunAs::new(1000, 100).group(), 100);
    }

    #[test]
    fn levels_order_from_the_strictest() {
        assert!(PodSecurityLevel::Restricted < PodSecurityLevel::Baseline);
        assert!(PodSecurityLevel::Baseline < PodSecurityLevel::Privileged);
        assert_eq!(PodSecurityLevel::Baseline.as_str(), "baseline");
    }
}
