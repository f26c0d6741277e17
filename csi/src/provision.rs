//! What a CreateVolume request asks for, checked before anything is recorded (pure).
//!
//! A provisioned CVMFS volume is nothing but a validated [`VolumeSpec`]: the StorageClass
//! `parameters` are read with the very rules the node applies to a static PV's attributes
//! ([`VolumeSpec::from_context`]: `repositories`, `pins`, unknown keys rejected, keys that
//! Kubernetes adds itself ignored) and written back in normal form as the volume's
//! `volume_context`, so NodePublish of a provisioned PV is NodePublish of a static PV.
//!
//! - **Access modes**: CVMFS is read-only, so only SINGLE_NODE_READER_ONLY and
//!   MULTI_NODE_READER_ONLY are accepted; every writer mode is refused with a message that
//!   says which mode to ask for ([`check_capability`], shared by CreateVolume and
//!   ValidateVolumeCapabilities). Block access is refused.
//! - **Capacity**: a CVMFS volume has no size. CreateVolume reports `capacity_bytes: 0`,
//!   which the CSI spec defines as "unknown" (the external-provisioner then gives the PV the
//!   size the PVC requested). The requested range is only checked for consistency and kept
//!   as part of the volume's identity: a repeated CreateVolume must carry the same range.
//! - **Volume id**: derived from the name and the request's content
//!   (`cvmfs-<hash(name)>-<hash(spec, capacity)>`, FNV-1a, stable across builds), so a
//!   retried request gets the same id even if the controller's records were lost, and the
//!   id leads straight to the name's record ([`name_key`]).

use std::fmt;

use crate::hash::fnv1a;
use crate::proto::csi::volume_capability::{AccessType, access_mode};
use crate::proto::csi::{CreateVolumeRequest, VolumeCapability};
use crate::volume::{AttributeError, VolumeSpec};

/// The prefix of every volume id this controller hands out.
const ID_PREFIX: &str = "cvmfs-";

/// Why a volume capability is not supported.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    /// A capability without an access mode or an access type.
    #[error("volume capability without {0}")]
    Incomplete(&'static str),
    /// An access mode that allows writing.
    #[error(
        "access mode {0} is not supported: CVMFS volumes are read-only; ask for ReadOnlyMany (MULTI_NODE_READER_ONLY) or SINGLE_NODE_READER_ONLY"
    )]
    Writer(&'static str),
    /// An access mode this plugin does not know.
    #[error("unknown access mode {0}")]
    UnknownMode(i32),
    /// Block access.
    #[error("CVMFS volumes are file systems: block access is not supported")]
    Block,
}

/// Checks that `capability` is a read-only file-system capability.
pub fn check_capability(capability: &VolumeCapability) -> Result<(), CapabilityError> {
    match capability.access_type {
        Some(AccessType::Mount(_)) => {}
        Some(AccessType::Block(_)) => return Err(CapabilityError::Block),
        None => return Err(CapabilityError::Incomplete("an access type")),
    }
    let mode = capability
        .access_mode
        .as_ref()
        .ok_or(CapabilityError::Incomplete("an access mode"))?
        .mode;
    match access_mode::Mode::try_from(mode) {
        Ok(access_mode::Mode::SingleNodeReaderOnly | access_mode::Mode::MultiNodeReaderOnly) => {
            Ok(())
        }
        Ok(access_mode::Mode::Unknown) => Err(CapabilityError::Incomplete("an access mode")),
        Ok(writer) => Err(CapabilityError::Writer(writer.as_str_name())),
        Err(_) => Err(CapabilityError::UnknownMode(mode)),
    }
}

/// Why a CreateVolume request was refused; every variant is an INVALID_ARGUMENT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProvisionError {
    /// A required field is empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The StorageClass parameters are invalid.
    #[error("invalid StorageClass parameters: {0}")]
    Parameters(#[from] AttributeError),
    /// A requested capability is not supported.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// The capacity range is inconsistent.
    #[error("invalid capacity range: {0}")]
    Capacity(String),
    /// A snapshot or volume to copy from.
    #[error(
        "CVMFS volumes cannot be created from a snapshot or another volume: they show repositories, not copied data"
    )]
    ContentSource,
    /// Mutable parameters (VolumeAttributesClass), which nothing here could change.
    #[error("mutable parameters are not supported: a CVMFS volume is defined by its parameters")]
    MutableParameters,
}

/// The requested capacity range: part of a volume's identity, never a size (CVMFS has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    /// `required_bytes` (0: not given).
    pub required_bytes: u64,
    /// `limit_bytes` (0: not given).
    pub limit_bytes: u64,
}

impl Capacity {
    /// Checks a request's range: no negative values, the limit not below the requirement.
    fn from_range(
        range: Option<&crate::proto::csi::CapacityRange>,
    ) -> Result<Self, ProvisionError> {
        let Some(range) = range else {
            return Ok(Self {
                required_bytes: 0,
                limit_bytes: 0,
            });
        };
        let non_negative = |value: i64, field: &str| {
            u64::try_from(value)
                .map_err(|_| ProvisionError::Capacity(format!("{field} {value} is negative")))
        };
        let capacity = Self {
            required_bytes: non_negative(range.required_bytes, "required_bytes")?,
            limit_bytes: non_negative(range.limit_bytes, "limit_bytes")?,
        };
        if capacity.limit_bytes != 0 && capacity.required_bytes > capacity.limit_bytes {
            return Err(ProvisionError::Capacity(format!(
                "required_bytes {} exceeds limit_bytes {}",
                capacity.required_bytes, capacity.limit_bytes
            )));
        }
        Ok(capacity)
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "required {} B, limit {} B",
            self.required_bytes, self.limit_bytes
        )
    }
}

/// A validated CreateVolume request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    /// The name the CO chose (the PV name, e.g. `pvc-<uid>`).
    pub name: String,
    /// The volume's repositories and pins.
    pub spec: VolumeSpec,
    /// The requested capacity range.
    pub capacity: Capacity,
}

impl Provision {
    /// Validates a CreateVolume request.
    pub fn from_request(request: &CreateVolumeRequest) -> Result<Self, ProvisionError> {
        if request.name.is_empty() {
            return Err(ProvisionError::Missing("name"));
        }
        if request.volume_capabilities.is_empty() {
            return Err(ProvisionError::Missing("volume_capabilities"));
        }
        for capability in &request.volume_capabilities {
            check_capability(capability)?;
        }
        if request.volume_content_source.is_some() {
            return Err(ProvisionError::ContentSource);
        }
        if !request.mutable_parameters.is_empty() {
            return Err(ProvisionError::MutableParameters);
        }
        let capacity = Capacity::from_range(request.capacity_range.as_ref())?;
        let spec = VolumeSpec::from_context(&request.parameters)?;
        Ok(Self {
            name: request.name.clone(),
            spec,
            capacity,
        })
    }

    /// The deterministic volume id of this request.
    pub fn volume_id(&self) -> String {
        let content = format!(
            "{}|{}|{}",
            self.spec.canonical(),
            self.capacity.required_bytes,
            self.capacity.limit_bytes
        );
        format!(
            "{ID_PREFIX}{}-{:016x}",
            name_hash(&self.name),
            fnv1a(content.as_bytes())
        )
    }
}

/// The key of a volume name's record: its hash in 16 hex digits.
pub fn name_hash(name: &str) -> String {
    crate::hash::fnv1a_hex(name.as_bytes())
}

/// The record key embedded in a volume id made by [`Provision::volume_id`]; `None` for
/// any other string (a static PV's handle, garbage).
pub fn name_key(volume_id: &str) -> Option<&str> {
    let rest = volume_id.strip_prefix(ID_PREFIX)?;
    let (name, content) = rest.split_once('-')?;
    let hex = |part: &str| {
        part.len() == 16 && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex(name) && hex(content)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::csi::volume_capability::{AccessMode, BlockVolume, MountVolume};
    use crate::proto::csi::{CapacityRange, VolumeContentSource};

    fn capability(mode: access_mode::Mode) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(AccessType::Mount(MountVolume::default())),
        }
    }

    fn request(name: &str, parameters: &[(&str, &str)]) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.to_owned(),
            volume_capabilities: vec![capability(access_mode::Mode::MultiNodeReaderOnly)],
            parameters: parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_reader_modes_are_accepted() {
        use access_mode::Mode;
        for mode in [Mode::SingleNodeReaderOnly, Mode::MultiNodeReaderOnly] {
            assert_eq!(check_capability(&capability(mode)), Ok(()));
        }
        for mode in [
            Mode::SingleNodeWriter,
            Mode::MultiNodeSingleWriter,
            Mode::MultiNodeMultiWriter,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ] {
            let err = check_capability(&capability(mode)).unwrap_err();
            assert_eq!(err, CapabilityError::Writer(mode.as_str_name()));
            assert!(err.to_string().contains("MULTI_NODE_READER_ONLY"), "{err}");
        }
        assert!(check_capability(&capability(Mode::Unknown)).is_err());
        let mut block = capability(Mode::MultiNodeReaderOnly);
        block.access_type = Some(AccessType::Block(BlockVolume::default()));
        assert_eq!(check_capability(&block), Err(CapabilityError::Block));
        let mut odd = capability(Mode::MultiNodeReaderOnly);
        odd.access_mode = Some(AccessMode { mode: 99 });
        assert_eq!(
            check_capability(&odd),
            Err(CapabilityError::UnknownMode(99))
        );
    }

    #[test]
    fn parameters_become_a_validated_spec() {
        let provision = Provision::from_request(&request(
            "pvc-1",
            &[
                ("repositories", "sft.cern.ch,cms.cern.ch"),
                ("pins", "cms.cern.ch@tag=v2"),
                ("csi.storage.k8s.io/pvc/name", "data"),
            ],
        ))
        .unwrap();
        assert_eq!(
            provision.spec.canonical(),
            "cms.cern.ch,sft.cern.ch|cms.cern.ch@tag=v2"
        );
        let err =
            Provision::from_request(&request("pvc-1", &[("repos", "cms.cern.ch")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid StorageClass parameters: unknown volume attribute \"repos\""),
            "{err}"
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert_eq!(
            Provision::from_request(&request("", &[])),
            Err(ProvisionError::Missing("name"))
        );
        let mut no_capabilities = request("v", &[]);
        no_capabilities.volume_capabilities.clear();
        assert_eq!(
            Provision::from_request(&no_capabilities),
            Err(ProvisionError::Missing("volume_capabilities"))
        );
        let mut writer = request("v", &[]);
        writer
            .volume_capabilities
            .push(capability(access_mode::Mode::SingleNodeWriter));
        assert!(matches!(
            Provision::from_request(&writer),
            Err(ProvisionError::Capability(CapabilityError::Writer(_)))
        ));
        let mut clone = request("v", &[]);
        clone.volume_content_source = Some(VolumeContentSource::default());
        assert_eq!(
            Provision::from_request(&clone),
            Err(ProvisionError::ContentSource)
        );
        let mut mutable = request("v", &[]);
        mutable.mutable_parameters.insert("a".into(), "b".into());
        assert_eq!(
            Provision::from_request(&mutable),
            Err(ProvisionError::MutableParameters)
        );
        for (required_bytes, limit_bytes) in [(-1, 0), (0, -1), (10, 5)] {
            let mut bad = request("v", &[]);
            bad.capacity_range = Some(CapacityRange {
                required_bytes,
                limit_bytes,
            });
            assert!(
                matches!(
                    Provision::from_request(&bad),
                    Err(ProvisionError::Capacity(_))
                ),
                "{required_bytes}/{limit_bytes} accepted"
            );
        }
    }

    #[test]
    fn volume_ids_are_deterministic_and_lead_to_the_name() {
        let a =
            Provision::from_request(&request("pvc-1", &[("repositories", "a.ch,b.ch")])).unwrap();
        let same =
            Provision::from_request(&request("pvc-1", &[("repositories", "b.ch, a.ch")])).unwrap();
        let other =
            Provision::from_request(&request("pvc-1", &[("repositories", "a.ch")])).unwrap();
        let mut sized = request("pvc-1", &[("repositories", "a.ch,b.ch")]);
        sized.capacity_range = Some(CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        });
        let sized = Provision::from_request(&sized).unwrap();
        assert_eq!(a.volume_id(), same.volume_id());
        assert_ne!(a.volume_id(), other.volume_id());
        assert_ne!(a.volume_id(), sized.volume_id());
        assert_eq!(a.volume_id().len(), "cvmfs-".len() + 16 + 1 + 16);
        assert_eq!(name_key(&a.volume_id()), Some(name_hash("pvc-1").as_str()));
        for foreign in [
            "",
            "pv-static",
            "cvmfs-",
            "cvmfs-0123-4567",
            "cvmfs-0123456789abcdef",
            "cvmfs-0123456789ABCDEF-0123456789abcdef",
            "cvmfs-../../etc/pas-0123456789abcdef",
        ] {
            assert_eq!(name_key(foreign), None, "{foreign}");
        }
    }
}
