//! What only the stand-in does cheaply: a volume of 100 repositories (the real client would
//! need 100 repositories on the test stratum, several minutes to create). Runs with the
//! squashfuse backend whatever `HEPBATCH_CSI_TEST_BACKEND` says.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_of_a_hundred_repositories_publishes_and_shows_each() {
    let names: Vec<String> = (0..100)
        .map(|i| format!("repository-number-{i:03}.experiment.example.org"))
        .collect();
    let contents: Vec<String> = names.iter().map(|n| format!("{n}\n")).collect();
    let files: Vec<[(&str, &str); 1]> = contents.iter().map(|c| [("name", c.as_str())]).collect();
    let fixtures: Vec<(&str, &[(&str, &str)])> = names
        .iter()
        .zip(&files)
        .map(|(n, f)| (n.as_str(), &f[..]))
        .collect();
    let mut node = Node::start_with_stand_in(&fixtures, &[]).await;
    let mut client = node.node_client().await;
    let target = node.target("pod-hundred");
    let list = names.join(",");
    assert!(list.len() > 4096, "the list should not fit a mount source");
    node.publish(
        &mut client,
        "vol-hundred",
        &target,
        &[("repositories", &list)],
    )
    .await
    .unwrap();
    let container = node.container(&target);
    for name in &names {
        assert_eq!(
            container.read(&format!("{name}/name")).unwrap(),
            format!("{name}\n")
        );
    }
    node.unpublish(&mut client, "vol-hundred", &target)
        .await
        .unwrap();
}
