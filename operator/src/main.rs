//! `hepbatch-operator`: see the library's [`cli`](hepbatch_operator::cli) for the flags and
//! [`process`](hepbatch_operator::process) for what runs.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hepbatch_operator::process::main(hepbatch_operator::cli::Args::parse())
}
