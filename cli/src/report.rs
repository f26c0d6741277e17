//! `kubectl hepbatch report`: the fleet as one self-contained HTML page.
//!
//! One SVG timeline with a bar per shard attempt (its pod's start to end, coloured by
//! outcome), grouped by the node it ran on, and the table of failed attempts. Inline CSS
//! and SVG only: the page loads nothing, so it can be mailed, attached to a ticket or
//! opened offline. [`render`] is pure: the attempts and `now` are parameters.

use std::collections::BTreeMap;
use std::fmt::Write;

use hepbatch_crds::AnalysisJob;
use k8s_openapi::jiff::Timestamp;

use crate::attempt::{Attempt, AttemptState};
use crate::status::human_duration;

/// At most this many attempts are drawn (the page stays light); the rest are counted.
pub const MAX_BARS: usize = 5_000;

const LABEL_WIDTH: i64 = 190;
const PLOT_WIDTH: i64 = 900;
const ROW_HEIGHT: i64 = 14;
const GROUP_GAP: i64 = 20;

/// Text safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn class(state: AttemptState) -> &'static str {
    match state {
        AttemptState::Succeeded => "succeeded",
        AttemptState::Failed => "failed",
        AttemptState::Running => "running",
        AttemptState::Pending | AttemptState::Unknown => "pending",
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:20px;margin:0 0 4px}.meta{color:#555;margin-bottom:16px}\
table{border-collapse:collapse;margin-top:8px}td,th{border:1px solid #ccc;padding:3px 8px;\
text-align:left}th{background:#f3f3f3}.legend span{display:inline-block;margin-right:14px}\
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}\
.succeeded{fill:#2e7d32;background:#2e7d32}.failed{fill:#c62828;background:#c62828}\
.running{fill:#1565c0;background:#1565c0}.pending{fill:#9e9e9e;background:#9e9e9e}\
svg text{font:11px system-ui,sans-serif;fill:#333}svg .node{font-weight:bold}\
svg .axis{stroke:#bbb}";

/// The page for `analysis_job` and its pods' attempts.
pub fn render(
    analysis_job: &AnalysisJob,
    attempts: &BTreeMap<i32, Vec<Attempt>>,
    now: Timestamp,
) -> String {
    let name = analysis_job.metadata.name.clone().unwrap_or_default();
    let namespace = analysis_job.metadata.namespace.clone().unwrap_or_default();
    let status = analysis_job.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("Pending", |p| p.as_str());
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{} - hepbatch report</title><style>{STYLE}</style></head><body>\n",
        escape(&name)
    );
    let _ = writeln!(
        page,
        "<h1>AnalysisJob {}/{}</h1><div class=\"meta\">{} · {} shards: {} succeeded, {} \
         running, {} failed; {} retries{}</div>",
        escape(&namespace),
        escape(&name),
        escape(phase),
        status.shards,
        status.succeeded,
        status.active,
        status.failed,
        status.retries,
        status
            .image
            .as_deref()
            .map(|i| format!(" · image {}", escape(i)))
            .unwrap_or_default()
    );
    page.push_str(&timeline(attempts, now));
    page.push_str(&failure_table(analysis_job, attempts, now));
    let _ = writeln!(
        page,
        "<p class=\"meta\">Made {} by kubectl hepbatch report.</p></body></html>",
        now.strftime("%Y-%m-%d %H:%M:%S UTC")
    );
    page
}

/// The SVG timeline: one row per attempt, grouped by node.
fn timeline(attempts: &BTreeMap<i32, Vec<Attempt>>, now: Timestamp) -> String {
    let mut by_node: BTreeMap<String, Vec<&Attempt>> = BTreeMap::new();
    for attempt in attempts.values().flatten() {
        let node = attempt
            .node
            .clone()
            .unwrap_or_else(|| "(no node)".to_owned());
        by_node.entry(node).or_default().push(attempt);
    }
    let mut out = String::from("<h2>Timeline</h2>\n");
    let starts = attempts
        .values()
        .flatten()
        .filter_map(|a| a.started.or(a.created));
    let Some(t0) = starts.clone().min() else {
        out.push_str("<p>No attempt has a pod yet.</p>\n");
        return out;
    };
    let t1 = attempts
        .values()
        .flatten()
        .map(|a| a.finished.unwrap_or(now))
        .chain(starts)
        .max()
        .unwrap_or(now);
    let span = (t1.as_second() - t0.as_second()).max(1);
    let x = |t: Timestamp| LABEL_WIDTH + (t.as_second() - t0.as_second()) * PLOT_WIDTH / span;
    let drawn: usize = by_node.values().map(Vec::len).sum::<usize>().min(MAX_BARS);
    let height = 30
        + i64::try_from(drawn).unwrap_or(0) * ROW_HEIGHT
        + i64::try_from(by_node.len()).unwrap_or(0) * GROUP_GAP;
    let width = LABEL_WIDTH + PLOT_WIDTH + 50;
    out.push_str(
        "<div class=\"legend\"><span><i class=\"swatch succeeded\"></i>succeeded</span>\
         <span><i class=\"swatch failed\"></i>failed</span><span><i class=\"swatch \
         running\"></i>running</span><span><i class=\"swatch pending\"></i>pending</span></div>\n",
    );
    let _ = writeln!(
        out,
        "<svg width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\">"
    );
    for tick in 0..=4 {
        let offset = span * tick / 4;
        let tx = LABEL_WIDTH + offset * PLOT_WIDTH / span;
        let _ = writeln!(
            out,
            "<line class=\"axis\" x1=\"{tx}\" y1=\"14\" x2=\"{tx}\" y2=\"{height}\"/>\
             <text x=\"{tx}\" y=\"11\" text-anchor=\"middle\">+{}</text>",
            human_duration(offset)
        );
    }
    let mut y = 26;
    let mut left = MAX_BARS;
    for (node, mut rows) in by_node {
        if left == 0 {
            break;
        }
        rows.sort_by_key(|a| (a.started.or(a.created), a.index, a.attempt));
        let _ = writeln!(
            out,
            "<text class=\"node\" x=\"4\" y=\"{}\">{}</text>",
            y + 10,
            escape(&node)
        );
        y += GROUP_GAP;
        for attempt in rows.into_iter().take(left) {
            left -= 1;
            let start = attempt.started.or(attempt.created).unwrap_or(t0);
            let end = attempt.finished.unwrap_or(now);
            let bar_x = x(start);
            let bar_w = (x(end) - bar_x).max(2);
            let exit = attempt
                .exit_code
                .map(|c| format!(", exit code {c}"))
                .unwrap_or_default();
            let reason = attempt
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            let title = format!(
                "shard {} attempt {} · {} · {}{exit}{reason} · {}",
                attempt.index,
                attempt.attempt,
                attempt.pod,
                attempt.state.as_str(),
                attempt
                    .duration(now)
                    .map_or_else(|| "-".to_owned(), human_duration)
            );
            let _ = writeln!(
                out,
                "<text x=\"16\" y=\"{}\">shard {} #{}</text><rect class=\"attempt {}\" \
                 x=\"{bar_x}\" y=\"{}\" width=\"{bar_w}\" height=\"{}\" rx=\"2\"><title>{}\
                 </title></rect>",
                y + 10,
                attempt.index,
                attempt.attempt,
                class(attempt.state),
                y + 1,
                ROW_HEIGHT - 3,
                escape(&title)
            );
            y += ROW_HEIGHT;
        }
    }
    out.push_str("</svg>\n");
    let total: usize = attempts.values().map(Vec::len).sum();
    if total > MAX_BARS {
        let _ = writeln!(
            out,
            "<p class=\"meta\">{} more attempts not drawn.</p>",
            total - MAX_BARS
        );
    }
    out
}

/// Every failed attempt whose pod exists, and the status's detail of failed shards
/// whose pods are gone.
fn failure_table(
    analysis_job: &AnalysisJob,
    attempts: &BTreeMap<i32, Vec<Attempt>>,
    now: Timestamp,
) -> String {
    let mut rows: Vec<[String; 8]> = Vec::new();
    let dash = || "-".to_owned();
    for attempt in attempts.values().flatten() {
        if attempt.state != AttemptState::Failed {
            continue;
        }
        rows.push([
            attempt.index.to_string(),
            attempt.attempt.to_string(),
            attempt.exit_code.map_or_else(dash, |c| c.to_string()),
            attempt.reason.clone().unwrap_or_else(dash),
            attempt.node.clone().unwrap_or_else(dash),
            attempt.duration(now).map_or_else(dash, human_duration),
            attempt.pod.clone(),
            attempt
                .finished
                .map_or_else(dash, |t| t.strftime("%H:%M:%S").to_string()),
        ]);
    }
    if let Some(status) = &analysis_job.status {
        for shard in &status.failed_shard_details {
            if attempts.contains_key(&shard.index) {
                continue;
            }
            rows.push([
                shard.index.to_string(),
                shard.attempts.to_string(),
                shard.last_exit_code.map_or_else(dash, |c| c.to_string()),
                shard.reason.clone().unwrap_or_else(dash),
                shard.node.clone().unwrap_or_else(dash),
                dash(),
                format!("{} (gone)", shard.pod.clone().unwrap_or_else(dash)),
                dash(),
            ]);
        }
    }
    let mut out = String::from("<h2>Failed attempts</h2>\n");
    if rows.is_empty() {
        out.push_str("<p>No attempt failed.</p>\n");
        return out;
    }
    out.push_str(
        "<table><tr><th>Shard</th><th>Attempt</th><th>Exit code</th><th>Reason</th>\
         <th>Node</th><th>Ran</th><th>Pod</th><th>Ended</th></tr>\n",
    );
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::{attempts, test_pod};
    use hepbatch_crds::testing;
    use serde_json::json;

    fn job() -> AnalysisJob {
        let mut aj = testing::analysis_job("fit<1>", json!({"image": "busybox", "shards": 3}))
            .build()
            .unwrap();
        aj.status = Some(
            serde_json::from_value(json!({"phase": "Failed", "shards": 3, "succeeded": 1,
                "failed": 1, "retries": 1,
                "failedShardDetails": [{"index": 2, "attempts": 2, "lastExitCode": 3,
                    "reason": "Error", "node": "cpu-3", "pod": "fit-2-b"}]}))
            .unwrap(),
        );
        aj
    }

    #[test]
    fn one_bar_per_attempt_grouped_by_node_and_coloured_by_outcome() {
        let pods = vec![
            test_pod("fit-0-a", 0, 0, "Succeeded", Some(0), "cpu-0"),
            test_pod("fit-1-a", 1, 10, "Failed", Some(137), "cpu-1"),
            test_pod("fit-1-b", 1, 80, "Running", None, "cpu-0"),
        ];
        let now = Timestamp::from_second(1_800_000_000 + 200).unwrap();
        let page = render(
            &job(),
            &attempts(&pods, &hepbatch_crds::ShardNumbering::Every),
            now,
        );
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<rect class=\"attempt ").count(), 3);
        assert_eq!(page.matches("class=\"attempt failed\"").count(), 1);
        assert_eq!(page.matches("class=\"attempt running\"").count(), 1);
        let cpu0 = page.find(">cpu-0</text>").unwrap();
        let cpu1 = page.find(">cpu-1</text>").unwrap();
        let bar_of_1b = page.find("shard 1 #2").unwrap();
        assert!(
            cpu0 < bar_of_1b && bar_of_1b < cpu1,
            "attempt 2 of shard 1 is under cpu-0"
        );
        // The failure table: the failed attempt with its pod, and the gone shard 2.
        assert!(page.contains("<td>1</td><td>1</td><td>137</td><td>Error</td><td>cpu-1</td>"));
        assert!(page.contains("<td>fit-2-b (gone)</td>"));
        assert!(
            page.contains("AnalysisJob /fit&lt;1&gt;"),
            "names are escaped"
        );
        for external in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn no_pods_no_bars() {
        let page = render(&job(), &BTreeMap::new(), Timestamp::UNIX_EPOCH);
        assert!(page.contains("No attempt has a pod yet."));
        assert!(page.contains("<td>fit-2-b (gone)</td>"));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }
}
