//! `spec.cvmfs.consistency: Fleet` on the real testbed against a real CVMFS stratum 0
//! (`hepbatch_tests::cvmfs::Stratum`, made by the real `cvmfs_server`): the operator
//! binary reads and verifies the repositories' signed manifests over HTTP, pins every
//! shard to the root hashes current when the AnalysisJob starts and records them in the
//! status; a revision published while the fleet runs reaches only AnalysisJobs created
//! after it; a wrong master key and an unreachable server are `Accepted=False` in words,
//! with no Job.

#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hepbatch_crds::analysis_job::CVMFS_REVISIONS_ANNOTATION;
use hepbatch_crds::{AnalysisJob, CvmfsRevision};
use hepbatch_tests::cvmfs::{File, Manifest, Revision, Stratum, content};
use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::{TestbedOptions, annotations};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use common::{BoxError, Operator, create, eventually, pods_of};

/// Polls `look` every 200 ms until it finds something, for at most `timeout`.
async fn found<T, F, Fut>(what: &str, timeout: Duration, mut look: F) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, BoxError>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = look().await? {
            return Ok(value);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stratum every test of this binary reads, made by the first test that needs it
/// (about 15 s) and removed when the suite ends.
static STRATUM: Mutex<Option<Arc<Stratum>>> = Mutex::new(None);
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stratum() -> Result<Arc<Stratum>, BoxError> {
    let _one_at_a_time = STARTING.lock().await;
    if let Some(stratum) = STRATUM.lock().unwrap().clone() {
        return Ok(stratum);
    }
    let stratum =
        Arc::new(tokio::task::spawn_blocking(|| Stratum::start(&content::standard())).await??);
    *STRATUM.lock().unwrap() = Some(stratum.clone());
    Ok(stratum)
}

fn main() -> ExitCode {
    let code = harness::run(
        TestbedOptions::default(),
        vec![
            test(
                "a_fleet_is_pinned_to_the_revisions_current_at_its_start",
                fleet_pinned_at_start,
            )
            .with_timeout(Duration::from_secs(240)),
            test(
                "a_wrong_key_or_an_unreachable_server_is_reported_and_creates_nothing",
                failures_reported,
            )
            .with_timeout(Duration::from_secs(240)),
        ],
    );
    drop(STRATUM.lock().unwrap().take());
    code
}

/// An operator whose configuration names the stratum with `keys` (file name → PEM).
struct Bed {
    operator: Operator,
    config: std::path::PathBuf,
    api: Api<AnalysisJob>,
    jobs: Api<Job>,
}

fn config(server_url: &str, keys: &BTreeMap<String, String>) -> String {
    let config = json!({
        "cvmfs": {"provider": "csi", "serverUrl": server_url, "httpProxy": "DIRECT",
                  "publicKeys": keys},
    });
    serde_json::to_string(&config).expect("JSON is YAML")
}

async fn start(ctx: &TestContext, config: &str) -> Result<Bed, BoxError> {
    let common::Configured {
        operator,
        config,
        api,
    } = common::start_configured(ctx, config).await?;
    Ok(Bed {
        operator,
        config,
        api,
        jobs: Api::namespaced(ctx.client.clone(), &ctx.namespace),
    })
}

fn key(stratum: &Stratum, repository: &str) -> String {
    std::fs::read_to_string(stratum.keys_dir().join(format!("{repository}.pub")))
        .expect("the stratum's public key")
}

/// Shards that keep running while the test looks at them.
fn fleet(repositories: &[&str]) -> Value {
    json!({
        "platform": "el9", "script": "cat /cvmfs/cms.cern.ch/version", "shards": 2,
        "cvmfs": {"repositories": repositories, "consistency": "Fleet"},
        "podMetadata": {"annotations": {annotations::RUN_DURATION: "10m"}},
    })
}

/// The `pins` attribute of the CVMFS volume of a pod template.
fn pins(template: &PodTemplateSpec) -> String {
    template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name == "cvmfs"))
        .and_then(|v| v.csi.as_ref())
        .and_then(|c| c.volume_attributes.as_ref())
        .and_then(|a| a.get("pins").cloned())
        .unwrap_or_default()
}

async fn job_of(bed: &Bed, name: &str) -> Result<Job, BoxError> {
    let look = found(&format!("the Job {name}"), Duration::from_secs(60), || {
        let jobs = bed.jobs.clone();
        async move { Ok(jobs.get_opt(name).await?) }
    })
    .await;
    bed.operator.explain(look)
}

async fn recorded_revisions(
    bed: &Bed,
    name: &str,
) -> Result<BTreeMap<String, CvmfsRevision>, BoxError> {
    let look = found(
        &format!("status.cvmfs of {name}"),
        Duration::from_secs(60),
        || {
            let api = bed.api.clone();
            async move {
                Ok(api
                    .get(name)
                    .await?
                    .status
                    .and_then(|s| s.cvmfs)
                    .map(|c| c.revisions)
                    .filter(|r| !r.is_empty()))
            }
        },
    )
    .await;
    bed.operator.explain(look)
}

fn expected_pins(cms: &Manifest, sft: &Manifest) -> String {
    format!(
        "cms.cern.ch@rootHash={};sft.cern.ch@rootHash={}",
        cms.root_hash, sft.root_hash
    )
}

fn assert_records(revision: &CvmfsRevision, manifest: &Manifest) {
    assert_eq!(revision.root_hash, manifest.root_hash);
    assert_eq!(revision.revision, i64::try_from(manifest.revision).unwrap());
    assert_eq!(
        revision.published.0.as_second(),
        i64::try_from(manifest.timestamp).unwrap()
    );
}

async fn fleet_pinned_at_start(ctx: TestContext) -> TestResult {
    let stratum = stratum().await?;
    let keys = BTreeMap::from([
        ("cms.cern.ch.pub".to_owned(), key(&stratum, "cms.cern.ch")),
        ("sft.cern.ch.pub".to_owned(), key(&stratum, "sft.cern.ch")),
    ]);
    let bed = start(&ctx, &config(&stratum.server_url(), &keys)).await?;
    let cms = stratum.manifest("cms.cern.ch")?;
    let sft = stratum.manifest("sft.cern.ch")?;

    create(&bed.api, "before", fleet(&["cms.cern.ch", "sft.cern.ch"])).await?;
    let job = job_of(&bed, "before").await?;
    let template = &job.spec.as_ref().expect("spec").template;
    assert_eq!(pins(template), expected_pins(&cms, &sft));
    assert!(
        job.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(CVMFS_REVISIONS_ANNOTATION)),
        "the Job records what it pins"
    );
    let recorded = recorded_revisions(&bed, "before").await?;
    assert_eq!(
        recorded.keys().collect::<Vec<_>>(),
        ["cms.cern.ch", "sft.cern.ch"]
    );
    assert_records(&recorded["cms.cern.ch"], &cms);
    assert_records(&recorded["sft.cern.ch"], &sft);
    // The shard pods the Job controller made carry the pins.
    bed.operator.explain(
        eventually("two running shards", Duration::from_secs(60), || {
            let ctx = ctx.clone();
            async move { Ok(pods_of(&ctx, "before").await?.len() == 2) }
        })
        .await,
    )?;
    for pod in pods_of(&ctx, "before").await? {
        let template = PodTemplateSpec {
            metadata: None,
            spec: pod.spec.clone(),
        };
        assert_eq!(pins(&template), expected_pins(&cms, &sft));
    }

    // A new revision of cms.cern.ch is published while the fleet runs.
    let publisher = stratum.clone();
    let newer = tokio::task::spawn_blocking(move || {
        publisher.publish(
            "cms.cern.ch",
            &Revision::untagged(vec![File::new("version", "cms newer\n")]),
        )
    })
    .await??;
    assert_ne!(newer.root_hash, cms.root_hash);
    assert!(newer.revision > cms.revision);
    // The running fleet is reconciled again (its parallelism changes) and keeps its pins.
    bed.api
        .patch(
            "before",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"parallelism": 1}})),
        )
        .await?;
    bed.operator.explain(
        eventually("the new parallelism on the Job", Duration::from_secs(30), || {
            let jobs = bed.jobs.clone();
            async move {
                Ok(jobs.get("before").await?.spec.and_then(|s| s.parallelism) == Some(1))
            }
        })
        .await,
    )?;
    let job = bed.jobs.get("before").await?;
    assert_eq!(
        pins(&job.spec.expect("spec").template),
        expected_pins(&cms, &sft)
    );
    let still = bed.api.get("before").await?.status.and_then(|s| s.cvmfs);
    assert_eq!(still.map(|c| c.revisions), Some(recorded));

    // An AnalysisJob created after the publish sees the new revision.
    create(&bed.api, "after", fleet(&["cms.cern.ch", "sft.cern.ch"])).await?;
    let job = job_of(&bed, "after").await?;
    assert_eq!(
        pins(&job.spec.expect("spec").template),
        expected_pins(&newer, &sft)
    );
    let recorded = recorded_revisions(&bed, "after").await?;
    assert_records(&recorded["cms.cern.ch"], &newer);
    assert_records(&recorded["sft.cern.ch"], &sft);
    Ok(())
}

/// The `Accepted=False` condition of `name` as `reason: message`, once there is one.
async fn rejection(bed: &Bed, name: &str) -> Result<String, BoxError> {
    let look = found(
        &format!("Accepted=False on {name}"),
        Duration::from_secs(60),
        || {
            let api = bed.api.clone();
            async move {
                Ok(api
                    .get(name)
                    .await?
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter())
                    .find(|c| c.type_ == "Accepted" && c.status == "False")
                    .map(|c| format!("{}: {}", c.reason, c.message)))
            }
        },
    )
    .await;
    bed.operator.explain(look)
}

async fn failures_reported(ctx: TestContext) -> TestResult {
    let stratum = stratum().await?;
    // cms.cern.ch's key is another repository's (another RSA key).
    let wrong = BTreeMap::from([("cms.cern.ch.pub".to_owned(), key(&stratum, "atlas.cern.ch"))]);
    let bed = start(&ctx, &config(&stratum.server_url(), &wrong)).await?;
    create(&bed.api, "wrong-key", fleet(&["cms.cern.ch"])).await?;
    let reason = rejection(&bed, "wrong-key").await?;
    assert!(
        reason.starts_with(
            "CvmfsRevisionUnresolved: cannot resolve the current revision of cms.cern.ch: the \
             whitelist's signature does not verify with the configured key cms.cern.ch.pub"
        ),
        "{reason}"
    );
    assert!(bed.jobs.get_opt("wrong-key").await?.is_none());
    let events = common::event_reasons(&ctx, "wrong-key").await?;
    assert!(
        events.iter().any(|r| r == "CvmfsRevisionUnresolved"),
        "{events:?}"
    );

    // A server nobody answers at (a port just freed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let good = BTreeMap::from([
        ("cms.cern.ch.pub".to_owned(), key(&stratum, "cms.cern.ch")),
        ("sft.cern.ch.pub".to_owned(), key(&stratum, "sft.cern.ch")),
    ]);
    std::fs::write(
        &bed.config,
        config(&format!("http://{closed}/cvmfs/@fqrn@"), &good),
    )?;
    bed.operator
        .wait_for_log("configuration changed; reloaded", Duration::from_secs(20))
        .await?;
    create(
        &bed.api,
        "unreachable",
        fleet(&["cms.cern.ch", "sft.cern.ch"]),
    )
    .await?;
    let reason = rejection(&bed, "unreachable").await?;
    assert!(
        reason.starts_with(&format!(
            "CvmfsRevisionUnresolved: cannot resolve the current revision of cms.cern.ch: no \
             server could be reached: http://{closed}/cvmfs/cms.cern.ch/.cvmfspublished \
             directly: cannot connect"
        )),
        "{reason}"
    );
    assert!(bed.jobs.get_opt("unreachable").await?.is_none());
    // Rejections are retried: once the server and the keys are right, both run.
    std::fs::write(&bed.config, config(&stratum.server_url(), &good))?;
    for name in ["wrong-key", "unreachable"] {
        let job = job_of(&bed, name).await?;
        assert!(
            pins(&job.spec.expect("spec").template).starts_with("cms.cern.ch@rootHash="),
            "{name}"
        );
        // The status that follows the Job drops the rejection.
        let cleared = found(
            &format!("{name} without Accepted=False"),
            Duration::from_secs(30),
            || {
                let api = bed.api.clone();
                async move {
                    let status = api.get(name).await?.status.unwrap_or_default();
                    Ok((status.job_name.is_some()
                        && status.conditions.iter().all(|c| c.type_ != "Accepted"))
                    .then_some(()))
                }
            },
        )
        .await;
        bed.operator.explain(cleared)?;
    }
    Ok(())
}
