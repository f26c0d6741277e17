//! `kubectl-hepbatch`: the kubectl plugin binary (`kubectl hepbatch <command>`).
//!
//! Each command is a short driver: read the flags, fetch the objects through
//! [`hepbatch_cli::cluster`], hand them to the pure module that decides what to print,
//! print it. Exit status: 0 success, 1 a watched AnalysisJob failed, 2 any error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hepbatch_cli::cluster::{ClusterError, Target};
use hepbatch_cli::submit::{self, ItemSource, SubmitError};
use kube::api::{Patch, PatchParams};

/// Field manager of every object this plugin applies.
const FIELD_MANAGER: &str = "kubectl-hepbatch";

/// kubectl hepbatch: submit, follow and inspect AnalysisJobs.
#[derive(Parser, Debug)]
#[command(name = "kubectl hepbatch", version, about)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Translate an HTCondor submit description into an AnalysisJob and apply it (or
    /// print it with --dry-run); every command not translated is a warning on stderr.
    Submit {
        /// The submit description (`-` for standard input).
        file: PathBuf,
        /// Print the AnalysisJob instead of applying it.
        #[arg(long)]
        dry_run: bool,
        /// Output format of --dry-run.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
        /// The AnalysisJob's name (default: batch_name, else the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Platform for descriptions that name no image and no OS (cc7, el8, el9, ...).
        #[arg(long)]
        platform: Option<String>,
    },
}

/// Machine-readable output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{}", .0)]
    Submit(#[from] SubmitError),
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the output")]
    Write(#[source] std::io::Error),
    #[error("serializing the output")]
    Serialize(String),
    #[error("applying analysisjob {name}")]
    Apply {
        name: String,
        #[source]
        source: kube::Error,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            let mut message = format!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Submit {
            file,
            dry_run,
            output,
            name,
            platform,
        } => submit_command(&cli.target, &file, dry_run, output, name, platform).await,
    }
}

fn read_text(path: &Path) -> Result<String, CliError> {
    let read = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|source| CliError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The items of `queue ... from <file>`: non-empty lines, `#` comments skipped, as
/// condor_submit reads them; the file is relative to the submit file's folder.
fn read_items(submit_file: &Path, items: &str) -> Result<Vec<String>, CliError> {
    let base = submit_file.parent().unwrap_or(Path::new("."));
    let path = base.join(items);
    Ok(read_text(&path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

fn print(value: &impl serde::Serialize, format: Format) -> Result<(), CliError> {
    let text = match format {
        Format::Yaml => {
            serde_yaml::to_string(value).map_err(|e| CliError::Serialize(e.to_string()))?
        }
        Format::Json => {
            let mut t = serde_json::to_string_pretty(value)
                .map_err(|e| CliError::Serialize(e.to_string()))?;
            t.push('\n');
            t
        }
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(CliError::Write)
}

async fn submit_command(
    target: &Target,
    file: &Path,
    dry_run: bool,
    output: Format,
    name: Option<String>,
    platform: Option<String>,
) -> Result<ExitCode, CliError> {
    let text = read_text(file)?;
    let description = submit::parse(&text)?;
    let items_file = match &description.queue.items {
        Some(ItemSource::File(items)) => Some(read_items(file, items)?),
        _ => None,
    };
    let fallback_name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut options = submit::Options {
        name,
        fallback_name,
        namespace: None,
        items_file,
        default_platform: platform,
    };
    let connection = if dry_run {
        None
    } else {
        let connection = target.connect().await?;
        options.namespace = Some(connection.namespace.clone());
        Some(connection)
    };
    let translation = submit::translate(&description, &options)?;
    for warning in &translation.warnings {
        eprintln!("warning: {}: {warning}", file.display());
    }
    let mut analysis_job = translation.analysis_job;
    analysis_job.metadata.namespace = options.namespace.clone().or(target.namespace.clone());
    match connection {
        None => print(&analysis_job, output)?,
        Some(connection) => {
            let name = analysis_job.metadata.name.clone().unwrap_or_default();
            connection
                .analysis_jobs()
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Apply(&analysis_job),
                )
                .await
                .map_err(|source| CliError::Apply {
                    name: name.clone(),
                    source,
                })?;
            println!("analysisjob.hepbatch.io/{name} applied");
            println!("follow it with: kubectl hepbatch watch {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
