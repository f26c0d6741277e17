//! A Controller service with no capabilities.
//!
//! The plugin is node-only: CVMFS volumes need no provisioning or attachment (static PVs and
//! inline volumes carry everything in their attributes, and the CSIDriver object sets
//! `attachRequired: false`), so GetPluginCapabilities does not announce CONTROLLER_SERVICE
//! and the kubelet never calls it. The service exists so that generic tools that call
//! ControllerGetCapabilities unconditionally (csi-sanity does) get a well-formed "nothing
//! supported" instead of UNIMPLEMENTED. ValidateVolumeCapabilities, which the spec makes
//! mandatory, checks its arguments and then answers NOT_FOUND: this controller provisions
//! nothing, so it manages no volume. Every other RPC answers UNIMPLEMENTED.

use tonic::{Request, Response, Status};

use crate::proto::csi::controller_server::Controller;
use crate::proto::csi::{
    ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse,
    ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};

/// Controller service (capabilities only).
#[derive(Debug, Default)]
pub struct ControllerService;

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let request = request.into_inner();
        if request.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        if request.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        Err(Status::not_found(format!(
            "volume {:?} is not managed by this controller: {} volumes are defined by their attributes (static PVs or inline volumes), never provisioned",
            request.volume_id,
            hepbatch_crds::CSI_DRIVER_NAME
        )))
    }
}
