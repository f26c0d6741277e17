//! `hepbatch-operator`: see the library's [`cli`](hepbatch_operator::cli) for the flags.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    hepbatch_operator::cli::main(hepbatch_operator::cli::Args::parse())
}
