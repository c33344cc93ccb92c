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
use conveyor_core::event::StepName;
use conveyor_core::inbound::{Origin, StartRequest};
use conveyor_core::names::TableRef;
use conveyor_core::ports::RunLogRow;
use conveyor_core::steps::{self, Outcome};
use conveyor_embedded::runtime::{Embedded, RuntimeOptions};

pub(crate) fn validate(file: &Path) -> anyhow::Result<ExitCode> {
    match config::load_file(file) {
        Ok(c) => {
            let active = c.pipelines.iter().filter(|p| p.active).count();
            println!(
                "{}: ok, {} pipeline(s), {active} active",
                file.display(),
                c.pipelines.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ ConfigError::Invalid { .. }) => {
            println!("{e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

fn load_config(path: &Path) -> anyhow::Result<Arc<Config>> {
    match config::load_file(path) {
        Ok(c) => Ok(Arc::new(c)),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
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
    let mut embedded = Embedded::open(config.clone(), state_dir)?;
    let ctx = embedded.context();
    let started = Utc::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = RuntimeOptions {
        watch_interval: Duration::from_millis(200),
        tick_interval: Duration::from_millis(500),
        ..RuntimeOptions::default()
    };
    let probe = embedded.quiet_probe();
    let runner = tokio::spawn(async move {
        embedded
            .run(options, async {
                let _ = stop_rx.await;
            })
            .await;
        embedded
    });

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
        let mut progress = |line: &str| println!("  {line}");
        let report = steps::stage_pipeline(&ctx, p, &start, full, &mut outcome, &mut progress)
            .await
            .map_err(|e| anyhow::anyhow!("stage {} failed: {e}", p.name))?;
        // The step's last progress line is the summary (counts, bytes, MB/s).
        if !report.failed.is_empty() {
            println!(
                "  {} object(s) failed (listed above); the next run tries them again",
                report.failed.len()
            );
        }
    }

    println!(
        "waiting for the runs to finish (timeout {})...",
        humantime::format_duration(timeout)
    );
    let deadline = Instant::now() + timeout;
    let mut quiet_since: Option<Instant> = None;
    let mut last_report = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let quiet = probe.is_quiet().await.unwrap_or(false);
        match (quiet, quiet_since) {
            (true, None) => quiet_since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() >= Duration::from_millis(1500) => break,
            (false, _) => quiet_since = None,
            _ => {}
        }
        if Instant::now() > deadline {
            println!("timed out waiting; some runs are still open (see `conveyor status`)");
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            println!("  still working ({} event(s) in flight)", probe.pending());
            last_report = Instant::now();
        }
    }
    let _ = stop_tx.send(());
    let embedded = runner.await.context("runtime task failed")?;
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
    println!("{}", run_log_table(&rows));
    let failed = rows
        .iter()
        .filter(|r| matches!(r.status.as_str(), "FAILED" | "TIMED_OUT" | "REJECTED") && !retried(r))
        .count();
    if failed > 0 {
        println!("{failed} step(s) did not succeed");
        return Ok(ExitCode::FAILURE);
    }
    println!("every step SUCCEEDED");
    Ok(ExitCode::SUCCESS)
}

/// A failed attempt with a retry scheduled is not a final failure.
fn retried(r: &RunLogRow) -> bool {
    r.status == "FAILED" && r.detail.contains("\"retry_at\"")
}

fn run_log_table(rows: &[RunLogRow]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "time",
        "pipeline",
        "run_id",
        "step",
        "attempt",
        "status",
        "table",
        "rows",
        "dataproc_job_id",
        "error",
    ]);
    for r in rows {
        t.add_row([
            r.td_timestamp.format("%H:%M:%S%.3f").to_string(),
            r.pipeline.clone().unwrap_or_default(),
            r.run_id.clone(),
            r.step.clone(),
            r.attempt.to_string(),
            r.status.clone(),
            match (&r.db_name, &r.table_name) {
                (Some(d), Some(t)) => format!("{d}.{t}"),
                _ => String::new(),
            },
            r.rows_loaded.map(|n| n.to_string()).unwrap_or_default(),
            r.dataproc_job_id.clone().unwrap_or_default(),
            r.error
                .clone()
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect(),
        ]);
    }
    t
}

pub(crate) async fn status(
    config_path: &Path,
    state_dir: &Path,
    limit: usize,
    run: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let embedded = Embedded::open(config, state_dir)?;
    let ctx = embedded.context();
    let mut rows = Vec::new();
    for t in embedded.run_log_tables() {
        rows.extend(
            ctx.ports
                .run_log
                .recent(&t, if run.is_some() { 100_000 } else { limit })
                .await?,
        );
    }
    if let Some(run) = run {
        rows.retain(|r| r.run_id == run);
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.td_timestamp));
    rows.truncate(limit);
    rows.reverse();
    if rows.is_empty() {
        println!("the run log is empty");
    } else {
        println!("{}", run_log_table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn dev(
    config_path: &Path,
    state_dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let mut embedded = Embedded::open(config.clone(), state_dir)?;
    let router = conveyor_core::http::combined_router(embedded.context());
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
    println!("  http:      http://{listen}/{{stage,load,submit,poll,log}}");
    println!("Ctrl-C to stop.");
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
    result.context("the dev server failed")?;
    Ok(ExitCode::SUCCESS)
}
