//! Submit descriptions of the kinds physicists run, written from HTCondor's documented
//! syntax, and the AnalysisJobs they become.

use serde_json::{Value, json};

use super::*;

fn import(text: &str, items_file: Option<&[&str]>) -> (Value, Vec<Warning>, String) {
    let description = parse(text).expect("the description parses");
    let options = Options {
        fallback_name: "job.sub".to_owned(),
        items_file: items_file.map(|i| i.iter().map(|s| (*s).to_owned()).collect()),
        ..Options::default()
    };
    let translation = translate(&description, &options).expect("the description translates");
    let name = translation
        .analysis_job
        .metadata
        .name
        .clone()
        .expect("a name");
    let spec = serde_json::to_value(&translation.analysis_job.spec).expect("serializes");
    (spec, translation.warnings, name)
}

fn warned_lines(warnings: &[Warning]) -> Vec<usize> {
    warnings.iter().map(|w| w.line).collect()
}

/// The docker-universe job sites run on CernVM: the image's `/init` with arguments,
/// sizes in HTCondor's units, an OS wish the image makes moot.
#[test]
fn cernvm_docker_universe_job() {
    let text = r#"universe                = docker
docker_image            = cernvm/cernvm4-docker:latest
executable              = /init
arguments               = /usr/bin/analysis --events 1000
should_transfer_files   = YES
when_to_transfer_output = ON_EXIT
output                  = out.$(ClusterId).$(ProcId)
error                   = err.$(ClusterId).$(ProcId)
log                     = log.$(ClusterId)
request_cpus            = 1
request_memory          = 1500
request_disk            = 15G
+WantSlc5               = True
queue 2
"#;
    let (spec, warnings, name) = import(text, None);
    assert_eq!(name, "job-sub");
    assert_eq!(spec["image"], "cernvm/cernvm4-docker:latest");
    assert!(spec.get("platform").is_none());
    assert_eq!(spec["command"], json!(["/init"]));
    assert_eq!(
        spec["args"],
        json!(["/usr/bin/analysis", "--events", "1000"])
    );
    assert_eq!(
        spec["resources"],
        json!({"cpu": "1", "memory": "1500Mi", "ephemeralStorage": "15Gi"})
    );
    assert_eq!(spec["shards"], 2);
    assert_eq!(spec["maxRetriesPerShard"], 0);
    // transfer (2), output, error, log and the moot OS wish are each reported.
    assert_eq!(warned_lines(&warnings), [5, 6, 7, 8, 9, 13]);
    assert!(
        warnings[5].message.contains("image decides the OS"),
        "{warnings:?}"
    );
}

/// A CERN batch job: a script, the cluster and process ids as arguments, a flavour,
/// the OS by `MY.WantOS`, memory with a unit.
#[test]
fn lxbatch_vanilla_job_with_flavour_and_os() {
    let text = r#"# Skim 50 chunks of the 2018 data
executable     = /afs/cern.ch/user/p/physicist/skim.sh
arguments      = $(ClusterId) $(ProcId) --year 2018
environment    = "X509_CERT_DIR=/cvmfs/grid.cern.ch/etc/grid-security/certificates YEAR=2018"
output         = logs/skim.$(ClusterId).$(ProcId).out
error          = logs/skim.$(ClusterId).$(ProcId).err
log            = logs/skim.$(ClusterId).log
request_cpus   = 4
request_memory = 8 GB
+JobFlavour    = "longlunch"
MY.WantOS      = "el9"
max_retries    = 2
batch_name     = Skim2018
queue 50
"#;
    let (spec, warnings, name) = import(text, None);
    assert_eq!(name, "skim2018");
    assert_eq!(spec["platform"], "el9");
    assert_eq!(
        spec["command"],
        json!(["/afs/cern.ch/user/p/physicist/skim.sh"])
    );
    assert_eq!(
        spec["args"],
        json!(["skim2018", "$(HEPBATCH_SHARD_INDEX)", "--year", "2018"])
    );
    assert_eq!(
        spec["env"],
        json!([
            {"name": "X509_CERT_DIR", "value": "/cvmfs/grid.cern.ch/etc/grid-security/certificates"},
            {"name": "YEAR", "value": "2018"}
        ])
    );
    assert_eq!(spec["resources"], json!({"cpu": "4", "memory": "8Gi"}));
    assert_eq!(spec["cvmfs"], json!({"repositories": ["grid.cern.ch"]}));
    assert_eq!(spec["maxRuntime"], "longlunch");
    assert_eq!(spec["maxRetriesPerShard"], 2);
    assert_eq!(spec["shards"], 50);
    assert_eq!(warned_lines(&warnings), [5, 6, 7]);
}

/// Input files from a list, one per job, in an unpacked Apptainer image of the CMS
/// base OS: the item goes through a generated script.
#[test]
fn one_job_per_input_file_from_a_list() {
    let text = r#"universe              = vanilla
+SingularityImage     = "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/cmssw/el8:x86_64"
executable            = /cvmfs/cms.cern.ch/common/cmsRun
arguments             = "analyzer_cfg.py inputFiles=$(file) outputFile=out_$(Process).root"
request_disk          = 20 GB
request_memory        = 2000
max_retries           = 3
+MaxRuntime           = 7200
queue file from files.txt
"#;
    let files = [
        "/store/data/Run2018A/DoubleMuon/NANOAOD/1.root",
        "/store/data/Run2018A/DoubleMuon/NANOAOD/2.root",
        "/store/data/Run2018A/DoubleMuon/NANOAOD/3.root",
    ];
    let (spec, warnings, _) = import(text, Some(&files));
    assert_eq!(spec["image"], "cmssw/el8:x86_64");
    assert_eq!(spec["inputs"], json!({"files": files, "filesPerShard": 1}));
    assert!(spec.get("shards").is_none());
    assert!(spec.get("command").is_none());
    assert_eq!(
        spec["script"],
        "IFS='' read -r item_file <<<\"$(head -n 1 \"$HEPBATCH_INPUT_FILES\")\"\n\
         exec '/cvmfs/cms.cern.ch/common/cmsRun' 'analyzer_cfg.py' 'inputFiles='\"$item_file\" \
         'outputFile=out_'\"$HEPBATCH_SHARD_INDEX\"'.root'\n"
    );
    assert_eq!(spec["maxRuntime"], "7200s");
    assert_eq!(spec["maxRetriesPerShard"], 3);
    assert_eq!(spec["cvmfs"], json!({"repositories": ["cms.cern.ch"]}));
    assert_eq!(
        spec["resources"],
        json!({"memory": "2000Mi", "ephemeralStorage": "20Gi"})
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// A GPU training scan over a list of masses in the container universe, with GPU
/// properties, a user macro and the run time in seconds.
#[test]
fn gpu_scan_over_listed_items() {
    let text = r#"universe        = container
container_image = docker://pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime
epochs          = 20
executable      = /usr/bin/python3
arguments       = train.py --mass $(mass) --epochs $(epochs)
request_gpus    = 1
require_gpus    = (Capability >= 8.0) && (GlobalMemoryMb >= 40000)
request_cpus    = 8
request_memory  = 32G
+MaxRuntime     = 86400
queue mass in (125 250 500 1000)
"#;
    let (spec, warnings, _) = import(text, None);
    assert_eq!(
        spec["image"],
        "pytorch/pytorch:2.1.0-cuda12.1-cudnn8-runtime"
    );
    assert_eq!(
        spec["inputs"]["files"],
        json!(["125", "250", "500", "1000"])
    );
    let script = spec["script"].as_str().expect("a script");
    assert!(
        script.ends_with(
            "exec '/usr/bin/python3' 'train.py' '--mass' \"$item_mass\" '--epochs' '20'\n"
        ),
        "{script}"
    );
    assert_eq!(
        spec["resources"]["gpu"],
        json!({"count": 1, "vendor": "nvidia", "minMemory": "40000Mi", "minComputeCapability": "8.0"})
    );
    assert_eq!(spec["resources"]["memory"], "32Gi");
    assert_eq!(spec["maxRuntime"], "86400s");
    // `epochs` is a macro the arguments use, not an unknown command.
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// A grid-style job with commands that have no AnalysisJob equivalent: each is
/// reported with its line, and the rest still translates.
#[test]
fn unsupported_commands_are_warned_with_their_line() {
    let text = r#"universe             = grid
grid_resource        = condor ce.example.org ce.example.org:9619
executable           = /bin/bash
arguments            = "-c 'echo $(Process) && hostname'"
x509userproxy        = /tmp/x509up_u1000
transfer_input_files = input.tar.gz
requirements         = (OpSysAndVer == "CentOS7")
notify_user          = physicist@example.org
periodic_remove      = (JobStatus == 5)
+DESIRED_OS          = "SL7"
queue 10
"#;
    let (spec, warnings, _) = import(text, None);
    assert_eq!(spec["platform"], "cc7");
    assert_eq!(
        spec["args"],
        json!(["-c", "echo $(HEPBATCH_SHARD_INDEX) && hostname"])
    );
    assert_eq!(spec["shards"], 10);
    assert_eq!(warned_lines(&warnings), [1, 2, 5, 6, 7, 8, 9]);
    let by_line = |line: usize| {
        warnings
            .iter()
            .find(|w| w.line == line)
            .map(|w| w.message.clone())
            .unwrap_or_default()
    };
    assert!(by_line(1).contains("universe grid"), "{}", by_line(1));
    assert!(
        by_line(2).contains("unknown command grid_resource"),
        "{}",
        by_line(2)
    );
    assert!(by_line(5).contains("Secret"), "{}", by_line(5));
}

/// Several variables per item line, from a file: the script splits the line.
#[test]
fn several_variables_per_item() {
    let text = r#"container_image = ghcr.io/example/fit:1.2
executable      = /opt/fit
arguments       = --mass $(mass) --width $(width) --seed $(Process)
queue mass, width from points.csv
"#;
    let (spec, warnings, _) = import(text, Some(&["125, 0.004", "130, 0.005"]));
    let script = spec["script"].as_str().expect("a script");
    assert!(
        script.contains("IFS=', ' read -r item_mass item_width <<<"),
        "{script}"
    );
    assert!(
        script.contains("'--seed' \"$HEPBATCH_SHARD_INDEX\""),
        "{script}"
    );
    assert_eq!(spec["inputs"]["files"], json!(["125, 0.004", "130, 0.005"]));
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// The generated script does what HTCondor would: run with bash on a real item file.
#[test]
fn the_generated_script_passes_each_word_intact() {
    let text = "container_image = busybox\nexecutable = /bin/echo\n\
                arguments = \"'a b' $(x) 'it''s' out_$(Process)\"\nqueue x from list\n";
    let (spec, _, _) = import(text, Some(&["file with spaces.root"]));
    let script = spec["script"]
        .as_str()
        .expect("a script")
        .replace("exec '/bin/echo'", "printf '[%s]' ");
    let dir = std::env::temp_dir().join(format!("hepbatch-cli-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("files");
    std::fs::write(&list, "file with spaces.root\n").unwrap();
    let output = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .env("HEPBATCH_INPUT_FILES", &list)
        .env("HEPBATCH_SHARD_INDEX", "7")
        .output()
        .expect("bash runs");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "[a b][file with spaces.root][it's][out_7]"
    );
}

#[test]
fn missing_pieces_are_errors() {
    let no_image = parse("executable = /bin/true\nqueue").unwrap();
    assert!(matches!(
        translate(&no_image, &Options::default()),
        Err(SubmitError::NoImage)
    ));
    let with_platform = Options {
        default_platform: Some("el9".into()),
        ..Options::default()
    };
    assert!(translate(&no_image, &with_platform).is_ok());
    let no_executable = parse("+WantOS = \"el9\"\nqueue").unwrap();
    assert!(matches!(
        translate(&no_executable, &Options::default()),
        Err(SubmitError::NoExecutable)
    ));
    let bad_flavour =
        parse("+WantOS = \"el9\"\nexecutable = /x\n+JobFlavour = \"forever\"\nqueue").unwrap();
    match translate(&bad_flavour, &Options::default()) {
        Err(SubmitError::BadValue { line, .. }) => assert_eq!(line, 3),
        other => panic!("{other:?}"),
    }
}
