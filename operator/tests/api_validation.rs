//! The AnalysisJob API rejects bad input at admission: every case of the table below is
//! sent to the real kube-apiserver of the testbed and must come back as 422 Invalid with
//! a message naming the field and the fix. Valid objects and the allowed updates
//! (parallelism, suspend, ttlSecondsAfterFinished) must be accepted.

mod common;

use std::process::ExitCode;

use hepbatch_tests::harness::{self, TestContext, TestResult, test};
use hepbatch_tests::testbed::TestbedOptions;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn main() -> ExitCode {
    harness::run(
        TestbedOptions::default(),
        vec![
            test(
                "bad_analysis_jobs_are_rejected_with_their_message",
                bad_inputs_rejected,
            ),
            test(
                "immutable_fields_cannot_change_but_mutable_ones_can",
                immutable_fields,
            ),
        ],
    )
}

/// Checks that `result` is a 422 whose message contains `expected`.
fn expect_invalid<T>(
    case: &str,
    result: Result<T, kube::Error>,
    expected: &str,
) -> Result<(), String> {
    match result {
        Ok(_) => Err(format!(
            "{case}: accepted, expected a rejection containing {expected:?}"
        )),
        Err(kube::Error::Api(status))
            if status.code == 422 && status.message.contains(expected) =>
        {
            Ok(())
        }
        Err(kube::Error::Api(status)) => Err(format!(
            "{case}: rejected with {} {:?}, expected a 422 containing {expected:?}",
            status.code, status.message
        )),
        Err(error) => Err(format!("{case}: request failed: {error}")),
    }
}

async fn bad_inputs_rejected(ctx: TestContext) -> TestResult {
    common::install_crd(&ctx.client).await?;
    let api = common::untyped_api(&ctx);

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing image",
            json!({"shards": 2}),
            "spec.image or spec.platform is required",
        ),
        (
            "platform not a name",
            json!({"platform": "EL 9"}),
            "spec.platform must be a platform name",
        ),
        (
            "cmssw without commands",
            json!({"platform": "el8", "cmssw": {"release": "CMSSW_13_0_13",
                "scramArch": "el8_amd64_gcc11"}}),
            "spec.cmssw sets up a release for your commands",
        ),
        (
            "cmssw release malformed",
            json!({"platform": "el8", "script": "cmsRun", "cmssw": {"release": "13_0_13",
                "scramArch": "el8_amd64_gcc11"}}),
            "spec.cmssw.release must be a CMSSW release name",
        ),
        (
            "scram arch malformed",
            json!({"platform": "el8", "script": "cmsRun", "cmssw": {"release": "CMSSW_13_0_13",
                "scramArch": "amd64"}}),
            "spec.cmssw.scramArch must be a SCRAM architecture",
        ),
        (
            "el9 platform with an slc7 release",
            json!({"platform": "el9", "script": "cmsRun", "cmssw": {"release": "CMSSW_10_6_30",
                "scramArch": "slc7_amd64_gcc820"}}),
            "spec.cmssw.scramArch slc7_amd64_gcc820 is built for EL7 but spec.platform el9 is \
             EL9: choose a scramArch of EL9 (the release must exist for it) or spec.platform cc7",
        ),
        (
            "cc7 platform with an el9 release",
            json!({"platform": "cc7", "script": "cmsRun", "cmssw": {"release": "CMSSW_13_0_13",
                "scramArch": "el9_amd64_gcc11"}}),
            "spec.cmssw.scramArch el9_amd64_gcc11 is built for EL9 but spec.platform cc7 is EL7",
        ),
        (
            "repository with a slash",
            json!({"platform": "el9", "cvmfs": {"repositories": ["cms.cern.ch/../etc"]}}),
            "spec.cvmfs.repositories must be CVMFS repository names",
        ),
        (
            "pin of an unlisted repository",
            json!({"platform": "el9", "cvmfs": {"repositories": ["cms.cern.ch"],
                "pin": {"sft.cern.ch": {"tag": "v1"}}}}),
            "spec.cvmfs.pin names a repository that is not in spec.cvmfs.repositories",
        ),
        (
            "pin with two revisions",
            json!({"platform": "el9", "cvmfs": {"pin": {"cms.cern.ch": {"tag": "v1",
                "date": "2025-06-01T00:00:00Z"}}}}),
            "needs exactly one of tag, date or rootHash",
        ),
        (
            "pin date not ISO-8601",
            json!({"platform": "el9", "cvmfs": {"pin": {"cms.cern.ch":
                {"date": "June 1st 2025 12:00"}}}}),
            "a pinned date must be ISO-8601",
        ),
        (
            "pin root hash not hex",
            json!({"platform": "el9", "cvmfs": {"pin": {"cms.cern.ch":
                {"rootHash": "zz0123456789abcdef0123456789abcdef012345"}}}}),
            "a pinned rootHash must be lowercase hexadecimal",
        ),
        (
            "fleet consistency on demand",
            json!({"platform": "el9", "cvmfs": {"consistency": "Fleet"}}),
            "spec.cvmfs.consistency: Fleet needs spec.cvmfs.repositories",
        ),
        (
            "unknown consistency",
            json!({"platform": "el9", "cvmfs": {"repositories": ["cms.cern.ch"],
                "consistency": "Cluster"}}),
            "spec.cvmfs.consistency: Unsupported value",
        ),
        (
            "pin root hash with an unknown algorithm",
            json!({"platform": "el9", "cvmfs": {"pin": {"cms.cern.ch":
                {"rootHash": "0123456789abcdef0123456789abcdef01234567-md5"}}}}),
            "a pinned rootHash must be lowercase hexadecimal",
        ),
        (
            "relative output path",
            json!({"platform": "el9", "output": {"path": "out"}}),
            "spec.output.path must be an absolute path",
        ),
        (
            "output under /cvmfs",
            json!({"platform": "el9", "output": {"path": "/cvmfs/out"}}),
            "spec.output.path must not lie under /cvmfs",
        ),
        (
            "output with two volumes",
            json!({"platform": "el9", "output": {"path": "/out", "volume": {"emptyDir": {},
                "hostPath": {"path": "/data"}}}}),
            "spec.output.volume needs exactly one of",
        ),
        (
            "inputs and shards",
            json!({"platform": "el9", "shards": 3, "inputs": {"files": ["a.root"]}}),
            "spec.shards is computed from spec.inputs",
        ),
        (
            "inputs with both sources",
            json!({"platform": "el9", "inputs": {"files": ["a.root"],
                "fromConfigMap": {"name": "files", "key": "list"}}}),
            "spec.inputs needs exactly one of files or fromConfigMap",
        ),
        (
            "zero files per shard",
            json!({"platform": "el9", "inputs": {"files": ["a.root"], "filesPerShard": 0}}),
            "spec.inputs.filesPerShard: Invalid value",
        ),
        (
            "unknown job flavour",
            json!({"platform": "el9", "maxRuntime": "lunchtime"}),
            "spec.maxRuntime must be an HTCondor JobFlavour",
        ),
        ("empty image", json!({"image": ""}), "spec.image"),
        (
            "image with spaces",
            json!({"image": "busybox latest"}),
            "spec.image must be an image reference without spaces",
        ),
        (
            "zero shards",
            json!({"image": "busybox", "shards": 0}),
            "spec.shards: Invalid value",
        ),
        (
            "too many shards",
            json!({"image": "busybox", "shards": 100001}),
            "spec.shards: Invalid value",
        ),
        (
            "negative parallelism",
            json!({"image": "busybox", "parallelism": -1}),
            "spec.parallelism: Invalid value",
        ),
        (
            "negative retries",
            json!({"image": "busybox", "maxRetriesPerShard": -1}),
            "spec.maxRetriesPerShard: Invalid value",
        ),
        (
            "too many retries",
            json!({"image": "busybox", "maxRetriesPerShard": 101}),
            "spec.maxRetriesPerShard: Invalid value",
        ),
        (
            "maxFailedShards above shards",
            json!({"image": "busybox", "shards": 3, "maxFailedShards": 4}),
            "spec.maxFailedShards must not be larger than spec.shards",
        ),
        (
            "script and command",
            json!({"image": "busybox", "script": "echo hi", "command": ["echo"]}),
            "spec.script and spec.command are mutually exclusive",
        ),
        (
            "script and args",
            json!({"image": "busybox", "script": "echo hi", "args": ["x"]}),
            "spec.script and spec.args are mutually exclusive",
        ),
        (
            "shard selection that is not ranges",
            json!({"image": "busybox", "shards": 10, "script": "true", "shardIndexes": "3, 7"}),
            "spec.shardIndexes must list shard indexes and ranges",
        ),
        (
            "shard selection beyond the shards",
            json!({"image": "busybox", "shards": 10, "script": "true", "shardIndexes": "3,7-10"}),
            "spec.shardIndexes names a shard beyond spec.shards",
        ),
        (
            "shard selection without a command",
            json!({"image": "busybox", "shards": 10, "shardIndexes": "3"}),
            "spec.shardIndexes needs spec.script or spec.command",
        ),
        (
            "fatal exit code zero",
            json!({"image": "busybox", "fatalExitCodes": [0]}),
            "spec.fatalExitCodes[0]: Invalid value",
        ),
        (
            "fatal exit code above 255",
            json!({"image": "busybox", "fatalExitCodes": [256]}),
            "spec.fatalExitCodes[0]: Invalid value",
        ),
        (
            "duplicate fatal exit codes",
            json!({"image": "busybox", "fatalExitCodes": [3, 3]}),
            "spec.fatalExitCodes[1]: Duplicate value",
        ),
        (
            "relative working directory",
            json!({"image": "busybox", "workingDir": "work"}),
            "spec.workingDir must be an absolute path",
        ),
        (
            "bad queue name",
            json!({"image": "busybox", "queueName": "Team_Queue"}),
            "spec.queueName must name a Kueue LocalQueue",
        ),
        (
            "zero deadline",
            json!({"image": "busybox", "activeDeadlineSeconds": 0}),
            "spec.activeDeadlineSeconds: Invalid value",
        ),
        (
            "negative ttl",
            json!({"image": "busybox", "ttlSecondsAfterFinished": -1}),
            "spec.ttlSecondsAfterFinished: Invalid value",
        ),
        (
            "memory not a quantity",
            json!({"image": "busybox", "resources": {"memory": "lots"}}),
            "spec.resources.memory must be a Kubernetes quantity such as 2Gi",
        ),
        (
            "negative cpu",
            json!({"image": "busybox", "resources": {"cpu": "-1"}}),
            "spec.resources.cpu must be larger than zero",
        ),
        (
            "reserved environment variable",
            json!({"image": "busybox", "env": [{"name": "HEPBATCH_SHARD_INDEX", "value": "1"}]}),
            "spec.env must not set variables starting with HEPBATCH_",
        ),
        (
            "reserved pod label",
            json!({"image": "busybox", "podMetadata": {"labels": {"hepbatch.io/analysis-job": "x"}}}),
            "spec.podMetadata.labels must not use keys under hepbatch.io/",
        ),
        (
            "shards not a number",
            json!({"image": "busybox", "shards": "many"}),
            "spec.shards: Invalid value",
        ),
        (
            "root's UID as a user",
            json!({"image": "busybox", "runAs": {"user": 0}}),
            "spec.runAs.user must not be 0, root's UID: ask for spec.runAsRoot: true",
        ),
        (
            "a user and root",
            json!({"image": "busybox", "runAs": {"user": 1000}, "runAsRoot": true}),
            "spec.runAs and spec.runAsRoot: true exclude each other",
        ),
        (
            "a negative group",
            json!({"image": "busybox", "runAs": {"user": 1000, "group": -1}}),
            "spec.runAs.group: Invalid value",
        ),
        (
            "a user beyond 2^31-1",
            json!({"image": "busybox", "runAs": {"user": 4_294_967_296_i64}}),
            "spec.runAs.user: Invalid value",
        ),
    ];

    let mut failures = Vec::new();
    for (index, (case, spec, expected)) in cases.iter().enumerate() {
        let name = format!("bad-{index}");
        let result = api
            .create(
                &PostParams::default(),
                &common::untyped_analysis_job(&name, spec.clone())?,
            )
            .await;
        if let Err(failure) = expect_invalid(case, result, expected) {
            failures.push(failure);
        }
    }
    // A valid object using every checked field is accepted.
    let valid = json!({
        "image": "ghcr.io/org/analysis:1.0",
        "script": "echo shard $HEPBATCH_SHARD_INDEX",
        "workingDir": "/work",
        "shards": 10,
        "parallelism": 4,
        "maxRetriesPerShard": 2,
        "maxFailedShards": 3,
        "fatalExitCodes": [2, 3],
        "activeDeadlineSeconds": 3600,
        "ttlSecondsAfterFinished": 60,
        "queueName": "team-a",
        "resources": {"cpu": "500m", "memory": "2Gi", "ephemeralStorage": "10Gi"},
        "env": [{"name": "DATASET", "value": "/store/data"}],
        "podMetadata": {"labels": {"team": "higgs"}},
        "runAs": {"user": 1000, "group": 0},
    });
    let valid_hep = json!({
        "platform": "el8",
        "cmssw": {"release": "CMSSW_12_4_0_patch1", "scramArch": "cc8_amd64_gcc10"},
        "script": "cmsRun cfg.py",
        "cvmfs": {"repositories": ["cms.cern.ch", "sft.cern.ch", "atlas.cern.ch"],
            "consistency": "Fleet",
            "pin": {"sft.cern.ch": {"date": "2025-06-01T00:00:00Z"},
                "atlas.cern.ch": {"rootHash": "0123456789abcdef0123456789abcdef01234567-rmd160"}}},
        "output": {"path": "/output", "volume": {"persistentVolumeClaim": {"claimName": "out"}}},
        "inputs": {"files": ["/store/a.root", "/store/b.root"], "filesPerShard": 1},
        "maxRuntime": "workday",
        "runAsRoot": true,
    });
    if let Err(error) = api
        .create(
            &PostParams::default(),
            &common::untyped_analysis_job("valid-hep", valid_hep)?,
        )
        .await
    {
        failures.push(format!("a valid HEP AnalysisJob was rejected: {error}"));
    }
    if let Err(error) = api
        .create(
            &PostParams::default(),
            &common::untyped_analysis_job("valid", valid)?,
        )
        .await
    {
        failures.push(format!("a valid AnalysisJob was rejected: {error}"));
    }
    if failures.is_empty() {
        println!("{} bad inputs rejected with their messages", cases.len());
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}

async fn immutable_fields(ctx: TestContext) -> TestResult {
    common::install_crd(&ctx.client).await?;
    let api = common::untyped_api(&ctx);
    let spec = json!({
        "image": "busybox",
        "command": ["true"],
        "shards": 4,
        "parallelism": 2,
    });
    api.create(
        &PostParams::default(),
        &common::untyped_analysis_job("immutable", spec)?,
    )
    .await?;

    let params = PatchParams::default();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "change image",
            json!({"spec": {"image": "alpine"}}),
            "spec.image is immutable",
        ),
        (
            "change shards",
            json!({"spec": {"shards": 5}}),
            "spec.shards is immutable",
        ),
        (
            "add a queue",
            json!({"spec": {"queueName": "team-a"}}),
            "spec.queueName is immutable",
        ),
        (
            "remove the command",
            json!({"spec": {"command": null}}),
            "spec.command is immutable",
        ),
        (
            "add fatal exit codes",
            json!({"spec": {"fatalExitCodes": [3]}}),
            "spec.fatalExitCodes is immutable",
        ),
        (
            "add a platform",
            json!({"spec": {"platform": "el9"}}),
            "spec.platform is immutable",
        ),
        (
            "add cvmfs",
            json!({"spec": {"cvmfs": {}}}),
            "spec.cvmfs is immutable",
        ),
        (
            "add a max runtime",
            json!({"spec": {"maxRuntime": "espresso"}}),
            "spec.maxRuntime is immutable",
        ),
        (
            "choose a user later",
            json!({"spec": {"runAs": {"user": 1000}}}),
            "spec.runAs is immutable",
        ),
        (
            "ask for root later",
            json!({"spec": {"runAsRoot": true}}),
            "spec.runAsRoot is immutable",
        ),
    ];
    let mut failures = Vec::new();
    for (case, patch, expected) in &cases {
        let result = api.patch("immutable", &params, &Patch::Merge(patch)).await;
        if let Err(failure) = expect_invalid(case, result, expected) {
            failures.push(failure);
        }
    }
    // The software a running fleet sees cannot be switched between Node and Fleet.
    api.create(
        &PostParams::default(),
        &common::untyped_analysis_job(
            "immutable-cvmfs",
            json!({"image": "busybox", "command": ["true"],
                "cvmfs": {"repositories": ["cms.cern.ch"]}}),
        )?,
    )
    .await?;
    let result = api
        .patch(
            "immutable-cvmfs",
            &params,
            &Patch::Merge(&json!({"spec": {"cvmfs": {"consistency": "Fleet"}}})),
        )
        .await;
    if let Err(failure) = expect_invalid("ask for Fleet later", result, "spec.cvmfs is immutable") {
        failures.push(failure);
    }
    // The fields a Job can change may change.
    for (case, patch) in [
        ("parallelism", json!({"spec": {"parallelism": 4}})),
        ("suspend", json!({"spec": {"suspend": true}})),
        ("ttl", json!({"spec": {"ttlSecondsAfterFinished": 30}})),
    ] {
        if let Err(error) = api.patch("immutable", &params, &Patch::Merge(&patch)).await {
            failures.push(format!("changing {case} was rejected: {error}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n").into())
    }
}
