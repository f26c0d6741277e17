//! Generated gRPC types and services: the CSI spec (`csi.v1`) and the kubelet's plugin
//! registration API (`pluginregistration`), both compiled from `csi/proto/` by build.rs.

/// The Container Storage Interface, spec v1.13.0.
#[allow(missing_docs, clippy::all, unused_qualifications)]
pub mod csi {
    tonic::include_proto!("csi.v1");
}

/// The kubelet's plugin registration API (`pluginregistration.v1`).
#[allow(missing_docs, clippy::all, unused_qualifications)]
pub mod registration {
    tonic::include_proto!("pluginregistration");
}
