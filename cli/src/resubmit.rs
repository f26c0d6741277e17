//! `kubectl hepbatch resubmit`: a new AnalysisJob running chosen shards of an old one
//! again, under their original indexes (`crab resubmit`).
//!
//! The new AnalysisJob is the old one's spec with `spec.shardIndexes` set, so every shard
//! gets its old index, input list and output names ([`hepbatch_crds::shard_indexes`]).
//! Which shards: `--shards 3,7,12-15`, or `--failed`, the shards that failed for good,
//! read from the Job's `status.failedIndexes` (complete, where the AnalysisJob's status
//! may be cut) and turned into the fleet's indexes.
//!
//! Resubmissions of one fleet form a family named after the first AnalysisJob: `higgs`,
//! then `higgs-r1`, `higgs-r2`, … whichever was resubmitted. Each carries the label
//! [`RESUBMIT_OF_LABEL`] with the first one's name and the annotation
//! [`RESUBMIT_OF_UID_ANNOTATION`] with the uid of the one it repeats.

use std::collections::BTreeMap;

use hepbatch_crds::analysis_job::{RESUBMIT_OF_LABEL, RESUBMIT_OF_UID_ANNOTATION};
use hepbatch_crds::{AnalysisJob, ShardIndexes, ShardIndexesError};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::ObjectMeta;

/// Longest name an AnalysisJob may have: its Job's pods are named after it and carry it
/// as a label value.
pub const MAX_NAME_LEN: usize = 63;

/// Which shards to run again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Which {
    /// The shards that failed for good.
    Failed,
    /// These shards (original indexes).
    Shards(ShardIndexes),
}

/// Why there is nothing to resubmit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResubmitError {
    /// `--shards` is not a selection.
    #[error("--shards: {0}")]
    Shards(#[source] ShardIndexesError),
    /// `--failed`, but no shard failed for good (yet).
    #[error("no shard of analysisjob {name} failed for good; choose shards with --shards")]
    NothingFailed {
        /// The AnalysisJob.
        name: String,
    },
    /// `--failed` before the Job exists.
    #[error("analysisjob {name} has no Job yet, so no shard has failed")]
    NoJob {
        /// The AnalysisJob.
        name: String,
    },
    /// `--shards` names shards the AnalysisJob did not run.
    #[error(
        "analysisjob {name} ran only shards {ran}; shard {index} is not among them \
         (resubmit from the AnalysisJob that ran it)"
    )]
    NotRun {
        /// The AnalysisJob.
        name: String,
        /// Its selection.
        ran: String,
        /// The first shard asked for that it did not run.
        index: i32,
    },
}

/// Parses `--shards`.
pub fn parse_shards(text: &str) -> Result<Which, ResubmitError> {
    text.parse()
        .map(Which::Shards)
        .map_err(ResubmitError::Shards)
}

/// The shards to run again, in the fleet's indexes; `job` is `original`'s Job (whose
/// `status.failedIndexes` counts completions), if it exists.
pub fn selection(
    original: &AnalysisJob,
    which: &Which,
    job: Option<&Job>,
) -> Result<ShardIndexes, ResubmitError> {
    let name = original.name_any();
    let numbering = original.spec.numbering().map_err(ResubmitError::Shards)?;
    match which {
        Which::Shards(shards) => {
            if let Some(ran) = numbering.selection() {
                let missing = (0..shards.len())
                    .filter_map(|k| shards.original(k))
                    .find(|&index| !ran.contains(index));
                if let Some(index) = missing {
                    return Err(ResubmitError::NotRun {
                        name,
                        ran: ran.to_string(),
                        index,
                    });
                }
            }
            Ok(shards.clone())
        }
        Which::Failed => {
            let job = job.ok_or_else(|| ResubmitError::NoJob { name: name.clone() })?;
            let failed = job
                .status
                .as_ref()
                .and_then(|s| s.failed_indexes.clone())
                .unwrap_or_default();
            let ranges = numbering.renumber_ranges(failed);
            ranges
                .parse()
                .map_err(|_| ResubmitError::NothingFailed { name })
        }
    }
}

/// The family name of `original`'s resubmissions: the first AnalysisJob's.
pub fn family(original: &AnalysisJob) -> String {
    original
        .labels()
        .get(RESUBMIT_OF_LABEL)
        .cloned()
        .unwrap_or_else(|| original.name_any())
}

/// The `attempt`-th name of `family` (`higgs-r1`), shortened to fit [`MAX_NAME_LEN`].
pub fn name(family: &str, attempt: u32) -> String {
    let suffix = format!("-r{attempt}");
    let room = MAX_NAME_LEN - suffix.len();
    let base = family
        .get(..room.min(family.len()))
        .unwrap_or(family)
        .trim_end_matches(['-', '.']);
    format!("{base}{suffix}")
}

/// The first name of the family that `taken` does not hold.
pub fn free_name(family: &str, taken: &[String]) -> String {
    (1..)
        .map(|attempt| name(family, attempt))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| name(family, u32::MAX))
}

/// The new AnalysisJob named `name`: `original`'s spec running `shards`, linked to it.
pub fn resubmission(original: &AnalysisJob, shards: &ShardIndexes, name: &str) -> AnalysisJob {
    let mut spec = original.spec.clone();
    spec.shard_indexes = Some(shards.to_string());
    let labels = BTreeMap::from([(RESUBMIT_OF_LABEL.to_owned(), family(original))]);
    let annotations = original
        .uid()
        .map(|uid| BTreeMap::from([(RESUBMIT_OF_UID_ANNOTATION.to_owned(), uid)]));
    let mut analysis_job = AnalysisJob::new(name, spec);
    analysis_job.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: original.namespace(),
        labels: Some(labels),
        annotations,
        ..ObjectMeta::default()
    };
    analysis_job
}

#[cfg(test)]
mod tests {
    use hepbatch_crds::testing::analysis_job;
    use serde_json::json;

    use super::*;

    fn job_failing(indexes: Option<&str>) -> Job {
        serde_json::from_value(json!({"status": {"failedIndexes": indexes}})).expect("valid")
    }

    fn original(spec: serde_json::Value) -> AnalysisJob {
        analysis_job("higgs", spec)
            .namespace("physics")
            .uid("u-1")
            .build()
            .expect("valid")
    }

    #[test]
    fn failed_shards_come_from_the_job_in_the_fleets_indexes() {
        let aj = original(json!({"image": "i", "shards": 10, "script": "true"}));
        let shards =
            selection(&aj, &Which::Failed, Some(&job_failing(Some("3,7")))).expect("failed");
        assert_eq!(shards.to_string(), "3,7");
        // A resubmission's failures are its completions; they name the fleet's shards.
        let again = original(json!({"image": "i", "shards": 10, "script": "true",
            "shardIndexes": "3,7,9"}));
        let shards =
            selection(&again, &Which::Failed, Some(&job_failing(Some("1-2")))).expect("failed");
        assert_eq!(shards.to_string(), "7,9");
        assert_eq!(
            selection(&aj, &Which::Failed, Some(&job_failing(None))),
            Err(ResubmitError::NothingFailed {
                name: "higgs".to_owned()
            })
        );
        assert!(matches!(
            selection(&aj, &Which::Failed, None),
            Err(ResubmitError::NoJob { .. })
        ));
    }

    #[test]
    fn chosen_shards_must_be_ones_the_analysis_job_ran() {
        let again = original(json!({"image": "i", "shards": 10, "script": "true",
            "shardIndexes": "3,7"}));
        let which = parse_shards("7").expect("valid");
        assert_eq!(
            selection(&again, &which, None).expect("ran").to_string(),
            "7"
        );
        let error = selection(&again, &parse_shards("3-4").expect("valid"), None)
            .expect_err("4 did not run");
        assert_eq!(
            error.to_string(),
            "analysisjob higgs ran only shards 3,7; shard 4 is not among them (resubmit from \
             the AnalysisJob that ran it)"
        );
        assert!(parse_shards("7,3").is_err());
    }

    #[test]
    fn resubmissions_are_named_and_linked_by_family() {
        let aj = original(json!({"image": "i", "shards": 10, "script": "true",
            "env": [{"name": "A", "value": "1"}]}));
        assert_eq!(free_name(&family(&aj), &[]), "higgs-r1");
        let shards: ShardIndexes = "3,7".parse().expect("valid");
        let first = resubmission(&aj, &shards, "higgs-r1");
        assert_eq!(first.spec.shard_indexes.as_deref(), Some("3,7"));
        assert_eq!(first.spec.env, aj.spec.env);
        assert_eq!(
            first.labels().get(RESUBMIT_OF_LABEL).map(String::as_str),
            Some("higgs")
        );
        assert_eq!(
            first
                .annotations()
                .get(RESUBMIT_OF_UID_ANNOTATION)
                .map(String::as_str),
            Some("u-1")
        );
        assert_eq!(family(&first), "higgs");
        let taken = ["higgs-r1".to_owned()];
        assert_eq!(free_name(&family(&first), &taken), "higgs-r2");
        let long = "a".repeat(63);
        assert_eq!(name(&long, 12).len(), MAX_NAME_LEN);
        assert!(name(&long, 12).ends_with("a-r12"));
    }
}
