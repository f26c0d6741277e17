//! csi-sanity (kubernetes-csi/csi-test, built by the testbed) against the plugin with its
//! controller enabled (`--services all`), run inside the plugin's private mount namespace.
//! No spec is skipped by this test; csi-sanity skips the ones whose capabilities the plugin
//! does not announce (docs/csi.md).
//!
//! csi-sanity hard-codes SINGLE_NODE_WRITER in every volume it creates, and this plugin
//! refuses writer modes by design (CVMFS is read-only; the refusal is tested in
//! `controller.rs` and checked again below). So csi-sanity reaches the controller through
//! [`ReaderOnlyAdapter`], a forwarding Identity + Controller server in this test that
//! replaces writer access modes in CreateVolume with MULTI_NODE_READER_ONLY and passes every
//! other request and every answer through unchanged. The node service is dialled directly.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Node;
use hepbatch_csi::proto::csi::controller_client::ControllerClient;
use hepbatch_csi::proto::csi::controller_server::{Controller, ControllerServer};
use hepbatch_csi::proto::csi::identity_client::IdentityClient;
use hepbatch_csi::proto::csi::identity_server::{Identity, IdentityServer};
use hepbatch_csi::proto::csi::volume_capability::access_mode::Mode;
use hepbatch_csi::proto::csi::{
    ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse, CreateVolumeRequest,
    CreateVolumeResponse, DeleteVolumeRequest, DeleteVolumeResponse, GetPluginCapabilitiesRequest,
    GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse, ProbeRequest,
    ProbeResponse, ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse,
};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// The StorageClass parameters csi-sanity provisions with (an explicit list with a pin, so
/// the node publishes exactly what CreateVolume put into the volume context).
const PARAMETERS: &str = "repositories: cms.cern.ch,sft.cern.ch\npins: cms.cern.ch@tag=v1\n";

fn csi_sanity() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("bash")
        .arg(workspace.join("tests/testbed/build.sh"))
        .arg("--bin-dir")
        .current_dir(&workspace)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cannot locate the testbed binaries"
    );
    let binary = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("csi-sanity");
    assert!(
        binary.is_file(),
        "{} is missing: run `bash tests/testbed/build.sh`",
        binary.display()
    );
    binary
}

/// Forwards Identity and Controller calls to the plugin, mapping writer access modes of
/// CreateVolume to MULTI_NODE_READER_ONLY (see the module documentation).
#[derive(Clone)]
struct ReaderOnlyAdapter {
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    /// CreateVolume requests whose access modes were rewritten.
    rewritten: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Identity for ReaderOnlyAdapter {
    async fn get_plugin_info(
        &self,
        request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        self.identity
            .clone()
            .get_plugin_info(request.into_inner())
            .await
    }

    async fn get_plugin_capabilities(
        &self,
        request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        self.identity
            .clone()
            .get_plugin_capabilities(request.into_inner())
            .await
    }

    async fn probe(
        &self,
        request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        self.identity.clone().probe(request.into_inner()).await
    }
}

#[tonic::async_trait]
impl Controller for ReaderOnlyAdapter {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let mut request = request.into_inner();
        let mut rewritten = false;
        for capability in &mut request.volume_capabilities {
            if let Some(mode) = &mut capability.access_mode
                && !matches!(
                    Mode::try_from(mode.mode),
                    Ok(Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
                )
            {
                mode.mode = Mode::MultiNodeReaderOnly as i32;
                rewritten = true;
            }
        }
        if rewritten {
            self.rewritten.fetch_add(1, Ordering::SeqCst);
        }
        self.controller.clone().create_volume(request).await
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        self.controller
            .clone()
            .delete_volume(request.into_inner())
            .await
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        self.controller
            .clone()
            .validate_volume_capabilities(request.into_inner())
            .await
    }

    async fn controller_get_capabilities(
        &self,
        request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        self.controller
            .clone()
            .controller_get_capabilities(request.into_inner())
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_sanity_passes() {
    let binary = csi_sanity();
    let node = Node::start_with(common::STANDARD, &["--services", "all"]).await;
    let work = node.kubelet.join("pods/sanity");
    std::fs::create_dir_all(&work).unwrap();
    let parameters = node.dir.path().join("parameters.yaml");
    std::fs::write(&parameters, PARAMETERS).unwrap();

    // The plugin itself refuses what csi-sanity sends: the reason for the adapter.
    let request = CreateVolumeRequest {
        name: "sanity-direct".to_owned(),
        volume_capabilities: vec![common::capability(Mode::SingleNodeWriter)],
        ..Default::default()
    };
    let refused = node
        .controller_client()
        .await
        .create_volume(request)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let channel = common::unix_channel(node.socket.clone()).await.unwrap();
    let adapter = ReaderOnlyAdapter {
        identity: IdentityClient::new(channel.clone()),
        controller: ControllerClient::new(channel),
        rewritten: Arc::new(AtomicUsize::new(0)),
    };
    let adapter_socket = node.dir.path().join("controller.sock");
    let listener = tokio::net::UnixListener::bind(&adapter_socket).unwrap();
    let server = tokio::spawn(
        Server::builder()
            .add_service(IdentityServer::new(adapter.clone()))
            .add_service(ControllerServer::new(adapter.clone()))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );

    let mut command = node.in_ns(binary.to_str().unwrap());
    command
        .arg(format!("--csi.endpoint=unix://{}", node.socket.display()))
        .arg(format!(
            "--csi.controllerendpoint=unix://{}",
            adapter_socket.display()
        ))
        .arg(format!("--csi.mountdir={}", work.join("mount").display()))
        .arg(format!(
            "--csi.stagingdir={}",
            work.join("staging").display()
        ))
        .arg(format!(
            "--csi.testvolumeparameters={}",
            parameters.display()
        ))
        .arg("--ginkgo.no-color");
    let output = tokio::task::spawn_blocking(move || common::run(&mut command))
        .await
        .unwrap();
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "csi-sanity failed");
    assert!(stdout.contains("Passed"), "no test ran");
    assert!(
        adapter.rewritten.load(Ordering::SeqCst) > 0,
        "csi-sanity created no volume"
    );
    // Every volume csi-sanity created was deleted again.
    let left = std::fs::read_dir(node.dir.path().join("state/controller"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(left, 0, "csi-sanity left provisioned volumes behind");
}
