//! The CMSSW bootstrap: what a CMS physicist types before their commands, as a script.
//!
//! ```text
//! source /cvmfs/cms.cern.ch/cmsset_default.sh   # scram, cmsrel, cmsenv
//! export SCRAM_ARCH=el8_amd64_gcc11
//! scram project CMSSW CMSSW_13_0_13              # cmsrel (skipped if the area exists)
//! cd CMSSW_13_0_13/src
//! eval "$(scram runtime -sh)"                    # cmsenv
//! <the user's script, or exec of the user's command>
//! ```
//!
//! The whole runs under `bash -euo pipefail` like every `script`. Two details make it
//! fail-fast for real: `cmsset_default.sh` reads unset variables and may return non-zero
//! from harmless lines, so it is sourced with `set +eu` and its effect is checked instead
//! (`scram` must exist afterwards); and the environment of `scram runtime` is captured into
//! a variable before `eval`, because `eval "$(false)"` would succeed.
//!
//! The release area is created in the working directory (an `emptyDir` the build module
//! mounts unless the user chose a working directory), and the user's commands run in
//! `$CMSSW_BASE/src`, as after `cmsrel` + `cd` + `cmsenv` by hand.

use hepbatch_crds::Cmssw;

/// Where the CMS repository's environment script lives.
pub const CMSSET_DEFAULT: &str = "/cvmfs/cms.cern.ch/cmsset_default.sh";

/// The bootstrap lines for `cmssw`, to be followed by the user's commands.
pub fn bootstrap(cmssw: &Cmssw) -> String {
    // Release and arch are validated at admission (letters, digits, '_'), so they need no
    // quoting; quote them anyway so the script stays correct if the rules ever widen.
    let release = shell_quote(&cmssw.release);
    let arch = shell_quote(&cmssw.scram_arch);
    format!(
        "# CMSSW environment (hepbatch): cmsrel + cmsenv\n\
         set +eu\n\
         source {CMSSET_DEFAULT}\n\
         set -eu\n\
         if ! command -v scram >/dev/null; then\n  \
           echo \"hepbatch: scram not found after sourcing {CMSSET_DEFAULT}; is /cvmfs/cms.cern.ch mounted?\" >&2\n  \
           exit 127\n\
         fi\n\
         export SCRAM_ARCH={arch}\n\
         if [ ! -d {release}/src ]; then\n  \
           scram project CMSSW {release}\n\
         fi\n\
         cd {release}/src\n\
         hepbatch_cmsenv=\"$(scram runtime -sh)\"\n\
         set +u\n\
         eval \"$hepbatch_cmsenv\"\n\
         set -u\n\
         unset hepbatch_cmsenv\n\
         echo \"hepbatch: ${{CMSSW_VERSION:-CMSSW}} ($SCRAM_ARCH) ready in $PWD\" >&2\n\
         # User commands\n"
    )
}

/// The script of a CMSSW shard with a user `script`.
pub fn with_script(cmssw: &Cmssw, script: &str) -> String {
    format!("{}{script}\n", bootstrap(cmssw))
}

/// The script of a CMSSW shard with a user `command`: it ends by exec'ing its positional
/// arguments (the command and its args follow the script on the bash command line).
pub fn with_command(cmssw: &Cmssw) -> String {
    format!("{}exec \"$@\"\n", bootstrap(cmssw))
}

/// `value` in single quotes, safe for any content.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    fn cmssw() -> Cmssw {
        Cmssw {
            release: "CMSSW_13_0_13".to_owned(),
            scram_arch: "el8_amd64_gcc11".to_owned(),
        }
    }

    fn fixture(root: &Path, scram_fails: bool) {
        hepbatch_tests::fixtures::cms_repository(root, scram_fails).expect("fixture");
    }

    /// Runs `script` as a shard would (`bash -euo pipefail -c`), with the fixture in place
    /// of `/cvmfs/cms.cern.ch`.
    fn run(script: &str, cms: &Path, work: &Path, args: &[&str]) -> std::process::Output {
        let script = script.replace(
            CMSSET_DEFAULT,
            &cms.join("cmsset_default.sh").display().to_string(),
        );
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script, "hepbatch"])
            .args(args)
            .current_dir(work)
            .env_remove("SCRAM_ARCH")
            .output()
            .expect("bash runs")
    }

    #[test]
    fn generated_script_sets_up_the_release_and_runs_the_user_script_in_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cms, work) = (dir.path().join("cms"), dir.path().join("work"));
        fixture(&cms, false);
        std::fs::create_dir_all(&work).expect("mkdir");
        let script = with_script(
            &cmssw(),
            "echo \"$SCRAM_ARCH $CMSSW_VERSION $CMSSW_RUNTIME $(pwd)\"",
        );
        let output = run(&script, &cms, &work, &[]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let expected_dir = work.join("CMSSW_13_0_13/src");
        assert_eq!(
            stdout.trim(),
            format!(
                "el8_amd64_gcc11 CMSSW_13_0_13 ok {}",
                expected_dir.display()
            )
        );
        // A second run reuses the release area.
        assert!(run(&script, &cms, &work, &[]).status.success());
    }

    #[test]
    fn command_form_execs_the_arguments() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cms, work) = (dir.path().join("cms"), dir.path().join("work"));
        fixture(&cms, false);
        std::fs::create_dir_all(&work).expect("mkdir");
        let output = run(
            &with_command(&cmssw()),
            &cms,
            &work,
            &["sh", "-c", "echo $CMSSW_VERSION; exit 7"],
        );
        assert_eq!(output.status.code(), Some(7));
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "CMSSW_13_0_13"
        );
    }

    #[test]
    fn a_failing_scram_fails_the_shard_before_the_user_script() {
        let dir = tempfile::tempdir().expect("tmp");
        let (cms, work) = (dir.path().join("cms"), dir.path().join("work"));
        fixture(&cms, true);
        std::fs::create_dir_all(&work).expect("mkdir");
        let output = run(&with_script(&cmssw(), "echo user-ran"), &cms, &work, &[]);
        assert_eq!(output.status.code(), Some(3));
        assert!(!String::from_utf8_lossy(&output.stdout).contains("user-ran"));
    }

    #[test]
    fn a_missing_cms_repository_is_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let output = run(
            &with_script(&cmssw(), "echo user-ran"),
            &dir.path().join("absent"),
            dir.path(),
            &[],
        );
        assert_eq!(output.status.code(), Some(127));
        assert!(String::from_utf8_lossy(&output.stderr).contains("is /cvmfs/cms.cern.ch mounted?"));
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
