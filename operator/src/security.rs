//! The shards' security context, decided purely from the AnalysisJob and the operator
//! configuration, and the Pod Security level a pod spec meets.
//!
//! Every shard pod gets what the Pod Security Standard `restricted` asks for:
//! `runAsNonRoot`, a non-zero `runAsUser` (the pods' images often run as root by name,
//! which the kubelet would refuse under `runAsNonRoot` without one), `seccompProfile:
//! RuntimeDefault`, and for the container `allowPrivilegeEscalation: false` and every
//! capability dropped. `/cvmfs` is an inline CSI volume, which `restricted` admits.
//!
//! The user is, in order: `spec.runAs`; the configuration's user of the platform, when
//! the shards run the platform's image (`cc7` → `cmsusr`); the configuration's default.
//! Its group is also the pod's `fsGroup`, so volumes that support it (an `emptyDir`
//! output, a PVC) are writable by the shards.
//!
//! `spec.runAsRoot: true` is granted only where `security.allowRoot` of the configuration
//! lists the namespace, or the platform whose image the shards run; elsewhere it is a
//! [`SecurityError`] the controller reports as `Accepted=False`. A root shard keeps the
//! rest (no capabilities, no escalation, seccomp), and so meets `baseline`.
//!
//! [`level`] reads a pod spec the way Pod Security admission would for the parts the
//! operator chooses: `hostPath` volumes (the `hostPath` CVMFS provider, a `hostPath`
//! output) make a pod `privileged`-only, root makes it `baseline`.

use hepbatch_crds::{AnalysisJob, PodSecurityLevel, RunAs};
use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};
use kube::ResourceExt;

use crate::config::SecurityConfig;

/// Seccomp profile type of the container runtime's default profile.
pub const RUNTIME_DEFAULT_SECCOMP: &str = "RuntimeDefault";

/// The capability name meaning every capability.
pub const ALL_CAPABILITIES: &str = "ALL";

/// `fsGroupChangePolicy` that changes ownership only when the volume's root does not
/// already have the group: a large PVC is not walked at every pod start.
pub const ON_ROOT_MISMATCH: &str = "OnRootMismatch";

/// Why the shards cannot run as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecurityError {
    /// Root was asked for where the cluster admin does not allow it.
    #[error(
        "spec.runAsRoot is not allowed in namespace {namespace}{platform_note}: only the \
         cluster admin can allow it, for the namespace or the platform \
         (security.allowRoot.namespaces or .platforms of the operator's configuration); \
         ask them, or remove spec.runAsRoot to run as a user"
    )]
    RootNotAllowed {
        /// The AnalysisJob's namespace.
        namespace: String,
        /// ` for platform <name>` when the shards run a platform's image, else empty.
        platform_note: String,
    },
}

/// Who the shards run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A user and group (never UID 0).
    User(RunAs),
    /// Root, as allowed by the configuration.
    Root,
}

/// The platform whose image the shards run: `spec.platform`, unless `spec.image`
/// overrides its image (then the platform's user and root allowance do not apply).
fn image_platform(analysis_job: &AnalysisJob) -> Option<&str> {
    let spec = &analysis_job.spec;
    match (&spec.image, &spec.platform) {
        (None, Some(platform)) => Some(platform.as_str()),
        _ => None,
    }
}

/// Who the shards of `analysis_job` run as under `config`.
pub fn identity(
    analysis_job: &AnalysisJob,
    config: &SecurityConfig,
) -> Result<Identity, SecurityError> {
    let spec = &analysis_job.spec;
    let platform = image_platform(analysis_job);
    if spec.wants_root() {
        let namespace = analysis_job.namespace().unwrap_or_default();
        if config.allow_root.allows(&namespace, platform) {
            return Ok(Identity::Root);
        }
        return Err(SecurityError::RootNotAllowed {
            namespace,
            platform_note: platform
                .map(|p| format!(" for platform {p}"))
                .unwrap_or_default(),
        });
    }
    Ok(Identity::User(
        spec.run_as.unwrap_or_else(|| config.run_as(platform)),
    ))
}

/// The pod's security context for `identity`.
pub fn pod_context(identity: Identity) -> PodSecurityContext {
    let seccomp = Some(SeccompProfile {
        type_: RUNTIME_DEFAULT_SECCOMP.to_owned(),
        localhost_profile: None,
    });
    match identity {
        Identity::User(run_as) => PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(run_as.user),
            run_as_group: Some(run_as.group()),
            fs_group: Some(run_as.group()),
            fs_group_change_policy: Some(ON_ROOT_MISMATCH.to_owned()),
            seccomp_profile: seccomp,
            ..PodSecurityContext::default()
        },
        Identity::Root => PodSecurityContext {
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            run_as_group: Some(0),
            seccomp_profile: seccomp,
            ..PodSecurityContext::default()
        },
    }
}

/// The shard container's security context: no escalation, no capability, whoever runs.
pub fn container_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec![ALL_CAPABILITIES.to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// The strictest Pod Security level `pod` meets, and why it is not `restricted` (one
/// sentence per cause), for what the operator chooses: volumes and the user.
pub fn level(pod: &PodSpec) -> (PodSecurityLevel, Vec<String>) {
    let mut level = PodSecurityLevel::Restricted;
    let mut why = Vec::new();
    for volume in pod.volumes.iter().flatten() {
        if volume.host_path.is_some() {
            level = level.max(PodSecurityLevel::Privileged);
            why.push(format!(
                "volume {} is a hostPath, which only privileged admits",
                volume.name
            ));
        }
    }
    let context = pod.security_context.as_ref();
    let root = context.and_then(|c| c.run_as_user) == Some(0)
        || context.and_then(|c| c.run_as_non_root) != Some(true);
    if root {
        level = level.max(PodSecurityLevel::Baseline);
        why.push("the shards run as root, which restricted does not admit".to_owned());
    }
    (level, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OperatorConfig;
    use k8s_openapi::api::core::v1::{HostPathVolumeSource, Volume};
    use serde_json::{Value, json};

    fn analysis_job(namespace: &str, spec: Value) -> AnalysisJob {
        hepbatch_crds::testing::analysis_job("higgs", spec)
            .namespace(namespace)
            .build()
            .expect("a valid AnalysisJob")
    }

    fn security(yaml: &str) -> SecurityConfig {
        OperatorConfig::parse(std::path::Path::new("operator.yaml"), yaml)
            .expect("valid")
            .security
    }

    #[test]
    fn the_user_is_the_specs_else_the_platforms_else_the_default() {
        let config = SecurityConfig::default();
        let user = |spec: Value| identity(&analysis_job("physics", spec), &config);
        assert_eq!(
            user(json!({"platform": "cc7", "script": "true"})),
            Ok(Identity::User(crate::config::CMSUSR))
        );
        assert_eq!(
            user(json!({"platform": "cc7", "runAs": {"user": 4242}})),
            Ok(Identity::User(RunAs {
                user: 4242,
                group: None
            }))
        );
        // The platform's user belongs to its image.
        assert_eq!(
            user(json!({"platform": "cc7", "image": "own:1"})),
            Ok(Identity::User(crate::config::DEFAULT_RUN_AS))
        );
        assert_eq!(
            user(json!({"image": "busybox"})),
            Ok(Identity::User(crate::config::DEFAULT_RUN_AS))
        );
    }

    #[test]
    fn root_is_refused_by_default_naming_who_can_allow_it() {
        let refused = identity(
            &analysis_job("physics", json!({"platform": "el9", "runAsRoot": true})),
            &SecurityConfig::default(),
        )
        .expect_err("refused");
        let message = refused.to_string();
        assert!(
            message.starts_with("spec.runAsRoot is not allowed in namespace physics for platform el9: only the cluster admin can allow it"),
            "{message}"
        );
        assert!(
            message.contains("security.allowRoot.namespaces"),
            "{message}"
        );
    }

    #[test]
    fn root_is_granted_for_the_listed_namespaces_and_platforms_only() {
        let config =
            security("security:\n  allowRoot: {namespaces: [cernvm-tests], platforms: [cernvm]}\n");
        let ask = |namespace: &str, spec: Value| {
            identity(&analysis_job(namespace, spec), &config).is_ok()
        };
        assert!(ask(
            "cernvm-tests",
            json!({"image": "cernvm:5", "runAsRoot": true})
        ));
        assert!(ask(
            "physics",
            json!({"platform": "cernvm", "runAsRoot": true})
        ));
        // Another image than the platform's does not inherit its allowance.
        assert!(!ask(
            "physics",
            json!({"platform": "cernvm", "image": "own:1", "runAsRoot": true})
        ));
        assert!(!ask(
            "physics",
            json!({"platform": "el9", "runAsRoot": true})
        ));
    }

    #[test]
    fn a_user_gets_restricted_and_root_keeps_everything_but_the_user() {
        let user = pod_context(Identity::User(RunAs::new(1000, 100)));
        assert_eq!(
            (
                user.run_as_non_root,
                user.run_as_user,
                user.run_as_group,
                user.fs_group
            ),
            (Some(true), Some(1000), Some(100), Some(100))
        );
        assert_eq!(
            user.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let root = pod_context(Identity::Root);
        assert_eq!(
            (root.run_as_non_root, root.run_as_user, root.fs_group),
            (Some(false), Some(0), None)
        );
        assert!(root.seccomp_profile.is_some());
        let container = container_context();
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(
            container.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
    }

    #[test]
    fn host_paths_need_privileged_and_root_baseline() {
        let mut pod = PodSpec {
            security_context: Some(pod_context(Identity::User(RunAs::new(1000, 1000)))),
            ..PodSpec::default()
        };
        assert_eq!(level(&pod), (PodSecurityLevel::Restricted, Vec::new()));
        pod.security_context = Some(pod_context(Identity::Root));
        assert_eq!(level(&pod).0, PodSecurityLevel::Baseline);
        pod.volumes = Some(vec![Volume {
            name: "cvmfs".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: "/cvmfs".to_owned(),
                type_: None,
            }),
            ..Volume::default()
        }]);
        let (found, why) = level(&pod);
        assert_eq!(found, PodSecurityLevel::Privileged);
        assert_eq!(
            why[0],
            "volume cvmfs is a hostPath, which only privileged admits"
        );
    }
}
