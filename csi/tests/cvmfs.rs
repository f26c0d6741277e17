//! What only the real CVMFS client can show, against a real stratum 0: pins by date and
//! root hash, a new revision reaching unpinned volumes while pinned ones keep theirs, the
//! snapshot each mount shows, failures told in words, and a cache that survives plugin
//! restarts. These tests always use the real client (they fail, saying how to install it,
//! where it is missing); the stand-in cannot do any of this.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Node;
use hepbatch_csi::backend::cvmfs::CvmfsBackend;
use hepbatch_csi::volume::Instance;
use hepbatch_tests::cvmfs::{File, Repository, Revision, Stratum, content};

/// Time a container may wait for a healed or updated repository.
const LIMIT: Duration = Duration::from_secs(10);

fn require_client() {
    assert!(
        hepbatch_tests::cvmfs::installed(),
        "these tests need the real CVMFS client: run tests/cvmfs/build.sh"
    );
}

/// `cms.cern.ch` with tags v1 and v2 published a second apart (so a date can fall between
/// them), then a latest revision.
fn spaced_cms() -> Arc<Stratum> {
    let stratum = Stratum::start(&[Repository {
        name: "cms.cern.ch".into(),
        revisions: vec![Revision::tagged(
            "v1",
            vec![File::new("version", "cms v1\n")],
        )],
    }])
    .unwrap();
    for revision in [
        Revision::tagged("v2", vec![File::new("version", "cms v2\n")]),
        Revision::untagged(vec![File::new("version", "cms latest\n")]),
    ] {
        std::thread::sleep(Duration::from_millis(1100));
        stratum.publish("cms.cern.ch", &revision).unwrap();
    }
    Arc::new(stratum)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
fn iso8601(seconds: u64) -> String {
    let output = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{seconds}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_by_tag_date_and_root_hash_show_their_revision() {
    require_client();
    let stratum = spaced_cms();
    let tags = stratum.tags("cms.cern.ch").unwrap();
    let tag = |name: &str| tags.iter().find(|t| t.name == name).unwrap().clone();
    let (v1, v2) = (tag("v1"), tag("v2"));
    assert!(v1.timestamp < v2.timestamp, "{tags:?}");
    let mut node = Node::start_with_stratum(stratum.clone(), &[]).await;
    let mut client = node.node_client().await;
    let cases = [
        (
            "by-date",
            format!("cms.cern.ch@date={}", iso8601(v1.timestamp)),
            "cms v1\n",
            v1.revision,
        ),
        (
            "by-hash",
            format!("cms.cern.ch@rootHash={}", v2.root_hash),
            "cms v2\n",
            v2.revision,
        ),
        (
            "by-tag",
            "cms.cern.ch@tag=v2".to_owned(),
            "cms v2\n",
            v2.revision,
        ),
    ];
    for (name, pin, expected, revision) in &cases {
        let target = node.target(name);
        node.publish(
            &mut client,
            name,
            &target,
            &[("repositories", "cms.cern.ch"), ("pins", pin)],
        )
        .await
        .unwrap_or_else(|e| panic!("{pin}: {e:?}"));
        let container = node.container(&target);
        assert_eq!(
            container.read("cms.cern.ch/version").unwrap(),
            *expected,
            "{pin}"
        );
        // The volume says which snapshot it shows, as the client reports it.
        let (abnormal, message) = node.condition(&mut client, name, &target).await;
        assert!(!abnormal, "{message}");
        assert!(
            message.contains(&format!("cms.cern.ch at revision {revision}")),
            "{pin}: {message}"
        );
    }
    // The latest revision beside them.
    let latest = node.target("latest");
    node.publish(
        &mut client,
        "latest",
        &latest,
        &[("repositories", "cms.cern.ch")],
    )
    .await
    .unwrap();
    assert_eq!(
        node.container(&latest).read("cms.cern.ch/version").unwrap(),
        "cms latest\n"
    );
    let (_, message) = node.condition(&mut client, "latest", &latest).await;
    let head = stratum.manifest("cms.cern.ch").unwrap();
    assert!(
        message.contains(&format!("revision {}", head.revision)),
        "{message}"
    );
    assert!(message.contains(&head.root_hash[..12]), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_revision_reaches_unpinned_volumes_and_pinned_ones_keep_theirs() {
    require_client();
    let stratum = Arc::new(Stratum::start(&content::standard()).unwrap());
    let mut node = Node::start_with_stratum(stratum.clone(), &[]).await;
    let mut client = node.node_client().await;
    let (latest, pinned) = (node.target("latest"), node.target("pinned"));
    node.publish(
        &mut client,
        "latest",
        &latest,
        &[("repositories", "cms.cern.ch")],
    )
    .await
    .unwrap();
    node.publish(
        &mut client,
        "pinned",
        &pinned,
        &[
            ("repositories", "cms.cern.ch"),
            ("pins", "cms.cern.ch@tag=v1"),
        ],
    )
    .await
    .unwrap();
    let (c_latest, c_pinned) = (node.container(&latest), node.container(&pinned));
    assert_eq!(
        c_latest.read("cms.cern.ch/version").unwrap(),
        "cms latest\n"
    );

    stratum
        .publish(
            "cms.cern.ch",
            &Revision::untagged(vec![File::new("version", "cms newer\n")]),
        )
        .unwrap();
    // Unpinned clients move on at their TTL; `cvmfs_talk remount` does it now.
    let shared = node.state_dir().join("cache/shared/cvmfs_io.cms.cern.ch");
    let answer = common::run_ok(
        node.in_ns("cvmfs_talk")
            .arg("-p")
            .arg(&shared)
            .args(["remount", "sync"]),
    );
    assert!(
        answer.contains("applied") || answer.contains("up to date"),
        "{answer}"
    );
    c_latest.wait_for("cms.cern.ch/version", "cms newer\n", LIMIT);
    assert_eq!(c_pinned.read("cms.cern.ch/version").unwrap(), "cms v1\n");

    // `cvmfs_talk remount` moves even a pinned client to the latest revision; the
    // watchdog notices the pinned instance no longer shows its pin and mounts it again.
    let backend = CvmfsBackend::new("/etc/cvmfs".into(), node.state_dir(), Default::default());
    let own = backend
        .pinned_dir(&Instance::from_dir_name("cms.cern.ch@tag-v1").unwrap())
        .join("cvmfs_io.cms.cern.ch");
    common::run_ok(
        node.in_ns("cvmfs_talk")
            .arg("-p")
            .arg(&own)
            .args(["remount", "sync"]),
    );
    c_pinned.wait_for("cms.cern.ch/version", "cms v1\n", LIMIT);
    let (abnormal, message) = node.condition(&mut client, "pinned", &pinned).await;
    assert!(!abnormal && message.contains("(tag v1)"), "{message}");
}

/// Publishes `cms.cern.ch` (with `pins`) on a node started with `args` and returns the
/// error message.
async fn refusal(stratum: &Arc<Stratum>, args: &[&str], pins: Option<&str>) -> String {
    let node = Node::start_with_stratum(stratum.clone(), args).await;
    let mut client = node.node_client().await;
    let mut attributes = vec![("repositories", "cms.cern.ch")];
    if let Some(pins) = pins {
        attributes.push(("pins", pins));
    }
    let target = node.target("refused");
    let status = node
        .publish(&mut client, "refused", &target, &attributes)
        .await
        .expect_err("the publish should fail");
    assert!(!target.exists(), "a failed publish left its target");
    status.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_the_repository_and_the_cause() {
    require_client();
    let stratum = Arc::new(Stratum::start(&content::standard()).unwrap());
    let keys = tempfile::tempdir().unwrap();
    let (wrong, none) = (keys.path().join("wrong"), keys.path().join("none"));
    std::fs::create_dir_all(&wrong).unwrap();
    std::fs::create_dir_all(&none).unwrap();
    common::run_ok(std::process::Command::new("sh").arg("-c").arg(format!(
        "openssl genrsa 2048 2>/dev/null | openssl rsa -pubout -out {}/cms.cern.ch.pub 2>/dev/null",
        wrong.display()
    )));
    let (wrong, none) = (wrong.display().to_string(), none.display().to_string());
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (
            &["--server-url", "http://127.0.0.1:1/cvmfs/@fqrn@"],
            None,
            "its manifest cannot be downloaded (host connection problem)",
        ),
        (
            &["--keys-dir", &wrong],
            None,
            "its signature does not verify with the configured public keys",
        ),
        (
            &["--keys-dir", &none],
            None,
            "no public key for it could be loaded",
        ),
        (&[], Some("cms.cern.ch@tag=v9"), "it has no tag \"v9\""),
        (
            &[],
            Some("cms.cern.ch@date=2020-01-01T00:00:00Z"),
            "it has no tagged revision as old as",
        ),
    ];
    for (args, pins, cause) in cases {
        let message = refusal(&stratum, args, pins).await;
        assert!(
            message.contains("repository cms.cern.ch"),
            "{args:?} {pins:?}: {message}"
        );
        assert!(message.contains(cause), "{args:?} {pins:?}: {message}");
        eprintln!("{args:?} {pins:?}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_too_small_for_a_file_is_told_by_the_volume() {
    require_client();
    // Hardly compressible (the client's cache holds compressed objects): 4 MB of
    // pseudo-random characters from 64, about 3 MB compressed, against a 2 MiB quota.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let big: String = (0..4_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(alphabet[(state % 64) as usize])
        })
        .collect();
    let stratum = Arc::new(
        Stratum::start(&[Repository {
            name: "big.cern.ch".into(),
            revisions: vec![Revision::untagged(vec![
                File::new("small", "small\n"),
                File::new("big.dat", &big),
            ])],
        }])
        .unwrap(),
    );
    let mut node = Node::start_with_stratum(stratum, &["--quota-limit-mib", "2"]).await;
    let mut client = node.node_client().await;
    let (target, container) = node
        .publish_in_container(&mut client, "big", &[("repositories", "big.cern.ch")])
        .await;
    assert_eq!(container.read("big.cern.ch/small").unwrap(), "small\n");
    let error = container.read("big.cern.ch/big.dat").unwrap_err();
    assert!(error.contains("No space left on device"), "{error}");
    let (abnormal, message) = node.condition(&mut client, "big", &target).await;
    assert!(abnormal, "{message}");
    assert!(message.contains("repository big.cern.ch"), "{message}");
    assert!(message.contains("the cache quota of 2 MiB"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_survives_a_plugin_restart() {
    require_client();
    let stratum = Arc::new(Stratum::start(&content::standard()).unwrap());
    let mut node = Node::start_with_stratum(stratum.clone(), &[]).await;
    let mut client = node.node_client().await;
    let (_, container) = node
        .publish_in_container(&mut client, "cached", &[("repositories", "cms.cern.ch")])
        .await;
    let files = ["version", "bin/cmsRun", "cmsset_default.sh"];
    let contents: Vec<String> = files
        .iter()
        .map(|file| container.read(&format!("cms.cern.ch/{file}")).unwrap())
        .collect();
    let data = |stratum: &Stratum| {
        stratum
            .requested_paths()
            .iter()
            .filter(|p| p.contains("/data/"))
            .count()
    };
    let downloaded = data(&stratum);
    assert!(downloaded > 0);
    // A plugin restart as in a container: the clients die with it.
    let clients = node.clients("cms.cern.ch");
    node.kill_plugin();
    for pid in clients {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    node.start_plugin().await;
    for (file, content) in files.iter().zip(&contents) {
        container.wait_for(&format!("cms.cern.ch/{file}"), content, LIMIT);
    }
    assert_eq!(
        data(&stratum),
        downloaded,
        "the new client downloaded content again: {:?}",
        stratum.requested_paths()
    );
}
