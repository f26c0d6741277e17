//! csi-sanity (kubernetes-csi/csi-test, built by the testbed) against the plugin, run
//! inside the plugin's private mount namespace. Skipped specs are listed in docs/csi.md.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Node;

/// csi-sanity specs that need a Controller service (they create volumes with
/// CreateVolume first); this node-only plugin has none. Documented in docs/csi.md.
const SKIPPED: &[&str] = &[
    "should remove target path",
    "should fail when volume does not exist on the specified path",
    "should fail when no volume capabilities are provided",
    "should return appropriate values (no optional values added)",
];

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_sanity_passes() {
    let binary = csi_sanity();
    let node = Node::start().await;
    let work = node.kubelet.join("pods/sanity");
    std::fs::create_dir_all(&work).unwrap();
    let skip = SKIPPED
        .iter()
        .map(|s| regex_escape(s))
        .collect::<Vec<_>>()
        .join("|");
    let output = common::run(
        node.in_ns(binary.to_str().unwrap())
            .arg(format!("--csi.endpoint=unix://{}", node.socket.display()))
            .arg(format!("--csi.mountdir={}", work.join("mount").display()))
            .arg(format!(
                "--csi.stagingdir={}",
                work.join("staging").display()
            ))
            .arg(format!("--ginkgo.skip={skip}"))
            .arg("--ginkgo.no-color"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "csi-sanity failed");
    assert!(stdout.contains("Passed"), "no test ran");
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == ' ' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}
