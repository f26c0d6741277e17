//! The CSI Identity service: plugin name and version, and a Probe that really checks the
//! node: the mount root is a shared mount and the CVMFS client is installed.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::csi::identity_server::Identity;
use crate::proto::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, ProbeRequest, ProbeResponse,
};
use crate::topology::Topology;

/// Identity service.
pub struct IdentityService {
    topology: Arc<Topology>,
}

impl IdentityService {
    /// A service probing `topology`.
    pub fn new(topology: Arc<Topology>) -> Self {
        Self { topology }
    }

    /// Why the plugin is not ready, if it is not.
    pub fn check(topology: &Topology) -> Result<(), String> {
        topology.check_root()?;
        topology.backend().check_client().map_err(|e| e.to_string())
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: hepbatch_crds::CSI_DRIVER_NAME.to_owned(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        // A node-only plugin: no controller service, no topology constraints.
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let topology = self.topology.clone();
        let verdict = tokio::task::spawn_blocking(move || Self::check(&topology))
            .await
            .map_err(|e| Status::internal(format!("probe task failed: {e}")))?;
        match verdict {
            Ok(()) => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Err(why) => Err(Status::failed_precondition(format!("not ready: {why}"))),
        }
    }
}
