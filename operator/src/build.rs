//! The pure translation AnalysisJob → Indexed `batch/v1` Job.
//!
//! [`job`] builds the whole desired Job; the controller server-side applies it when the
//! Job does not exist yet. A live Job is only ever changed where the Job API allows it and
//! the AnalysisJob allows it too: [`live_update`] returns the small merge patch for
//! `parallelism` (and `suspend` unless Kueue manages the Job), or nothing.
//!
//! Translation table:
//! - `shards` → `completions` (Indexed), `parallelism` → `parallelism`,
//! - `maxRetriesPerShard` → `backoffLimitPerIndex`, `maxFailedShards` → `maxFailedIndexes`,
//! - `fatalExitCodes` → a `podFailurePolicy` `FailIndex` rule; a first rule `Ignore`s pods
//!   with the `DisruptionTarget` condition, so evictions and preemptions use no retries
//!   (which requires `podReplacementPolicy: Failed`),
//! - `queueName` → the Kueue queue-name label, and the Job starts suspended,
//! - `script` → `bash -euo pipefail -c <script>`; with `cmssw` the CMSSW bootstrap
//!   ([`crate::cmssw`]) runs first, in a scratch working directory,
//! - `platform` → the configured image (`image` overrides); an unknown platform, or one
//!   whose OS is not the one `cmssw.scramArch` is built for ([`platform_mismatch`]), is a
//!   [`BuildError`] the controller reports, never a pod,
//! - `cvmfs` (and `cmssw`) → the `/cvmfs` volume of the configured provider
//!   ([`crate::cvmfs`]); with `consistency: Fleet` each resolved repository is pinned
//!   `@rootHash=` and the Job's annotation [`CVMFS_REVISIONS_ANNOTATION`] records the
//!   revisions, so the Job carries the resolution and the status reads it from there,
//! - `resources.gpu` → device-plugin limits, node affinity, tolerations ([`crate::gpu`]),
//! - `inputs` → `completions` from the planned split and the projected volume of the
//!   shards' lists ([`crate::inputs`]),
//! - `output` → a volume at `output.path` and `ANALYSIS_OUTDIR`,
//! - `maxRuntime` → the pod's `activeDeadlineSeconds` (per attempt),
//! - `runAs`, `runAsRoot` and the configuration's users → the pod's and the container's
//!   security context, `restricted` unless root was asked for and allowed
//!   ([`crate::security`]); root where it is not allowed is a [`BuildError`],
//! - `ttlSecondsAfterFinished` is *not* copied: it applies to the AnalysisJob, whose
//!   deletion removes the Job by garbage collection (keeping the Job until then keeps the
//!   status readable).

use std::collections::BTreeMap;

use hepbatch_crds::analysis_job::{
    ANALYSIS_JOB_LABEL, CVMFS_REVISIONS_ANNOTATION, OUTPUT_DIR_ENV, SHARD_ENV, SHARD_INDEXES_ENV,
    SHARDS_ENV, ShardResources,
};
pub use hepbatch_crds::analysis_job::{
    COMPLETION_INDEX_ANNOTATION, SHARD_CONTAINER as CONTAINER_NAME,
};
use hepbatch_crds::hep::{el_major, max_runtime_seconds};
use hepbatch_crds::{AnalysisJob, Output};
use hepbatch_crds::{ShardIndexesError, ShardNumbering};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::cmssw;
use crate::config::OperatorConfig;
use crate::cvmfs::{self, CvmfsError};
use crate::gpu::{self, GpuError};
use crate::inputs::{self, InputPlan};
use crate::k8s::{
    CompletionMode, ConditionStatus, PodCondition, PodFailurePolicyAction, PodReplacementPolicy,
    RestartPolicy, SelectorOperator,
};
use crate::revision::Snapshot;
use crate::security::{self, SecurityError};
use crate::selection::{self, NotAShellName};

/// Label Kueue reads to queue a Job.
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";

/// Working directory of CMSSW shards that name none: a scratch `emptyDir` where the
/// release area is created.
pub const CMSSW_WORK_DIR: &str = "/srv/work";

/// Why an AnalysisJob cannot be translated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The platform is not in the operator's configuration.
    #[error(
        "spec.platform {platform:?} is not configured on this cluster; use one of {known} or \
         set spec.image"
    )]
    UnknownPlatform {
        /// The requested platform.
        platform: String,
        /// The configured ones, comma-separated.
        known: String,
    },
    /// The CMSSW release is built for another OS than the platform runs.
    #[error(
        "spec.cmssw.scramArch {scram_arch} is built for EL{arch_major} but spec.platform \
         {platform} is EL{platform_major}: choose a scramArch of EL{platform_major} (the \
         release must exist for it) or a platform of EL{arch_major}"
    )]
    PlatformMismatch {
        /// The requested platform.
        platform: String,
        /// Its Enterprise Linux major version.
        platform_major: u32,
        /// The SCRAM architecture.
        scram_arch: String,
        /// The Enterprise Linux major version it is built for.
        arch_major: u32,
    },
    /// `/cvmfs` cannot be provided as asked.
    #[error(transparent)]
    Cvmfs(#[from] CvmfsError),
    /// The GPU request cannot be placed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The shards cannot run as the user asked.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// `shardIndexes` is not a selection of the fleet's shards.
    #[error(transparent)]
    ShardIndexes(#[from] ShardIndexesError),
    /// A user variable needs the original index but bash cannot set it.
    #[error(transparent)]
    NotAShellName(#[from] NotAShellName),
    /// `shardIndexes` without a command to start after the prologue (the schema should
    /// have caught it).
    #[error(
        "spec.shardIndexes needs spec.script or spec.command: the shard's original index is \
         set before they run"
    )]
    SelectionWithoutCommand,
    /// `maxRuntime` is not a duration (the schema should have caught it).
    #[error("spec.maxRuntime {0:?} is not a JobFlavour or a duration such as 2h")]
    MaxRuntime(String),
    /// The resolved revisions cannot be written into the Job's annotation.
    #[error("cannot record the resolved CVMFS revisions: {0}")]
    Record(String),
    /// `inputs` is set but its split has not been planned.
    #[error("the input split of this AnalysisJob has not been planned yet")]
    InputsNotPlanned,
    /// Namespaced objects from the API always have a namespace; a missing one means the
    /// object did not come from the apiserver.
    #[error("the AnalysisJob {name} has no namespace")]
    MissingNamespace {
        /// The AnalysisJob's name.
        name: String,
    },
    /// The owner reference needs the AnalysisJob's uid.
    #[error("the AnalysisJob {name} has no uid")]
    MissingUid {
        /// The AnalysisJob's name.
        name: String,
    },
}

impl BuildError {
    /// The reason of the condition and Event that tell the user about this error, or
    /// `None` when it is the operator's own fault (to be retried as an error, not
    /// reported as a problem of the AnalysisJob).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            BuildError::UnknownPlatform { .. } => Some("UnknownPlatform"),
            BuildError::PlatformMismatch { .. } => Some("PlatformMismatch"),
            BuildError::Cvmfs(CvmfsError::PinUnsupported { .. }) => Some("CvmfsPinUnsupported"),
            BuildError::Cvmfs(CvmfsError::ConsistencyUnsupported { .. }) => {
                Some("CvmfsConsistencyUnsupported")
            }
            BuildError::Cvmfs(CvmfsError::FleetOnDemand) => Some("InvalidCvmfs"),
            BuildError::Cvmfs(CvmfsError::Unresolved { .. }) => None,
            BuildError::Gpu(_) => Some("InvalidGpuRequest"),
            BuildError::Security(SecurityError::RootNotAllowed { .. }) => Some("RootNotAllowed"),
            BuildError::MaxRuntime(_) => Some("InvalidMaxRuntime"),
            BuildError::ShardIndexes(_) | BuildError::SelectionWithoutCommand => {
                Some("InvalidShardIndexes")
            }
            BuildError::NotAShellName(_) => Some("InvalidEnv"),
            BuildError::InputsNotPlanned
            | BuildError::Record(_)
            | BuildError::MissingNamespace { .. }
            | BuildError::MissingUid { .. } => None,
        }
    }
}

/// The image the shards run: `image`, else the configured image of `platform`.
pub fn image(analysis_job: &AnalysisJob, config: &OperatorConfig) -> Result<String, BuildError> {
    let spec = &analysis_job.spec;
    if let Some(image) = &spec.image {
        return Ok(image.clone());
    }
    let platform = spec.platform.clone().unwrap_or_default();
    config
        .platform_image(&platform)
        .map(str::to_owned)
        .ok_or_else(|| BuildError::UnknownPlatform {
            platform,
            known: config
                .platforms
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The mismatch between `spec.platform` and `spec.cmssw.scramArch`, when both name an OS
/// of the Enterprise Linux family ([`el_major`]) of different major versions. The schema
/// rejects it for the platforms it knows at admission; this covers the cluster admin's
/// platforms named after their OS (`alma9`, `rocky8-gpu`, ...).
pub fn platform_mismatch(analysis_job: &AnalysisJob) -> Option<BuildError> {
    let spec = &analysis_job.spec;
    let platform = spec.platform.as_deref()?;
    let scram_arch = spec.cmssw.as_ref()?.scram_arch.as_str();
    let (platform_major, arch_major) = (el_major(platform)?, el_major(scram_arch)?);
    (platform_major != arch_major).then(|| BuildError::PlatformMismatch {
        platform: platform.to_owned(),
        platform_major,
        scram_arch: scram_arch.to_owned(),
        arch_major,
    })
}

/// The Job that runs `analysis_job`'s shards: same name and namespace, controlled by it.
/// `inputs` is the planned split when the spec has `inputs`; `snapshot` holds the
/// revisions resolved for `consistency: Fleet` ([`cvmfs::to_resolve`]), which the pod
/// template pins and the Job's [`CVMFS_REVISIONS_ANNOTATION`] records.
pub fn job(
    analysis_job: &AnalysisJob,
    config: &OperatorConfig,
    inputs: Option<&InputPlan>,
    snapshot: &Snapshot,
) -> Result<Job, BuildError> {
    let name = analysis_job.name_any();
    let namespace = analysis_job
        .namespace()
        .ok_or_else(|| BuildError::MissingNamespace { name: name.clone() })?;
    let owner = analysis_job
        .controller_owner_ref(&())
        .ok_or_else(|| BuildError::MissingUid { name: name.clone() })?;
    let spec = &analysis_job.spec;
    let fleet = match (&spec.inputs, inputs) {
        (None, _) => spec.shards(),
        (Some(_), Some(plan)) => plan.shards,
        (Some(_), None) => return Err(BuildError::InputsNotPlanned),
    };
    let numbering = spec.numbering()?;
    let completions = match numbering.selection() {
        Some(selection) => {
            selection.within(fleet)?;
            selection.len()
        }
        None => fleet,
    };
    if let Some(mismatch) = platform_mismatch(analysis_job) {
        return Err(mismatch);
    }
    let image = image(analysis_job, config)?;
    let shards = Shards { fleet, numbering };
    let (pod, job_annotations) = pod_spec(analysis_job, config, inputs, snapshot, image, &shards)?;

    let mut job_labels = BTreeMap::from([(ANALYSIS_JOB_LABEL.to_owned(), name.clone())]);
    if let Some(queue) = &spec.queue_name {
        job_labels.insert(KUEUE_QUEUE_LABEL.to_owned(), queue.clone());
    }
    let pod_metadata = spec.pod_metadata.clone().unwrap_or_default();
    let mut pod_labels = pod_metadata.labels.unwrap_or_default();
    pod_labels.insert(ANALYSIS_JOB_LABEL.to_owned(), name.clone());
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: pod_metadata.annotations,
            ..ObjectMeta::default()
        }),
        spec: Some(pod),
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(job_labels),
            annotations: (!job_annotations.is_empty()).then_some(job_annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(job_spec(analysis_job, completions, template)),
        status: None,
    })
}

/// The shards a Job runs: how many the fleet has, and which of them.
struct Shards {
    /// Shards of the whole fleet (`HEPBATCH_SHARDS`).
    fleet: i32,
    /// Which of them the Job's completions run.
    numbering: ShardNumbering,
}

/// The Indexed Job's spec: one completion per shard run, per-shard retries, the failure
/// policy.
fn job_spec(analysis_job: &AnalysisJob, completions: i32, template: PodTemplateSpec) -> JobSpec {
    let spec = &analysis_job.spec;
    JobSpec {
        completion_mode: Some(CompletionMode::Indexed.into()),
        completions: Some(completions),
        parallelism: Some(spec.effective_parallelism(completions)),
        backoff_limit_per_index: Some(spec.max_retries_per_shard),
        max_failed_indexes: spec.max_failed_shards,
        pod_failure_policy: Some(pod_failure_policy(spec.fatal_exit_codes.as_deref())),
        pod_replacement_policy: Some(PodReplacementPolicy::Failed.into()),
        active_deadline_seconds: spec.active_deadline_seconds,
        suspend: Some(spec.queue_name.is_some() || spec.is_suspended()),
        template,
        ..JobSpec::default()
    }
}

/// The shards' pod spec, and the Job annotations recording what it pins.
fn pod_spec(
    analysis_job: &AnalysisJob,
    config: &OperatorConfig,
    inputs: Option<&InputPlan>,
    snapshot: &Snapshot,
    image: String,
    shards: &Shards,
) -> Result<(PodSpec, BTreeMap<String, String>), BuildError> {
    let spec = &analysis_job.spec;
    let identity = security::identity(analysis_job, &config.security)?;
    let selection = shards.numbering.selection();
    let mut env = ShardEnv::new(analysis_job, shards);
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut job_annotations = BTreeMap::new();
    let cvmfs = cvmfs::mount(
        spec.cvmfs.as_ref(),
        spec.cmssw.is_some(),
        &config.cvmfs,
        snapshot,
    )?;
    if let Some(cvmfs) = cvmfs {
        if !cvmfs.revisions.is_empty() {
            let recorded = serde_json::to_string(&cvmfs.revisions)
                .map_err(|error| BuildError::Record(error.to_string()))?;
            job_annotations.insert(CVMFS_REVISIONS_ANNOTATION.to_owned(), recorded);
        }
        volumes.push(cvmfs.volume);
        mounts.extend(cvmfs.mounts);
    }
    if let (Some(_), Some(plan)) = (&spec.inputs, inputs) {
        let names: Vec<String> = plan
            .config_maps
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        let (volume, mount, var) = inputs::volume(&names);
        volumes.push(volume);
        mounts.push(mount);
        // With a selection the prologue sets the variable from the original index.
        env.input_files = selection.is_none().then_some(var);
    }
    if let Some(output) = &spec.output {
        let (volume, mount, var) = output_volume(output);
        volumes.push(volume);
        mounts.push(mount);
        env.output_dir = Some(var);
    }
    let prologue = selection
        .map(|_| selection::prologue(inputs.is_some(), &env.user))
        .transpose()?;
    let mut container = container(analysis_job, image, env, prologue)?;
    if spec.cmssw.is_some() && spec.working_dir.is_none() {
        let (volume, mount) = cmssw_work_dir();
        volumes.push(volume);
        mounts.push(mount);
        container.working_dir = Some(CMSSW_WORK_DIR.to_owned());
    }
    container.volume_mounts = (!mounts.is_empty()).then_some(mounts);
    container.security_context = Some(security::container_context());
    let mut pod = PodSpec {
        restart_policy: Some(RestartPolicy::Never.into()),
        containers: vec![container],
        volumes: (!volumes.is_empty()).then_some(volumes),
        active_deadline_seconds: active_deadline(spec.max_runtime.as_deref())?,
        node_selector: spec.node_selector.clone(),
        tolerations: spec.tolerations.clone(),
        affinity: spec.affinity.clone(),
        priority_class_name: spec.priority_class_name.clone(),
        service_account_name: spec.service_account_name.clone(),
        security_context: Some(security::pod_context(identity)),
        ..PodSpec::default()
    };
    let gpu_request = spec.resources.as_ref().and_then(|r| r.gpu.as_ref());
    gpu::apply(gpu::placement(gpu_request, &config.gpu)?, &mut pod);
    Ok((pod, job_annotations))
}

/// The pods' `activeDeadlineSeconds` from `spec.maxRuntime`, if given.
fn active_deadline(max_runtime: Option<&str>) -> Result<Option<i64>, BuildError> {
    max_runtime
        .map(|text| {
            max_runtime_seconds(text).ok_or_else(|| BuildError::MaxRuntime(text.to_owned()))
        })
        .transpose()
}

/// The scratch `emptyDir` mounted at [`CMSSW_WORK_DIR`] for CMSSW shards that name no
/// working directory.
fn cmssw_work_dir() -> (Volume, VolumeMount) {
    let volume = Volume {
        name: "work".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: "work".to_owned(),
        mount_path: CMSSW_WORK_DIR.to_owned(),
        ..VolumeMount::default()
    };
    (volume, mount)
}

/// The shard container's environment, slot by slot in the order the container gets it:
/// the operator's variables first, so the user's may refer to them as `$(NAME)`.
struct ShardEnv {
    /// `HEPBATCH_SHARD_INDEX`, the shard's index from the pod's completion-index
    /// annotation; with a selection `HEPBATCH_SHARD_INDEXES` instead, from which the
    /// prologue computes the index ([`crate::selection`]).
    shard: EnvVar,
    /// `HEPBATCH_SHARDS`: how many shards the fleet has.
    shards: EnvVar,
    /// `HEPBATCH_OUTPUT_DIR`, with `spec.output`.
    output_dir: Option<EnvVar>,
    /// `HEPBATCH_INPUT_FILES`, with `spec.inputs` (and no selection).
    input_files: Option<EnvVar>,
    /// The user's `spec.env`.
    user: Vec<EnvVar>,
}

impl ShardEnv {
    fn new(analysis_job: &AnalysisJob, shards: &Shards) -> ShardEnv {
        let shard = match shards.numbering.selection() {
            None => EnvVar {
                name: SHARD_ENV.to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!(
                            "metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
                        ),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                }),
                value: None,
            },
            Some(selection) => EnvVar {
                name: SHARD_INDEXES_ENV.to_owned(),
                value: Some(selection.to_string()),
                value_from: None,
            },
        };
        ShardEnv {
            shard,
            shards: EnvVar {
                name: SHARDS_ENV.to_owned(),
                value: Some(shards.fleet.to_string()),
                value_from: None,
            },
            output_dir: None,
            input_files: None,
            user: analysis_job.spec.env.iter().flatten().cloned().collect(),
        }
    }

    fn into_vars(self) -> Vec<EnvVar> {
        let mut vars = vec![self.shard, self.shards];
        vars.extend(self.output_dir);
        vars.extend(self.input_files);
        vars.extend(self.user);
        vars
    }
}

/// Disruptions never count; fatal exit codes fail their shard at once.
fn pod_failure_policy(fatal_exit_codes: Option<&[i32]>) -> PodFailurePolicy {
    let mut rules = vec![PodFailurePolicyRule {
        action: PodFailurePolicyAction::Ignore.into(),
        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
            type_: PodCondition::DisruptionTarget.into(),
            status: Some(ConditionStatus::True.into()),
        }]),
        on_exit_codes: None,
    }];
    if let Some(codes) = fatal_exit_codes.filter(|codes| !codes.is_empty()) {
        let mut values = codes.to_vec();
        // The Job API wants the values sorted and without duplicates.
        values.sort_unstable();
        values.dedup();
        rules.push(PodFailurePolicyRule {
            action: PodFailurePolicyAction::FailIndex.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some(CONTAINER_NAME.to_owned()),
                operator: SelectorOperator::In.into(),
                values,
            }),
            on_pod_conditions: None,
        });
    }
    PodFailurePolicy { rules }
}

/// `bash -euo pipefail -c <script>` followed by `positional` (`$0`, `$1`, ...).
fn bash(script: String, positional: Vec<String>) -> Vec<String> {
    let mut argv: Vec<String> = ["bash", "-euo", "pipefail", "-c"]
        .map(str::to_owned)
        .to_vec();
    argv.push(script);
    argv.extend(positional);
    argv
}

fn output_volume(output: &Output) -> (Volume, VolumeMount, EnvVar) {
    let source = output.volume.clone().unwrap_or_default();
    let volume = Volume {
        name: "output".to_owned(),
        persistent_volume_claim: source.persistent_volume_claim,
        host_path: source.host_path,
        empty_dir: source.empty_dir,
        ..Volume::default()
    };
    let volume = if volume.persistent_volume_claim.is_none() && volume.host_path.is_none() {
        Volume {
            empty_dir: Some(volume.empty_dir.unwrap_or_default()),
            ..volume
        }
    } else {
        volume
    };
    let mount = VolumeMount {
        name: "output".to_owned(),
        mount_path: output.path.clone(),
        ..VolumeMount::default()
    };
    let env = EnvVar {
        name: OUTPUT_DIR_ENV.to_owned(),
        value: Some(output.path.clone()),
        value_from: None,
    };
    (volume, mount, env)
}

/// The shard container: the user's script or command (after the CMSSW bootstrap, and
/// with a selection after its `prologue`), image, environment and resources.
fn container(
    analysis_job: &AnalysisJob,
    image: String,
    env: ShardEnv,
    prologue: Option<String>,
) -> Result<Container, BuildError> {
    let spec = &analysis_job.spec;
    let user_command = || {
        let mut argv: Vec<String> = spec.command.iter().flatten().cloned().collect();
        argv.extend(spec.args.iter().flatten().cloned());
        argv
    };
    let with_prologue = prologue.is_some();
    let first = prologue.unwrap_or_default();
    let (command, args) = match (&spec.cmssw, &spec.script) {
        (Some(release), Some(script)) => (
            Some(bash(
                first + &cmssw::with_script(release, script),
                Vec::new(),
            )),
            None,
        ),
        (Some(release), None) => {
            let mut positional = vec!["hepbatch-cmssw".to_owned()];
            positional.extend(user_command());
            (
                Some(bash(first + &cmssw::with_command(release), positional)),
                None,
            )
        }
        (None, Some(script)) => (Some(bash(first + script, Vec::new())), None),
        (None, None) if with_prologue => {
            if spec.command.is_none() {
                return Err(BuildError::SelectionWithoutCommand);
            }
            let mut positional = vec![selection::COMMAND_NAME.to_owned()];
            positional.extend(user_command());
            (Some(bash(first + "exec \"$@\"\n", positional)), None)
        }
        (None, None) => (spec.command.clone(), spec.args.clone()),
    };
    Ok(Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(image),
        command,
        args,
        working_dir: spec.working_dir.clone(),
        env: Some(env.into_vars()),
        env_from: spec.env_from.clone(),
        resources: spec.resources.as_ref().map(resources),
        ..Container::default()
    })
}

/// CPU is requested only (so shards may use idle cores); memory and scratch disk are
/// requested and limited to the same value.
fn resources(wanted: &ShardResources) -> ResourceRequirements {
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &wanted.cpu {
        requests.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    for (key, value) in [
        ("memory", &wanted.memory),
        ("ephemeral-storage", &wanted.ephemeral_storage),
    ] {
        if let Some(value) = value {
            requests.insert(key.to_owned(), Quantity(value.clone()));
            limits.insert(key.to_owned(), Quantity(value.clone()));
        }
    }
    ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    }
}

/// The merge patch bringing a live Job in line with the fields an AnalysisJob may change,
/// or `None` when nothing differs. `suspend` is left to Kueue when `queueName` is set.
pub fn live_update(analysis_job: &AnalysisJob, live: &Job) -> Option<Value> {
    let spec = &analysis_job.spec;
    let live_spec = live.spec.as_ref();
    let mut changes = serde_json::Map::new();
    let shards = live_spec
        .and_then(|s| s.completions)
        .unwrap_or_else(|| spec.shards());
    let parallelism = spec.effective_parallelism(shards);
    if live_spec.and_then(|s| s.parallelism) != Some(parallelism) {
        changes.insert("parallelism".to_owned(), json!(parallelism));
    }
    if spec.queue_name.is_none() {
        let suspend = spec.is_suspended();
        if live_spec.and_then(|s| s.suspend).unwrap_or(false) != suspend {
            changes.insert("suspend".to_owned(), json!(suspend));
        }
    }
    (!changes.is_empty()).then(|| json!({ "spec": changes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_of(aj: &AnalysisJob) -> Result<Job, BuildError> {
        job(aj, &OperatorConfig::default(), None, &Snapshot::new())
    }

    fn job_with_inputs(aj: &AnalysisJob, plan: &InputPlan) -> Result<Job, BuildError> {
        job(aj, &OperatorConfig::default(), Some(plan), &Snapshot::new())
    }

    fn analysis_job(spec: Value) -> AnalysisJob {
        hepbatch_crds::testing::analysis_job("higgs", spec)
            .namespace("physics")
            .uid("u-1")
            .build()
            .expect("a valid AnalysisJob")
    }

    #[test]
    fn minimal_spec_becomes_an_indexed_job_owned_by_the_analysis_job() {
        let job =
            job_of(&analysis_job(json!({"image": "busybox", "shards": 20}))).expect("translates");
        assert_eq!(job.metadata.name.as_deref(), Some("higgs"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("physics"));
        let owner = &job.metadata.owner_references.expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("AnalysisJob", "u-1", Some(true))
        );
        let spec = job.spec.expect("spec");
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!(spec.completions, Some(20));
        assert_eq!(spec.parallelism, Some(20));
        assert_eq!(spec.backoff_limit_per_index, Some(3));
        assert_eq!(spec.max_failed_indexes, None);
        assert_eq!(spec.suspend, Some(false));
        assert_eq!(spec.pod_replacement_policy.as_deref(), Some("Failed"));
        let rules = spec.pod_failure_policy.expect("policy").rules;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].action, "Ignore");
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let labels = spec
            .template
            .metadata
            .expect("meta")
            .labels
            .expect("labels");
        assert_eq!(labels[ANALYSIS_JOB_LABEL], "higgs");
        let env = pod.containers[0].env.clone().expect("env");
        assert_eq!(env[0].name, SHARD_ENV);
        assert_eq!(env[1].value.as_deref(), Some("20"));
    }

    #[test]
    fn script_runs_with_fail_fast_bash() {
        let job = job_of(&analysis_job(
            json!({"image": "busybox", "script": "echo $HEPBATCH_SHARD_INDEX"}),
        ))
        .expect("translates");
        let container = &job
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
            .containers[0];
        assert_eq!(
            container.command.as_deref().expect("command"),
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                "echo $HEPBATCH_SHARD_INDEX"
            ]
        );
        assert_eq!(container.args, None);
    }

    #[test]
    fn retries_failures_and_fatal_codes_translate() {
        let job = job_of(&analysis_job(json!({
            "image": "busybox", "shards": 10, "maxRetriesPerShard": 0, "maxFailedShards": 2,
            "fatalExitCodes": [42, 3, 42], "activeDeadlineSeconds": 600,
        })))
        .expect("translates");
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit_per_index, Some(0));
        assert_eq!(spec.max_failed_indexes, Some(2));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        let rules = spec.pod_failure_policy.expect("policy").rules;
        assert_eq!(rules[0].action, "Ignore");
        assert_eq!(rules[1].action, "FailIndex");
        let codes = rules[1].on_exit_codes.as_ref().expect("exit codes");
        assert_eq!(codes.values, vec![3, 42]);
        assert_eq!(codes.container_name.as_deref(), Some(CONTAINER_NAME));
    }

    #[test]
    fn queued_jobs_start_suspended_with_the_kueue_label() {
        let job = job_of(&analysis_job(
            json!({"image": "busybox", "queueName": "team-a"}),
        ))
        .expect("translates");
        assert_eq!(
            job.metadata.labels.expect("labels")[KUEUE_QUEUE_LABEL],
            "team-a"
        );
        assert_eq!(job.spec.expect("spec").suspend, Some(true));
    }

    #[test]
    fn resources_request_cpu_and_limit_memory() {
        let job = job_of(&analysis_job(json!({
            "image": "busybox", "resources": {"cpu": "500m", "memory": "2Gi"}
        })))
        .expect("translates");
        let resources = job
            .spec
            .expect("spec")
            .template
            .spec
            .expect("pod")
            .containers[0]
            .resources
            .clone()
            .expect("resources");
        let requests = resources.requests.expect("requests");
        let limits = resources.limits.expect("limits");
        assert_eq!(requests["cpu"], Quantity("500m".to_owned()));
        assert_eq!(requests["memory"], Quantity("2Gi".to_owned()));
        assert_eq!(limits["memory"], Quantity("2Gi".to_owned()));
        assert!(!limits.contains_key("cpu"));
    }

    #[test]
    fn missing_uid_is_an_error_not_a_panic() {
        let mut aj = analysis_job(json!({"image": "busybox"}));
        aj.metadata.uid = None;
        assert_eq!(
            job_of(&aj),
            Err(BuildError::MissingUid {
                name: "higgs".to_owned()
            })
        );
    }

    #[test]
    fn live_update_touches_only_parallelism_and_suspend() {
        let aj = analysis_job(json!({"image": "busybox", "shards": 10}));
        let live = job_of(&aj).expect("translates");
        assert_eq!(live_update(&aj, &live), None);

        let scaled = analysis_job(json!({"image": "busybox", "shards": 10, "parallelism": 3,
            "suspend": true}));
        assert_eq!(
            live_update(&scaled, &live),
            Some(json!({"spec": {"parallelism": 3, "suspend": true}}))
        );
    }

    #[test]
    fn live_update_leaves_suspend_to_kueue() {
        let aj = analysis_job(json!({"image": "busybox", "queueName": "q"}));
        let mut live = job_of(&aj).expect("translates");
        // Kueue admitted the Job.
        if let Some(spec) = live.spec.as_mut() {
            spec.suspend = Some(false);
        }
        assert_eq!(live_update(&aj, &live), None);
    }

    fn pod_of(job: Job) -> PodSpec {
        job.spec.expect("spec").template.spec.expect("pod")
    }

    #[test]
    fn platform_selects_the_configured_image_and_image_overrides_it() {
        let config = OperatorConfig::default();
        let el9 = analysis_job(json!({"platform": "el9", "script": "true"}));
        let pod = pod_of(job(&el9, &config, None, &Snapshot::new()).expect("translates"));
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some(crate::config::EL9_IMAGE)
        );
        let own = analysis_job(json!({"platform": "el9", "image": "own:1"}));
        let pod = pod_of(job(&own, &config, None, &Snapshot::new()).expect("translates"));
        assert_eq!(pod.containers[0].image.as_deref(), Some("own:1"));
        let unknown = analysis_job(json!({"platform": "alma10", "script": "true"}));
        let error = job(&unknown, &config, None, &Snapshot::new()).expect_err("unknown platform");
        assert_eq!(error.reason(), Some("UnknownPlatform"));
        assert!(
            error.to_string().contains("use one of cc7, el8, el9"),
            "{error}"
        );
    }

    #[test]
    fn a_release_for_another_os_than_the_platform_is_refused_naming_both() {
        let config = OperatorConfig::default();
        let mismatch = |platform: &str, arch: &str| {
            let aj = analysis_job(json!({"platform": platform, "script": "cmsRun a.py",
                "cmssw": {"release": "CMSSW_10_6_30", "scramArch": arch}}));
            job(&aj, &config, None, &Snapshot::new()).err()
        };
        let error = mismatch("alma9", "slc7_amd64_gcc820").expect("EL9 against EL7");
        assert_eq!(error.reason(), Some("PlatformMismatch"));
        let message = error.to_string();
        assert!(
            message.contains("spec.cmssw.scramArch slc7_amd64_gcc820 is built for EL7")
                && message.contains("spec.platform alma9 is EL9"),
            "{message}"
        );
        assert!(
            mismatch("el9", "slc7_amd64_gcc820").is_some(),
            "the reverse too"
        );
        // Matching OS, or a platform whose OS its name does not tell: no mismatch (an
        // unknown platform is refused for being unknown).
        assert_eq!(
            mismatch("gpu-fleet", "slc7_amd64_gcc820").and_then(|e| e.reason()),
            Some("UnknownPlatform")
        );
        assert_eq!(mismatch("cc7", "slc7_amd64_gcc700"), None);
        assert_eq!(mismatch("el8", "cc8_amd64_gcc9"), None);
    }

    #[test]
    fn cmssw_wraps_script_and_command_and_gets_a_scratch_work_dir() {
        let config = OperatorConfig::default();
        let with_script = analysis_job(json!({"platform": "cc7", "script": "cmsRun a.py",
            "cmssw": {"release": "CMSSW_10_6_30", "scramArch": "slc7_amd64_gcc700"}}));
        let pod = pod_of(job(&with_script, &config, None, &Snapshot::new()).expect("translates"));
        let command = pod.containers[0].command.clone().expect("command");
        assert_eq!(&command[..4], ["bash", "-euo", "pipefail", "-c"]);
        assert!(command[4].contains("scram project CMSSW 'CMSSW_10_6_30'"));
        assert!(command[4].ends_with("cmsRun a.py\n"));
        assert_eq!(
            pod.containers[0].working_dir.as_deref(),
            Some(CMSSW_WORK_DIR)
        );
        let volumes = pod.volumes.expect("volumes");
        assert!(volumes.iter().any(|v| v.name == "cvmfs"));
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "work" && v.empty_dir.is_some())
        );

        let with_command = analysis_job(json!({"platform": "cc7", "command": ["cmsRun"],
            "args": ["a.py"],
            "cmssw": {"release": "CMSSW_10_6_30", "scramArch": "slc7_amd64_gcc700"}}));
        let pod = pod_of(job(&with_command, &config, None, &Snapshot::new()).expect("translates"));
        let command = pod.containers[0].command.clone().expect("command");
        assert!(command[4].ends_with("exec \"$@\"\n"));
        assert_eq!(&command[5..], ["hepbatch-cmssw", "cmsRun", "a.py"]);
        assert_eq!(pod.containers[0].args, None);
    }

    #[test]
    fn max_runtime_and_output_reach_the_pod() {
        let aj = analysis_job(json!({"image": "i", "maxRuntime": "1h30m",
            "output": {"path": "/out"}}));
        let pod = pod_of(job_of(&aj).expect("translates"));
        assert_eq!(pod.active_deadline_seconds, Some(5400));
        let output = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "output")
            .expect("output volume");
        assert!(output.empty_dir.is_some());
        let env = pod.containers[0].env.clone().expect("env");
        assert!(
            env.iter()
                .any(|e| e.name == OUTPUT_DIR_ENV && e.value.as_deref() == Some("/out"))
        );
    }

    #[test]
    fn inputs_need_a_plan_and_set_completions_from_it() {
        let aj = analysis_job(json!({"image": "i", "inputs": {"files": ["a", "b", "c"],
            "filesPerShard": 2}}));
        assert_eq!(job_of(&aj), Err(BuildError::InputsNotPlanned));
        let files: Vec<String> = ["a", "b", "c"].map(str::to_owned).to_vec();
        let plan = inputs::plan(&aj, &files, 2).expect("plans");
        let built = job_with_inputs(&aj, &plan).expect("translates");
        assert_eq!(built.spec.as_ref().and_then(|s| s.completions), Some(2));
        let pod = pod_of(built);
        let env = pod.containers[0].env.clone().expect("env");
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(&names[..3], [SHARD_ENV, SHARDS_ENV, "HEPBATCH_INPUT_FILES"]);
    }

    #[test]
    fn a_selection_runs_only_its_shards_and_tells_them_their_original_index() {
        let files: Vec<String> = (0..10).map(|i| format!("f{i}.root")).collect();
        let aj = analysis_job(json!({"image": "i", "shardIndexes": "3,7",
            "inputs": {"files": files, "filesPerShard": 1},
            "command": ["cmsRun", "skim_cfg.py", "index=$(HEPBATCH_SHARD_INDEX)"]}));
        let plan = inputs::plan(&aj, &files, 1).expect("plans");
        assert_eq!(plan.shards, 10, "the fleet stays the list's");
        let keys: Vec<&String> = plan
            .config_maps
            .iter()
            .flat_map(|c| c.data.as_ref().expect("data").keys())
            .collect();
        assert_eq!(keys, ["shard-3", "shard-7"]);
        let built = job_with_inputs(&aj, &plan).expect("translates");
        assert_eq!(built.spec.as_ref().and_then(|s| s.completions), Some(2));
        let container = pod_of(built).containers.remove(0);
        let env = container.env.expect("env");
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(value(SHARD_INDEXES_ENV).as_deref(), Some("3,7"));
        assert_eq!(value(SHARDS_ENV).as_deref(), Some("10"));
        assert!(
            env.iter()
                .all(|e| e.name != SHARD_ENV && e.name != "HEPBATCH_INPUT_FILES"),
            "the prologue sets them: {env:?}"
        );
        let command = container.command.expect("command");
        assert_eq!(&command[..3], ["bash", "-euo", "pipefail"]);
        assert!(command[4].starts_with("# Shard selection"));
        assert!(command[4].ends_with("exec \"$@\"\n"));
        assert_eq!(
            &command[5..],
            [
                selection::COMMAND_NAME,
                "cmsRun",
                "skim_cfg.py",
                "index=$(HEPBATCH_SHARD_INDEX)"
            ]
        );
    }

    #[test]
    fn a_selection_beyond_the_fleet_or_without_a_command_is_refused() {
        let beyond = analysis_job(json!({"image": "i", "shards": 5, "shardIndexes": "3,5",
            "script": "true"}));
        let error = job_of(&beyond).expect_err("shard 5 of 5");
        assert_eq!(error.reason(), Some("InvalidShardIndexes"));
        assert!(
            error
                .to_string()
                .contains("names shard 5, but the fleet has 5 shards")
        );
        let unordered = analysis_job(json!({"image": "i", "shards": 9, "shardIndexes": "7,3",
            "script": "true"}));
        assert!(
            job_of(&unordered)
                .expect_err("7,3")
                .to_string()
                .contains("ascending")
        );
        let entrypoint = analysis_job(json!({"image": "i", "shards": 9, "shardIndexes": "3",
            "args": ["x"]}));
        assert_eq!(
            job_of(&entrypoint),
            Err(BuildError::SelectionWithoutCommand)
        );
        let files: Vec<String> = (0..4).map(|i| format!("f{i}")).collect();
        let inputs = analysis_job(json!({"image": "i", "shardIndexes": "4", "script": "true",
            "inputs": {"files": files, "filesPerShard": 1}}));
        let error = inputs::plan(&inputs, &files, 1).expect_err("shard 4 of 4");
        assert_eq!(error.reason(), "InvalidShardIndexes");
    }

    #[test]
    fn every_shard_runs_restricted_as_its_platforms_user_by_default() {
        let config = OperatorConfig::default();
        for (spec, user) in [
            (json!({"platform": "cc7", "script": "true"}), 1000),
            (
                json!({"image": "busybox", "runAs": {"user": 4242, "group": 100}}),
                4242,
            ),
        ] {
            let pod = pod_of(
                job(&analysis_job(spec), &config, None, &Snapshot::new()).expect("translates"),
            );
            let context = pod.security_context.clone().expect("pod security context");
            assert_eq!(
                (context.run_as_non_root, context.run_as_user),
                (Some(true), Some(user))
            );
            assert_eq!(context.fs_group, context.run_as_group);
            let container = pod.containers[0]
                .security_context
                .clone()
                .expect("container");
            assert_eq!(container.allow_privilege_escalation, Some(false));
            assert_eq!(
                security::level(&pod),
                (hepbatch_crds::PodSecurityLevel::Restricted, Vec::new())
            );
        }
    }

    #[test]
    fn root_is_a_rejection_unless_the_configuration_allows_it() {
        let aj = analysis_job(json!({"image": "cernvm:5", "script": "true", "runAsRoot": true}));
        let error = job_of(&aj).expect_err("refused by default");
        assert_eq!(error.reason(), Some("RootNotAllowed"));
        let allowing = OperatorConfig::parse(
            std::path::Path::new("operator.yaml"),
            "security:\n  allowRoot: {namespaces: [physics]}\n",
        )
        .expect("valid");
        let pod = pod_of(job(&aj, &allowing, None, &Snapshot::new()).expect("allowed"));
        let context = pod.security_context.clone().expect("pod security context");
        assert_eq!(context.run_as_user, Some(0));
        let container = pod.containers[0]
            .security_context
            .clone()
            .expect("container");
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(
            container.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            security::level(&pod).0,
            hepbatch_crds::PodSecurityLevel::Baseline
        );
    }

    #[test]
    fn fleet_jobs_pin_the_resolved_revisions_and_record_them() {
        let aj = analysis_job(json!({"platform": "el9", "script": "true",
            "cvmfs": {"repositories": ["cms.cern.ch", "sft.cern.ch"], "consistency": "Fleet"}}));
        let revision = |hash: &str, number: i64| hepbatch_crds::CvmfsRevision {
            root_hash: hash.to_owned(),
            revision: number,
            published: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().expect("time"),
            ),
        };
        let snapshot = Snapshot::from([
            (
                "cms.cern.ch".to_owned(),
                revision("1111111111111111111111111111111111111111", 5),
            ),
            (
                "sft.cern.ch".to_owned(),
                revision("2222222222222222222222222222222222222222", 2),
            ),
        ]);
        let built = job(&aj, &OperatorConfig::default(), None, &snapshot).expect("translates");
        let recorded = built
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CVMFS_REVISIONS_ANNOTATION))
            .expect("recorded");
        assert_eq!(
            serde_json::from_str::<Snapshot>(recorded).expect("json"),
            snapshot
        );
        let pod = pod_of(built);
        let cvmfs = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "cvmfs")
            .and_then(|v| v.csi)
            .and_then(|c| c.volume_attributes)
            .expect("attributes");
        assert_eq!(
            cvmfs["pins"],
            "cms.cern.ch@rootHash=1111111111111111111111111111111111111111;\
             sft.cern.ch@rootHash=2222222222222222222222222222222222222222"
        );
        // Without the resolution there is no Job to create, only the operator's error.
        let error =
            job(&aj, &OperatorConfig::default(), None, &Snapshot::new()).expect_err("unresolved");
        assert_eq!(error.reason(), None);
        // Node consistency records nothing.
        let node = analysis_job(json!({"platform": "el9", "script": "true",
            "cvmfs": {"repositories": ["cms.cern.ch"]}}));
        let built = job(&node, &OperatorConfig::default(), None, &snapshot).expect("translates");
        assert_eq!(built.metadata.annotations, None);
        // A provider that cannot pin rejects Fleet with a reason of its own.
        let pvc = OperatorConfig {
            cvmfs: crate::config::CvmfsProvider::Pvc {
                claim_name: "cvmfs".into(),
            },
            ..OperatorConfig::default()
        };
        let error = job(&aj, &pvc, None, &snapshot).expect_err("pvc");
        assert_eq!(error.reason(), Some("CvmfsConsistencyUnsupported"));
    }
}
