//! Real-mount tests of the plugin: publish, pins, visibility, idempotence, bad requests,
//! healing after a killed client and after a plugin restart, seen from an rslave
//! "container" namespace. See `common` for the harness.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Node;
use hepbatch_csi::proto::csi::NodeGetVolumeStatsRequest;

/// The issue's requirement: a target reads again within 5 s of the client's death.
const HEAL_LIMIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_list_shows_exactly_the_listed_repositories() {
    let node = Node::start().await;
    let mut client = node.node_client().await;
    let target = node.target("pod-a");
    node.publish(
        &mut client,
        "vol-a",
        &target,
        &[("repositories", "cms.cern.ch,sft.cern.ch")],
    )
    .await
    .unwrap();
    assert_eq!(
        node.read(&target.join("cms.cern.ch/version")).unwrap(),
        "cms latest\n"
    );
    assert_eq!(
        node.read(&target.join("sft.cern.ch/version")).unwrap(),
        "sft latest\n"
    );
    assert_eq!(node.list(&target).unwrap(), ["cms.cern.ch", "sft.cern.ch"]);
    let hidden = node.read(&target.join("atlas.cern.ch/version"));
    assert!(hidden.is_err(), "atlas is visible: {hidden:?}");

    // Read-only, nosuid, nodev holder and binds.
    let write = common::run(node.in_ns("touch").arg(target.join("new")));
    assert!(!write.status.success(), "holder is writable");
    let write = common::run(node.in_ns("touch").arg(target.join("cms.cern.ch/new")));
    assert!(!write.status.success(), "repository is writable");
    let target_line = node
        .mountinfo()
        .into_iter()
        .find(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
        .unwrap();
    for option in ["ro", "nosuid", "nodev"] {
        assert!(
            target_line
                .split(' ')
                .nth(5)
                .unwrap()
                .split(',')
                .any(|o| o == option),
            "holder lacks {option}: {target_line}"
        );
    }
    assert!(
        target_line.contains(" shared:"),
        "holder is not shared: {target_line}"
    );

    node.unpublish(&mut client, "vol-a", &target).await.unwrap();
    assert!(!target.exists(), "target directory left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_repository_at_two_tags_at_once() {
    let node = Node::start().await;
    let mut client = node.node_client().await;
    let (one, two, latest) = (
        node.target("pod-1"),
        node.target("pod-2"),
        node.target("pod-3"),
    );
    let attrs = |pin| [("repositories", "cms.cern.ch,sft.cern.ch"), ("pins", pin)];
    node.publish(&mut client, "vol-1", &one, &attrs("cms.cern.ch@tag=v1"))
        .await
        .unwrap();
    node.publish(&mut client, "vol-2", &two, &attrs("cms.cern.ch@tag=v2"))
        .await
        .unwrap();
    node.publish(
        &mut client,
        "vol-3",
        &latest,
        &[("repositories", "cms.cern.ch")],
    )
    .await
    .unwrap();
    assert_eq!(
        node.read(&one.join("cms.cern.ch/version")).unwrap(),
        "cms v1\n"
    );
    assert_eq!(
        node.read(&two.join("cms.cern.ch/version")).unwrap(),
        "cms v2\n"
    );
    assert_eq!(
        node.read(&latest.join("cms.cern.ch/version")).unwrap(),
        "cms latest\n"
    );
    // Unpinned repositories share one client per node.
    assert_eq!(
        node.read(&one.join("sft.cern.ch/version")).unwrap(),
        "sft latest\n"
    );
    assert_eq!(node.client_mounts("sft.cern.ch"), 1);
    // A pinned revision that does not exist is a clear error.
    let missing = node
        .publish(
            &mut client,
            "vol-4",
            &node.target("pod-4"),
            &[("pins", "cms.cern.ch@tag=v9")],
        )
        .await;
    assert!(missing.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_unpublish_are_idempotent() {
    // Also covers a node without on-demand support (no automount): explicit lists only.
    let node = Node::start_with(common::STANDARD, &["--on-demand", "false"]).await;
    let mut client = node.node_client().await;
    let target = node.target("pod-i");
    let attrs = [("repositories", "cms.cern.ch")];
    let baseline = node.mountinfo().len();
    node.publish(&mut client, "vol-i", &target, &attrs)
        .await
        .unwrap();
    let published = node.mountinfo().len();
    node.publish(&mut client, "vol-i", &target, &attrs)
        .await
        .unwrap();
    assert_eq!(
        node.mountinfo().len(),
        published,
        "second publish mounted again"
    );
    // Same target, different attributes: refused.
    let conflict = node
        .publish(
            &mut client,
            "vol-i",
            &target,
            &[("repositories", "sft.cern.ch")],
        )
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);
    node.unpublish(&mut client, "vol-i", &target).await.unwrap();
    node.unpublish(&mut client, "vol-i", &target).await.unwrap();
    let on_demand = node
        .publish(&mut client, "vol-o", &node.target("pod-o"), &[])
        .await
        .unwrap_err();
    assert_eq!(on_demand.code(), tonic::Code::InvalidArgument);
    // The idle repository is unmounted after the idle delay (1 s here).
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.mountinfo().len() != baseline {
        assert!(Instant::now() < deadline, "mounts not back to baseline");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_attributes_and_targets_are_invalid_arguments() {
    let node = Node::start().await;
    let mut client = node.node_client().await;
    let good = node.target("pod-b");
    /// (case, target, attributes, expected part of the message)
    type Case<'a> = (
        &'a str,
        std::path::PathBuf,
        Vec<(&'a str, &'a str)>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown key",
            good.clone(),
            vec![("repos", "cms.cern.ch")],
            "unknown volume attribute",
        ),
        (
            "bad name",
            good.clone(),
            vec![("repositories", "../etc")],
            "invalid repository name",
        ),
        (
            "bad pin",
            good.clone(),
            vec![("pins", "cms.cern.ch@tag=a/b")],
            "invalid pin",
        ),
        (
            "pin not listed",
            good.clone(),
            vec![
                ("repositories", "cms.cern.ch"),
                ("pins", "sft.cern.ch@tag=v1"),
            ],
            "not listed",
        ),
        (
            "outside kubelet",
            "/etc/cvmfs-target".into(),
            vec![("repositories", "cms.cern.ch")],
            "kubelet directory",
        ),
        (
            "dot-dot",
            node.kubelet.join("pods/../../escape"),
            vec![("repositories", "cms.cern.ch")],
            "'..'",
        ),
    ];
    for (case, target, attrs, message) in cases {
        let status = node
            .publish(&mut client, "vol-b", &target, &attrs)
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{case}: {status:?}"
        );
        assert!(
            status.message().contains(message),
            "{case}: {}",
            status.message()
        );
    }
    assert!(!good.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_heals_beneath_running_containers() {
    let mut node = Node::start().await;
    let mut client = node.node_client().await;
    let listed = node.target("pod-l");
    let pinned = node.target("pod-p");
    node.publish(
        &mut client,
        "vol-l",
        &listed,
        &[("repositories", "cms.cern.ch,sft.cern.ch")],
    )
    .await
    .unwrap();
    node.publish(
        &mut client,
        "vol-p",
        &pinned,
        &[
            ("repositories", "cms.cern.ch"),
            ("pins", "cms.cern.ch@tag=v2"),
        ],
    )
    .await
    .unwrap();
    let c_listed = node.container(&listed);
    let c_pinned = node.container(&pinned);
    assert_eq!(
        c_listed.read("cms.cern.ch/version").unwrap(),
        "cms latest\n"
    );
    assert_eq!(c_pinned.read("cms.cern.ch/version").unwrap(), "cms v2\n");
    // Pods usually run unprivileged: the holder and the repositories are world-readable.
    assert_eq!(
        c_listed.read_unprivileged("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );

    let killed = node.clients("cms.cern.ch");
    node.kill_client("cms.cern.ch");
    node.kill_client("cms.cern.ch@tag-v2");
    // The failure is the real one.
    let broken = c_listed.read("cms.cern.ch/version");
    if let Err(message) = &broken {
        assert!(
            // ECONNABORTED when a request was in flight as the client died.
            message.contains("Transport endpoint is not connected")
                || message.contains("Software caused connection abort"),
            "{message}"
        );
    }
    let took = c_listed.wait_for("cms.cern.ch/version", "cms latest\n", HEAL_LIMIT);
    c_pinned.wait_for("cms.cern.ch/version", "cms v2\n", HEAL_LIMIT);
    assert_eq!(
        c_listed.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    eprintln!("healed after client kill in {took:?}");
    let serving = node.clients("cms.cern.ch");
    assert!(
        !serving.is_empty() && serving.iter().all(|pid| !killed.contains(pid)),
        "the repository is not served by a new client: before {killed:?}, now {serving:?}"
    );

    // Volume stats report the health; after healing, healthy.
    let (abnormal, message) = node.condition(&mut client, "vol-l", &listed).await;
    assert!(!abnormal, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_stats_report_a_broken_repository() {
    // A slow watchdog, so the broken state can be observed.
    let mut node = Node::start().await;
    node.kill_plugin();
    node.heal_interval_ms = 3_600_000;
    node.start_plugin().await;
    let mut client = node.node_client().await;
    let target = node.target("pod-s");
    node.publish(
        &mut client,
        "vol-s",
        &target,
        &[("repositories", "sft.cern.ch")],
    )
    .await
    .unwrap();
    node.kill_client("sft.cern.ch");
    // The kernel reports the real failure once the client is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match node.read(&target.join("sft.cern.ch/version")) {
            Err(message) => {
                assert!(
                    // ECONNABORTED when a request was in flight as the client died.
                    message.contains("Transport endpoint is not connected")
                        || message.contains("Software caused connection abort"),
                    "{message}"
                );
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "client did not die"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (abnormal, message) = node.condition(&mut client, "vol-s", &target).await;
    assert!(abnormal, "{message}");
    assert!(message.contains("sft.cern.ch"), "{message}");
    let unknown = client
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "other".into(),
            volume_path: target.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    // A restarted plugin heals on start-up.
    node.kill_plugin();
    node.heal_interval_ms = 200;
    node.start_plugin().await;
    let container = node.container(&target);
    container.wait_for("sft.cern.ch/version", "sft latest\n", HEAL_LIMIT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_restart_keeps_and_heals_running_containers() {
    let mut node = Node::start().await;
    let mut client = node.node_client().await;
    let target = node.target("pod-r");
    node.publish(
        &mut client,
        "vol-r",
        &target,
        &[
            ("repositories", "cms.cern.ch,atlas.cern.ch"),
            ("pins", "cms.cern.ch@tag=v1"),
        ],
    )
    .await
    .unwrap();
    let container = node.container(&target);
    assert_eq!(container.read("cms.cern.ch/version").unwrap(), "cms v1\n");

    // A plain restart breaks nothing.
    node.kill_plugin();
    assert_eq!(container.read("cms.cern.ch/version").unwrap(), "cms v1\n");
    node.start_plugin().await;
    assert_eq!(
        container.read("atlas.cern.ch/version").unwrap(),
        "atlas latest\n"
    );

    // The clients die together with the plugin: healed after the plugin comes back.
    node.kill_plugin();
    node.kill_client("cms.cern.ch@tag-v1");
    node.kill_client("atlas.cern.ch");
    assert!(container.read("atlas.cern.ch/version").is_err());
    node.start_plugin().await;
    let took = container.wait_for("cms.cern.ch/version", "cms v1\n", HEAL_LIMIT);
    container.wait_for("atlas.cern.ch/version", "atlas latest\n", HEAL_LIMIT);
    eprintln!("healed {took:?} after the plugin came back");

    // The restarted plugin still knows the volume (state comes from mountinfo).
    let mut client = node.node_client().await;
    node.unpublish(&mut client, "vol-r", &target).await.unwrap();
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_volume_mounts_repositories_on_first_access_and_heals() {
    let mut node = Node::start().await;
    let mut client = node.node_client().await;
    let all = node.target("pod-all");
    let pinned = node.target("pod-all-pinned");
    node.publish(&mut client, "vol-all", &all, &[])
        .await
        .unwrap();
    node.publish(
        &mut client,
        "vol-all-p",
        &pinned,
        &[("pins", "cms.cern.ch@tag=v2")],
    )
    .await
    .unwrap();
    // Idempotent.
    node.publish(&mut client, "vol-all", &all, &[])
        .await
        .unwrap();
    let container = node.container(&all);
    let container_pinned = node.container(&pinned);
    // Nothing is mounted before the first access.
    assert!(
        !node
            .mountinfo()
            .iter()
            .any(|l| l.contains("/repos/sft.cern.ch ")),
        "sft mounted before access"
    );
    assert_eq!(
        container.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    // First access by an unprivileged user, as most pods run.
    assert_eq!(
        container.read_unprivileged("cms.cern.ch/version").unwrap(),
        "cms latest\n"
    );
    assert_eq!(
        container_pinned.read("cms.cern.ch/version").unwrap(),
        "cms v2\n"
    );
    assert_eq!(
        container_pinned.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    assert!(container.read("nope.cern.ch/version").is_err());
    assert!(container.read("../version").is_err());
    // One client for sft on the node, shared by both volumes.
    assert_eq!(node.client_mounts("sft.cern.ch"), 1);

    node.kill_client("sft.cern.ch");
    node.kill_client("cms.cern.ch@tag-v2");
    let took = container.wait_for("sft.cern.ch/version", "sft latest\n", HEAL_LIMIT);
    container_pinned.wait_for("cms.cern.ch/version", "cms v2\n", HEAL_LIMIT);
    container_pinned.wait_for("sft.cern.ch/version", "sft latest\n", HEAL_LIMIT);
    eprintln!("on-demand volume healed in {took:?}");

    node.unpublish(&mut client, "vol-all", &all).await.unwrap();
    node.unpublish(&mut client, "vol-all-p", &pinned)
        .await
        .unwrap();
    node.unpublish(&mut client, "vol-all-p", &pinned)
        .await
        .unwrap();
    assert!(!all.exists() && !pinned.exists());
}

/// Opens `path` as seen in the node's mount namespace (through the keeper's root).
fn open_in_node(node: &Node, path: &std::path::Path) -> std::fs::File {
    let inside = std::path::PathBuf::from(format!("/proc/{}/root", node.keeper.id()))
        .join(path.strip_prefix("/").unwrap());
    std::fs::File::open(inside).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_on_demand_daemon_is_reported_then_taken_over_beneath_running_readers() {
    // A slow watchdog, so the broken state can be observed before it is healed.
    let mut node = Node::start().await;
    node.kill_plugin();
    node.heal_interval_ms = 4000;
    node.start_plugin().await;
    let mut client = node.node_client().await;
    let target = node.target("pod-od");
    node.publish(&mut client, "vol-od", &target, &[])
        .await
        .unwrap();
    let container = node.container(&target);
    assert_eq!(
        container.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    let (abnormal, message) = node.condition(&mut client, "vol-od", &target).await;
    assert!(!abnormal, "{message}");

    // What a dead daemon leaves: the volume's autofs mount catatonic.
    let root = open_in_node(&node, &target);
    hepbatch_csi::autofs::kernel::catatonic(std::os::fd::AsFd::as_fd(&root)).unwrap();
    // The repository already mounted keeps working; a new name cannot be mounted...
    assert_eq!(
        container.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    assert!(container.read("cms.cern.ch/version").is_err());
    // ...and Probe and the volume condition say so.
    let (abnormal, message) = node.condition(&mut client, "vol-od", &target).await;
    assert!(abnormal && message.contains("not served"), "{message}");
    let probe = node
        .identity_client()
        .await
        .probe(hepbatch_csi::proto::csi::ProbeRequest {})
        .await;
    assert!(probe.is_err(), "Probe is ready with a catatonic volume");
    // The watchdog takes the volume over in place: new names work again, in the very
    // mount the container holds.
    container.wait_for(
        "cms.cern.ch/version",
        "cms latest\n",
        Duration::from_secs(10),
    );
    let (abnormal, message) = node.condition(&mut client, "vol-od", &target).await;
    assert!(!abnormal, "{message}");
    node.identity_client()
        .await
        .probe(hepbatch_csi::proto::csi::ProbeRequest {})
        .await
        .unwrap();
    node.unpublish(&mut client, "vol-od", &target)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_leaves_nothing_and_unpublishes_fine() {
    let node = Node::start().await;
    let mut client = node.node_client().await;
    let baseline = node.mountinfo().len();
    let specs = node.state_dir().join("specs");
    let records = || std::fs::read_dir(&specs).map_or(0, |d| d.count());
    for (name, attributes) in [
        ("pod-f1", vec![("pins", "cms.cern.ch@tag=v9")]),
        (
            "pod-f2",
            vec![("repositories", "cms.cern.ch,nothere.cern.ch")],
        ),
        (
            "pod-f3",
            vec![
                ("repositories", "cms.cern.ch"),
                ("pins", "cms.cern.ch@tag=v9"),
            ],
        ),
    ] {
        let target = node.target(name);
        let result = node.publish(&mut client, name, &target, &attributes).await;
        assert!(result.is_err(), "{attributes:?} was published");
        assert!(!target.exists(), "{attributes:?} left its target");
        assert_eq!(records(), 0, "{attributes:?} left a spec record");
        node.unpublish(&mut client, name, &target).await.unwrap();
    }
    // Instances the failed publishes mounted go with the idle delay; nothing else stays.
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.mountinfo().len() != baseline {
        assert!(
            Instant::now() < deadline,
            "mounts left: {:#?}",
            node.mountinfo()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_on_demand_volumes_and_ends_the_plugin_promptly() {
    let mut node = Node::start().await;
    let mut client = node.node_client().await;
    let (on_demand, listed) = (node.target("pod-t1"), node.target("pod-t2"));
    node.publish(&mut client, "vol-t1", &on_demand, &[])
        .await
        .unwrap();
    node.publish(
        &mut client,
        "vol-t2",
        &listed,
        &[("repositories", "atlas.cern.ch")],
    )
    .await
    .unwrap();
    let (c_on_demand, c_listed) = (node.container(&on_demand), node.container(&listed));
    assert_eq!(
        c_on_demand.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    // A client that no longer answers: the watchdog's probes of it hang.
    let stopped = node.clients("atlas.cern.ch");
    for pid in &stopped {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = node.terminate_plugin(Duration::from_secs(5));
    eprintln!("plugin exited {took:?} after SIGTERM");
    for pid in &stopped {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
    // Mounts stay: what was mounted reads on; new names fail at once instead of waiting.
    assert_eq!(
        c_on_demand.read("sft.cern.ch/version").unwrap(),
        "sft latest\n"
    );
    let asked = Instant::now();
    assert!(c_on_demand.read("cms.cern.ch/version").is_err());
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "a lookup waited {:?}",
        asked.elapsed()
    );
    assert_eq!(
        c_listed.read("atlas.cern.ch/version").unwrap(),
        "atlas latest\n"
    );
    // The next plugin takes the volume over.
    node.start_plugin().await;
    c_on_demand.wait_for(
        "cms.cern.ch/version",
        "cms latest\n",
        Duration::from_secs(10),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_input_is_refused_with_a_short_message() {
    let node = Node::start().await;
    let mut client = node.node_client().await;
    let huge = "a".repeat(1_000_000);
    let too_many: Vec<String> = (0..129).map(|i| format!("r{i}.cern.ch")).collect();
    let too_many = too_many.join(",");
    for (attributes, expected) in [
        (
            vec![("repositories", huge.as_str())],
            "at most 32768 are allowed",
        ),
        (vec![("pins", huge.as_str())], "at most 32768 are allowed"),
        (vec![(huge.as_str(), "x")], "unknown volume attribute"),
        (
            vec![("repositories", too_many.as_str())],
            "129 given, at most 128 are allowed",
        ),
    ] {
        let target = node.target("pod-big");
        let status = node
            .publish(&mut client, "vol-big", &target, &attributes)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().len() < 1024,
            "{} characters",
            status.message().len()
        );
        assert!(status.message().contains(expected), "{}", status.message());
    }
    let log = std::fs::metadata(node.dir.path().join("plugin.log"))
        .unwrap()
        .len();
    assert!(
        log < 64 * 1024,
        "the plugin logged {log} bytes for four refused requests"
    );
}
