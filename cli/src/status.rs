//! `kubectl hepbatch status`: one AnalysisJob as a table a person reads at a glance.
//!
//! [`report`] merges the AnalysisJob's status (counts, failed and retried shard detail,
//! conditions) with the attempts its pods show into a [`StatusReport`]: the phase, the
//! counts and one row per shard that is not simply done: running, waiting for a retry,
//! failed, or succeeded only after retries. [`table`] prints it; `-o json|yaml` prints
//! the same report. Both are pure: `now` is a parameter.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use hepbatch_crds::AnalysisJob;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::attempt::{Attempt, AttemptState};

/// The state of a shard as `status` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ShardState {
    /// Its pod waits for a node or for its image.
    Pending,
    /// Its pod runs.
    Running,
    /// Its last attempt failed and it will be run again.
    Retrying,
    /// It failed for good.
    Failed,
    /// It succeeded after failed attempts.
    Succeeded,
}

impl ShardState {
    /// The state as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Pending => "Pending",
            ShardState::Running => "Running",
            ShardState::Retrying => "Retrying",
            ShardState::Failed => "Failed",
            ShardState::Succeeded => "Succeeded",
        }
    }
}

/// One shard that is not simply done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardRow {
    /// The shard's index.
    pub index: i32,
    /// Where it is.
    pub state: ShardState,
    /// Attempts so far (the running one included).
    pub attempts: i32,
    /// Exit code of its last attempt that ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Why that attempt ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Node of its latest attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Pod of its latest attempt, while it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Seconds its latest attempt ran (so far).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
}

/// A condition worth reading: type, status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConditionLine {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub message: String,
}

/// What `status` shows of one AnalysisJob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The AnalysisJob's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its phase (`Pending` until the operator wrote one).
    pub phase: String,
    /// The image its shards run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Total shards.
    pub shards: i32,
    /// Shards that succeeded.
    pub succeeded: i32,
    /// Shards running now.
    pub active: i32,
    /// Shards that failed for good.
    pub failed: i32,
    /// Shards neither finished nor running.
    pub waiting: i32,
    /// Failed attempts that were run again.
    pub retries: i32,
    /// Seconds since the shards started (to their end once finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<i64>,
    /// Conditions that explain something: every condition but the routine ones.
    pub conditions: Vec<ConditionLine>,
    /// Every shard that is not simply done, by index.
    pub shard_rows: Vec<ShardRow>,
}

/// The report of `analysis_job` given its pods' attempts.
pub fn report(
    analysis_job: &AnalysisJob,
    attempts: &BTreeMap<i32, Vec<Attempt>>,
    now: Timestamp,
) -> StatusReport {
    let status = analysis_job.status.clone().unwrap_or_default();
    let failed: BTreeMap<i32, _> = status
        .failed_shard_details
        .iter()
        .map(|f| (f.index, f))
        .collect();
    let retried: BTreeMap<i32, _> = status.retried_shards.iter().map(|r| (r.index, r)).collect();
    let indexes: BTreeSet<i32> = failed
        .keys()
        .chain(retried.keys())
        .chain(attempts.keys())
        .copied()
        .collect();
    let mut rows = Vec::new();
    for index in indexes {
        let tries = attempts.get(&index).map(Vec::as_slice).unwrap_or(&[]);
        let latest = tries.last();
        let ended = tries
            .iter()
            .rev()
            .find(|a| a.exit_code.is_some() || a.state == AttemptState::Failed);
        let failed_detail = failed.get(&index);
        let retried_detail = retried.get(&index);
        let state = match (failed_detail, latest.map(|a| a.state)) {
            (Some(_), _) => ShardState::Failed,
            (None, Some(AttemptState::Running)) => ShardState::Running,
            (None, Some(AttemptState::Pending | AttemptState::Unknown)) => ShardState::Pending,
            (None, Some(AttemptState::Failed)) => ShardState::Retrying,
            (None, Some(AttemptState::Succeeded)) => ShardState::Succeeded,
            (None, None) => ShardState::Retrying,
        };
        let failed_attempts = tries
            .iter()
            .filter(|a| a.state == AttemptState::Failed)
            .count();
        let failed_attempts = i32::try_from(failed_attempts).unwrap_or(i32::MAX);
        if state == ShardState::Succeeded && failed_attempts == 0 && retried_detail.is_none() {
            continue;
        }
        let seen = i32::try_from(tries.len()).unwrap_or(i32::MAX);
        let attempts =
            seen.max(failed_detail.map_or(0, |f| f.attempts))
                .max(retried_detail.map_or(0, |r| {
                    r.failed_attempts
                        + i32::from(matches!(
                            state,
                            ShardState::Running | ShardState::Pending | ShardState::Succeeded
                        ))
                }));
        // Exit code and reason come from one place, so they describe the same attempt:
        // the latest attempt that ended, else what the status kept.
        let (ended_exit, ended_reason) = match ended {
            Some(a) => (a.exit_code, a.reason.clone()),
            None => match (failed_detail, retried_detail) {
                (Some(f), _) => (f.last_exit_code, f.reason.clone()),
                (None, Some(r)) => (r.last_exit_code, r.reason.clone()),
                (None, None) => (None, None),
            },
        };
        rows.push(ShardRow {
            index,
            state,
            attempts,
            last_exit_code: ended_exit,
            reason: ended_reason,
            node: latest
                .and_then(|a| a.node.clone())
                .or_else(|| failed_detail.and_then(|f| f.node.clone())),
            pod: latest
                .map(|a| a.pod.clone())
                .or_else(|| failed_detail.and_then(|f| f.pod.clone())),
            duration_seconds: latest.and_then(|a| a.duration(now)),
        });
    }
    let start = status.start_time.as_ref().map(|t| t.0);
    let end = status
        .completion_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| {
            status
                .phase
                .filter(|p| p.is_finished())
                .and_then(|_| latest_finish(attempts))
        })
        .unwrap_or(now);
    let conditions = status
        .conditions
        .iter()
        .filter(|c| match (c.type_.as_str(), c.status.as_str()) {
            // Routine, or repeated by a condition that says more (Failed).
            ("Accepted" | "Complete" | "SuccessCriteriaMet" | "FailureTarget", "True") => false,
            (_, "False") => c.type_ == "Accepted",
            _ => true,
        })
        .map(|c| ConditionLine {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect();
    StatusReport {
        name: analysis_job.metadata.name.clone().unwrap_or_default(),
        namespace: analysis_job.metadata.namespace.clone().unwrap_or_default(),
        phase: status.phase.map_or("Pending", |p| p.as_str()).to_owned(),
        image: status.image.clone(),
        shards: status.shards,
        succeeded: status.succeeded,
        active: status.active,
        failed: status.failed,
        waiting: (status.shards - status.succeeded - status.failed - status.active).max(0),
        retries: status.retries,
        elapsed_seconds: start.map(|s| (end.as_second() - s.as_second()).max(0)),
        conditions,
        shard_rows: rows,
    }
}

fn latest_finish(attempts: &BTreeMap<i32, Vec<Attempt>>) -> Option<Timestamp> {
    attempts.values().flatten().filter_map(|a| a.finished).max()
}

/// A duration as a person reads it: `42s`, `3m05s`, `1h02m`, `2d03h`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Columns padded to their widest cell, two spaces apart.
pub fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The report as the table `status` prints.
pub fn table(report: &StatusReport) -> String {
    let mut out = String::new();
    let dash = || "-".to_owned();
    let _ = writeln!(out, "AnalysisJob  {}/{}", report.namespace, report.name);
    let finished = matches!(report.phase.as_str(), "Succeeded" | "Failed");
    let elapsed = report
        .elapsed_seconds
        .map(|s| {
            let word = if finished { "after" } else { "for" };
            format!(" {word} {}", human_duration(s))
        })
        .unwrap_or_default();
    let _ = writeln!(out, "Phase        {}{elapsed}", report.phase);
    if let Some(image) = &report.image {
        let _ = writeln!(out, "Image        {image}");
    }
    let _ = writeln!(
        out,
        "Shards       {} total: {} succeeded, {} running, {} failed, {} waiting; {} retries",
        report.shards,
        report.succeeded,
        report.active,
        report.failed,
        report.waiting,
        report.retries
    );
    for c in &report.conditions {
        let _ = writeln!(
            out,
            "Condition    {}={} {}: {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    if report.shard_rows.is_empty() {
        let _ = writeln!(out, "\nNo shard needs attention.");
        return out;
    }
    out.push('\n');
    let mut rows = vec![
        [
            "SHARD", "STATE", "ATTEMPTS", "EXIT", "REASON", "NODE", "DURATION", "POD",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in &report.shard_rows {
        rows.push(vec![
            r.index.to_string(),
            r.state.as_str().to_owned(),
            r.attempts.to_string(),
            r.last_exit_code.map_or_else(dash, |c| c.to_string()),
            r.reason.clone().unwrap_or_else(dash),
            r.node.clone().unwrap_or_else(dash),
            r.duration_seconds.map_or_else(dash, human_duration),
            r.pod.clone().unwrap_or_else(dash),
        ]);
    }
    out.push_str(&columns(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempt::{attempts, test_pod};
    use hepbatch_crds::testing;
    use serde_json::json;

    fn job(status: serde_json::Value) -> AnalysisJob {
        let mut aj = testing::analysis_job("fit", json!({"image": "busybox", "shards": 4}))
            .build()
            .unwrap();
        aj.metadata.namespace = Some("physics".into());
        aj.status = Some(serde_json::from_value(status).unwrap());
        aj
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000 + 500).unwrap()
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(185), "3m05s");
        assert_eq!(human_duration(3720), "1h02m");
        assert_eq!(human_duration(2 * 86400 + 3 * 3600), "2d03h");
        assert_eq!(human_duration(-5), "0s");
    }

    #[test]
    fn a_failed_shard_shows_its_exit_code_attempts_and_node() {
        let aj = job(json!({
            "phase": "Running", "shards": 4, "succeeded": 1, "active": 1, "failed": 1,
            "retries": 1, "startTime": "2027-01-15T08:00:00Z",
            "failedShardDetails": [{"index": 2, "attempts": 2, "lastExitCode": 3,
                "reason": "Error", "node": "cpu-2", "pod": "fit-2-b"}],
        }));
        let pods = vec![
            test_pod("fit-0-a", 0, 0, "Succeeded", Some(0), "cpu-0"),
            test_pod("fit-1-a", 1, 400, "Running", None, "cpu-1"),
            test_pod("fit-2-a", 2, 0, "Failed", Some(3), "cpu-2"),
            test_pod("fit-2-b", 2, 100, "Failed", Some(3), "cpu-2"),
        ];
        let report = report(
            &aj,
            &attempts(&pods, &hepbatch_crds::ShardNumbering::Every),
            now(),
        );
        assert_eq!(report.waiting, 1);
        let indexes: Vec<i32> = report.shard_rows.iter().map(|r| r.index).collect();
        assert_eq!(indexes, [1, 2], "shard 0 is simply done");
        let failed = &report.shard_rows[1];
        assert_eq!(failed.state, ShardState::Failed);
        assert_eq!((failed.attempts, failed.last_exit_code), (2, Some(3)));
        assert_eq!(failed.node.as_deref(), Some("cpu-2"));
        assert_eq!(failed.duration_seconds, Some(60));
        assert_eq!(report.shard_rows[0].duration_seconds, Some(99));
        let text = table(&report);
        assert!(text.contains("AnalysisJob  physics/fit\n"), "{text}");
        assert!(
            text.contains("4 total: 1 succeeded, 1 running, 1 failed, 1 waiting; 1 retries"),
            "{text}"
        );
        let line = text.lines().find(|l| l.starts_with("2 ")).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "2", "Failed", "2", "3", "Error", "cpu-2", "1m00s", "fit-2-b"
            ]
        );
    }

    #[test]
    fn retried_shards_show_even_after_their_pods_are_gone() {
        let aj = job(json!({
            "phase": "Running", "shards": 4, "active": 0, "retries": 2,
            "retriedShards": [{"index": 3, "failedAttempts": 2, "lastExitCode": 137,
                "reason": "OOMKilled"}],
        }));
        let report = report(&aj, &BTreeMap::new(), now());
        let row = &report.shard_rows[0];
        assert_eq!(row.state, ShardState::Retrying);
        assert_eq!((row.attempts, row.last_exit_code), (2, Some(137)));
        assert_eq!(row.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(row.pod, None);
    }

    #[test]
    fn a_shard_that_succeeded_after_a_retry_is_listed() {
        let aj = job(
            json!({"phase": "Succeeded", "shards": 1, "succeeded": 1, "retries": 1,
            "startTime": "2027-01-15T08:00:00Z", "completionTime": "2027-01-15T08:02:05Z",
            "retriedShards": [{"index": 0, "failedAttempts": 1, "lastExitCode": 1,
                "reason": "Error"}]}),
        );
        let pods = vec![
            test_pod("fit-0-a", 0, 0, "Failed", Some(1), "cpu-0"),
            test_pod("fit-0-b", 0, 100, "Succeeded", Some(0), "cpu-1"),
        ];
        let report = report(
            &aj,
            &attempts(&pods, &hepbatch_crds::ShardNumbering::Every),
            now(),
        );
        let row = &report.shard_rows[0];
        assert_eq!((row.state, row.attempts), (ShardState::Succeeded, 2));
        assert_eq!(row.last_exit_code, Some(0));
        assert_eq!(
            row.reason, None,
            "the reason is of the same attempt as the exit code"
        );
        assert!(table(&report).contains("Phase        Succeeded after 2m05s\n"));
    }

    #[test]
    fn routine_conditions_are_left_out_and_explanations_kept() {
        let aj = job(
            json!({"phase": "Unschedulable", "shards": 4, "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Valid", "message": "",
             "lastTransitionTime": "2027-01-15T08:00:00Z"},
            {"type": "ShardsUnschedulable", "status": "True", "reason": "Unschedulable",
             "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
             "lastTransitionTime": "2027-01-15T08:00:00Z"}]}),
        );
        let report = report(&aj, &BTreeMap::new(), now());
        assert_eq!(report.conditions.len(), 1);
        let text = table(&report);
        assert!(
            text.contains("Condition    ShardsUnschedulable=True Unschedulable: 0/4 nodes"),
            "{text}"
        );
        assert!(text.contains("No shard needs attention."), "{text}");
    }
}
