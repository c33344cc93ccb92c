//! `conveyor`: validate pipeline files, run pipelines on this machine, start, backfill and
//! replay them, and show the run log (embedded or production) and the web console.

mod commands;
mod drain;
mod embedded;
mod operate;
mod progress;
mod replay;
mod runlog;
mod schedules;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Conveyor runs GCP data pipelines without a central orchestrator. Locally, the same steps
/// run on embedded adapters: a directory per bucket, SQLite as warehouse, local processes as
/// batches.
#[derive(Parser)]
#[command(name = "conveyor", version, about, long_about = None)]
struct Cli {
    /// The pipeline configuration file (YAML or JSON).
    #[arg(
        long,
        short,
        global = true,
        env = "CONVEYOR_CONFIG",
        default_value = "conveyor.yaml"
    )]
    config: PathBuf,
    /// Where the embedded mode keeps buckets, the warehouse and batch jobs.
    #[arg(
        long,
        global = true,
        env = "CONVEYOR_STATE_DIR",
        default_value = ".conveyor"
    )]
    state_dir: PathBuf,
    /// Log filter, e.g. `info` or `conveyor=debug`.
    #[arg(long, global = true, env = "CONVEYOR_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file and report every error in one pass, once each, as
    /// `file:line:col: path: message` on stderr (exit status 1 when there is any): unknown or
    /// misspelt keys and values, types, durations, names, Cloud Scheduler's cron dialect and
    /// IANA time zones, placeholders, engines' fields, `after` cycles.
    Validate {
        /// The file to check (default: --config).
        file: Option<PathBuf>,
        /// `text` (one line per error on stderr) or `json` (one document on stdout).
        #[arg(long, value_enum, default_value = "text")]
        format: commands::ValidateFormat,
        /// Also check that the file can run where it is deployed: `gcp` refuses `engine:
        /// local` batches and local stage sources (Terraform's deployment procedure runs it).
        #[arg(long = "for", value_enum)]
        target: Option<commands::DeployFor>,
        /// With `--for gcp`: the deployment's landing bucket (Terraform's `landing_bucket`);
        /// every stage and object trigger must name it, as only its arrivals start loads.
        #[arg(long, requires = "target")]
        landing_bucket: Option<String>,
    },
    /// Print the pipeline file's JSON Schema (for editors: completion, hover docs, inline
    /// errors). `examples/conveyor.schema.json` is a copy of it.
    Schema,
    /// Stage every active pipeline's source, run the chain until every run has finished, then
    /// print loaded row counts and the run log.
    Run {
        /// Give up waiting after this long (e.g. `2m`).
        #[arg(long, default_value = "5m", value_parser = humantime_duration)]
        timeout: std::time::Duration,
    },
    /// Keep the pipelines running: watch the buckets, fire schedules, poll batches, and serve
    /// the five functions over HTTP for `curl`.
    Dev {
        /// Address of the HTTP server (`/stage`, `/load`, `/submit`, `/poll`, `/log`).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Copy one pipeline's source into its landing bucket (incremental), then run the chain
    /// until its runs finish.
    Stage {
        /// The pipeline.
        pipeline: String,
        /// Copy every object, even unchanged ones.
        #[arg(long)]
        full: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "5m", value_parser = humantime_duration)]
        timeout: std::time::Duration,
    },
    /// Print the Cloud Scheduler jobs the file asks for (one per active scheduled pipeline),
    /// as JSON for Terraform.
    Schedules {
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: schedules::Format,
        /// Shorthand for `--format tfvars`: `{"schedules": [...]}`, for
        /// `infra/schedules.auto.tfvars.json`.
        #[arg(long, conflicts_with = "format")]
        tfvars: bool,
    },
    /// Show the run log: one row per run (pipeline, latest status, started, duration, error),
    /// or every transition with --events. Reads production (BigQuery) with --project or
    /// CONVEYOR_PROJECT, else the embedded state; needs no pipeline file.
    Status(status::StatusArgs),
    /// Start one run of a pipeline now: its stage, else its batch (for an object-triggered
    /// pipeline: re-announce the objects of --date). Embedded, or a deployed function with
    /// --remote.
    Trigger(operate::TriggerArgs),
    /// One idempotent run per date from --from to --to (inclusive), like `airflow dags
    /// backfill`: a date that already ran is adopted, not run again.
    Backfill(operate::BackfillArgs),
    /// Re-run an ended run from its failed job (or --from JOB): a new attempt of that job and
    /// of the jobs after it, keeping the run, its run date and the jobs that succeeded.
    Rerun(operate::RerunArgs),
    /// Record that a job of an ended run counts as succeeded (an operator's decision, with a
    /// reason): the jobs after it then run, or the run ends SUCCEEDED.
    MarkSuccess(operate::MarkSuccessArgs),
    /// Pause a pipeline without a redeploy: it starts nothing (ticks, manual starts, stages,
    /// arrivals are skipped) until `conveyor resume`. Recorded in the run log.
    Pause(operate::PauseArgs),
    /// Resume a paused pipeline.
    Resume(operate::PauseArgs),
    /// Show the messages in the dead-letter subscription and re-publish the chosen ones once,
    /// recording each replay in the run log.
    Replay(replay::ReplayArgs),
    /// Stop a run's streaming Dataflow job gracefully (`streaming: true`): Dataflow finishes
    /// what it has read, then ends JOB_STATE_DRAINED. Reads the run log as `status` does.
    Drain(drain::DrainArgs),
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    conveyor_service::telemetry::init(conveyor_service::telemetry::LogFormat::Text, &cli.log);
    let result = match cli.command {
        Command::Validate {
            file,
            format,
            target,
            landing_bucket,
        } => {
            let config = file.as_deref().unwrap_or(&cli.config);
            target
                .map(|t| commands::deploy_target(t, landing_bucket.as_deref()))
                .transpose()
                .and_then(|deploy| commands::validate(config, format, deploy.as_ref()))
        }
        Command::Schema => commands::schema(),
        Command::Run { timeout } => {
            commands::run(&cli.config, &cli.state_dir, None, false, timeout).await
        }
        Command::Stage {
            pipeline,
            full,
            timeout,
        } => commands::run(&cli.config, &cli.state_dir, Some(&pipeline), full, timeout).await,
        Command::Dev { listen } => commands::dev(&cli.config, &cli.state_dir, listen).await,
        Command::Schedules { format, tfvars } => schedules::schedules(
            &cli.config,
            if tfvars {
                schedules::Format::Tfvars
            } else {
                format
            },
        ),
        Command::Status(args) => status::status(&cli.config, &cli.state_dir, &args).await,
        Command::Trigger(args) => operate::trigger(&cli.config, &cli.state_dir, &args).await,
        Command::Backfill(args) => operate::backfill(&cli.config, &cli.state_dir, &args).await,
        Command::Rerun(args) => operate::rerun(&cli.config, &cli.state_dir, &args).await,
        Command::Pause(args) => operate::pause(&cli.config, &cli.state_dir, &args, true).await,
        Command::Resume(args) => operate::pause(&cli.config, &cli.state_dir, &args, false).await,
        Command::MarkSuccess(args) => {
            operate::mark_success(&cli.config, &cli.state_dir, &args).await
        }
        Command::Replay(args) => replay::replay(&cli.config, &args).await,
        Command::Drain(args) => drain::drain(&cli.config, &cli.state_dir, &args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Output piped into a reader that stops early (`conveyor status | head`) ends the command
/// quietly, as other command-line tools do, instead of printing a panic: Rust ignores SIGPIPE,
/// so `println!` panics on the closed pipe. Exits with 141 (128 + SIGPIPE), the status a
/// shell shows for a tool killed by it.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
