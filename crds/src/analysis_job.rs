//! The `AnalysisJob` custom resource (`hepbatch.io/v1alpha1`).
//!
//! An AnalysisJob says "run this in a light-weight image, N shards, P at a time, retry
//! each shard up to R times". The operator translates it into one Indexed `batch/v1` Job
//! of the same name, so the spec mirrors the Job's semantics under HEP-friendly names.
//!
//! Design:
//! - The spec is flat and small today; later features (platform, CMSSW, CVMFS, GPUs, input
//!   splitting) arrive as new optional fields, so nothing here is `deny_unknown_fields` and
//!   every optional field means "absent: the documented default".
//! - Admission validation lives in the schema: OpenAPI ranges for numbers and CEL
//!   `x-kubernetes-validations` rules for everything else. Each rule names the field and the
//!   fix. The rules are data ([`spec_rules`]) so the tests can enumerate them.
//! - Fields a live Job cannot change are immutable here too; the mutable ones are listed
//!   in [`MUTABLE_FIELDS`]. One transition rule checks them all and names the first field
//!   that changed (`messageExpression`): the apiserver evaluates a resource's rules on
//!   every write, status writes included, and this rule is settled by one comparison
//!   (`self == oldSelf`) when the spec did not change, where a rule per field cost
//!   each status write about a millisecond of apiserver CPU more.
//! - The status is what a person wants to read (`kubectl get aj`): phase, counts, shard
//!   ranges and per-failed-shard detail; it is derived by the operator from the Job and its
//!   pods only, so it is deterministic.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvFromSource, EnvVar, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::hep::{Cmssw, Cvmfs, GpuRequest, Inputs, Output};
use crate::security::{PodSecurityLevel, RunAs};
use crate::shard_indexes::{
    MAX_SHARD_INDEXES_LEN, ShardIndexes, ShardIndexesError, ShardNumbering,
};

/// Largest number of shards one AnalysisJob may have (the Job API's limit on completions
/// with per-index backoff).
pub const MAX_SHARDS: i32 = 100_000;

/// Parallelism used when the spec gives none: all shards, but at most this many at once.
pub const DEFAULT_PARALLELISM_CAP: i32 = 1_000;

/// Largest `maxRetriesPerShard` accepted.
pub const MAX_RETRIES_PER_SHARD: i32 = 100;

/// Prefix of environment variables the operator sets in every shard.
pub const RESERVED_ENV_PREFIX: &str = "HEPBATCH_";

/// Label on the Job and on every shard pod naming the AnalysisJob they belong to.
pub const ANALYSIS_JOB_LABEL: &str = "hepbatch.io/analysis-job";

/// Annotation on the Job recording, as JSON, the CVMFS revision each repository was
/// resolved to when the Job was created (`spec.cvmfs.consistency: Fleet`): the map of
/// [`AnalysisJobStatus::cvmfs`]'s `revisions`. The Job's pod template pins the same root
/// hashes, so the Job carries the resolution and the status is derived from it.
pub const CVMFS_REVISIONS_ANNOTATION: &str = "hepbatch.io/cvmfs-revisions";

/// Environment variable holding the shard's index (0 to shards-1).
pub const SHARD_ENV: &str = "HEPBATCH_SHARD_INDEX";

/// Environment variable holding the path of the shard's input file list (with `inputs`).
pub const INPUT_FILES_ENV: &str = "HEPBATCH_INPUT_FILES";

/// Environment variable holding the output directory (with `output`), as in the CMS
/// lessons.
pub const OUTPUT_DIR_ENV: &str = "ANALYSIS_OUTDIR";

/// Environment variable holding the number of shards of the fleet.
pub const SHARDS_ENV: &str = "HEPBATCH_SHARDS";

/// Environment variable holding `spec.shardIndexes` (normalized) when the AnalysisJob runs
/// a selection of its fleet's shards.
pub const SHARD_INDEXES_ENV: &str = "HEPBATCH_SHARD_INDEXES";

/// Name of the container running the shard in every shard pod.
pub const SHARD_CONTAINER: &str = "shard";

/// Annotation the Job controller puts on each pod of an Indexed Job: its completion index
/// (the shard's index, unless `spec.shardIndexes` selects shards; see
/// [`crate::shard_indexes`]).
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// Label on a resubmission naming the AnalysisJob whose shards it runs again.
pub const RESUBMIT_OF_LABEL: &str = "hepbatch.io/resubmit-of";

/// Annotation on a resubmission holding the uid of the AnalysisJob it runs again (names
/// are reused; uids are not).
pub const RESUBMIT_OF_UID_ANNOTATION: &str = "hepbatch.io/resubmit-of-uid";

/// Spec fields that may change after creation; every other field is immutable because the
/// Job it becomes cannot change it.
pub const MUTABLE_FIELDS: &[&str] = &["parallelism", "suspend", "ttlSecondsAfterFinished"];

/// Optional spec fields that are immutable once the AnalysisJob exists.
const IMMUTABLE_OPTIONAL_FIELDS: &[&str] = &[
    "image",
    "platform",
    "shards",
    "shardIndexes",
    "cmssw",
    "cvmfs",
    "output",
    "inputs",
    "maxRuntime",
    "command",
    "args",
    "script",
    "workingDir",
    "env",
    "envFrom",
    "resources",
    "maxFailedShards",
    "fatalExitCodes",
    "activeDeadlineSeconds",
    "queueName",
    "priorityClassName",
    "serviceAccountName",
    "nodeSelector",
    "tolerations",
    "affinity",
    "podMetadata",
    "runAs",
    "runAsRoot",
];

/// Spec fields that always have a value (required or defaulted) and are immutable.
const IMMUTABLE_REQUIRED_FIELDS: &[&str] = &["maxRetriesPerShard"];

/// What a physicist asks for: a containerised program run as `shards` indexed shards.
// The printer columns repeat `type_ = ...` inside separate `printcolumn(...)` groups, which
// clippy mistakes for one attribute given twice.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hepbatch.io",
    version = "v1alpha1",
    kind = "AnalysisJob",
    namespaced,
    status = "AnalysisJobStatus",
    derive = "PartialEq",
    shortname = "aj",
    category = "hepbatch",
    doc = "An AnalysisJob runs a program in a container as N indexed shards (an Indexed batch/v1 Job underneath), P at a time, retrying each shard up to R times.",
    scale(
        spec_replicas_path = ".spec.parallelism",
        status_replicas_path = ".status.active"
    ),
    printcolumn(
        name = "Succeeded",
        type_ = "integer",
        json_path = ".status.succeeded",
        description = "Shards that succeeded"
    ),
    printcolumn(
        name = "Shards",
        type_ = "integer",
        json_path = ".status.shards",
        description = "Total shards"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.active",
        description = "Shards running now"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.failed",
        description = "Shards that failed for good"
    ),
    printcolumn(
        name = "Retries",
        type_ = "integer",
        json_path = ".status.retries",
        description = "Failed attempts of shards that were run again"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Unschedulable, Suspended, Succeeded or Failed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Platform",
        type_ = "string",
        json_path = ".spec.platform",
        priority = 1,
        description = "Platform (cc7, el8, el9, ...) whose image the shards run"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".status.image",
        priority = 1,
        description = "Container image of every shard"
    ),
    printcolumn(
        name = "Waiting For",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ShardsUnschedulable\")].message",
        priority = 1,
        description = "Why shards wait for a node, in the scheduler's words"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = add_spec_rules)]
pub struct AnalysisJobSpec {
    /// Container image every shard runs, e.g. `ghcr.io/org/analysis:1.0`; overrides the
    /// platform's image. `image` or `platform` is required. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), transform = image_rules)]
    pub image: Option<String>,

    /// Platform whose light-weight base image the shards run: `cc7`, `el8`, `el9` or one
    /// the cluster admin defined (software comes from `/cvmfs`; compare the `cmssw-el8`
    /// wrappers or HTCondor's `+SingularityImage`). `image` overrides it. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), transform = crate::hep::platform_rules)]
    pub platform: Option<String>,

    /// Sets up a CMSSW release (`cmsrel` + `cmsenv`) before `script` or `command` runs, in
    /// `$CMSSW_BASE/src`; implies the `cms.cern.ch` repository under `/cvmfs`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmssw: Option<Cmssw>,

    /// CVMFS repositories under `/cvmfs`, optionally pinned to a revision. Absent: no
    /// `/cvmfs` unless `cmssw` is set. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvmfs: Option<Cvmfs>,

    /// Where shards write results, exported as `$ANALYSIS_OUTDIR`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,

    /// Input files split over shards (CRAB `FileBased` splitting): the shard count follows
    /// from the list, and each shard finds its files, one per line, in the file named by
    /// `$HEPBATCH_INPUT_FILES`. Excludes `shards`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,

    /// Longest time one attempt of a shard may run before it is stopped and counts as a
    /// failed attempt: an HTCondor JobFlavour (`espresso` 20 min, `microcentury` 1 h,
    /// `longlunch` 2 h, `workday` 8 h, `tomorrow` 1 d, `testmatch` 3 d, `nextweek` 1 week)
    /// or a duration such as `90m`, `2h`, `1h30m`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), transform = crate::hep::max_runtime_rules)]
    pub max_runtime: Option<String>,

    /// Executable and arguments replacing the image's entrypoint. Mutually exclusive with
    /// `script`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub command: Option<Vec<String>>,

    /// Arguments to the entrypoint (or to `command`). Mutually exclusive with `script`.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub args: Option<Vec<String>>,

    /// A bash script run as `bash -euo pipefail -c <script>` (fail-fast: the first failing
    /// command fails the shard). The shard index is in `$HEPBATCH_SHARD_INDEX` (and
    /// `$JOB_COMPLETION_INDEX`), the shard count in `$HEPBATCH_SHARDS`. Mutually exclusive
    /// with `command` and `args`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub script: Option<String>,

    /// Absolute working directory of the shard's container. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), transform = working_dir_rules)]
    pub working_dir: Option<String>,

    /// Environment variables of every shard; names starting with `HEPBATCH_` are reserved.
    /// Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub env: Option<Vec<EnvVar>>,

    /// Sources (ConfigMaps, Secrets) of environment variables of every shard. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub env_from: Option<Vec<EnvFromSource>>,

    /// What one shard needs: CPU, memory and ephemeral storage. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ShardResources>,

    /// Number of shards (indexes 0 to shards-1), 1 to 100000; HTCondor's `queue N`.
    /// Absent: 1, or computed from `inputs`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub shards: Option<i32>,

    /// Runs only these shards of the fleet, under their original indexes: indexes and
    /// ranges in ascending order such as `3,7,12-15` (what `status.failedShards` lists,
    /// and what `kubectl hepbatch resubmit` sets). `$HEPBATCH_SHARD_INDEX`, the shard's
    /// input list and the status use the original indexes; needs `script` or `command`.
    /// Absent: every shard. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_SHARD_INDEXES_LEN), transform = shard_indexes_rules)]
    pub shard_indexes: Option<String>,

    /// Shards running at once (0 pauses without suspending). Absent: all shards, at most
    /// 1000. May change at any time, also with `kubectl scale aj/<name> --replicas=N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000))]
    pub parallelism: Option<i32>,

    /// How often a failed shard is retried before it counts as failed, 0 to 100 (default 3).
    /// Pod disruptions (eviction, preemption) do not use up retries. Immutable.
    #[serde(default = "default_max_retries_per_shard")]
    #[schemars(range(min = 0, max = 100))]
    pub max_retries_per_shard: i32,

    /// How many shards may fail for good before the whole AnalysisJob fails; absent: the
    /// AnalysisJob runs all shards and fails at the end if any shard failed. At most
    /// `shards`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000))]
    pub max_failed_shards: Option<i32>,

    /// Exit codes (1 to 255) that mean "retrying will not help": a shard exiting with one of
    /// them fails at once without using its retries. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), inner(range(min = 1, max = 255)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub fatal_exit_codes: Option<Vec<i32>>,

    /// Seconds the whole AnalysisJob may run (counted while not suspended) before it fails
    /// with reason `DeadlineExceeded`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Seconds after the AnalysisJob finished (Succeeded or Failed) at which it is deleted,
    /// together with its Job and pods. Absent: kept until deleted. May change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Suspends the AnalysisJob: running shards are stopped, finished ones are kept; setting
    /// it back to false resumes. May change. With `queueName`, Kueue decides instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Kueue LocalQueue to submit to; the Job is created suspended and Kueue starts it when
    /// admitted. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), transform = queue_name_rules)]
    pub queue_name: Option<String>,

    /// PriorityClass of the shards' pods. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// ServiceAccount the shards run as. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Node labels a node must have to run shards. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Taints the shards tolerate. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub tolerations: Option<Vec<Toleration>>,

    /// Node and pod affinity of the shards. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Labels and annotations added to every shard's pod. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<PodMetadata>,

    /// The user and group the shards run as, for images made for another user than the
    /// cluster's default for them (the platform's, e.g. `cmsusr` for cc7). Absent: the
    /// operator configuration's choice. Never root: see `runAsRoot`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,

    /// Runs the shards as root (UID 0), e.g. a CernVM root file system started through
    /// its `/init`; still without any capability and without privilege escalation.
    /// Only where the cluster admin allows it (for the namespace or the platform), and
    /// the pods then need a namespace that admits Pod Security `baseline`. Excludes
    /// `runAs`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_root: Option<bool>,
}

/// What one shard needs. Each value is a Kubernetes quantity such as `2`, `500m` or `4Gi`.
/// CPU is requested; memory and ephemeral storage are requested and also the limit.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardResources {
    /// CPU cores per shard, e.g. `1` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = cpu_rules)]
    pub cpu: Option<String>,
    /// Memory per shard (request and limit), e.g. `2Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = memory_rules)]
    pub memory: Option<String>,
    /// Node-local scratch disk per shard (request and limit), e.g. `10Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = ephemeral_storage_rules)]
    pub ephemeral_storage: Option<String>,
    /// GPUs per shard, mapped to the vendor's device-plugin resource, node affinity on
    /// the GPU's labels and a toleration of the GPU nodes' taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
}

/// Labels and annotations for the shards' pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = pod_metadata_rules)]
pub struct PodMetadata {
    /// Labels of every shard pod; keys under `hepbatch.io/` and `batch.kubernetes.io/` are
    /// reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations of every shard pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Where an AnalysisJob is in its life.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Accepted; no shard has started yet.
    Pending,
    /// Shards are running or waiting to run.
    Running,
    /// No shard runs: the scheduler finds no node with the resources they ask for (the
    /// `ShardsUnschedulable` condition quotes it). Shards that wait while others run
    /// leave the phase `Running` and set the same condition.
    Unschedulable,
    /// Suspended by the user (or waiting for Kueue admission): no shard runs.
    Suspended,
    /// Every shard succeeded.
    Succeeded,
    /// The AnalysisJob failed: a shard failed for good, too many shards failed, or the
    /// deadline passed; see the `Failed` condition's reason.
    Failed,
}

impl Phase {
    /// Every phase, for metrics that report one series per phase.
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Running,
        Phase::Unschedulable,
        Phase::Suspended,
        Phase::Succeeded,
        Phase::Failed,
    ];

    /// The phase as written in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Unschedulable => "Unschedulable",
            Phase::Suspended => "Suspended",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Whether the AnalysisJob is finished for good.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// What the operator observed, in a form a person can read.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisJobStatus {
    /// Pending, Running, Unschedulable, Suspended, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The Job's conditions (Suspended, FailureTarget, SuccessCriteriaMet, Complete, Failed)
    /// with their reasons and messages; `ShardsUnschedulable` while shards wait for a node
    /// the scheduler cannot find (its message quotes the scheduler); `ShardsNotCreated`
    /// while the Job controller cannot create shards' pods (its message quotes the
    /// refusal: Pod Security, a ResourceQuota, ...); `Accepted=False` while the operator
    /// cannot run the AnalysisJob as it stands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Name of the Job that runs the shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The image the shards run (from `image`, or the platform's image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The CVMFS software every shard sees, when the operator resolved it
    /// (`spec.cvmfs.consistency: Fleet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvmfs: Option<CvmfsStatus>,
    /// The strictest Pod Security level the shards' pods meet, which their namespace must
    /// admit: `restricted` (the default), `baseline` (root shards) or `privileged`
    /// (`hostPath` volumes: the hostPath CVMFS provider or output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurityLevel>,
    /// Total number of shards.
    #[serde(default)]
    pub shards: i32,
    /// Shards running now.
    #[serde(default)]
    pub active: i32,
    /// Running shards whose pods are ready.
    #[serde(default)]
    pub ready: i32,
    /// Shards that succeeded.
    #[serde(default)]
    pub succeeded: i32,
    /// Shards that failed for good (their retries used up, or a fatal exit code).
    #[serde(default)]
    pub failed: i32,
    /// Failed attempts of shards that were then run again (each failed attempt but the
    /// last of a shard that failed for good). Evictions and preemptions do not count.
    #[serde(default)]
    pub retries: i32,
    /// Shard pods being stopped.
    #[serde(default)]
    pub terminating: i32,
    /// Indexes of succeeded shards as ranges, e.g. `0-3,7`; beyond 16 KiB cut at a range
    /// and ended with `,…` (`succeeded` stays exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_shards: Option<String>,
    /// Indexes of shards that failed for good, as ranges; beyond 16 KiB cut like
    /// `completedShards` (`failed` stays exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_shards: Option<String>,
    /// Detail on each shard that failed for good (or is failing): attempts, exit code,
    /// reason, node, pod. At most 100 entries, lowest indexes first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_shard_details: Vec<FailedShard>,
    /// Shards that failed and were run again (and have not failed for good): failed
    /// attempts so far and how the last one ended. At most 100 entries, lowest indexes
    /// first; `retries` counts them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retried_shards: Vec<RetriedShard>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the Job finished successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CVMFS software of an AnalysisJob's shards.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CvmfsStatus {
    /// Repository → the revision every shard is pinned to, resolved from the repository's
    /// signed manifest when the AnalysisJob started. To rerun with exactly this software,
    /// copy each `rootHash` into `spec.cvmfs.pin.<repository>.rootHash`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revisions: BTreeMap<String, CvmfsRevision>,
}

/// One revision of a CVMFS repository, as its signed manifest describes it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CvmfsRevision {
    /// The root catalog hash naming the revision (`cvmfs_talk revision`, `CVMFS_ROOT_HASH`).
    pub root_hash: String,
    /// The revision number (`attr -g revision`).
    pub revision: i64,
    /// When the revision was published.
    pub published: Time,
}

/// What is known about one failed shard.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedShard {
    /// The shard's index.
    pub index: i32,
    /// How many times it ran and failed.
    pub attempts: i32,
    /// Exit code of its last attempt, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Why its last attempt ended, e.g. `Error`, `OOMKilled`, `DeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Node its last attempt ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Pod of its last attempt (`kubectl logs <pod>` while the pod is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// A shard that failed and was run again.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetriedShard {
    /// The shard's index.
    pub index: i32,
    /// How many of its attempts failed so far.
    pub failed_attempts: i32,
    /// Exit code of its last failed attempt, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// Why its last failed attempt ended, e.g. `Error`, `OOMKilled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AnalysisJobSpec {
    /// The shard count the spec gives (1 when absent); with `inputs` the count follows
    /// from the input list instead.
    pub fn shards(&self) -> i32 {
        self.shards.unwrap_or(1)
    }

    /// How the Job's completion indexes map to the fleet's shards (`spec.shardIndexes`).
    pub fn numbering(&self) -> Result<ShardNumbering, ShardIndexesError> {
        match &self.shard_indexes {
            None => Ok(ShardNumbering::Every),
            Some(text) => text.parse::<ShardIndexes>().map(ShardNumbering::Selected),
        }
    }

    /// The parallelism the Job gets for `shards` shards: the spec's, or all shards capped
    /// at [`DEFAULT_PARALLELISM_CAP`].
    pub fn effective_parallelism(&self, shards: i32) -> i32 {
        self.parallelism
            .unwrap_or_else(|| shards.min(DEFAULT_PARALLELISM_CAP))
    }

    /// Whether the user asked for the AnalysisJob to be suspended.
    pub fn is_suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }

    /// Whether the user asked for the shards to run as root.
    pub fn wants_root(&self) -> bool {
        self.run_as_root.unwrap_or(false)
    }
}

fn default_max_retries_per_shard() -> i32 {
    3
}

/// One CEL validation rule with the message the apiserver returns when it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The CEL expression; `self` is the object the rule is attached to.
    pub rule: String,
    /// What the user reads when the rule rejects their object (when there is a
    /// [`Rule::message_expression`], only if that one fails to evaluate).
    pub message: String,
    /// A CEL expression computing the message, e.g. to name the field at fault.
    pub message_expression: Option<String>,
}

impl Rule {
    pub(crate) fn new(rule: impl Into<String>, message: impl Into<String>) -> Self {
        Rule {
            rule: rule.into(),
            message: message.into(),
            message_expression: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut rule = json!({"rule": self.rule, "message": self.message});
        if let Some(expression) = &self.message_expression {
            rule["messageExpression"] = json!(expression);
        }
        rule
    }
}

/// The CEL rules attached to `spec`: mutually exclusive fields, cross-field limits and the
/// immutability (transition) rules.
pub fn spec_rules() -> Vec<Rule> {
    let mut rules = vec![
        Rule::new(
            "!(has(self.script) && has(self.command))",
            "spec.script and spec.command are mutually exclusive: a script runs with bash; \
             put the command into the script or remove the script",
        ),
        Rule::new(
            "!(has(self.script) && has(self.args))",
            "spec.script and spec.args are mutually exclusive: pass arguments inside the \
             script or use command/args without a script",
        ),
        Rule::new(
            "has(self.image) || has(self.platform)",
            "spec.image or spec.platform is required: name an image, or a platform such as \
             cc7, el8 or el9 to run its light-weight image",
        ),
        Rule::new(
            "!(has(self.inputs) && has(self.shards))",
            "spec.shards is computed from spec.inputs (files / filesPerShard); remove \
             spec.shards or spec.inputs",
        ),
        Rule::new(
            "!has(self.maxFailedShards) || has(self.inputs) || \
             self.maxFailedShards <= (has(self.shards) ? self.shards : 1)",
            "spec.maxFailedShards must not be larger than spec.shards",
        ),
        Rule::new(
            "!has(self.cmssw) || has(self.script) || has(self.command)",
            "spec.cmssw sets up a release for your commands: give spec.script (or \
             spec.command) to run in it",
        ),
        Rule::new(
            format!(
                "!has(self.env) || self.env.all(e, !e.name.startsWith('{RESERVED_ENV_PREFIX}'))"
            ),
            format!(
                "spec.env must not set variables starting with {RESERVED_ENV_PREFIX}: the \
                 operator sets them; rename the variable"
            ),
        ),
        Rule::new(
            format!(
                "!has(self.output) || !has(self.env) || \
                 self.env.all(e, e.name != '{OUTPUT_DIR_ENV}')"
            ),
            format!(
                "spec.env must not set {OUTPUT_DIR_ENV} when spec.output is given: the \
                 operator sets it to spec.output.path"
            ),
        ),
    ];
    rules.extend(shard_selection_rules());
    rules.push(crate::security::run_as_root_rule());
    rules.push(crate::hep::platform_scram_arch_rule());
    rules.push(immutability_rule());
    rules
}

/// `spec.shardIndexes` against the rest of the spec: the pods' command learns the original
/// index, so there must be one, and (without `inputs`, whose count only the operator knows)
/// the highest index must exist. Order and overlaps are the operator's check: a rule
/// walking 16 KiB of ranges (or a message quoting them) exceeds the apiserver's CEL cost
/// budget.
fn shard_selection_rules() -> Vec<Rule> {
    // The last number of the ranges, i.e. the highest index when they ascend.
    let shards = "(has(self.shards) ? self.shards : 1)";
    let tail = "self.shardIndexes.substring((self.shardIndexes.lastIndexOf(',') > \
                self.shardIndexes.lastIndexOf('-') ? self.shardIndexes.lastIndexOf(',') : \
                self.shardIndexes.lastIndexOf('-')) + 1)";
    vec![
        Rule::new(
            "!has(self.shardIndexes) || has(self.script) || has(self.command)",
            "spec.shardIndexes needs spec.script or spec.command: the shard's original index \
             is set before they run, which the image's own entrypoint cannot be told",
        ),
        Rule::new(
            format!(
                "!has(self.shardIndexes) || has(self.inputs) || !{tail}.matches('^[0-9]{{1,5}}$') \
                 || int({tail}) < {shards}"
            ),
            "spec.shardIndexes names a shard beyond spec.shards: indexes run from 0 to \
             shards-1",
        ),
    ]
}

/// The transition rule keeping every field but [`MUTABLE_FIELDS`] as created: settled by
/// `self == oldSelf` when the spec is unchanged (every status write), otherwise checks
/// each immutable field and names the first one that changed.
fn immutability_rule() -> Rule {
    let unchanged: Vec<(&str, String)> = IMMUTABLE_REQUIRED_FIELDS
        .iter()
        .map(|field| (*field, format!("(self.{field} == oldSelf.{field})")))
        .chain(IMMUTABLE_OPTIONAL_FIELDS.iter().map(|field| {
            (
                *field,
                format!(
                    "(has(self.{field}) == has(oldSelf.{field}) && \
                     (!has(self.{field}) || self.{field} == oldSelf.{field}))"
                ),
            )
        }))
        .collect();
    let all_unchanged = unchanged
        .iter()
        .map(|(_, check)| check.as_str())
        .collect::<Vec<_>>()
        .join(" && ");
    let first_changed: String = unchanged
        .iter()
        .map(|(field, check)| format!("!{check} ? '{field}' : "))
        .collect();
    Rule {
        rule: format!("self == oldSelf || ({all_unchanged})"),
        message: format!(
            "spec fields other than {} are immutable: the Job running the shards cannot \
             change them; delete and re-create the AnalysisJob",
            MUTABLE_FIELDS.join(", ")
        ),
        message_expression: Some(format!(
            "'spec.' + ({first_changed}'?') + '{}'",
            immutable_message_tail()
        )),
    }
}

fn immutable_message_tail() -> String {
    format!(
        " is immutable: the Job running the shards cannot change it; delete and re-create \
         the AnalysisJob (only {} may change)",
        MUTABLE_FIELDS.join(", ")
    )
}

pub(crate) fn set_rules(schema: &mut Schema, rules: &[Rule]) {
    let rules: Vec<Value> = rules.iter().map(Rule::to_json).collect();
    schema.insert("x-kubernetes-validations".to_owned(), Value::Array(rules));
}

fn add_spec_rules(schema: &mut Schema) {
    set_rules(schema, &spec_rules());
}

fn image_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "!self.matches('\\\\s')",
            "spec.image must be an image reference without spaces, e.g. \
             ghcr.io/org/analysis:1.0",
        )],
    );
}

fn shard_indexes_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[0-9]{1,5}(-[0-9]{1,5})?(,[0-9]{1,5}(-[0-9]{1,5})?)*$')",
            "spec.shardIndexes must list shard indexes and ranges in ascending order, \
             without spaces, e.g. 3,7,12-15",
        )],
    );
}

fn working_dir_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.startsWith('/')",
            "spec.workingDir must be an absolute path (start with /)",
        )],
    );
}

fn queue_name_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            "spec.queueName must name a Kueue LocalQueue: lowercase letters, digits and '-', \
             starting and ending with a letter or digit",
        )],
    );
}

fn quantity_rules(schema: &mut Schema, field: &str, example: &str) {
    set_rules(
        schema,
        &[
            Rule::new(
                "isQuantity(self)",
                format!("spec.resources.{field} must be a Kubernetes quantity such as {example}"),
            ),
            Rule::new(
                "!isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))",
                format!("spec.resources.{field} must be larger than zero"),
            ),
        ],
    );
}

fn cpu_rules(schema: &mut Schema) {
    quantity_rules(schema, "cpu", "1 or 500m");
}

fn memory_rules(schema: &mut Schema) {
    quantity_rules(schema, "memory", "2Gi");
}

fn ephemeral_storage_rules(schema: &mut Schema) {
    quantity_rules(schema, "ephemeralStorage", "10Gi");
}

fn pod_metadata_rules(schema: &mut Schema) {
    set_rules(
        schema,
        &[Rule::new(
            "!has(self.labels) || self.labels.all(k, !k.startsWith('hepbatch.io/') && \
             !k.startsWith('batch.kubernetes.io/'))",
            "spec.podMetadata.labels must not use keys under hepbatch.io/ or \
             batch.kubernetes.io/: the operator and the Job controller set them",
        )],
    );
}

/// The CustomResourceDefinition as YAML, exactly as committed in `crds/analysisjob.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::ser::Error> {
    use kube::CustomResourceExt;
    let crd = AnalysisJob::crd();
    let yaml = serde_yaml::to_string(&crd)?;
    Ok(format!(
        "# Generated by `cargo run -p hepbatch-crds --bin crdgen`; do not edit.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed CRD is what the types generate; regenerate with
    /// `cargo run -p hepbatch-crds --bin crdgen > crds/analysisjob.yaml`.
    #[test]
    fn committed_crd_yaml_matches_the_types() {
        let committed = include_str!("../analysisjob.yaml");
        let generated = crd_yaml().expect("the CRD serializes");
        assert!(
            committed == generated,
            "crds/analysisjob.yaml is stale: run `cargo run -p hepbatch-crds --bin crdgen > \
             crds/analysisjob.yaml`"
        );
    }

    #[test]
    fn every_spec_field_is_either_mutable_or_immutable() {
        let spec = serde_json::to_value(schemars::schema_for!(AnalysisJobSpec))
            .expect("schema serializes");
        let properties = spec["properties"].as_object().expect("spec has properties");
        for name in properties.keys() {
            let listed = MUTABLE_FIELDS.contains(&name.as_str())
                || IMMUTABLE_OPTIONAL_FIELDS.contains(&name.as_str())
                || IMMUTABLE_REQUIRED_FIELDS.contains(&name.as_str());
            assert!(listed, "spec.{name} is neither mutable nor immutable");
        }
    }

    #[test]
    fn the_os_of_a_scram_arch_or_platform_is_its_el_major_version() {
        use crate::hep::el_major;
        assert_eq!(el_major("slc7_amd64_gcc820"), Some(7));
        assert_eq!(el_major("cc8_amd64_gcc9"), Some(8));
        assert_eq!(el_major("el9_aarch64_gcc12"), Some(9));
        assert_eq!(el_major("cc7"), Some(7));
        assert_eq!(el_major("alma9-gpu"), Some(9));
        assert_eq!(el_major("ubuntu22"), None);
        assert_eq!(el_major("gpu"), None);
    }

    #[test]
    fn the_scram_arch_rule_names_both_fields() {
        let rule = crate::hep::platform_scram_arch_rule();
        let expression = rule.message_expression.expect("a message expression");
        assert!(expression.contains("spec.cmssw.scramArch"), "{expression}");
        assert!(expression.contains("spec.platform"), "{expression}");
        assert!(rule.rule.contains("['cc7', 'el8', 'el9']"), "{}", rule.rule);
    }

    #[test]
    fn defaults_apply_to_a_minimal_spec() {
        let spec: AnalysisJobSpec =
            serde_json::from_value(json!({"image": "busybox"})).expect("parses");
        assert_eq!(spec.shards(), 1);
        assert_eq!(spec.max_retries_per_shard, 3);
        assert_eq!(spec.effective_parallelism(spec.shards()), 1);
        assert!(!spec.is_suspended());
    }

    #[test]
    fn default_parallelism_is_capped() {
        let spec: AnalysisJobSpec =
            serde_json::from_value(json!({"image": "busybox", "shards": 5000})).expect("parses");
        assert_eq!(
            spec.effective_parallelism(spec.shards()),
            DEFAULT_PARALLELISM_CAP
        );
    }
}
