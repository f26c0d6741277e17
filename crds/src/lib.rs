//! The hepbatch API crate.
//!
//! Everything that more than one part of hepbatch must agree on lives here: the API group
//! and kind of the `AnalysisJob` custom resource, the name of the CVMFS CSI driver, and
//! (as they arrive) the resource types themselves, volume-attribute keys and label keys.
//! The operator, the CSI plugin and the tests depend on this crate; it depends on
//! nothing of theirs.

pub mod analysis_job;
pub mod hep;
pub mod security;
pub mod shard_indexes;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use analysis_job::{
    AnalysisJob, AnalysisJobSpec, AnalysisJobStatus, CvmfsRevision, CvmfsStatus, FailedShard,
    Phase, RetriedShard, ShardResources,
};
pub use hep::{
    Cmssw, ConfigMapKey, Consistency, Cvmfs, GpuRequest, GpuVendor, Inputs, IntelDriver, Output,
    OutputVolume, Pin,
};
pub use security::{PodSecurityLevel, RunAs};
pub use shard_indexes::{ShardIndexes, ShardIndexesError, ShardNumbering};

/// API group of every hepbatch custom resource.
pub const API_GROUP: &str = "hepbatch.io";

/// Version of the `AnalysisJob` API served today.
pub const API_VERSION: &str = "v1alpha1";

/// Kind of the custom resource physicists submit.
pub const ANALYSIS_JOB_KIND: &str = "AnalysisJob";

/// Name under which the CVMFS CSI node plugin registers with the kubelet and that pods
/// name in their CSI volumes.
pub const CSI_DRIVER_NAME: &str = "cvmfs.hepbatch.io";

/// CSI volume attribute listing the repositories a volume carries, comma-separated
/// (`cms.cern.ch,sft.cern.ch`). Absent: every repository, mounted on first access.
pub const CSI_ATTRIBUTE_REPOSITORIES: &str = "repositories";

/// CSI volume attribute pinning repositories to a revision, `;`-separated entries of
/// `<repository>@tag=<tag>`, `<repository>@date=<ISO-8601>` or `<repository>@rootHash=<hash>`.
pub const CSI_ATTRIBUTE_PINS: &str = "pins";

#[cfg(test)]
mod tests {
    use super::*;

    /// CSI requires driver names of at most 63 characters in DNS-subdomain form, and
    /// Kubernetes requires an API group to be a DNS subdomain too.
    #[test]
    fn fixed_names_are_dns_subdomains() {
        for name in [API_GROUP, CSI_DRIVER_NAME] {
            assert!(name.len() <= 63, "{name} is longer than 63 characters");
            assert!(
                name.split('.').all(|label| !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')),
                "{name} is not a DNS subdomain"
            );
        }
        assert!(CSI_DRIVER_NAME.ends_with(API_GROUP));
    }
}
