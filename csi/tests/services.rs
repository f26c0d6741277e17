//! The plugin's side services: kubelet registration (GetInfo → NotifyRegistrationStatus, as
//! the kubelet's plugin watcher does), /healthz and /metrics.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Node;
use hepbatch_csi::proto::registration::registration_client::RegistrationClient;
use hepbatch_csi::proto::registration::{InfoRequest, RegistrationStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_registration_handshake() {
    let node = Node::start().await;
    let socket = node
        .kubelet
        .join("plugins_registry/cvmfs.hepbatch.io-reg.sock");
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o077,
        0,
        "registration socket is accessible to others"
    );
    let channel = common::unix_channel(socket.clone()).await.unwrap();
    let mut client = RegistrationClient::new(channel);
    let info = client.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, hepbatch_crds::CSI_DRIVER_NAME);
    assert_eq!(info.endpoint, node.socket.display().to_string());
    assert!(info.supported_versions.iter().any(|v| v.starts_with("1.")));
    client
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();
}

async fn http_get(port: u16, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut node = Node::start_with(common::STANDARD, &["--admin-address", &address]).await;
    let mut client = node.node_client().await;
    let target = node.target("pod-m");
    node.publish(
        &mut client,
        "vol-m",
        &target,
        &[("repositories", "cms.cern.ch")],
    )
    .await
    .unwrap();
    let bad = node
        .publish(
            &mut client,
            "vol-x",
            &node.target("pod-x"),
            &[("nope", "1")],
        )
        .await;
    assert!(bad.is_err());
    node.kill_client("cms.cern.ch");
    node.container(&target).wait_for(
        "cms.cern.ch/version",
        "cms latest\n",
        std::time::Duration::from_secs(5),
    );

    let health = http_get(port, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = http_get(port, "/metrics").await;
    for expected in [
        // Every call is counted with its outcome, and timed.
        "hepbatch_csi_operations_total{operation=\"Publish\",outcome=\"Ok\"} 1",
        "hepbatch_csi_operations_total{operation=\"Publish\",outcome=\"InvalidArgument\"} 1",
        "hepbatch_csi_errors_total{category=\"InvalidArgument\"} 1",
        "hepbatch_csi_operation_duration_seconds_count{operation=\"Publish\"} 2",
        "hepbatch_csi_heals_total",
        "hepbatch_csi_mounts{repository=\"cms.cern.ch\"} 1",
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
    assert!(!metrics.contains("hepbatch_csi_heals_total 0"), "{metrics}");

    // Probe and /healthz fail when the mount root is gone.
    std::fs::remove_dir_all(node.root.join("repos")).ok();
    let _ = common::run(node.in_ns("umount").arg("-l").arg(&node.root));
    let health = http_get(port, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    node.kill_plugin();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_a_socket_path_as_authority_get_normal_answers() {
    use hepbatch_csi::proto::csi::{GetPluginInfoRequest, GetPluginInfoResponse};
    use hepbatch_csi::proto::registration::PluginInfo;
    use prost::Message;
    let node = Node::start().await;
    let registration = node
        .kubelet
        .join("plugins_registry/cvmfs.hepbatch.io-reg.sock");
    let path = registration.display().to_string();
    let encoded = path.replace('/', "%2F");
    // The socket path itself (grpc-go before 1.57 with a bare-path target), the
    // percent-encoded path (grpc-go 1.57 and later, the kubelet 1.35's plugin watcher), the
    // form grpc-core sends for unix:/path, and a valid authority.
    for authority in [
        path.as_str(),
        encoded.as_str(),
        encoded.trim_start_matches("%2F"),
        "localhost",
    ] {
        let info = common::call_with_authority(
            &registration,
            authority,
            "/pluginregistration.Registration/GetInfo",
            &InfoRequest {}.encode_to_vec(),
        )
        .await
        .unwrap_or_else(|e| panic!("registration with :authority {authority}: {e}"));
        let info = PluginInfo::decode(info.as_slice()).unwrap();
        assert_eq!(info.name, hepbatch_crds::CSI_DRIVER_NAME);
        let answer = common::call_with_authority(
            &node.socket,
            authority,
            "/csi.v1.Identity/GetPluginInfo",
            &GetPluginInfoRequest {}.encode_to_vec(),
        )
        .await
        .unwrap_or_else(|e| panic!("CSI with :authority {authority}: {e}"));
        let answer = GetPluginInfoResponse::decode(answer.as_slice()).unwrap();
        assert_eq!(answer.name, hepbatch_crds::CSI_DRIVER_NAME);
    }
}
