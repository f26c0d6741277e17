//! Running a selection of a fleet's shards (`spec.shardIndexes`) under their original
//! indexes.
//!
//! The Job runs the `n` selected shards as completions `0..n`, and a pod template is the
//! same for every completion, so no declared variable can hold the original index. The
//! shard's command therefore starts with a bash prologue ([`prologue`]) that turns
//! `$JOB_COMPLETION_INDEX` into the original index with `$HEPBATCH_SHARD_INDEXES` (the
//! normalized selection) and exports what a full fleet's pods get from the kubelet:
//! - `HEPBATCH_SHARD_INDEX`, and `HEPBATCH_INPUT_FILES` naming the original shard's list;
//! - `$(HEPBATCH_SHARD_INDEX)` and `$(HEPBATCH_INPUT_FILES)` keep working where the kubelet
//!   would have expanded them: in the command's arguments and in the user's variables
//!   (the prologue substitutes them), and in a script (shell functions of those names
//!   print the values);
//! - the CMSSW bootstrap runs after the prologue, so `cmsRun` sees the same index.
//!
//! The walk over the selection's runs costs one step per run, at most a few thousand.

use hepbatch_crds::analysis_job::{INPUT_FILES_ENV, SHARD_ENV, SHARD_INDEXES_ENV};
use k8s_openapi::api::core::v1::EnvVar;

use crate::inputs::INPUTS_MOUNT_PATH;

/// `$0` of a plain command run through the prologue.
pub const COMMAND_NAME: &str = "hepbatch-shard";

/// A user variable refers to an index variable but cannot be rewritten by bash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "spec.env {name} refers to $({variable}); with spec.shardIndexes the operator sets it in \
     the shard's shell, so the variable's name must be a shell name (letters, digits, '_')"
)]
pub struct NotAShellName {
    /// The user's variable.
    pub name: String,
    /// The operator's variable it refers to.
    pub variable: &'static str,
}

/// The variables the prologue sets, which the kubelet can no longer expand.
fn index_variables(inputs: bool) -> Vec<&'static str> {
    let mut variables = vec![SHARD_ENV];
    if inputs {
        variables.push(INPUT_FILES_ENV);
    }
    variables
}

/// The prologue for a selection's shards; `inputs` when the shards have input lists,
/// `user_env` the spec's variables. It ends with the positional arguments rewritten, so
/// `exec "$@"` afterwards runs the user's command.
pub fn prologue(inputs: bool, user_env: &[EnvVar]) -> Result<String, NotAShellName> {
    let variables = index_variables(inputs);
    let mut script = format!(
        "# Shard selection (hepbatch): completion index -> the fleet's shard index\n\
         hepbatch_k=$JOB_COMPLETION_INDEX\n\
         for hepbatch_run in ${{{SHARD_INDEXES_ENV}//,/ }}; do\n  \
           hepbatch_first=${{hepbatch_run%-*}}\n  \
           hepbatch_last=${{hepbatch_run#*-}}\n  \
           if (( hepbatch_k <= hepbatch_last - hepbatch_first )); then\n    \
             export {SHARD_ENV}=$(( hepbatch_first + hepbatch_k ))\n    \
             break\n  \
           fi\n  \
           hepbatch_k=$(( hepbatch_k - (hepbatch_last - hepbatch_first + 1) ))\n\
         done\n\
         if [ -z \"${{{SHARD_ENV}:-}}\" ]; then\n  \
           echo \"hepbatch: completion index $JOB_COMPLETION_INDEX is not in \
         {SHARD_INDEXES_ENV}=${SHARD_INDEXES_ENV}\" >&2\n  \
           exit 2\n\
         fi\n\
         unset hepbatch_k hepbatch_run hepbatch_first hepbatch_last\n"
    );
    if inputs {
        script.push_str(&format!(
            "export {INPUT_FILES_ENV}={INPUTS_MOUNT_PATH}/shard-${SHARD_ENV}\n"
        ));
    }
    for variable in &variables {
        script.push_str(&format!(
            "{variable}() {{ printf '%s\\n' \"${variable}\"; }}\n"
        ));
    }
    for var in user_env {
        let refers: Vec<&str> = variables
            .iter()
            .copied()
            .filter(|v| {
                var.value
                    .as_deref()
                    .is_some_and(|x| x.contains(&reference(v)))
            })
            .collect();
        if refers.is_empty() {
            continue;
        }
        if !is_shell_name(&var.name) {
            return Err(NotAShellName {
                name: var.name.clone(),
                variable: refers[0],
            });
        }
        for variable in refers {
            let name = &var.name;
            script.push_str(&format!(
                "{name}={}\nexport {name}\n",
                substitute(name, variable)
            ));
        }
    }
    script.push_str("hepbatch_args=()\nfor hepbatch_arg in \"$@\"; do\n");
    for variable in &variables {
        script.push_str(&format!(
            "  hepbatch_arg={}\n",
            substitute("hepbatch_arg", variable)
        ));
    }
    // `${a[@]+"${a[@]}"}`: an empty array under `set -u` fails in the bash of EL7.
    script.push_str(
        "  hepbatch_args+=(\"$hepbatch_arg\")\n\
         done\n\
         set -- ${hepbatch_args[@]+\"${hepbatch_args[@]}\"}\n\
         unset hepbatch_args hepbatch_arg\n\
         # Shard\n",
    );
    Ok(script)
}

/// `$(NAME)`, the kubelet's reference syntax.
fn reference(variable: &str) -> String {
    format!("$({variable})")
}

/// The bash expansion of `name` with every `$(variable)` replaced by `$variable`, for the
/// right side of an assignment (no word splitting there; the quotes keep the pattern
/// literal and `&` in the value plain).
fn substitute(name: &str, variable: &str) -> String {
    format!("${{{name}//'{}'/\"${variable}\"}}", reference(variable))
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        }
    }

    /// Runs `prologue` + `body` as a shard of completion `completion` would.
    fn run(prologue: &str, body: &str, completion: i32, env: &[EnvVar], args: &[&str]) -> String {
        let output = Command::new("bash")
            .args([
                "-euo",
                "pipefail",
                "-c",
                &format!("{prologue}{body}"),
                COMMAND_NAME,
            ])
            .args(args)
            .env("JOB_COMPLETION_INDEX", completion.to_string())
            .env(SHARD_INDEXES_ENV, "3,7,12-15")
            .envs(
                env.iter()
                    .map(|v| (&v.name, v.value.clone().unwrap_or_default())),
            )
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[test]
    fn every_completion_learns_its_original_index_and_list() {
        let prologue = prologue(true, &[]).expect("prologue");
        let seen: Vec<String> = (0..6)
            .map(|k| {
                run(
                    &prologue,
                    "echo $HEPBATCH_SHARD_INDEX $HEPBATCH_INPUT_FILES",
                    k,
                    &[],
                    &[],
                )
            })
            .collect();
        assert_eq!(
            seen,
            [3, 7, 12, 13, 14, 15].map(|i| format!("{i} /etc/hepbatch/inputs/shard-{i}"))
        );
    }

    #[test]
    fn kubelet_references_keep_their_meaning() {
        let env = [
            var("OUT", "out_$(HEPBATCH_SHARD_INDEX).root"),
            var("PLAIN", "x"),
        ];
        let prologue = prologue(false, &env).expect("prologue");
        // A script with the kubelet's syntax, a variable, and a command's arguments.
        assert_eq!(
            run(
                &prologue,
                "echo $(HEPBATCH_SHARD_INDEX) $OUT $PLAIN",
                1,
                &env,
                &[]
            ),
            "7 out_7.root x"
        );
        assert_eq!(
            run(
                &prologue,
                "exec \"$@\"",
                2,
                &env,
                &["echo", "--index=$(HEPBATCH_SHARD_INDEX)", "a b", ""]
            ),
            "--index=12 a b"
        );
        assert_eq!(run(&prologue, "exec echo \"$#\"", 0, &env, &[]), "0");
    }

    #[test]
    fn a_completion_beyond_the_selection_fails_the_shard() {
        let prologue = prologue(false, &[]).expect("prologue");
        let output = Command::new("bash")
            .args([
                "-euo",
                "pipefail",
                "-c",
                &format!("{prologue}echo ran"),
                COMMAND_NAME,
            ])
            .env("JOB_COMPLETION_INDEX", "6")
            .env(SHARD_INDEXES_ENV, "3,7,12-15")
            .output()
            .expect("bash runs");
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("is not in"));
    }

    #[test]
    fn a_variable_bash_cannot_name_is_refused_when_it_needs_the_index() {
        let env = [var("my.out", "out_$(HEPBATCH_SHARD_INDEX)")];
        assert_eq!(
            prologue(false, &env),
            Err(NotAShellName {
                name: "my.out".to_owned(),
                variable: SHARD_ENV
            })
        );
        assert!(prologue(false, &[var("my.plain", "x")]).is_ok());
    }
}
