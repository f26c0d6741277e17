//! StorageClass provisioning over real gRPC on the plugin's unix socket: CreateVolume →
//! NodePublish of the returned volume context → a container reads the fixture content;
//! bad parameters and writer access modes; idempotency and ALREADY_EXISTS (also across a
//! plugin restart); the controller-only mode, run as an unprivileged user.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Node, capability};
use hepbatch_csi::proto::csi::controller_client::ControllerClient;
use hepbatch_csi::proto::csi::controller_service_capability::{Type as ControllerCapability, rpc};
use hepbatch_csi::proto::csi::identity_client::IdentityClient;
use hepbatch_csi::proto::csi::node_client::NodeClient;
use hepbatch_csi::proto::csi::plugin_capability::{Type as PluginCapability, service};
use hepbatch_csi::proto::csi::volume_capability::{AccessType, BlockVolume, access_mode::Mode};
use hepbatch_csi::proto::csi::{
    CapacityRange, ControllerGetCapabilitiesRequest, CreateVolumeRequest, DeleteVolumeRequest,
    GetPluginCapabilitiesRequest, NodePublishVolumeRequest, ProbeRequest,
    ValidateVolumeCapabilitiesRequest, Volume, VolumeContentSource,
};
use tonic::Code;
use tonic::transport::Channel;

const GIB: i64 = 1 << 30;

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn create_request(
    name: &str,
    parameters: &[(&str, &str)],
    required_bytes: i64,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        volume_capabilities: vec![capability(Mode::MultiNodeReaderOnly)],
        parameters: map(parameters),
        capacity_range: Some(CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        ..Default::default()
    }
}

async fn create(
    client: &mut ControllerClient<Channel>,
    request: CreateVolumeRequest,
) -> Result<Volume, tonic::Status> {
    Ok(client
        .create_volume(request)
        .await?
        .into_inner()
        .volume
        .expect("CreateVolume answered without a volume"))
}

async fn delete(client: &mut ControllerClient<Channel>, volume: &str) -> Result<(), tonic::Status> {
    client
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.to_owned(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn announces_controller(client: &mut IdentityClient<Channel>) -> bool {
    client
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .iter()
        .any(|c| {
            matches!(
                &c.r#type,
                Some(PluginCapability::Service(s)) if s.r#type == service::Type::ControllerService as i32
            )
        })
}

async fn controller_capabilities(client: &mut ControllerClient<Channel>) -> Vec<i32> {
    client
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .into_iter()
        .filter_map(|c| c.r#type.map(|ControllerCapability::Rpc(rpc)| rpc.r#type))
        .collect()
}

fn validate_request(volume: &Volume, mode: Mode) -> ValidateVolumeCapabilitiesRequest {
    ValidateVolumeCapabilitiesRequest {
        volume_id: volume.volume_id.clone(),
        volume_context: volume.volume_context.clone(),
        volume_capabilities: vec![capability(mode)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_volume_publishes_like_a_static_pv() {
    let mut node = Node::start_with(common::STANDARD, &["--services", "all"]).await;
    assert!(announces_controller(&mut node.identity_client().await).await);
    let mut controller = node.controller_client().await;
    assert_eq!(
        controller_capabilities(&mut controller).await,
        vec![rpc::Type::CreateDeleteVolume as i32]
    );

    // What the external-provisioner sends for a ReadOnlyMany PVC of this StorageClass
    // (with --extra-create-metadata).
    let volume = create(
        &mut controller,
        create_request(
            "pvc-3f1c",
            &[
                ("repositories", "sft.cern.ch, cms.cern.ch"),
                ("pins", "cms.cern.ch@tag=v2"),
                ("csi.storage.k8s.io/pvc/name", "cvmfs"),
                ("csi.storage.k8s.io/pvc/namespace", "analysis"),
                ("csi.storage.k8s.io/pv/name", "pvc-3f1c"),
            ],
            GIB,
        ),
    )
    .await
    .unwrap();
    assert_eq!(volume.capacity_bytes, 0, "CVMFS volumes have no size");
    assert!(
        volume.volume_id.starts_with("cvmfs-"),
        "{}",
        volume.volume_id
    );
    assert_eq!(
        volume.volume_context,
        map(&[
            ("repositories", "cms.cern.ch,sft.cern.ch"),
            ("pins", "cms.cern.ch@tag=v2"),
        ])
    );

    // The kubelet publishes the PV with its handle and volume attributes.
    let mut client = node.node_client().await;
    let target = node.target("pod-provisioned");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    client
        .node_publish_volume(NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            target_path: target.display().to_string(),
            volume_capability: Some(capability(Mode::MultiNodeReaderOnly)),
            readonly: true,
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let container = node.container(&target);
    assert_eq!(container.read("cms.cern.ch/version").unwrap(), "cms v2\n");
    assert_eq!(
        container.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    assert!(container.read("atlas.cern.ch/version").is_err());

    // ValidateVolumeCapabilities: reader modes confirmed, writer modes and other content not.
    for mode in [Mode::MultiNodeReaderOnly, Mode::SingleNodeReaderOnly] {
        let answer = controller
            .validate_volume_capabilities(validate_request(&volume, mode))
            .await
            .unwrap()
            .into_inner();
        let confirmed = answer.confirmed.expect("reader mode not confirmed");
        assert_eq!(confirmed.volume_capabilities, vec![capability(mode)]);
        assert_eq!(confirmed.volume_context, volume.volume_context);
    }
    let answer = controller
        .validate_volume_capabilities(validate_request(&volume, Mode::SingleNodeWriter))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.confirmed.is_none());
    assert!(
        answer.message.contains("SINGLE_NODE_WRITER"),
        "{}",
        answer.message
    );
    let mut other_context = validate_request(&volume, Mode::MultiNodeReaderOnly);
    other_context.volume_context = map(&[("repositories", "cms.cern.ch")]);
    let answer = controller
        .validate_volume_capabilities(other_context)
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.confirmed.is_none(),
        "a foreign context was confirmed"
    );

    node.unpublish(&mut client, &volume.volume_id, &target)
        .await
        .unwrap();
    delete(&mut controller, &volume.volume_id).await.unwrap();
    delete(&mut controller, &volume.volume_id).await.unwrap();
    let gone = controller
        .validate_volume_capabilities(validate_request(&volume, Mode::MultiNodeReaderOnly))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_volume_is_idempotent_by_name_and_refuses_conflicts() {
    let mut node = Node::start_with(common::STANDARD, &["--services", "all"]).await;
    let mut controller = node.controller_client().await;
    let parameters = [("repositories", "cms.cern.ch,sft.cern.ch")];
    let first = create(&mut controller, create_request("pvc-a", &parameters, GIB))
        .await
        .unwrap();
    let again = create(
        &mut controller,
        create_request("pvc-a", &[("repositories", "sft.cern.ch,cms.cern.ch")], GIB),
    )
    .await
    .unwrap();
    assert_eq!(first, again);
    let other = create(&mut controller, create_request("pvc-b", &parameters, GIB))
        .await
        .unwrap();
    assert_ne!(other.volume_id, first.volume_id);

    let conflicts = [
        create_request("pvc-a", &[("repositories", "cms.cern.ch")], GIB),
        create_request(
            "pvc-a",
            &[
                ("repositories", "cms.cern.ch,sft.cern.ch"),
                ("pins", "cms.cern.ch@tag=v1"),
            ],
            GIB,
        ),
        create_request("pvc-a", &parameters, 2 * GIB),
    ];
    for request in conflicts.clone() {
        let err = create(&mut controller, request).await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
        assert!(err.message().contains("pvc-a"), "{}", err.message());
    }

    // The records outlive the process: a provisioner retry after a restart gets the same
    // volume, a changed request is still refused.
    node.kill_plugin();
    node.start_plugin().await;
    let mut controller = node.controller_client().await;
    let after = create(&mut controller, create_request("pvc-a", &parameters, GIB))
        .await
        .unwrap();
    assert_eq!(after, first);
    let err = create(&mut controller, conflicts[0].clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // DeleteVolume is idempotent; unknown and foreign ids are fine; the name is free again.
    for id in [
        first.volume_id.as_str(),
        first.volume_id.as_str(),
        "pv-static",
        "cvmfs-x",
    ] {
        delete(&mut controller, id).await.unwrap();
    }
    let replaced = create(&mut controller, conflicts[0].clone()).await.unwrap();
    assert_ne!(replaced.volume_id, first.volume_id);
    let err = delete(&mut controller, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_and_writer_modes_are_invalid_arguments() {
    let node = Node::start_with(common::STANDARD, &["--services", "all"]).await;
    let mut controller = node.controller_client().await;
    let mut cases: Vec<(CreateVolumeRequest, &str)> = vec![
        (
            create_request("v1", &[("repos", "cms.cern.ch")], 0),
            "unknown volume attribute \"repos\"",
        ),
        (
            create_request("v2", &[("repositories", "CMS")], 0),
            "invalid repository name \"CMS\"",
        ),
        (
            create_request("v3", &[("pins", "cms.cern.ch@branch=x")], 0),
            "unknown pin kind",
        ),
        (
            create_request(
                "v4",
                &[
                    ("repositories", "cms.cern.ch"),
                    ("pins", "sft.cern.ch@tag=v1"),
                ],
                0,
            ),
            "not listed",
        ),
        (create_request("", &[], 0), "name is required"),
    ];
    for (mode, name) in [
        (Mode::SingleNodeWriter, "SINGLE_NODE_WRITER"),
        (Mode::MultiNodeMultiWriter, "MULTI_NODE_MULTI_WRITER"),
        (Mode::SingleNodeSingleWriter, "SINGLE_NODE_SINGLE_WRITER"),
    ] {
        let mut request = create_request("v5", &[], 0);
        // A reader mode next to a writer mode does not make the request acceptable.
        request.volume_capabilities.push(capability(mode));
        cases.push((request, name));
    }
    let mut block = create_request("v6", &[], 0);
    block.volume_capabilities[0].access_type = Some(AccessType::Block(BlockVolume::default()));
    cases.push((block, "block access is not supported"));
    let mut no_capabilities = create_request("v7", &[], 0);
    no_capabilities.volume_capabilities.clear();
    cases.push((no_capabilities, "volume_capabilities is required"));
    let mut clone = create_request("v8", &[], 0);
    clone.volume_content_source = Some(VolumeContentSource::default());
    cases.push((clone, "snapshot"));
    let mut inverted = create_request("v9", &[], 2 * GIB);
    inverted.capacity_range.as_mut().unwrap().limit_bytes = GIB;
    cases.push((inverted, "exceeds limit_bytes"));

    for (request, expected) in cases {
        let err = create(&mut controller, request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(expected),
            "{:?} does not mention {expected:?}",
            err.message()
        );
    }
    let writer = create(&mut controller, {
        let mut request = create_request("v10", &[], 0);
        request.volume_capabilities = vec![capability(Mode::SingleNodeWriter)];
        request
    })
    .await
    .unwrap_err();
    assert!(
        writer.message().contains("ReadOnlyMany"),
        "{}",
        writer.message()
    );
    // Nothing was recorded by the refused requests.
    let records = std::fs::read_dir(node.dir.path().join("state/controller"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_only_plugin_announces_no_controller() {
    let node = Node::start().await;
    assert!(!announces_controller(&mut node.identity_client().await).await);
    let mut controller = node.controller_client().await;
    assert!(controller_capabilities(&mut controller).await.is_empty());
    let err = create(&mut controller, create_request("v", &[], 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert!(
        node.dir
            .path()
            .join("state/controller")
            .symlink_metadata()
            .is_err()
    );
}

/// The controller Deployment's process: an unprivileged user, no node id, and mount root,
/// kubelet directory and /dev/fuse it must never touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_only_mode_needs_no_root_and_touches_no_mount() {
    let dir = tempfile::Builder::new()
        .prefix("hepbatch-csi-controller-")
        .tempdir()
        .unwrap();
    let nobody = nix::unistd::Uid::from_raw(65534);
    let nogroup = nix::unistd::Gid::from_raw(65534);
    nix::unistd::chown(dir.path(), Some(nobody), Some(nogroup)).unwrap();
    // The test binary directory is private to root: give the user its own copy.
    let binary = dir.path().join("hepbatch-csi");
    std::fs::copy(env!("CARGO_BIN_EXE_hepbatch-csi"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("csi.sock");
    let state = dir.path().join("state");
    let mount_root = dir.path().join("mount-root");
    let kubelet = dir.path().join("kubelet");
    let mountinfo_before = mount_points();

    let log = std::fs::File::create(dir.path().join("plugin.log")).unwrap();
    let mut plugin = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args(["--services", "controller", "--endpoint"])
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state)
        .arg("--mount-root")
        .arg(&mount_root)
        .arg("--kubelet-dir")
        .arg(&kubelet)
        .env_remove("NODE_NAME")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let channel = wait_for_socket(&socket, dir.path()).await;
    let mut identity = IdentityClient::new(channel.clone());
    identity.probe(ProbeRequest {}).await.unwrap();
    assert!(announces_controller(&mut identity).await);
    let mut controller = ControllerClient::new(channel.clone());
    let volume = create(
        &mut controller,
        create_request("pvc-u", &[("repositories", "cms.cern.ch")], GIB),
    )
    .await
    .unwrap();
    assert_eq!(
        volume.volume_context,
        map(&[("repositories", "cms.cern.ch")])
    );
    let err = NodeClient::new(channel)
        .node_publish_volume(common::publish_request(
            &volume.volume_id,
            &kubelet.join("pods/p/mount"),
            &[("repositories", "cms.cern.ch")],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

    assert!(
        !mount_root.exists(),
        "the controller created the mount root"
    );
    assert!(
        !kubelet.exists(),
        "the controller touched the kubelet directory"
    );
    assert_eq!(mount_points(), mountinfo_before);
    let record_dir = state.join("controller");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&record_dir).unwrap());
    assert_eq!(owner, 65534);

    // A real Probe: records that cannot be written make the controller not ready.
    std::fs::set_permissions(&record_dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let err = identity.probe(ProbeRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not writable"), "{}", err.message());

    let _ = plugin.kill();
    let _ = plugin.wait();
}

fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

async fn wait_for_socket(socket: &Path, dir: &Path) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if socket.exists()
            && let Ok(channel) = common::unix_channel(socket.to_owned()).await
        {
            return channel;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not start; its log:\n{}",
            std::fs::read_to_string(dir.join("plugin.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
