//! The CSI Identity service: plugin name and version, the services this process offers, and
//! a Probe that really checks what those services need: for the node, the mount root is a
//! shared mount and the CVMFS client is installed; for the controller, its volume records
//! can be written.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::csi::identity_server::Identity;
use crate::proto::csi::plugin_capability::{Service, Type as CapabilityType, service};
use crate::proto::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use crate::store::{StoreError, VolumeStore};
use crate::topology::Topology;
use crate::topology::probe::NotReady as NodeNotReady;

/// Why the plugin is not ready: the message of what failed, as Probe and `/readyz` show it.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// The node service cannot publish.
    #[error(transparent)]
    Node(#[from] NodeNotReady),
    /// The controller service cannot record volumes.
    #[error(transparent)]
    Controller(#[from] StoreError),
}

/// What this process serves, and so what Probe and `/healthz` check.
pub struct Readiness {
    topology: Option<Arc<Topology>>,
    store: Option<Arc<VolumeStore>>,
}

impl Readiness {
    /// Readiness of a process serving the node (`topology`) and/or the controller (`store`).
    pub fn new(topology: Option<Arc<Topology>>, store: Option<Arc<VolumeStore>>) -> Self {
        Self { topology, store }
    }

    /// Whether the controller service is enabled.
    pub fn controller(&self) -> bool {
        self.store.is_some()
    }

    /// Why the plugin is not ready, if it is not (blocking: reads the mount table).
    pub fn check(&self) -> Result<(), NotReady> {
        if let Some(topology) = &self.topology {
            topology.readiness()?;
        }
        if let Some(store) = &self.store {
            store.check()?;
        }
        Ok(())
    }
}

/// Identity service.
pub struct IdentityService {
    readiness: Arc<Readiness>,
}

impl IdentityService {
    /// A service reporting and probing `readiness`.
    pub fn new(readiness: Arc<Readiness>) -> Self {
        Self { readiness }
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
        // The controller only when it runs here; never topology constraints (every node
        // reaches every repository).
        let mut capabilities = Vec::new();
        if self.readiness.controller() {
            capabilities.push(PluginCapability {
                r#type: Some(CapabilityType::Service(Service {
                    r#type: service::Type::ControllerService as i32,
                })),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let readiness = self.readiness.clone();
        let verdict = tokio::task::spawn_blocking(move || readiness.check())
            .await
            .map_err(|e| Status::internal(format!("probe task failed: {e}")))?;
        match verdict {
            Ok(()) => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Err(why) => Err(Status::failed_precondition(format!("not ready: {why}"))),
        }
    }
}
