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
use conveyor_core::config::{self, Config, ConfigError};
use conveyor_core::event::ConveyorEvent;
use conveyor_core::event::StepName;
use conveyor_core::inbound::{Origin, StartRequest};
use conveyor_core::names::TableRef;
use conveyor_core::ports::RunLogRow;
use conveyor_core::run_state::RunState;
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
    /// When it started: the runs and arrivals it waits for are the ones since.
    started: chrono::DateTime<Utc>,
    /// When the watcher has had one interval to notice what the buckets hold.
    watched_from: Instant,
    /// Whether it watches the buckets: then open windows and folders waiting for their
    /// marker are work it waits for.
    watch: bool,
    /// The runs it waits for (`trigger`, `backfill`): its own; `None`, every run since it
    /// started (`conveyor run`).
    scope: Option<RunScope>,
}

/// The runs a command started: one pipeline's runs for some run dates (a dated trigger, a
/// backfill), or its runs since the command began (an undated trigger).
#[derive(Debug, Clone)]
pub(crate) struct RunScope {
    /// The pipeline.
    pub(crate) pipeline: String,
    /// The run dates (`YYYY-MM-DD`); empty: any.
    pub(crate) dates: std::collections::BTreeSet<String>,
    /// Only runs with a row written since then.
    pub(crate) since: Option<chrono::DateTime<Utc>>,
    /// Only this run.
    pub(crate) run: Option<String>,
}

impl RunScope {
    /// Whether `row` belongs to one of the runs in scope.
    pub(crate) fn holds(&self, row: &RunLogRow) -> bool {
        row.pipeline.as_deref() == Some(self.pipeline.as_str())
            && self.run.as_ref().is_none_or(|r| *r == row.run_id)
            && (self.dates.is_empty()
                || row
                    .run_date
                    .as_ref()
                    .is_some_and(|d| self.dates.contains(d)))
    }

    /// The run-log query for the scope's pipeline and run-date range (what [`Self::holds`]
    /// then narrows to the runs in scope).
    pub(crate) fn query(&self) -> conveyor_core::ports::RunLogQuery {
        let date = |d: Option<&String>| {
            d.and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        };
        conveyor_core::ports::RunLogQuery {
            pipeline: Some(self.pipeline.clone()),
            date_from: date(self.dates.first()),
            date_to: date(self.dates.last()),
            ..conveyor_core::ports::RunLogQuery::default()
        }
    }
}

/// How often the session checks whether the work is done.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// How often the session's watcher scans for files that hold still.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How a session's wait ended.
#[derive(Debug, Default)]
pub(crate) struct Waited {
    /// Every run ended and nothing waits.
    pub(crate) done: bool,
    /// What still waits (open windows, folders without their marker), one line each.
    pub(crate) waiting: Vec<String>,
    /// Runs not ended, one line each.
    pub(crate) open_runs: Vec<String>,
}

impl Session {
    /// Opens the embedded state and starts the runtime (no schedules; `watch`: load the files
    /// that are or arrive in the buckets).
    pub(crate) fn start(
        config: Arc<Config>,
        state_dir: &Path,
        watch: bool,
    ) -> anyhow::Result<Self> {
        let started = Utc::now() - chrono::Duration::seconds(1);
        let mut embedded = crate::embedded::open(config, state_dir)?;
        let ctx = embedded.context();
        let probe = embedded.quiet_probe();
        let events = embedded.events();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let options = RuntimeOptions {
            watch_interval: WATCH_INTERVAL,
            // Batches are checked and windows closed on each tick.
            tick_interval: Duration::from_millis(100),
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
            started,
            watched_from: Instant::now() + WATCH_INTERVAL * 2,
            watch,
            scope: None,
        })
    }

    /// Waits only for the runs of `scope` (and what is in flight on the bus).
    pub(crate) fn only(&mut self, scope: RunScope) {
        self.scope = Some(scope);
    }

    /// Waits until the work is done or `timeout`, showing progress for `expected` loads. Done
    /// means, read from the bus and the run log, not from a quiet period: no event or arrival
    /// in flight, no open batch, every run since the session started ended, and (when it
    /// watches the buckets) no window open and no folder waiting for its marker. What still
    /// waits at the timeout is returned (and printed).
    pub(crate) async fn wait(&mut self, timeout: Duration, expected: usize) -> Waited {
        println!(
            "waiting for the runs to finish (timeout {})...",
            humantime::format_duration(timeout)
        );
        let mut out = ChainOutput::new(expected);
        let began = Instant::now();
        let deadline = began + timeout;
        // Done twice in a row: an arrival between the watcher and the dispatcher is counted
        // by neither for an instant.
        let mut done_before = false;
        let mut last = Waited::default();
        loop {
            loop {
                match self.events.try_recv() {
                    Ok(e) => out.event(&e),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            if Instant::now() >= self.watched_from {
                last = self.check().await;
                if last.done && done_before {
                    break;
                }
                done_before = last.done;
            }
            if Instant::now() > deadline {
                break;
            }
            out.tick(self.probe.pending());
            tokio::time::sleep(CHECK_EVERY).await;
        }
        out.finish();
        if last.done {
            println!("done in {:.2}s", began.elapsed().as_secs_f64());
        } else {
            println!(
                "timed out after {} with work still waiting:",
                humantime::format_duration(timeout)
            );
            for line in last.waiting.iter().chain(&last.open_runs) {
                println!("  {line}");
            }
            if last.waiting.is_empty() && last.open_runs.is_empty() {
                println!("  events or arrivals still in flight (see `conveyor status`)");
            }
        }
        last
    }

    /// Whether the work is done now, and what waits.
    async fn check(&self) -> Waited {
        let mut waited = Waited::default();
        // With a scope, what is in flight on the bus, and the scope's own runs below (a run
        // with an open batch has not ended); without, every open batch of the run log too.
        // An open batch of another run (a downstream pipeline's, one a killed process left
        // RUNNING) is not this command's to wait for.
        let quiet = if self.scope.is_some() {
            self.probe.pending() == 0
        } else {
            self.probe.is_quiet().await.unwrap_or(false)
        };
        if !quiet {
            return waited;
        }
        let mut rows: Vec<RunLogRow> = Vec::new();
        for t in conveyor_console::runs::run_log_tables(&self.ctx.config) {
            match self.ctx.ports.run_log.recent(&t, 10_000).await {
                Ok(r) => rows.extend(r),
                Err(conveyor_core::ports::PortError::NotFound(_)) => {}
                Err(e) => {
                    waited
                        .open_runs
                        .push(format!("cannot read the run log {t}: {e}"));
                    return waited;
                }
            }
        }
        match &self.scope {
            // The scope's runs, whenever they started: their rows since the session began
            // say whether what it started (or adopted) ended.
            Some(scope) => {
                let open: std::collections::BTreeSet<String> = rows
                    .iter()
                    .filter(|r| scope.holds(r) && r.last_modified_at >= self.started)
                    .map(|r| r.run_id.clone())
                    .collect();
                rows.retain(|r| open.contains(&r.run_id));
            }
            None => rows.retain(|r| r.last_modified_at >= self.started),
        }
        for (run_id, state) in RunState::by_run(&rows) {
            if !state.ended() {
                waited
                    .open_runs
                    .push(format!("run {run_id} is {}", state.status));
            }
        }
        if self.watch {
            match steps::waiting_loads(&self.ctx).await {
                Ok(w) => waited.waiting = w,
                Err(e) => waited.waiting.push(format!("cannot read the buckets: {e}")),
            }
        }
        waited.done = waited.open_runs.is_empty() && waited.waiting.is_empty();
        waited
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
            date: None,
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
    let waited = session.wait(timeout, staged).await;
    let embedded = session.stop().await?;
    report(&embedded, &config, started, &waited).await
}

async fn report(
    embedded: &Embedded,
    config: &Config,
    since: chrono::DateTime<Utc>,
    waited: &Waited,
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
    let failed = RunState::by_run(&rows)
        .values()
        .filter(|s| s.failed())
        .count();
    if failed > 0 {
        println!("{failed} run(s) did not succeed");
        return Ok(ExitCode::FAILURE);
    }
    if !waited.done {
        println!(
            "not done: {} thing(s) still wait at the timeout (listed above)",
            waited.waiting.len() + waited.open_runs.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("every run SUCCEEDED");
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn dev(
    config_path: &Path,
    state_dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let mut embedded = crate::embedded::open(config.clone(), state_dir)?;
    // On the operator's own machine: the local user may re-run and mark jobs succeeded from
    // the console (behind IAP, the console service asks for an allow-list).
    let operator = format!(
        "{} (conveyor dev)",
        std::env::var("USER").unwrap_or_else(|_| "local user".to_owned())
    );
    let operators = conveyor_console::actions::Operators::new(
        std::sync::Arc::new(conveyor_console::actions::Fixed(operator.clone())),
        vec![operator],
        std::sync::Arc::new(conveyor_console::actions::Steps(embedded.context())),
    );
    let console =
        conveyor_console::Console::new(embedded.context().ports.run_log, Some(config.clone()))
            .with_title(format!("embedded · {}", state_dir.display()))
            .with_operators(operators)
            .with_lineage_file(state_dir.join("lineage.jsonl"));
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
    let result = match conveyor_service::bind(listen).await {
        Ok(listener) => {
            conveyor_service::serve(
                listener,
                router,
                conveyor_service::shutdown_signal(),
                conveyor_service::ServeOptions::default(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let _ = stop_tx.send(());
    let _ = runtime.await;
    steps.abort();
    result.context("the dev server failed")?;
    Ok(ExitCode::SUCCESS)
}
