//! `conveyor drain RUN`: stops a run's streaming Dataflow job gracefully (Dataflow finishes
//! what it has read, then ends `JOB_STATE_DRAINED`). A streaming job succeeds once it has
//! settled and is then left running: this is how it is stopped.
#![allow(clippy::print_stdout)] // the command's report

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use conveyor_core::config::BatchSpec;
use conveyor_core::names::JobId;
use conveyor_core::ports::{BatchEngine as _, RunLogQuery};
use conveyor_gcp::{Gcp, GcpSettings};

use crate::runlog::RunLogArgs;

/// Options of `conveyor drain`.
#[derive(Debug, Args)]
pub(crate) struct DrainArgs {
    /// The run whose streaming job to drain (its id, as `conveyor status` shows it).
    run: String,
    /// The job to drain (`jobs[].name`); default: the run's one streaming job.
    #[arg(long)]
    job: Option<String>,
    #[command(flatten)]
    log: RunLogArgs,
    /// Dataflow's API root (a local fake in tests).
    #[arg(long, env = "CONVEYOR_DATAFLOW_ENDPOINT", hide = true)]
    dataflow_endpoint: Option<String>,
}

/// Finds the run's streaming job in the run log and the pipeline file, and asks Dataflow to
/// drain it.
pub(crate) async fn drain(
    config_path: &Path,
    state_dir: &Path,
    args: &DrainArgs,
) -> anyhow::Result<ExitCode> {
    let config = crate::runlog::optional_config(config_path)?.with_context(|| {
        format!(
            "{} not found: drain reads the job's engine settings from the pipeline file",
            config_path.display()
        )
    })?;
    let opened = args.log.open(Some(&config), state_dir).await?;
    let mut rows = Vec::new();
    for table in &opened.tables {
        let query = RunLogQuery {
            run_id: Some(args.run.clone()),
            ..RunLogQuery::default()
        };
        rows.extend(
            opened
                .run_log
                .rows(table, &query)
                .await
                .map_err(|e| anyhow::anyhow!("reading {table} in {}: {e}", opened.place))?,
        );
    }
    let Some(pipeline_name) = rows.iter().find_map(|r| r.pipeline.clone()) else {
        anyhow::bail!(
            "no run {} in the run log ({} in {})",
            args.run,
            opened.table_names(),
            opened.place
        );
    };
    let pipeline = config
        .pipelines
        .iter()
        .find(|p| p.name.as_str() == pipeline_name)
        .with_context(|| {
            format!(
                "run {} is of pipeline {pipeline_name}, which {} does not hold",
                args.run,
                config_path.display()
            )
        })?;
    let streaming: Vec<_> = pipeline
        .jobs
        .iter()
        .filter(|j| matches!(&j.spec, BatchSpec::DataflowFlex(d) if d.streaming))
        .filter(|j| args.job.as_deref().is_none_or(|n| j.name.as_str() == n))
        .collect();
    let job = match streaming.as_slice() {
        [job] => job,
        [] => anyhow::bail!(
            "pipeline {pipeline_name} has no streaming job{}: only a `dataflow_flex` job with \
             `streaming: true` drains (cancel a batch job instead)",
            args.job
                .as_deref()
                .map(|j| format!(" called {j}"))
                .unwrap_or_default()
        ),
        _ => anyhow::bail!(
            "pipeline {pipeline_name} has several streaming jobs: name one with --job"
        ),
    };
    // The newest attempt's batch job id of that job.
    let job_id = rows
        .iter()
        .filter(|r| r.job.as_deref() == Some(job.name.as_str()))
        .max_by_key(|r| (r.attempt, r.td_timestamp))
        .and_then(|r| r.dataproc_job_id.clone())
        .with_context(|| format!("run {} never submitted job {}", args.run, job.name))?;
    let job_id = JobId::parse(&job_id).map_err(|e| anyhow::anyhow!("job id {job_id}: {e}"))?;
    let BatchSpec::DataflowFlex(spec) = &job.spec else {
        anyhow::bail!("job {} is not a Dataflow job", job.name);
    };
    conveyor_gcp::install_crypto_provider();
    let settings = GcpSettings {
        project: spec.project.clone(),
        events_topic: String::new(),
        bigquery_location: None,
        pubsub_endpoint: None,
        gcs_endpoint: "https://storage.googleapis.com".to_owned(),
        bigquery_endpoint: None,
        secretmanager_endpoint: "https://secretmanager.googleapis.com".to_owned(),
        bigquery_emulator: false,
        anonymous: args.log.anonymous,
        dataproc_endpoint: None,
        dataflow_endpoint: args.dataflow_endpoint.clone(),
        http_timeout: conveyor_gcp::rest::REQUEST_TIMEOUT,
    };
    let gcp = Gcp::connect(settings).context("Google Cloud credentials")?;
    let engines = gcp.engines().map_err(|e| anyhow::anyhow!("{e}"))?;
    engines
        .drain(&job.spec, &job_id)
        .await
        .map_err(|e| anyhow::anyhow!("draining job {} ({job_id}): {e}", job.name))?;
    println!(
        "drain requested: job {} of run {} (Dataflow job {}, project {}, region {}); it \
         finishes what it has read, then ends JOB_STATE_DRAINED",
        job.name,
        args.run,
        job_id.as_str().replace('_', "-"),
        spec.project,
        spec.region
    );
    Ok(ExitCode::SUCCESS)
}
