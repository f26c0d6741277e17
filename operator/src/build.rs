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
//! - `script` → `bash -euo pipefail -c <script>`,
//! - `ttlSecondsAfterFinished` is *not* copied: it applies to the AnalysisJob, whose
//!   deletion removes the Job by garbage collection (keeping the Job until then keeps the
//!   status readable).

use std::collections::BTreeMap;

use hepbatch_crds::AnalysisJob;
use hepbatch_crds::analysis_job::{ANALYSIS_JOB_LABEL, SHARD_ENV, SHARDS_ENV, ShardResources};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, PodTemplateSpec,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

/// Label Kueue reads to queue a Job.
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";

/// Name of the one container of every shard pod.
pub const CONTAINER_NAME: &str = "shard";

/// Annotation the Job controller puts on every pod with its completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// Why an AnalysisJob cannot be translated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
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

/// The Job that runs `analysis_job`'s shards: same name and namespace, controlled by it.
pub fn job(analysis_job: &AnalysisJob) -> Result<Job, BuildError> {
    let name = analysis_job.name_any();
    let namespace = analysis_job
        .namespace()
        .ok_or_else(|| BuildError::MissingNamespace { name: name.clone() })?;
    let owner = analysis_job
        .controller_owner_ref(&())
        .ok_or_else(|| BuildError::MissingUid { name: name.clone() })?;
    let spec = &analysis_job.spec;

    let mut job_labels = BTreeMap::from([(ANALYSIS_JOB_LABEL.to_owned(), name.clone())]);
    if let Some(queue) = &spec.queue_name {
        job_labels.insert(KUEUE_QUEUE_LABEL.to_owned(), queue.clone());
    }

    let pod_metadata = spec.pod_metadata.clone().unwrap_or_default();
    let mut pod_labels = pod_metadata.labels.unwrap_or_default();
    pod_labels.insert(ANALYSIS_JOB_LABEL.to_owned(), name.clone());

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(job_labels),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".to_owned()),
            completions: Some(spec.shards),
            parallelism: Some(spec.effective_parallelism()),
            backoff_limit_per_index: Some(spec.max_retries_per_shard),
            max_failed_indexes: spec.max_failed_shards,
            pod_failure_policy: Some(pod_failure_policy(spec.fatal_exit_codes.as_deref())),
            pod_replacement_policy: Some("Failed".to_owned()),
            active_deadline_seconds: spec.active_deadline_seconds,
            suspend: Some(spec.queue_name.is_some() || spec.is_suspended()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: pod_metadata.annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    containers: vec![container(analysis_job)],
                    node_selector: spec.node_selector.clone(),
                    tolerations: spec.tolerations.clone(),
                    affinity: spec.affinity.clone(),
                    priority_class_name: spec.priority_class_name.clone(),
                    service_account_name: spec.service_account_name.clone(),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    })
}

/// Disruptions never count; fatal exit codes fail their shard at once.
fn pod_failure_policy(fatal_exit_codes: Option<&[i32]>) -> PodFailurePolicy {
    let mut rules = vec![PodFailurePolicyRule {
        action: "Ignore".to_owned(),
        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
            type_: "DisruptionTarget".to_owned(),
            status: Some("True".to_owned()),
        }]),
        on_exit_codes: None,
    }];
    if let Some(codes) = fatal_exit_codes.filter(|codes| !codes.is_empty()) {
        let mut values = codes.to_vec();
        // The Job API wants the values sorted and without duplicates.
        values.sort_unstable();
        values.dedup();
        rules.push(PodFailurePolicyRule {
            action: "FailIndex".to_owned(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                container_name: Some(CONTAINER_NAME.to_owned()),
                operator: "In".to_owned(),
                values,
            }),
            on_pod_conditions: None,
        });
    }
    PodFailurePolicy { rules }
}

fn container(analysis_job: &AnalysisJob) -> Container {
    let spec = &analysis_job.spec;
    let (command, args) = match &spec.script {
        Some(script) => (
            Some(
                ["bash", "-euo", "pipefail", "-c", script.as_str()]
                    .map(str::to_owned)
                    .to_vec(),
            ),
            None,
        ),
        None => (spec.command.clone(), spec.args.clone()),
    };
    let mut env = vec![
        EnvVar {
            name: SHARD_ENV.to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            value: None,
        },
        EnvVar {
            name: SHARDS_ENV.to_owned(),
            value: Some(spec.shards.to_string()),
            value_from: None,
        },
    ];
    env.extend(spec.env.iter().flatten().cloned());
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(spec.image.clone()),
        command,
        args,
        working_dir: spec.working_dir.clone(),
        env: Some(env),
        env_from: spec.env_from.clone(),
        resources: spec.resources.as_ref().map(resources),
        ..Container::default()
    }
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
    let parallelism = spec.effective_parallelism();
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

    fn analysis_job(spec: Value) -> AnalysisJob {
        serde_json::from_value(json!({
            "apiVersion": "hepbatch.io/v1alpha1",
            "kind": "AnalysisJob",
            "metadata": {"name": "higgs", "namespace": "physics", "uid": "u-1"},
            "spec": spec,
        }))
        .expect("a valid AnalysisJob")
    }

    #[test]
    fn minimal_spec_becomes_an_indexed_job_owned_by_the_analysis_job() {
        let job =
            job(&analysis_job(json!({"image": "busybox", "shards": 20}))).expect("translates");
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
        let job = job(&analysis_job(
            json!({"image": "busybox", "script": "echo $HEPBATCH_SHARD"}),
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
            ["bash", "-euo", "pipefail", "-c", "echo $HEPBATCH_SHARD"]
        );
        assert_eq!(container.args, None);
    }

    #[test]
    fn retries_failures_and_fatal_codes_translate() {
        let job = job(&analysis_job(json!({
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
        let job = job(&analysis_job(
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
        let job = job(&analysis_job(json!({
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
            job(&aj),
            Err(BuildError::MissingUid {
                name: "higgs".to_owned()
            })
        );
    }

    #[test]
    fn live_update_touches_only_parallelism_and_suspend() {
        let aj = analysis_job(json!({"image": "busybox", "shards": 10}));
        let live = job(&aj).expect("translates");
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
        let mut live = job(&aj).expect("translates");
        // Kueue admitted the Job.
        if let Some(spec) = live.spec.as_mut() {
            spec.suspend = Some(false);
        }
        assert_eq!(live_update(&aj, &live), None);
    }
}
