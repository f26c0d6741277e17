//! Prints the `AnalysisJob` CustomResourceDefinition as YAML:
//! `cargo run -p hepbatch-crds --bin crdgen > crds/analysisjob.yaml`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match hepbatch_crds::analysis_job::crd_yaml() {
        Ok(yaml) => match std::io::stdout().write_all(yaml.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("cannot write the CRD: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("cannot serialize the CRD: {error}");
            ExitCode::FAILURE
        }
    }
}
