//! `/cvmfs` in the shard pod, from the AnalysisJob's `cvmfs` (and `cmssw`) and the
//! configured provider.
//!
//! Which repositories: `cvmfs.repositories` when listed, plus `cms.cern.ch` when `cmssw`
//! is set; `cvmfs` without a list means every repository on demand; no `cvmfs` but
//! `cmssw` means just `cms.cern.ch`; neither means no `/cvmfs` at all.
//!
//! How they arrive ([`CvmfsProvider`]):
//! - `csi`: one inline volume of the hepbatch CSI driver mounted at `/cvmfs`, read-only,
//!   with `HostToContainer` propagation so repositories the plugin mounts (or heals) later
//!   appear in the running container. The volume attributes carry the list and the pins in
//!   the syntax the plugin parses (`repositories`, `pins`).
//! - `pvc`: the configured claim of a cvmfs-csi style driver, read-only; a listed
//!   repository is mounted at `/cvmfs/<repo>` with `subPath: <repo>`, no list mounts the
//!   whole claim at `/cvmfs`.
//! - `hostPath`: the node's CVMFS mount point, in the same two shapes.
//!
//! Only `csi` can pin; a pin with another provider is an error for the status, never a pod
//! that silently shows the latest revision. No container gets privileges for any of this.
//!
//! `consistency: Fleet` is pins the operator chooses: [`to_resolve`] names the
//! repositories whose current revision the controller must resolve before the Job exists
//! (the listed ones without a pin of the user's), and [`mount`] pins each of them
//! `@rootHash=<hash>` from the resolved [`Snapshot`], which it returns beside the volume
//! for the Job to record. A repository to pin that was not resolved is an error, never a
//! pod that floats.

use std::collections::BTreeMap;

use hepbatch_crds::hep::CMS_REPOSITORY;
use hepbatch_crds::{CSI_ATTRIBUTE_PINS, CSI_ATTRIBUTE_REPOSITORIES, CSI_DRIVER_NAME, Cvmfs, Pin};
use k8s_openapi::api::core::v1::{
    CSIVolumeSource, HostPathVolumeSource, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};

use crate::config::CvmfsProvider;
use crate::k8s::{HostPathType, MountPropagation};
use crate::revision::Snapshot;

/// Where CVMFS appears in the container.
pub const CVMFS_MOUNT_PATH: &str = "/cvmfs";

/// Name of the pod volume carrying CVMFS.
pub const CVMFS_VOLUME: &str = "cvmfs";

/// The volume and mounts giving a shard its repositories.
#[derive(Clone, Debug, PartialEq)]
pub struct CvmfsMount {
    /// The pod volume.
    pub volume: Volume,
    /// The container's mounts of it.
    pub mounts: Vec<VolumeMount>,
    /// The resolved revisions the volume pins (`consistency: Fleet`), by repository.
    pub revisions: Snapshot,
}

/// Why `/cvmfs` cannot be provided as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CvmfsError {
    /// Pins need the CSI provider.
    #[error(
        "spec.cvmfs.pin needs the csi CVMFS provider, but this cluster provides /cvmfs with \
         {provider}, which always shows the latest revision; remove the pin or ask the \
         cluster admin for the csi provider"
    )]
    PinUnsupported {
        /// The configured provider.
        provider: &'static str,
    },
    /// Fleet consistency pins, so it needs the CSI provider too.
    #[error(
        "spec.cvmfs.consistency: Fleet pins every shard to the revision current when the \
         AnalysisJob starts, which needs the csi CVMFS provider, but this cluster provides \
         /cvmfs with {provider} (cvmfs.provider of the operator configuration), which shows \
         each node's latest revision; remove spec.cvmfs.consistency or ask the cluster admin \
         for the csi provider"
    )]
    ConsistencyUnsupported {
        /// The configured provider.
        provider: &'static str,
    },
    /// Fleet consistency without a list (the schema refuses it; kept for objects stored
    /// before the rule existed).
    #[error(
        "spec.cvmfs.consistency: Fleet needs spec.cvmfs.repositories: every repository on \
         demand cannot be resolved ahead; list the repositories"
    )]
    FleetOnDemand,
    /// A repository to pin was not resolved before the Job was built.
    #[error("the current revision of {repository} has not been resolved")]
    Unresolved {
        /// The repository.
        repository: String,
    },
}

/// The repositories whose current revision must be resolved before the Job is built:
/// with `consistency: Fleet`, every repository the shard sees that has no pin of its own;
/// none otherwise. Fleet needs a provider that pins and an explicit list.
pub fn to_resolve(
    cvmfs: Option<&Cvmfs>,
    cmssw: bool,
    provider: &CvmfsProvider,
) -> Result<Vec<String>, CvmfsError> {
    let Some(cvmfs) = cvmfs.filter(|c| c.is_fleet()) else {
        return Ok(Vec::new());
    };
    if !provider.can_pin() {
        return Err(CvmfsError::ConsistencyUnsupported {
            provider: provider.name(),
        });
    }
    let Repositories::Listed(listed) = repositories(Some(cvmfs), cmssw) else {
        return Err(CvmfsError::FleetOnDemand);
    };
    let pinned = cvmfs.pin.as_ref();
    Ok(listed
        .into_iter()
        .filter(|repository| !pinned.is_some_and(|pins| pins.contains_key(repository)))
        .collect())
}

/// Which repositories a shard sees under `/cvmfs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repositories {
    /// No `/cvmfs` at all.
    None,
    /// Every repository, mounted on demand when first used.
    OnDemand,
    /// Exactly these (sorted, unique).
    Listed(Vec<String>),
}

/// The repositories a shard needs (`cmssw` implies `cms.cern.ch`).
pub fn repositories(cvmfs: Option<&Cvmfs>, cmssw: bool) -> Repositories {
    match cvmfs {
        None if cmssw => Repositories::Listed(vec![CMS_REPOSITORY.to_owned()]),
        None => Repositories::None,
        Some(cvmfs) => match &cvmfs.repositories {
            None => Repositories::OnDemand,
            Some(listed) => {
                let mut list = listed.clone();
                if cmssw {
                    list.push(CMS_REPOSITORY.to_owned());
                }
                list.sort();
                list.dedup();
                Repositories::Listed(list)
            }
        },
    }
}

/// The `pins` volume attribute: `<repo>@tag=<t>;<repo>@date=<d>;<repo>@rootHash=<h>`.
pub fn pins_attribute(pins: &BTreeMap<String, Pin>) -> String {
    pins.iter()
        .filter_map(|(repository, pin)| {
            let (kind, value) = match pin {
                Pin { tag: Some(tag), .. } => ("tag", tag),
                Pin {
                    date: Some(date), ..
                } => ("date", date),
                Pin {
                    root_hash: Some(hash),
                    ..
                } => ("rootHash", hash),
                _ => return None,
            };
            Some(format!("{repository}@{kind}={value}"))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The volume and mounts for `cvmfs` (and `cmssw`) under `provider`, with the
/// repositories [`to_resolve`] names pinned to their revision in `snapshot`; `None` when
/// the shard needs no `/cvmfs`.
pub fn mount(
    cvmfs: Option<&Cvmfs>,
    cmssw: bool,
    provider: &CvmfsProvider,
    snapshot: &Snapshot,
) -> Result<Option<CvmfsMount>, CvmfsError> {
    let repositories = repositories(cvmfs, cmssw);
    if repositories == Repositories::None {
        return Ok(None);
    }
    let (pins, revisions) = pins(cvmfs, cmssw, provider, snapshot)?;
    let volume = |source: Volume| Volume {
        name: CVMFS_VOLUME.to_owned(),
        ..source
    };
    let mount = match provider {
        CvmfsProvider::Csi { .. } => {
            let mut attributes = BTreeMap::new();
            if let Repositories::Listed(list) = &repositories {
                attributes.insert(CSI_ATTRIBUTE_REPOSITORIES.to_owned(), list.join(","));
            }
            if !pins.is_empty() {
                attributes.insert(CSI_ATTRIBUTE_PINS.to_owned(), pins_attribute(&pins));
            }
            CvmfsMount {
                volume: volume(Volume {
                    csi: Some(CSIVolumeSource {
                        driver: CSI_DRIVER_NAME.to_owned(),
                        read_only: Some(true),
                        volume_attributes: (!attributes.is_empty()).then_some(attributes),
                        ..CSIVolumeSource::default()
                    }),
                    ..Volume::default()
                }),
                mounts: vec![read_only_mount(CVMFS_MOUNT_PATH.to_owned(), None)],
                revisions,
            }
        }
        CvmfsProvider::Pvc { claim_name } => CvmfsMount {
            volume: volume(Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name.clone(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            }),
            mounts: per_repository_mounts(&repositories),
            revisions: Snapshot::new(),
        },
        CvmfsProvider::HostPath { path } => CvmfsMount {
            volume: volume(Volume {
                host_path: Some(HostPathVolumeSource {
                    path: path.clone(),
                    type_: Some(HostPathType::Directory.into()),
                }),
                ..Volume::default()
            }),
            mounts: per_repository_mounts(&repositories),
            revisions: Snapshot::new(),
        },
    };
    Ok(Some(mount))
}

/// The pins of the shard's repositories: the user's, and for `consistency: Fleet` the
/// revisions resolved in `snapshot`, which are also returned to be recorded on the Job.
fn pins(
    cvmfs: Option<&Cvmfs>,
    cmssw: bool,
    provider: &CvmfsProvider,
    snapshot: &Snapshot,
) -> Result<(BTreeMap<String, Pin>, Snapshot), CvmfsError> {
    let mut pins = cvmfs.and_then(|c| c.pin.clone()).unwrap_or_default();
    if !pins.is_empty() && !provider.can_pin() {
        return Err(CvmfsError::PinUnsupported {
            provider: provider.name(),
        });
    }
    let mut revisions = Snapshot::new();
    for repository in to_resolve(cvmfs, cmssw, provider)? {
        let revision = snapshot
            .get(&repository)
            .ok_or_else(|| CvmfsError::Unresolved {
                repository: repository.clone(),
            })?;
        pins.insert(
            repository.clone(),
            Pin {
                root_hash: Some(revision.root_hash.clone()),
                ..Pin::default()
            },
        );
        revisions.insert(repository, revision.clone());
    }
    Ok((pins, revisions))
}

/// A read-only mount of the CVMFS volume (or of `sub_path` in it) at `path`, receiving
/// mounts made on the host later (repositories mounted on demand).
fn read_only_mount(path: String, sub_path: Option<String>) -> VolumeMount {
    VolumeMount {
        name: CVMFS_VOLUME.to_owned(),
        mount_path: path,
        sub_path,
        read_only: Some(true),
        mount_propagation: Some(MountPropagation::HostToContainer.into()),
        ..VolumeMount::default()
    }
}

/// For a volume holding every repository: one mount per listed repository, else all.
fn per_repository_mounts(repositories: &Repositories) -> Vec<VolumeMount> {
    match repositories {
        Repositories::Listed(list) => list
            .iter()
            .map(|repo| read_only_mount(format!("{CVMFS_MOUNT_PATH}/{repo}"), Some(repo.clone())))
            .collect(),
        Repositories::None | Repositories::OnDemand => {
            vec![read_only_mount(CVMFS_MOUNT_PATH.to_owned(), None)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cvmfs(value: serde_json::Value) -> Cvmfs {
        serde_json::from_value(value).expect("valid cvmfs")
    }

    #[test]
    fn cmssw_implies_the_cms_repository() {
        assert_eq!(repositories(None, false), Repositories::None);
        assert_eq!(
            repositories(None, true),
            Repositories::Listed(vec!["cms.cern.ch".to_owned()])
        );
        let listed = cvmfs(serde_json::json!({"repositories": ["sft.cern.ch", "cms.cern.ch"]}));
        assert_eq!(
            repositories(Some(&listed), true),
            Repositories::Listed(vec!["cms.cern.ch".to_owned(), "sft.cern.ch".to_owned()])
        );
        assert_eq!(
            repositories(Some(&Cvmfs::default()), true),
            Repositories::OnDemand
        );
    }

    #[test]
    fn csi_gives_one_read_only_rslave_volume_with_list_and_pins() {
        let spec = cvmfs(serde_json::json!({
            "repositories": ["cms.cern.ch", "sft.cern.ch"],
            "pin": {"cms.cern.ch": {"tag": "v2"}, "sft.cern.ch": {"date": "2025-06-01T00:00:00Z"}}
        }));
        let mount = mount(Some(&spec), false, &CvmfsProvider::csi(), &Snapshot::new())
            .expect("csi pins")
            .expect("a volume");
        let csi = mount.volume.csi.expect("csi volume");
        assert_eq!(csi.driver, "cvmfs.hepbatch.io");
        assert_eq!(csi.read_only, Some(true));
        let attributes = csi.volume_attributes.expect("attributes");
        assert_eq!(attributes["repositories"], "cms.cern.ch,sft.cern.ch");
        assert_eq!(
            attributes["pins"],
            "cms.cern.ch@tag=v2;sft.cern.ch@date=2025-06-01T00:00:00Z"
        );
        assert_eq!(mount.mounts.len(), 1);
        assert_eq!(mount.mounts[0].mount_path, "/cvmfs");
        assert_eq!(mount.mounts[0].read_only, Some(true));
        assert_eq!(
            mount.mounts[0].mount_propagation.as_deref(),
            Some("HostToContainer")
        );
    }

    #[test]
    fn on_demand_csi_volume_has_no_attributes() {
        let mount = mount(
            Some(&Cvmfs::default()),
            false,
            &CvmfsProvider::csi(),
            &Snapshot::new(),
        )
        .expect("ok")
        .expect("a volume");
        assert_eq!(mount.volume.csi.expect("csi").volume_attributes, None);
    }

    #[test]
    fn pvc_and_host_path_mount_each_listed_repository_by_sub_path() {
        let spec = cvmfs(serde_json::json!({"repositories": ["sft.cern.ch"]}));
        let pvc = CvmfsProvider::Pvc {
            claim_name: "cvmfs".into(),
        };
        let mount = mount(Some(&spec), true, &pvc, &Snapshot::new())
            .expect("ok")
            .expect("volume");
        assert_eq!(
            mount
                .volume
                .persistent_volume_claim
                .expect("pvc")
                .claim_name,
            "cvmfs"
        );
        let paths: Vec<_> = mount
            .mounts
            .iter()
            .map(|m| (m.mount_path.as_str(), m.sub_path.as_deref()))
            .collect();
        assert_eq!(
            paths,
            [
                ("/cvmfs/cms.cern.ch", Some("cms.cern.ch")),
                ("/cvmfs/sft.cern.ch", Some("sft.cern.ch"))
            ]
        );
        let host = CvmfsProvider::HostPath {
            path: "/cvmfs".into(),
        };
        let whole = super::mount(Some(&Cvmfs::default()), false, &host, &Snapshot::new())
            .expect("ok")
            .expect("volume");
        assert_eq!(whole.volume.host_path.expect("host path").path, "/cvmfs");
        assert_eq!(whole.mounts[0].mount_path, "/cvmfs");
        assert_eq!(whole.mounts[0].sub_path, None);
    }

    #[test]
    fn pins_need_the_csi_provider() {
        let spec = cvmfs(serde_json::json!({"pin": {"cms.cern.ch": {"tag": "v2"}}}));
        let error = mount(
            Some(&spec),
            false,
            &CvmfsProvider::HostPath {
                path: "/cvmfs".into(),
            },
            &Snapshot::new(),
        )
        .expect_err("host paths cannot pin");
        assert_eq!(
            error,
            CvmfsError::PinUnsupported {
                provider: "hostPath"
            }
        );
        assert!(error.to_string().contains("remove the pin"));
    }

    fn revision(root_hash: &str, revision: i64) -> hepbatch_crds::CvmfsRevision {
        hepbatch_crds::CvmfsRevision {
            root_hash: root_hash.into(),
            revision,
            published: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().expect("time"),
            ),
        }
    }

    #[test]
    fn fleet_resolves_the_listed_repositories_without_a_pin() {
        let spec = cvmfs(serde_json::json!({
            "repositories": ["sft.cern.ch", "atlas.cern.ch"], "consistency": "Fleet",
            "pin": {"atlas.cern.ch": {"tag": "v2"}}
        }));
        let csi = CvmfsProvider::csi();
        // cmssw adds cms.cern.ch, which is resolved too; atlas keeps its own pin.
        assert_eq!(
            to_resolve(Some(&spec), true, &csi),
            Ok(vec!["cms.cern.ch".to_owned(), "sft.cern.ch".to_owned()])
        );
        let node = cvmfs(serde_json::json!({"repositories": ["sft.cern.ch"]}));
        assert_eq!(to_resolve(Some(&node), true, &csi), Ok(Vec::new()));
        assert_eq!(to_resolve(None, true, &csi), Ok(Vec::new()));
        let on_demand = cvmfs(serde_json::json!({"consistency": "Fleet"}));
        assert_eq!(
            to_resolve(Some(&on_demand), false, &csi),
            Err(CvmfsError::FleetOnDemand)
        );
        let pvc = CvmfsProvider::Pvc {
            claim_name: "cvmfs".into(),
        };
        let error = to_resolve(Some(&spec), false, &pvc).expect_err("pvc cannot pin");
        assert_eq!(
            error,
            CvmfsError::ConsistencyUnsupported { provider: "pvc" }
        );
        let message = error.to_string();
        assert!(
            message.starts_with("spec.cvmfs.consistency: Fleet")
                && message.contains("cvmfs.provider")
                && message.contains("with pvc"),
            "{message}"
        );
    }

    #[test]
    fn fleet_pins_each_resolved_repository_by_root_hash() {
        let spec = cvmfs(serde_json::json!({
            "repositories": ["cms.cern.ch", "sft.cern.ch", "atlas.cern.ch"],
            "consistency": "Fleet", "pin": {"atlas.cern.ch": {"tag": "v2"}}
        }));
        let cms = revision("1111111111111111111111111111111111111111", 5);
        let sft = revision("2222222222222222222222222222222222222222-rmd160", 9);
        let snapshot = Snapshot::from([
            ("cms.cern.ch".to_owned(), cms.clone()),
            ("sft.cern.ch".to_owned(), sft.clone()),
            // Not asked for: not used.
            ("unpacked.cern.ch".to_owned(), cms.clone()),
        ]);
        let pinned = mount(Some(&spec), false, &CvmfsProvider::csi(), &snapshot)
            .expect("pins")
            .expect("a volume");
        let attributes = pinned
            .volume
            .csi
            .and_then(|c| c.volume_attributes)
            .expect("attributes");
        assert_eq!(
            attributes["pins"],
            "atlas.cern.ch@tag=v2;cms.cern.ch@rootHash=1111111111111111111111111111111111111111;\
             sft.cern.ch@rootHash=2222222222222222222222222222222222222222-rmd160"
        );
        assert_eq!(
            pinned.revisions,
            Snapshot::from([
                ("cms.cern.ch".to_owned(), cms),
                ("sft.cern.ch".to_owned(), sft)
            ])
        );
        // A repository to pin that was not resolved is an error, not a floating pod.
        let partial = Snapshot::from([("cms.cern.ch".to_owned(), revision("1", 1))]);
        assert_eq!(
            mount(Some(&spec), false, &CvmfsProvider::csi(), &partial),
            Err(CvmfsError::Unresolved {
                repository: "sft.cern.ch".into()
            })
        );
    }
}
