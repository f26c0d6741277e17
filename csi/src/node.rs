//! The CSI Node service: validates requests, then hands them to the [`Topology`] on a
//! blocking thread. Every error maps onto a gRPC code here and nowhere else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::info_span;

use crate::metrics::{ErrorCategory, Metrics, Operation};
use crate::proto::csi::node_server::Node;
use crate::proto::csi::node_service_capability::rpc;
use crate::proto::csi::volume_capability::AccessType;
use crate::proto::csi::{
    NodeExpandVolumeRequest, NodeExpandVolumeResponse, NodeGetCapabilitiesRequest,
    NodeGetCapabilitiesResponse, NodeGetInfoRequest, NodeGetInfoResponse,
    NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, NodePublishVolumeRequest,
    NodePublishVolumeResponse, NodeStageVolumeRequest, NodeStageVolumeResponse,
    NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, NodeUnstageVolumeRequest,
    NodeUnstageVolumeResponse, VolumeCapability, VolumeCondition, VolumeUsage, volume_usage,
};
use crate::rpc::{RpcError, node_capability, observe, trace};
use crate::topology::{Topology, TopologyError};
use crate::volume::{AttributeError, Bounded, VolumeSpec, quote};

/// Characters of a volume id or target path that are accepted (a path is at most
/// PATH_MAX; the kubelet's ids are far shorter).
pub const MAX_ID_LENGTH: usize = 4096;

/// A rejected or failed Node request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A required field is empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The target path is not acceptable.
    #[error("target path {path} {reason}")]
    BadTarget {
        /// The path (quoted).
        path: String,
        /// Why.
        reason: String,
    },
    /// Block access was requested.
    #[error("CVMFS volumes are file systems: block access is not supported")]
    BlockAccess,
    /// The volume attributes are invalid.
    #[error(transparent)]
    Attributes(#[from] AttributeError),
    /// Nothing of this volume is published at the path.
    #[error("volume {volume} is not published at {path}")]
    NotPublished {
        /// The volume id (quoted).
        volume: String,
        /// The path (quoted).
        path: String,
    },
    /// A volume id longer than [`MAX_ID_LENGTH`].
    #[error("{field} has {length} characters; at most {MAX_ID_LENGTH} are allowed")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        length: usize,
    },
    /// The topology operation failed.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The blocking task died.
    #[error("internal error: {0}")]
    Internal(#[from] tokio::task::JoinError),
}

impl RpcError for NodeError {
    fn category(&self) -> ErrorCategory {
        match self {
            Self::Missing(_)
            | Self::BadTarget { .. }
            | Self::BlockAccess
            | Self::Attributes(_)
            | Self::TooLong { .. }
            | Self::Topology(TopologyError::OnDemandUnavailable) => ErrorCategory::InvalidArgument,
            Self::NotPublished { .. } => ErrorCategory::InvalidArgument,
            Self::Topology(TopologyError::Backend(_)) => ErrorCategory::Backend,
            Self::Topology(TopologyError::Conflict { .. }) => ErrorCategory::Conflict,
            Self::Topology(_) | Self::Internal(_) => ErrorCategory::Mount,
        }
    }
}

impl From<NodeError> for Status {
    fn from(error: NodeError) -> Self {
        let message = error.to_string();
        match error {
            NodeError::Missing(_)
            | NodeError::BadTarget { .. }
            | NodeError::BlockAccess
            | NodeError::Attributes(_)
            | NodeError::TooLong { .. }
            | NodeError::Topology(TopologyError::OnDemandUnavailable) => {
                Status::invalid_argument(message)
            }
            NodeError::NotPublished { .. } => Status::not_found(message),
            NodeError::Topology(TopologyError::Conflict { .. }) => Status::already_exists(message),
            NodeError::Topology(TopologyError::ForeignMount(_)) => {
                Status::failed_precondition(message)
            }
            NodeError::Topology(TopologyError::Backend(
                crate::backend::BackendError::NotFound { .. },
            )) => Status::not_found(message),
            NodeError::Topology(_) | NodeError::Internal(_) => Status::internal(message),
        }
    }
}

/// Checks that `target` is an absolute, normalised path strictly beneath `kubelet_dir`.
pub fn validate_target(target: &str, kubelet_dir: &Path) -> Result<PathBuf, NodeError> {
    let bad = |reason: &str| NodeError::BadTarget {
        path: quote(target),
        reason: reason.to_owned(),
    };
    if target.is_empty() {
        return Err(NodeError::Missing("target_path"));
    }
    check_length("target_path", target)?;
    let path = Path::new(target);
    if !path.is_absolute() {
        return Err(bad("is not absolute"));
    }
    if target
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(
            "must be normalised: no '.', '..', '//' or trailing '/'",
        ));
    }
    if path == kubelet_dir || !path.starts_with(kubelet_dir) {
        return Err(bad(&format!(
            "is not beneath the kubelet directory {}",
            kubelet_dir.display()
        )));
    }
    Ok(path.to_owned())
}

fn check_length(field: &'static str, value: &str) -> Result<(), NodeError> {
    let length = value.chars().count();
    if length > MAX_ID_LENGTH {
        return Err(NodeError::TooLong { field, length });
    }
    Ok(())
}

fn check_volume_id(volume_id: &str) -> Result<(), NodeError> {
    if volume_id.is_empty() {
        return Err(NodeError::Missing("volume_id"));
    }
    check_length("volume_id", volume_id)
}

fn check_capability(capability: Option<&VolumeCapability>) -> Result<(), NodeError> {
    let capability = capability.ok_or(NodeError::Missing("volume_capability"))?;
    match capability.access_type {
        Some(AccessType::Block(_)) => Err(NodeError::BlockAccess),
        Some(AccessType::Mount(_)) => Ok(()),
        None => Err(NodeError::Missing("volume_capability.access_type")),
    }
}

/// Node service.
pub struct NodeService {
    topology: Arc<Topology>,
    kubelet_dir: PathBuf,
    node_id: String,
    metrics: Arc<Metrics>,
}

impl NodeService {
    /// A service publishing beneath `kubelet_dir` on the node `node_id`.
    pub fn new(
        topology: Arc<Topology>,
        kubelet_dir: PathBuf,
        node_id: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            topology,
            kubelet_dir,
            node_id,
            metrics,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Topology) -> Result<T, TopologyError> + Send + 'static,
    ) -> Result<T, NodeError> {
        let topology = self.topology.clone();
        tokio::task::spawn_blocking(move || work(&topology))
            .await?
            .map_err(NodeError::from)
    }

    async fn publish(&self, request: NodePublishVolumeRequest) -> Result<(), NodeError> {
        check_volume_id(&request.volume_id)?;
        let target = validate_target(&request.target_path, &self.kubelet_dir)?;
        check_capability(request.volume_capability.as_ref())?;
        let spec = VolumeSpec::from_context(&request.volume_context)?;
        let volume = request.volume_id;
        self.blocking(move |t| t.publish(&volume, &spec, &target))
            .await
    }

    async fn unpublish(&self, request: NodeUnpublishVolumeRequest) -> Result<(), NodeError> {
        check_volume_id(&request.volume_id)?;
        let target = validate_target(&request.target_path, &self.kubelet_dir)?;
        self.blocking(move |t| t.unpublish(&target)).await
    }

    async fn stats(
        &self,
        request: NodeGetVolumeStatsRequest,
    ) -> Result<NodeGetVolumeStatsResponse, NodeError> {
        check_volume_id(&request.volume_id)?;
        if request.volume_path.is_empty() {
            return Err(NodeError::Missing("volume_path"));
        }
        check_length("volume_path", &request.volume_path)?;
        let not_published = || NodeError::NotPublished {
            volume: quote(&request.volume_id),
            path: quote(&request.volume_path),
        };
        let path = PathBuf::from(&request.volume_path);
        let volume = request.volume_id.clone();
        let answer = self
            .blocking(move |t| {
                let Some(published) = t.published(&path)? else {
                    return Ok(None);
                };
                if published.label != Topology::volume_label(&volume) {
                    return Ok(None);
                }
                t.volume_report(&published).map(Some)
            })
            .await?;
        let report = answer.ok_or_else(not_published)?;
        Ok(NodeGetVolumeStatsResponse {
            // CVMFS volumes are read-only and have no size: zero bytes, stated explicitly
            // (the kubelet reads an empty list as the same zeros; generic CSI clients such
            // as csi-sanity expect a usage entry).
            usage: vec![VolumeUsage {
                available: 0,
                total: 0,
                used: 0,
                unit: volume_usage::Unit::Bytes as i32,
            }],
            volume_condition: Some(VolumeCondition {
                abnormal: !report.problems.is_empty(),
                message: report.message(),
            }),
        })
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let span = info_span!("publish", volume = %Bounded(&request.volume_id),
            target = %Bounded(&request.target_path));
        observe(
            &self.metrics,
            Operation::Publish,
            span,
            self.publish(request),
        )
        .await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        let span = info_span!("unpublish", volume = %Bounded(&request.volume_id),
            target = %Bounded(&request.target_path));
        observe(
            &self.metrics,
            Operation::Unpublish,
            span,
            self.unpublish(request),
        )
        .await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let request = request.into_inner();
        let span = info_span!("volume_stats", volume = %Bounded(&request.volume_id),
            path = %Bounded(&request.volume_path));
        Ok(Response::new(trace(span, self.stats(request)).await?))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![
                node_capability(rpc::Type::GetVolumeStats),
                node_capability(rpc::Type::VolumeCondition),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }

    async fn node_stage_volume(
        &self,
        _request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no staging: volumes are published directly",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no staging: volumes are published directly",
        ))
    }

    async fn node_expand_volume(
        &self,
        _request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("CVMFS volumes are read-only"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_lie_beneath_the_kubelet_directory() {
        let kubelet = Path::new("/var/lib/kubelet");
        assert!(validate_target("/var/lib/kubelet/pods/x/mount", kubelet).is_ok());
        for bad in [
            "",
            "relative/path",
            "/var/lib/kubelet",
            "/etc/passwd",
            "/var/lib/kubelet/../../etc",
            "/var/lib/kubeletx/pods",
            "/var/lib/kubelet/./pods",
        ] {
            assert!(validate_target(bad, kubelet).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn huge_paths_and_ids_are_refused_with_short_messages() {
        let huge = format!("/var/lib/kubelet/{}", "a".repeat(1_000_000));
        let err = validate_target(&huge, Path::new("/var/lib/kubelet")).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        let err = check_volume_id(&"v".repeat(5000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume_id has 5000 characters; at most 4096 are allowed"
        );
        let status = Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn bad_requests_map_to_invalid_argument() {
        let status = Status::from(NodeError::Missing("volume_id"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let status = Status::from(NodeError::BlockAccess);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
