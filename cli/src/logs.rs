//! `kubectl hepbatch logs`: which pod holds the log of a shard's attempt.
//!
//! A shard's attempts are its pods in creation order ([`crate::attempt`]); the log of an
//! attempt exists only while its pod does. [`select`] picks the attempts asked for or
//! says, in words, why there is nothing to read.

use hepbatch_crds::shard_indexes::range_parts;
use hepbatch_crds::{AnalysisJob, ShardNumbering};

use crate::attempt::Attempt;

/// Which attempts of a shard to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The latest attempt whose pod exists.
    Latest,
    /// Attempt K (1-based).
    Attempt(u32),
    /// Every attempt whose pod exists, oldest first.
    All,
}

/// Why no log can be shown.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoLog {
    /// The shard index is outside the AnalysisJob.
    #[error("analysisjob {name} has shards {runs}; there is no shard {index}")]
    NoSuchShard {
        /// The AnalysisJob.
        name: String,
        /// The index asked for.
        index: i32,
        /// The shards it runs: `0 to 3`, or its selection.
        runs: String,
    },
    /// No pod of the shard exists.
    #[error("{0}")]
    NoPod(String),
    /// The attempt asked for has no pod (any more).
    #[error(
        "attempt {attempt} of shard {index} has no pod: {}",
        if .kept.is_empty() { "no attempt's pod is kept".to_owned() }
        else { format!("the pods kept are of attempt {}", .kept) }
    )]
    NoAttempt {
        /// The shard.
        index: i32,
        /// The attempt asked for.
        attempt: u32,
        /// The attempts whose pods exist, e.g. `1, 2`.
        kept: String,
    },
}

/// The attempts of shard `index` to read, given the attempts its pods show.
pub fn select<'a>(
    analysis_job: &AnalysisJob,
    index: i32,
    attempts: &'a [Attempt],
    which: Which,
) -> Result<Vec<&'a Attempt>, NoLog> {
    let name = analysis_job.metadata.name.clone().unwrap_or_default();
    let status = analysis_job.status.as_ref();
    let shards = status.map_or(0, |s| s.shards);
    let runs = match analysis_job.spec.numbering() {
        Ok(ShardNumbering::Selected(selection)) => {
            (!selection.contains(index)).then(|| selection.to_string())
        }
        _ => (shards > 0 && !(0..shards).contains(&index)).then(|| format!("0 to {}", shards - 1)),
    };
    if let Some(runs) = runs {
        return Err(NoLog::NoSuchShard { name, index, runs });
    }
    if attempts.is_empty() {
        let detail = status
            .and_then(|s| s.failed_shard_details.iter().find(|f| f.index == index))
            .map(|f| {
                let exit = f
                    .last_exit_code
                    .map(|c| format!(" with exit code {c}"))
                    .unwrap_or_default();
                let reason = f
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                let node = f
                    .node
                    .as_deref()
                    .map(|n| format!(" on {n}"))
                    .unwrap_or_default();
                format!(
                    "; the status keeps its last attempt: {} attempts, ended{exit}{reason}{node}",
                    f.attempts
                )
            })
            .unwrap_or_default();
        let succeeded = status
            .and_then(|s| s.completed_shards.as_deref())
            .is_some_and(|ranges| in_ranges(ranges, index));
        let why = if succeeded {
            "it succeeded and its pod was removed"
        } else {
            "it has not started yet, or its pods were removed (the Job deleted, \
             ttlSecondsAfterFinished)"
        };
        return Err(NoLog::NoPod(format!(
            "shard {index} of analysisjob {name} has no pod: {why}{detail}"
        )));
    }
    match which {
        Which::All => Ok(attempts.iter().collect()),
        Which::Latest => Ok(attempts.last().into_iter().collect()),
        Which::Attempt(k) => attempts
            .iter()
            .find(|a| a.attempt == k)
            .map(|a| vec![a])
            .ok_or_else(|| NoLog::NoAttempt {
                index,
                attempt: k,
                kept: attempts
                    .iter()
                    .map(|a| a.attempt.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
    }
}

/// Whether `index` lies in index ranges such as `0-3,7`.
pub fn in_ranges(ranges: &str, index: i32) -> bool {
    range_parts(ranges).any(|(first, last)| (first..=last).contains(&index))
}

/// The heading printed above each attempt's log with `--all-attempts`.
pub fn heading(attempt: &Attempt) -> String {
    let exit = attempt
        .exit_code
        .map(|c| format!(", exit code {c}"))
        .unwrap_or_default();
    format!(
        "==> shard {} attempt {} (pod {}, {}{exit}) <==",
        attempt.index,
        attempt.attempt,
        attempt.pod,
        attempt.state.as_str()
    )
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
        aj.status = Some(serde_json::from_value(status).unwrap());
        aj
    }

    #[test]
    fn attempts_are_chosen_by_number_or_all_or_the_latest() {
        let aj = job(json!({"shards": 4}));
        let pods = vec![
            test_pod("fit-1-a", 1, 0, "Failed", Some(2), "cpu-0"),
            test_pod("fit-1-b", 1, 100, "Running", None, "cpu-1"),
        ];
        let attempts = attempts(&pods, &ShardNumbering::Every);
        let shard = &attempts[&1];
        let pick = |w| {
            select(&aj, 1, shard, w)
                .unwrap()
                .iter()
                .map(|a| a.pod.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick(Which::Latest), ["fit-1-b"]);
        assert_eq!(pick(Which::Attempt(1)), ["fit-1-a"]);
        assert_eq!(pick(Which::All), ["fit-1-a", "fit-1-b"]);
        let missing = select(&aj, 1, shard, Which::Attempt(3)).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "attempt 3 of shard 1 has no pod: the pods kept are of attempt 1, 2"
        );
        assert_eq!(
            heading(&shard[0]),
            "==> shard 1 attempt 1 (pod fit-1-a, Failed, exit code 2) <=="
        );
    }

    #[test]
    fn a_gone_pod_is_explained_with_what_the_status_keeps() {
        let aj = job(json!({"shards": 4, "completedShards": "0-1",
            "failedShardDetails": [{"index": 2, "attempts": 4, "lastExitCode": 3,
                "reason": "Error", "node": "cpu-2"}]}));
        assert_eq!(
            select(&aj, 2, &[], Which::Latest).unwrap_err().to_string(),
            "shard 2 of analysisjob fit has no pod: it has not started yet, or its pods were \
             removed (the Job deleted, ttlSecondsAfterFinished); the status keeps its last \
             attempt: 4 attempts, ended with exit code 3 (Error) on cpu-2"
        );
        assert!(
            select(&aj, 1, &[], Which::Latest)
                .unwrap_err()
                .to_string()
                .contains("it succeeded and its pod was removed")
        );
        assert_eq!(
            select(&aj, 9, &[], Which::Latest).unwrap_err(),
            NoLog::NoSuchShard {
                name: "fit".into(),
                index: 9,
                runs: "0 to 3".to_owned()
            }
        );
    }

    #[test]
    fn index_ranges() {
        assert!(in_ranges("0-3,7", 2));
        assert!(in_ranges("0-3,7", 7));
        assert!(!in_ranges("0-3,7", 5));
        assert!(!in_ranges("", 0));
    }
}
