//! The CLI's commands. Output for people goes to stdout; logs go to stderr.
#![allow(clippy::print_stdout)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use conveyor_console::runs::retry_pending;
use conveyor_core::config::{self, Config, ConfigError};
use conveyor_core::event::ConveyorEvent;
use conveyor_core::event::StepName;
use conveyor_core::inbound::{Origin, StartRequest};
use conveyor_core::names::TableRef;
use conveyor_core::ports::RunLogRow;
use conveyor_core::steps::StageProgress;
use conveyor_core::steps::{self, Outcome};
use conveyor_embedded::runtime::{Embedded, QuietProbe, RuntimeOptions};
use tokio::sync::broadcast;

use crate::progress::{ChainOutput, StageOutput};

/// How `conveyor validate` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ValidateFormat {
    /// One line per error on stderr, `file:line:col: path: message`.
    Text,
    /// One JSON document on stdout: `{"file", "ok", "pipelines", "errors": [{"file", "line",
    /// "column", "path", "message"}]}`.
    Json,
}

/// Where `conveyor validate --for` checks that a file can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DeployFor {
    /// The Cloud Run functions that `infra/` deploys.
    Gcp,
}

/// The deployment `--for` and `--landing-bucket` describe.
pub(crate) fn deploy_target(
    target: DeployFor,
    landing_bucket: Option<&str>,
) -> anyhow::Result<config::DeployTarget> {
    let DeployFor::Gcp = target;
    let landing_bucket = landing_bucket
        .map(|b| {
            conveyor_core::names::BucketName::parse(b)
                .map_err(|e| anyhow::anyhow!("--landing-bucket: {e}"))
        })
        .transpose()?;
    Ok(config::DeployTarget { landing_bucket })
}

/// Checks `file`, reporting every error in one pass; exit status 1 when there is any. With
/// `deploy`, a valid file is also checked against what the deployment can run.
pub(crate) fn validate(
    file: &Path,
    format: ValidateFormat,
    deploy: Option<&config::DeployTarget>,
) -> anyhow::Result<ExitCode> {
    let name = file.display().to_string();
    let (config, issues) = match config::load_file(file) {
        Ok(c) => {
            let issues = deploy
                .map(|d| config::deployment_issues(&c, d))
                .unwrap_or_default();
            (Some(c), issues)
        }
        Err(ConfigError::Invalid { issues, .. }) => (None, issues),
        Err(e @ ConfigError::Read { .. }) => {
            let message = format!("{:#}", anyhow::Error::from(e));
            (
                None,
                vec![config::ConfigIssue {
                    path: "(file)".to_owned(),
                    line: None,
                    column: None,
                    message,
                }],
            )
        }
        Err(e) => return Err(e.into()),
    };
    match format {
        ValidateFormat::Json => {
            let errors: Vec<serde_json::Value> = issues
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "file": name,
                        "line": i.line,
                        "column": i.column,
                        "path": i.path,
                        "message": i.message,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "file": name,
                "ok": issues.is_empty(),
                "pipelines": config.as_ref().map(|c| c.pipelines.len()),
                "errors": errors,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        ValidateFormat::Text => match &config {
            Some(c) if issues.is_empty() => {
                let active = c.pipelines.iter().filter(|p| p.active).count();
                println!(
                    "{name}: ok, {} pipeline(s), {active} active",
                    c.pipelines.len()
                );
            }
            _ => {
                for i in &issues {
                    eprintln!("{name}:{i}");
                }
                eprintln!("{name}: {} error(s)", issues.len());
            }
        },
    }
    Ok(if issues.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints the pipeline file's JSON Schema.
pub(crate) fn schema() -> anyhow::Result<ExitCode> {
    print!("{}", config::json_schema_text());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn load_config(path: &Path) -> anyhow::Result<Arc<Config>> {
    match config::load_file(path) {
        Ok(c) => Ok(Arc::new(c)),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// The embedded runtime running in the background, with what the CLI needs to follow it.
pub(crate) struct Session {
    pub(crate) ctx: conveyor_core::steps::Context,
    probe: QuietProbe,
    events: broadcast::Receiver<ConveyorEvent>,
    stop: tokio::sync::oneshot::Sender<()>,
    runner: tokio::task::JoinHandle<Embedded>,
}

impl Session {
    /// Opens the embedded state and starts the runtime (no schedules; `watch`: load the files
    /// that are or arrive in the buckets).
    pub(crate) fn start(
        config: Arc<Config>,
        state_dir: &Path,
        watch: bool,
    ) -> anyhow::Result<Self> {
        let mut embedded = crate::embedded::open(config, state_dir)?;
        let ctx = embedded.context();
        let probe = embedded.quiet_probe();
        let events = embedded.events();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let options = RuntimeOptions {
            watch_interval: Duration::from_millis(200),
            tick_interval: Duration::from_millis(500),
            watch_buckets: watch,
            ..RuntimeOptions::default()
        };
        let runner = tokio::spawn(async move {
            embedded
                .run(options, async {
                    let _ = stop_rx.await;
                })
                .await;
            embedded
        });
        Ok(Self {
            ctx,
            probe,
            events,
            stop,
            runner,
        })
    }

    /// Waits until nothing is in flight (or `timeout`), showing progress for `expected`
    /// loads. Returns whether everything finished.
    pub(crate) async fn wait(&mut self, timeout: Duration, expected: usize) -> bool {
        println!(
            "waiting for the runs to finish (timeout {})...",
            humantime::format_duration(timeout)
        );
        let mut out = ChainOutput::new(expected);
        let deadline = Instant::now() + timeout;
        let mut quiet_since: Option<Instant> = None;
        let settled = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            loop {
                match self.events.try_recv() {
                    Ok(e) => out.event(&e),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            let quiet = self.probe.is_quiet().await.unwrap_or(false);
            match (quiet, quiet_since) {
                (true, None) => quiet_since = Some(Instant::now()),
                (true, Some(t)) if t.elapsed() >= Duration::from_millis(1500) => break true,
                (false, _) => quiet_since = None,
                _ => {}
            }
            if Instant::now() > deadline {
                break false;
            }
            out.tick(self.probe.pending());
        };
        out.finish();
        if !settled {
            println!("timed out waiting; some runs are still open (see `conveyor status`)");
        }
        settled
    }

    /// Stops the runtime.
    pub(crate) async fn stop(self) -> anyhow::Result<Embedded> {
        let _ = self.stop.send(());
        self.runner.await.context("runtime task failed")
    }
}

/// Whether some active pipeline loads what `p` stages (the loads to wait for).
pub(crate) fn loads_from(config: &Config, p: &conveyor_core::config::Pipeline) -> bool {
    let Some(stage) = &p.stage else {
        return false;
    };
    config.pipelines.iter().any(|q| {
        q.active
            && q.load.is_some()
            && q.trigger
                .object
                .as_ref()
                .is_some_and(|o| o.bucket == stage.bucket)
    })
}

pub(crate) async fn run(
    config_path: &Path,
    state_dir: &Path,
    only: Option<&str>,
    full: bool,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    if let Some(name) = only {
        anyhow::ensure!(
            config.pipeline(name).is_some(),
            "no pipeline {name:?} in {}",
            config_path.display()
        );
    }
    let mut session = Session::start(config.clone(), state_dir, true)?;
    let ctx = session.ctx.clone();
    let started = Utc::now();
    let mut staged = 0;
    for p in config
        .pipelines
        .iter()
        .filter(|p| p.active && p.stage.is_some())
    {
        if only.is_some_and(|n| n != p.name.as_str()) {
            continue;
        }
        println!("stage {}:", p.name);
        let start = StartRequest {
            pipeline: Some(p.name.clone()),
            origin: Origin::Manual,
            at: started,
            key: Some(format!("cli-{}", started.timestamp())),
        };
        let mut outcome = Outcome::default();
        let mut output = StageOutput::new();
        let mut progress = |p: &StageProgress| output.report(p);
        let report = steps::stage_pipeline(&ctx, p, &start, full, &mut outcome, &mut progress)
            .await
            .map_err(|e| crate::operate::step_failed(&format!("stage {}", p.name), e))?;
        // The step's last progress line is the summary (counts, bytes, MB/s).
        if loads_from(&config, p) {
            staged += report.copied.len();
        }
        if !report.failed.is_empty() {
            println!(
                "  {} object(s) failed (listed above); the next run tries them again",
                report.failed.len()
            );
        }
    }
    session.wait(timeout, staged).await;
    let embedded = session.stop().await?;
    report(&embedded, &config, started).await
}

async fn report(
    embedded: &Embedded,
    config: &Config,
    since: chrono::DateTime<Utc>,
) -> anyhow::Result<ExitCode> {
    let ctx = embedded.context();
    let mut rows: Vec<RunLogRow> = Vec::new();
    for t in embedded.run_log_tables() {
        rows.extend(ctx.ports.run_log.recent(&t, 10_000).await?);
    }
    rows.retain(|r| r.last_modified_at >= since);
    rows.sort_by_key(|r| r.td_timestamp);
    let tables: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.step == StepName::Load.as_str() && r.status == "SUCCEEDED")
        .filter_map(|r| {
            Some(format!(
                "{}.{}",
                r.db_name.as_ref()?,
                r.table_name.as_ref()?
            ))
        })
        .collect();
    println!("\nloaded tables:");
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["table", "rows"]);
    for name in &tables {
        let Ok(table) = TableRef::parse(name) else {
            continue;
        };
        let n = ctx
            .ports
            .warehouse
            .row_count(&table)
            .await
            .map(|n| n.to_string())
            .unwrap_or_else(|e| e.to_string());
        t.add_row([name.clone(), n]);
    }
    println!("{t}");
    println!(
        "(SQLite files in {}; open one with `sqlite3 {}/<dataset>.sqlite`)",
        embedded.warehouse().dir().display(),
        embedded.warehouse().dir().display()
    );
    println!("\nrun log ({}):", config.run_log.table);
    if rows.len() <= 60 {
        println!("{}", crate::status::events_table(&rows));
    } else {
        // Thousands of objects: a count per pipeline and status, and the failed runs.
        let runs = conveyor_console::runs::summarize(&rows);
        let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for r in &runs {
            *counts
                .entry((r.pipeline.clone().unwrap_or_default(), r.status.clone()))
                .or_default() += 1;
        }
        for ((pipeline, status), n) in &counts {
            println!("  {pipeline}: {n} run(s) {status}");
        }
        let failed: Vec<_> = runs.into_iter().filter(|r| r.failed()).collect();
        if !failed.is_empty() {
            println!("{}", crate::status::runs_table(&failed));
        }
        println!(
            "(every transition: `conveyor status --events`, or the console of `conveyor dev`)"
        );
    }
    let failed = rows
        .iter()
        .filter(|r| {
            matches!(r.status.as_str(), "FAILED" | "TIMED_OUT" | "REJECTED") && !retry_pending(r)
        })
        .count();
    if failed > 0 {
        println!("{failed} step(s) did not succeed");
        return Ok(ExitCode::FAILURE);
    }
    println!("every step SUCCEEDED");
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn dev(
    config_path: &Path,
    state_dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let mut embedded = crate::embedded::open(config.clone(), state_dir)?;
    let console =
        conveyor_console::Console::new(embedded.context().ports.run_log, Some(config.clone()))
            .with_title(format!("embedded · {}", state_dir.display()));
    let router = conveyor_core::http::combined_router(embedded.context())
        .merge(conveyor_console::router(console));
    println!(
        "conveyor dev: {} pipeline(s) from {}",
        config.pipelines.len(),
        config_path.display()
    );
    println!(
        "  buckets:   {}/buckets/<bucket>/  (drop files here)",
        state_dir.display()
    );
    println!(
        "  warehouse: {}/warehouse/<dataset>.sqlite",
        state_dir.display()
    );
    println!("  console:   http://{listen}/");
    println!("  http:      http://{listen}/{{stage,load,submit,poll,log}}");
    println!("Ctrl-C to stop. A line per finished step:");
    let steps = tokio::spawn(crate::progress::print_steps(embedded.events()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::spawn(async move {
        embedded
            .run(
                RuntimeOptions {
                    schedules: true,
                    ..RuntimeOptions::default()
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await;
    });
    let result =
        conveyor_core::http::serve(router, listen, conveyor_core::http::shutdown_signal()).await;
    let _ = stop_tx.send(());
    let _ = runtime.await;
    steps.abort();
    result.context("the dev server failed")?;
    Ok(ExitCode::SUCCESS)
}
