//! The CSI Controller service: StorageClass provisioning of read-only CVMFS volumes.
//!
//! CVMFS volumes need no attachment and hold no data of their own, so the controller does
//! only what dynamic provisioning needs: CreateVolume turns validated StorageClass
//! `parameters` into a volume whose `volume_context` carries them in normal form
//! ([`crate::provision`]), DeleteVolume forgets it, ValidateVolumeCapabilities confirms
//! read-only file-system capabilities of a volume it created. ControllerGetCapabilities
//! announces CREATE_DELETE_VOLUME and nothing else: publishing, listing, capacity,
//! snapshots, cloning, expansion and modification are meaningless for a read-only view of
//! repositories. What was created under a name is kept by the [`VolumeStore`].
//!
//! When the plugin runs without its controller (`--services node`) the service is still
//! served, disabled: it announces no capability (generic tools that ask unconditionally,
//! such as csi-sanity, get a well-formed "nothing supported"), CreateVolume and
//! DeleteVolume answer UNIMPLEMENTED and ValidateVolumeCapabilities answers NOT_FOUND.
//! Every error maps onto a gRPC code here and nowhere else.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::info_span;

use crate::metrics::{ErrorCategory, Metrics, Operation};
use crate::proto::csi::controller_server::Controller;
use crate::proto::csi::controller_service_capability::rpc;
use crate::proto::csi::validate_volume_capabilities_response::Confirmed;
use crate::proto::csi::{
    ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse, CreateVolumeRequest,
    CreateVolumeResponse, DeleteVolumeRequest, DeleteVolumeResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, Volume,
};
use crate::provision::{Provision, ProvisionError, check_capability};
use crate::rpc::{RpcError, controller_capability, observe, trace};
use crate::store::{StoreError, VolumeRecord, VolumeStore};
use crate::volume::{Bounded, VolumeSpec};

/// A rejected or failed Controller request.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The request is invalid.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// The record store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The volume id names no volume of this controller.
    #[error(
        "volume {0:?} does not exist: this controller knows only the volumes it provisioned (static PVs and inline volumes are not managed by it)"
    )]
    NotFound(String),
    /// The controller is not enabled in this process.
    #[error(
        "the controller service is not enabled (start the plugin with --services controller or all)"
    )]
    Disabled,
    /// The blocking task died.
    #[error("internal error: {0}")]
    Internal(#[from] tokio::task::JoinError),
}

impl RpcError for ControllerError {
    fn category(&self) -> ErrorCategory {
        match self {
            Self::Provision(_) | Self::NotFound(_) | Self::Disabled => {
                ErrorCategory::InvalidArgument
            }
            Self::Store(StoreError::Conflict { .. } | StoreError::Collision { .. }) => {
                ErrorCategory::Conflict
            }
            Self::Store(_) | Self::Internal(_) => ErrorCategory::Store,
        }
    }
}

impl From<ControllerError> for Status {
    fn from(error: ControllerError) -> Self {
        let message = error.to_string();
        match error {
            ControllerError::Provision(_) => Status::invalid_argument(message),
            ControllerError::Store(StoreError::Conflict { .. }) => Status::already_exists(message),
            ControllerError::NotFound(_) => Status::not_found(message),
            ControllerError::Disabled => Status::unimplemented(message),
            ControllerError::Store(_) | ControllerError::Internal(_) => Status::internal(message),
        }
    }
}

/// Controller service.
pub struct ControllerService {
    store: Option<Arc<VolumeStore>>,
    metrics: Arc<Metrics>,
}

impl ControllerService {
    /// A controller provisioning volumes recorded in `store`.
    pub fn new(store: Arc<VolumeStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            store: Some(store),
            metrics,
        }
    }

    /// The disabled service of a node-only plugin.
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Self {
            store: None,
            metrics,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&VolumeStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ControllerError> {
        let store = self.store.clone().ok_or(ControllerError::Disabled)?;
        tokio::task::spawn_blocking(move || work(&store))
            .await?
            .map_err(ControllerError::from)
    }

    async fn create(&self, request: CreateVolumeRequest) -> Result<Volume, ControllerError> {
        if self.store.is_none() {
            return Err(ControllerError::Disabled);
        }
        let provision = Provision::from_request(&request)?;
        let context = provision.spec.to_context();
        let record = self.blocking(move |store| store.create(&provision)).await?;
        Ok(Volume {
            // Unknown: CVMFS volumes have no size (see crate::provision).
            capacity_bytes: 0,
            volume_id: record.volume_id,
            volume_context: context,
            content_source: None,
            accessible_topology: Vec::new(),
        })
    }

    async fn delete(&self, request: DeleteVolumeRequest) -> Result<bool, ControllerError> {
        if self.store.is_none() {
            return Err(ControllerError::Disabled);
        }
        if request.volume_id.is_empty() {
            return Err(ProvisionError::Missing("volume_id").into());
        }
        let volume = request.volume_id;
        self.blocking(move |store| store.delete(&volume)).await
    }

    async fn validate(
        &self,
        request: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse, ControllerError> {
        if request.volume_id.is_empty() {
            return Err(ProvisionError::Missing("volume_id").into());
        }
        if request.volume_capabilities.is_empty() {
            return Err(ProvisionError::Missing("volume_capabilities").into());
        }
        if self.store.is_none() {
            return Err(ControllerError::NotFound(request.volume_id));
        }
        let volume = request.volume_id.clone();
        let record = self
            .blocking(move |store| store.get(&volume))
            .await?
            .ok_or_else(|| ControllerError::NotFound(request.volume_id.clone()))?;
        Ok(match unsupported(&request, &record) {
            Some(message) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
            None => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(Confirmed {
                    volume_context: request.volume_context,
                    volume_capabilities: request.volume_capabilities,
                    parameters: request.parameters,
                    mutable_parameters: Default::default(),
                }),
                message: String::new(),
            },
        })
    }
}

/// Why `request` cannot be confirmed for the volume of `record`, if it cannot.
fn unsupported(
    request: &ValidateVolumeCapabilitiesRequest,
    record: &VolumeRecord,
) -> Option<String> {
    for capability in &request.volume_capabilities {
        if let Err(e) = check_capability(capability) {
            return Some(e.to_string());
        }
    }
    if !request.mutable_parameters.is_empty() {
        return Some(ProvisionError::MutableParameters.to_string());
    }
    let differs = |what: &str, attributes| match VolumeSpec::from_context(attributes) {
        Ok(spec) if spec.canonical() == record.spec => None,
        Ok(spec) => Some(format!(
            "{what} {:?} do not match the volume's {:?}",
            spec.canonical(),
            record.spec
        )),
        Err(e) => Some(format!("{what}: {e}")),
    };
    if !request.volume_context.is_empty()
        && let Some(message) = differs("volume_context", &request.volume_context)
    {
        return Some(message);
    }
    if !request.parameters.is_empty()
        && let Some(message) = differs("parameters", &request.parameters)
    {
        return Some(message);
    }
    None
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = if self.store.is_some() {
            vec![controller_capability(rpc::Type::CreateDeleteVolume)]
        } else {
            Vec::new()
        };
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        let span = info_span!("create_volume", name = %Bounded(&request.name));
        let volume = observe(
            &self.metrics,
            Operation::CreateVolume,
            span,
            self.create(request),
        )
        .await?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let request = request.into_inner();
        let span = info_span!("delete_volume", volume = %Bounded(&request.volume_id));
        observe(
            &self.metrics,
            Operation::DeleteVolume,
            span,
            self.delete(request),
        )
        .await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        let span =
            info_span!("validate_volume_capabilities", volume = %Bounded(&request.volume_id));
        Ok(Response::new(trace(span, self.validate(request)).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_grpc_codes() {
        let code = |e: ControllerError| Status::from(e).code();
        assert_eq!(
            code(ProvisionError::Missing("name").into()),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(
                StoreError::Conflict {
                    name: "v".into(),
                    existing: String::new(),
                    requested: String::new()
                }
                .into()
            ),
            tonic::Code::AlreadyExists
        );
        assert_eq!(
            code(ControllerError::NotFound("v".into())),
            tonic::Code::NotFound
        );
        assert_eq!(code(ControllerError::Disabled), tonic::Code::Unimplemented);
    }
}
