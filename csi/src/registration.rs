//! Kubelet plugin registration, in-process: the `pluginregistration.v1` Registration
//! service on `<kubelet dir>/plugins_registry/<driver>-reg.sock`. The kubelet's plugin
//! watcher finds the socket, calls GetInfo (learning the driver name and the CSI endpoint)
//! and reports the outcome with NotifyRegistrationStatus.

use std::path::PathBuf;

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::proto::registration::registration_server::Registration;
use crate::proto::registration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};

/// The plugin type the kubelet expects from CSI drivers.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";

/// Registration service.
pub struct RegistrationService {
    endpoint: PathBuf,
}

impl RegistrationService {
    /// Advertises the CSI socket at `endpoint` (as the kubelet sees it).
    pub fn new(endpoint: PathBuf) -> Self {
        Self { endpoint }
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(
        &self,
        _request: Request<InfoRequest>,
    ) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: CSI_PLUGIN_TYPE.to_owned(),
            name: hepbatch_crds::CSI_DRIVER_NAME.to_owned(),
            endpoint: self.endpoint.display().to_string(),
            supported_versions: vec!["1.0.0".to_owned()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            info!("registered with the kubelet");
        } else {
            warn!(error = %status.error, "kubelet refused the registration");
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}
