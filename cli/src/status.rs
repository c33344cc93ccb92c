//! `conveyor status`: the run log where it lives, one row per run by default.
#![allow(clippy::print_stdout)]

use std::io::IsTerminal as _;
use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use comfy_table::{Cell, Color, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use conveyor_console::runs::{self, RunSummary, human_duration};
use conveyor_core::ports::{RunLogQuery, RunLogRow};
use serde_json::json;

use crate::runlog::{RunLogArgs, optional_config};

/// What `conveyor status` shows.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StatusArgs {
    /// How many runs (with --events: rows) to show, newest last.
    #[arg(long, short = 'n', default_value_t = 30)]
    pub(crate) limit: usize,
    /// Show only this run: its summary and every transition.
    #[arg(long)]
    pub(crate) run: Option<String>,
    /// Show only this pipeline's runs.
    #[arg(long)]
    pub(crate) pipeline: Option<String>,
    /// Only what happened since: a duration ago (`2h`, `3days`), a date (`2026-11-20`) or a
    /// time (RFC 3339).
    #[arg(long, value_parser = parse_since)]
    pub(crate) since: Option<DateTime<Utc>>,
    /// Only runs for this run date (the logical date a run is for, YYYY-MM-DD).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub(crate) date: Option<NaiveDate>,
    /// Only runs for this run date or later.
    #[arg(long)]
    pub(crate) from: Option<NaiveDate>,
    /// Only runs for this run date or earlier.
    #[arg(long)]
    pub(crate) to: Option<NaiveDate>,
    /// Every transition (one row per run-log row) instead of one row per run.
    #[arg(long)]
    pub(crate) events: bool,
    /// JSON for scripts: an array of runs (or of rows with --events).
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) source: RunLogArgs,
}

/// `2h` ago, a date, or an RFC 3339 time.
pub(crate) fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    match humantime::parse_duration(s) {
        Ok(d) => chrono::Duration::from_std(d)
            .map(|d| Utc::now() - d)
            .map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "{s:?} is not a duration (2h, 3days), a date (2026-11-20) or an RFC 3339 time"
        )),
    }
}

/// Whether to colour output: stdout is a terminal and `NO_COLOR` is not set.
pub(crate) fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn status_colour(s: &str) -> Option<Color> {
    match s {
        "SUCCEEDED" => Some(Color::Green),
        "FAILED" | "TIMED_OUT" => Some(Color::Red),
        "REJECTED" => Some(Color::Yellow),
        "SUBMITTED" | "RUNNING" | "RETRYING" => Some(Color::Blue),
        _ => None,
    }
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    if !colours() {
        t.force_no_tty();
    }
    t
}

/// An error in a table cell: its first 200 characters.
fn error_cell(error: Option<&str>) -> Cell {
    Cell::new(error.unwrap_or("").chars().take(200).collect::<String>())
}

fn status_cell(s: &str) -> Cell {
    let cell = Cell::new(s);
    match status_colour(s) {
        Some(c) if colours() => cell.fg(c),
        _ => cell,
    }
}

/// One row per run.
pub(crate) fn runs_table(runs: &[RunSummary]) -> Table {
    let now = Utc::now();
    let mut t = new_table(&[
        "pipeline", "date", "run_id", "status", "started", "duration", "error",
    ]);
    for r in runs {
        t.add_row(vec![
            Cell::new(r.pipeline.clone().unwrap_or_default()),
            Cell::new(r.run_date.clone().unwrap_or_default()),
            Cell::new(&r.run_id),
            status_cell(&r.status),
            Cell::new(r.started.format("%Y-%m-%d %H:%M:%S").to_string()),
            Cell::new(human_duration(r.duration(now))),
            error_cell(r.error.as_deref()),
        ]);
    }
    t
}

/// One row per transition.
pub(crate) fn events_table(rows: &[RunLogRow]) -> Table {
    let mut t = new_table(&[
        "time", "pipeline", "run_id", "step", "attempt", "status", "table", "rows", "job", "error",
    ]);
    for r in rows {
        t.add_row(vec![
            Cell::new(r.td_timestamp.format("%m-%d %H:%M:%S%.3f").to_string()),
            Cell::new(r.pipeline.clone().unwrap_or_default()),
            Cell::new(&r.run_id),
            Cell::new(match &r.job {
                Some(j) if j != "batch" => format!("{} ({j})", r.step),
                _ => r.step.clone(),
            }),
            Cell::new(r.attempt),
            status_cell(&r.status),
            Cell::new(match (&r.db_name, &r.table_name) {
                (Some(d), Some(t)) => format!("{d}.{t}"),
                _ => String::new(),
            }),
            Cell::new(r.rows_loaded.map(|n| n.to_string()).unwrap_or_default()),
            Cell::new(
                r.dataproc_job_id
                    .clone()
                    .or_else(|| r.job_id.clone())
                    .unwrap_or_default(),
            ),
            error_cell(r.error.as_deref()),
        ]);
    }
    t
}

/// A run-log row as JSON, with the table's column names.
pub(crate) fn row_json(r: &RunLogRow) -> serde_json::Value {
    json!({
        "dbName": r.db_name, "tableName": r.table_name, "td_timestamp": r.td_timestamp,
        "last_modified_at": r.last_modified_at, "environment": r.environment, "status": r.status,
        "dataproc_job_id": r.dataproc_job_id, "event_id": r.event_id, "run_id": r.run_id,
        "pipeline": r.pipeline, "step": r.step, "attempt": r.attempt,
        "source_object": r.source_object, "job_id": r.job_id, "error": r.error,
        "started_at": r.started_at, "finished_at": r.finished_at, "rows_loaded": r.rows_loaded,
        "detail": serde_json::from_str::<serde_json::Value>(&r.detail).unwrap_or(json!(r.detail)),
        "job": r.job, "run_date": r.run_date,
    })
}

/// Each task's kept output (local and SSH jobs): the end of its standard error and output.
fn print_task_logs(tasks: &[runs::Task]) {
    for t in tasks {
        let Some(log) = &t.log else { continue };
        for (stream, text) in [("stderr", &log.stderr), ("stdout", &log.stdout)] {
            if text.is_empty() {
                continue;
            }
            println!("── {} {}: {stream} (end) ──", t.label, t.status);
            for line in text.lines() {
                println!("  {line}");
            }
        }
    }
}

pub(crate) async fn status(
    config_path: &Path,
    state_dir: &Path,
    args: &StatusArgs,
) -> anyhow::Result<ExitCode> {
    let config = optional_config(config_path)?;
    let log = args.source.open(config.as_deref(), state_dir).await?;
    let query = RunLogQuery {
        run_id: args.run.clone(),
        pipeline: args.pipeline.clone(),
        since: args.since,
        statuses: Vec::new(),
        date_from: args.date.or(args.from),
        date_to: args.date.or(args.to),
        // Runs are made of rows: read generously, then keep the newest `limit` runs.
        limit: match (args.events, &args.run) {
            (_, Some(_)) => 0,
            (true, None) => args.limit,
            (false, None) => (args.limit * 50).max(5_000),
        },
    };
    let mut rows = conveyor_console::runs::read_rows(log.run_log.as_ref(), &log.tables, &query)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the run log ({}): {e}", log.place))?;
    if rows.is_empty() {
        let msg = if let Some(run) = &args.run {
            format!(
                "no run {run:?} in the run log {} ({}); `conveyor status` lists the recent runs",
                log.table_names(),
                log.place
            )
        } else if args.pipeline.is_some()
            || args.since.is_some()
            || args.date.is_some()
            || args.from.is_some()
            || args.to.is_some()
        {
            format!(
                "no run matches{}{}{} in the run log {} ({})",
                args.pipeline
                    .as_deref()
                    .map(|p| format!(" pipeline {p:?}"))
                    .unwrap_or_default(),
                args.since
                    .map(|s| format!(" since {}", s.to_rfc3339()))
                    .unwrap_or_default(),
                match (args.date.or(args.from), args.date.or(args.to)) {
                    (None, None) => String::new(),
                    (Some(f), Some(t)) if f == t => format!(" for run date {f}"),
                    (f, t) => format!(
                        " for run dates {} to {}",
                        f.map_or("…".to_owned(), |d| d.to_string()),
                        t.map_or("…".to_owned(), |d| d.to_string())
                    ),
                },
                log.table_names(),
                log.place
            )
        } else {
            format!("the run log {} ({}) is empty", log.table_names(), log.place)
        };
        if args.json {
            println!("[]");
        }
        eprintln!("{msg}");
        return Ok(if args.run.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    if args.events || args.run.is_some() {
        rows.reverse(); // oldest first, as a log reads
    }
    let runs = runs::summarize(&rows);
    if args.json {
        let value = if args.events {
            serde_json::Value::Array(rows.iter().map(row_json).collect())
        } else if args.run.is_some() {
            json!({"run": runs.first(), "tasks": runs::tasks(&rows), "events": rows.iter().map(row_json).collect::<Vec<_>>()})
        } else {
            serde_json::to_value(runs.iter().take(args.limit).collect::<Vec<_>>())?
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.run.is_some() {
        println!("{}", runs_table(&runs));
        println!("{}", events_table(&rows));
        print_task_logs(&runs::tasks(&rows));
    } else if args.events {
        println!("{}", events_table(&rows));
    } else {
        let mut shown: Vec<RunSummary> = runs.into_iter().take(args.limit).collect();
        shown.reverse(); // newest last, nearest the prompt
        println!("{}", runs_table(&shown));
    }
    Ok(ExitCode::SUCCESS)
}
