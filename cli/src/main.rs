//! `kubectl-hepbatch`: the kubectl plugin binary (`kubectl hepbatch <command>`).
//!
//! Each command is a short driver: read the flags, fetch the objects through
//! [`hepbatch_cli::cluster`], hand them to the pure module that decides what to print,
//! print it. Exit status: 0 success, 1 a watched AnalysisJob failed, 2 any error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::IsTerminal;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use hepbatch_cli::attempt::{self, SHARD_CONTAINER};
use hepbatch_cli::cluster::{ClusterError, Connection, Target};
use hepbatch_cli::logs::{self, NoLog, Which};
use hepbatch_cli::progress::{self, Progress};
use hepbatch_cli::resubmit::{self, ResubmitError};
use hepbatch_cli::status;
use hepbatch_cli::submit::{self, ItemSource, SubmitError};
use hepbatch_crds::analysis_job::RESUBMIT_OF_LABEL;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{LogParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

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
    /// Phase, counts and every shard that is not simply done (index, state, attempts,
    /// last exit code and reason, node, duration).
    Status {
        /// The AnalysisJob.
        name: String,
        /// Print the report as JSON or YAML instead of a table.
        #[arg(short = 'o', long, value_enum)]
        output: Option<Format>,
    },
    /// Follow an AnalysisJob until it finishes: exit status 0 when it succeeded, 1 when
    /// it failed. A progress bar at a terminal, one line per change otherwise.
    Watch {
        /// The AnalysisJob.
        name: String,
    },
    /// The log of one shard: its latest attempt, attempt K, or all attempts whose pods
    /// still exist.
    Logs {
        /// The AnalysisJob.
        name: String,
        /// The shard's index.
        #[arg(long)]
        shard: i32,
        /// Attempt K (1 = the first pod of the shard that still exists).
        #[arg(long, conflicts_with = "all_attempts")]
        attempt: Option<u32>,
        /// Every attempt, oldest first, each under a heading.
        #[arg(long)]
        all_attempts: bool,
        /// Keep following the log while the pod runs.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Run shards again, with their original indexes and inputs, as a new AnalysisJob
    /// `<first>-r<N>` linked to this one: the shards that failed for good, or those given.
    #[command(group(ArgGroup::new("which").required(true).args(["failed", "shards"])))]
    Resubmit {
        /// The AnalysisJob.
        name: String,
        /// The shards that failed for good.
        #[arg(long)]
        failed: bool,
        /// These shards, by index: `3,7,12-15`.
        #[arg(long, value_parser = resubmit::parse_shards)]
        shards: Option<resubmit::Which>,
        /// Print the new AnalysisJob instead of creating it.
        #[arg(long)]
        dry_run: bool,
        /// Output format of --dry-run.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// One self-contained HTML page: a timeline bar per shard attempt coloured by
    /// outcome and grouped by node, and the table of failed attempts (`> fleet.html`).
    Report {
        /// The AnalysisJob.
        name: String,
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
    #[error(transparent)]
    NoLog(#[from] NoLog),
    #[error("reading the log of pod {pod}")]
    Log {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Resubmit(#[from] ResubmitError),
    #[error("creating analysisjob {name}")]
    Create {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "{RESUBMIT_NAME_TRIES} names of the form {family}-rN are taken; delete old resubmissions"
    )]
    NamesTaken { family: String },
    #[error("analysisjob {0} was deleted while being watched")]
    Deleted(String),
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
        Command::Status { name, output } => {
            status_command(&cli.target.connect().await?, &name, output).await
        }
        Command::Watch { name } => watch_command(&cli.target.connect().await?, &name).await,
        Command::Logs {
            name,
            shard,
            attempt,
            all_attempts,
            follow,
        } => {
            let which = match (attempt, all_attempts) {
                (Some(k), _) => Which::Attempt(k),
                (None, true) => Which::All,
                (None, false) => Which::Latest,
            };
            logs_command(&cli.target.connect().await?, &name, shard, which, follow).await
        }
        Command::Resubmit {
            name,
            failed: _,
            shards,
            dry_run,
            output,
        } => {
            let which = shards.unwrap_or(resubmit::Which::Failed);
            let connection = cli.target.connect().await?;
            resubmit_command(&connection, &name, &which, dry_run, output).await
        }
        Command::Report { name } => {
            let connection = cli.target.connect().await?;
            let analysis_job = connection.analysis_job(&name).await?;
            let pods = connection.pods(&name).await?;
            let page = hepbatch_cli::report::render(
                &analysis_job,
                &attempt::attempts(&pods, &attempt::numbering(&analysis_job)),
                Timestamp::now(),
            );
            std::io::stdout()
                .write_all(page.as_bytes())
                .map_err(CliError::Write)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Tries at most this many names of a family before giving up on a crowded namespace.
const RESUBMIT_NAME_TRIES: usize = 20;

async fn resubmit_command(
    connection: &Connection,
    name: &str,
    which: &resubmit::Which,
    dry_run: bool,
    output: Format,
) -> Result<ExitCode, CliError> {
    let original = connection.analysis_job(name).await?;
    let job = match which {
        resubmit::Which::Failed => connection.job(name).await?,
        resubmit::Which::Shards(_) => None,
    };
    let shards = resubmit::selection(&original, which, job.as_ref())?;
    let family = resubmit::family(&original);
    let selector = format!("{RESUBMIT_OF_LABEL}={family}");
    let mut taken = connection.analysis_job_names(&selector).await?;
    let mut new_name = resubmit::free_name(&family, &taken);
    for _ in 0..RESUBMIT_NAME_TRIES {
        let analysis_job = resubmit::resubmission(&original, &shards, &new_name);
        if dry_run {
            print(&analysis_job, output)?;
            return Ok(ExitCode::SUCCESS);
        }
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match connection
            .analysis_jobs()
            .create(&params, &analysis_job)
            .await
        {
            Ok(_) => {
                println!(
                    "analysisjob.hepbatch.io/{new_name} created: shards {shards} of {name} again"
                );
                println!("follow it with: kubectl hepbatch watch {new_name}");
                return Ok(ExitCode::SUCCESS);
            }
            // Someone took the name meanwhile: the next one.
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                taken.push(new_name);
                new_name = resubmit::free_name(&family, &taken);
            }
            Err(source) => {
                return Err(CliError::Create {
                    name: new_name,
                    source,
                });
            }
        }
    }
    Err(CliError::NamesTaken { family })
}

async fn status_command(
    connection: &Connection,
    name: &str,
    output: Option<Format>,
) -> Result<ExitCode, CliError> {
    let analysis_job = connection.analysis_job(name).await?;
    let pods = connection.pods(name).await?;
    let attempts = attempt::attempts(&pods, &attempt::numbering(&analysis_job));
    let report = status::report(&analysis_job, &attempts, Timestamp::now());
    match output {
        Some(format) => print(&report, format)?,
        None => std::io::stdout()
            .write_all(status::table(&report).as_bytes())
            .map_err(CliError::Write)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until the pod `name` has left `Pending` (a log can be followed from then on),
/// saying on stderr what it waits for.
async fn wait_until_started(api: &Api<Pod>, name: &str) -> Result<(), CliError> {
    eprintln!("waiting for pod {name} to start ...");
    loop {
        let pod = api.get(name).await.map_err(|source| CliError::Log {
            pod: name.to_owned(),
            source,
        })?;
        let phase = pod.status.and_then(|s| s.phase);
        if phase.as_deref() != Some("Pending") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Follows the AnalysisJob through a watch of it alone; redraws the bar each second so
/// the rate and the time left stay current.
async fn watch_command(connection: &Connection, name: &str) -> Result<ExitCode, CliError> {
    // Fail early, with the usual message, when it does not exist.
    let first = connection.analysis_job(name).await?;
    let terminal = std::io::stdout().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} [{bar:40.green/red}] {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let mut current = Progress::of(&first);
    let mut printed: Option<Progress> = None;
    // Transient errors (an apiserver restart, a dropped connection) are retried with
    // kube's default backoff; the watch only ends with the AnalysisJob.
    let stream = watcher::watch_object(connection.analysis_jobs(), name).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let now = Timestamp::now();
        match &bar {
            Some(bar) => {
                bar.set_length(u64::try_from(current.shards).unwrap_or(0));
                bar.set_position(u64::try_from(current.finished()).unwrap_or(0));
                bar.set_message(current.line(now));
            }
            None if printed != Some(current) => {
                println!("{} {}", now.strftime("%H:%M:%S"), current.line(now));
                printed = Some(current);
            }
            None => {}
        }
        if let Some(succeeded) = progress::outcome(current.phase) {
            if let Some(bar) = &bar {
                bar.finish();
            }
            if !succeeded {
                let failed = connection.analysis_job(name).await?;
                let status = failed.status.unwrap_or_default();
                if let Some(condition) = status.conditions.iter().find(|c| c.type_ == "Failed") {
                    eprintln!("{name} failed: {}: {}", condition.reason, condition.message);
                }
                if let Some(shards) = status.failed_shards {
                    eprintln!("failed shards: {shards} (kubectl hepbatch status {name})");
                }
            }
            return Ok(if succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        tokio::select! {
            event = stream.try_next() => match event {
                Ok(Some(Some(analysis_job))) => current = Progress::of(&analysis_job),
                Ok(Some(None)) | Ok(None) => return Err(CliError::Deleted(name.to_owned())),
                Err(error) => {
                    let message = format!("warning: watching analysisjob {name}: {error}; retrying");
                    match &bar {
                        Some(bar) => bar.println(message),
                        None => eprintln!("{message}"),
                    }
                }
            },
            _ = tick.tick() => {}
        }
    }
}

async fn logs_command(
    connection: &Connection,
    name: &str,
    shard: i32,
    which: Which,
    follow: bool,
) -> Result<ExitCode, CliError> {
    let analysis_job = connection.analysis_job(name).await?;
    let pods = connection.pods(name).await?;
    let attempts = attempt::attempts(&pods, &attempt::numbering(&analysis_job));
    let of_shard = attempts.get(&shard).map(Vec::as_slice).unwrap_or(&[]);
    let selected = logs::select(&analysis_job, shard, of_shard, which)?;
    let api: Api<Pod> = Api::namespaced(connection.client.clone(), &connection.namespace);
    let headings = selected.len() > 1 || which == Which::All;
    let mut stdout = std::io::stdout();
    for attempt in selected {
        if headings {
            writeln!(stdout, "{}", logs::heading(attempt)).map_err(CliError::Write)?;
        }
        let params = LogParams {
            container: Some(SHARD_CONTAINER.to_owned()),
            follow,
            ..LogParams::default()
        };
        let log_error = |source| CliError::Log {
            pod: attempt.pod.clone(),
            source,
        };
        if follow {
            if attempt.state == attempt::AttemptState::Pending {
                wait_until_started(&api, &attempt.pod).await?;
            }
            let mut lines = api
                .log_stream(&attempt.pod, &params)
                .await
                .map_err(log_error)?
                .lines();
            while let Some(line) = lines.next().await {
                let line = line.map_err(CliError::Write)?;
                writeln!(stdout, "{line}").map_err(CliError::Write)?;
            }
        } else {
            let text = api.logs(&attempt.pod, &params).await.map_err(log_error)?;
            stdout.write_all(text.as_bytes()).map_err(CliError::Write)?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
