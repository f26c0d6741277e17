//! The report renders in a real browser: headless Chromium (Debian's `chromium`) loads
//! the page with the network off and takes a screenshot. Skipped, with a message, where
//! Chromium is not installed.

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

use hepbatch_cli::attempt::{Attempt, AttemptState};
use hepbatch_cli::report;
use hepbatch_crds::testing;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn at(second: i64) -> Option<Timestamp> {
    Some(Timestamp::from_second(1_800_000_000 + second).unwrap())
}

fn attempt(index: i32, number: u32, node: &str, state: AttemptState, start: i64) -> Attempt {
    Attempt {
        index,
        attempt: number,
        pod: format!("scan-{index}-{number}"),
        node: Some(node.to_owned()),
        state,
        exit_code: match state {
            AttemptState::Failed => Some(3),
            AttemptState::Succeeded => Some(0),
            _ => None,
        },
        reason: (state == AttemptState::Failed).then(|| "Error".to_owned()),
        created: at(start - 1),
        started: at(start),
        finished: matches!(state, AttemptState::Failed | AttemptState::Succeeded)
            .then(|| at(start + 40))
            .flatten(),
    }
}

#[test]
fn the_report_renders_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let mut aj = testing::analysis_job("scan", json!({"image": "busybox", "shards": 4}))
        .namespace("physics")
        .build()
        .unwrap();
    aj.status = Some(
        serde_json::from_value(json!({"phase": "Running", "shards": 4, "succeeded": 2,
            "active": 1, "retries": 1}))
        .unwrap(),
    );
    let mut attempts = BTreeMap::new();
    attempts.insert(0, vec![attempt(0, 1, "cpu-0", AttemptState::Succeeded, 0)]);
    attempts.insert(
        1,
        vec![
            attempt(1, 1, "cpu-1", AttemptState::Failed, 0),
            attempt(1, 2, "cpu-0", AttemptState::Succeeded, 50),
        ],
    );
    attempts.insert(2, vec![attempt(2, 1, "cpu-1", AttemptState::Running, 60)]);
    let page = report::render(&aj, &attempts, at(120).unwrap());

    let dir = std::env::temp_dir().join(format!("hepbatch-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("fleet.html");
    let png = dir.join("fleet.png");
    std::fs::write(&html, &page).unwrap();
    let url = format!("file://{}", html.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        // Nothing may load from the network: the page must stand alone.
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
    ];
    let dom = Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    assert!(dom.status.success(), "{dom:?}");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom.matches("class=\"attempt ").count(),
        4,
        "the browser parsed one bar per attempt: {dom}"
    );
    let shot = Command::new(chromium)
        .args(common)
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(["--window-size=1200,700", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(shot.status.success(), "{shot:?}");
    let image = std::fs::read(&png).unwrap();
    assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    assert!(
        image.len() > 10_000,
        "a screenshot with content: {} bytes",
        image.len()
    );
    eprintln!("screenshot: {} bytes", image.len());
    std::fs::remove_dir_all(&dir).unwrap();
}
