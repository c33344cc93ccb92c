//! The console's pages on a big embedded run log, driven by `scripts/bench-console.sh` (not a
//! test): fills the SQLite run log with N rows (default 1,000,000: 8 pipelines, a run an hour
//! each, 5 rows a run, 5 % of them failed, back from now), then times each page through the
//! console's router (no socket): the median of 7 requests after one warm-up.
//!
//! ```text
//! console_bench STATE_DIR [ROWS]
//! ```

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::Request;
use chrono::{Duration as Span, Utc};
use conveyor_core::names::TableRef;
use conveyor_core::ports::{RunLog, RunLogRow};
use conveyor_embedded::{LocalStore, SqliteWarehouse};
use tower::ServiceExt as _;

const PIPELINES: usize = 8;
const ROWS_PER_RUN: usize = 5;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let state = std::path::PathBuf::from(
        args.get(1)
            .context("usage: console_bench STATE_DIR [ROWS]")?,
    );
    let rows: usize = args.get(2).map_or(Ok(1_000_000), |s| s.parse())?;
    let store = LocalStore::new(state.join("buckets"))?;
    let w = SqliteWarehouse::open(state.join("warehouse"), Arc::new(store))?;
    let table = TableRef::parse("conveyor.run_log")?;
    let runs = rows / ROWS_PER_RUN;
    let now = Utc::now();
    // The table and its indexes, as the adapter makes them; then the rows in one transaction.
    w.record(&table, &row(0, 0, now)).await?;
    let started = Instant::now();
    fill(&state.join("warehouse/conveyor.sqlite"), runs, now)?;
    println!(
        "filled {} run-log rows ({runs} runs of {PIPELINES} pipelines) in {:.1} s",
        runs * ROWS_PER_RUN,
        started.elapsed().as_secs_f64()
    );
    let yaml: String = (0..PIPELINES)
        .map(|p| {
            format!(
                "  - name: p{p}\n    trigger: {{ schedule: {{ cron: \"0 * * * *\" }} }}\n    jobs:\n      - {{ name: extract, engine: local, command: \"true\" }}\n      - {{ name: publish, engine: local, command: \"true\" }}\n"
            )
        })
        .collect();
    let config = conveyor_core::config::parse_str(&format!("pipelines:\n{yaml}"), "bench.yaml")?;
    let console = conveyor_console::Console::new(Arc::new(w), Some(Arc::new(config)));
    let router = conveyor_console::router(console);
    // A cursor 90 % down the history: the run of that hour of pipeline p0.
    let deep_run = runs * 9 / 10;
    let deep_at = start_of(deep_run, runs, now);
    let cursor = format!(
        "{}~{}",
        deep_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        run_id(deep_run)
    );
    let today = now.date_naive();
    let month_ago = today - Span::days(30);
    let pages = [
        ("overview", "/".to_owned()),
        ("runs, first page (50)", "/runs".to_owned()),
        ("runs, status FAILED", "/runs?status=FAILED".to_owned()),
        (
            "runs, pipeline p3 + run dates",
            format!("/runs?pipeline=p3&from={month_ago}&to={month_ago}"),
        ),
        (
            "runs, deep page (90 % down)",
            format!(
                "/runs?before={}",
                form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
            ),
        ),
        ("grid, 14 run dates", "/grid".to_owned()),
        ("grid, p3's tasks", "/grid?pipeline=p3".to_owned()),
        ("pipeline p3", "/pipelines/p3".to_owned()),
        ("api/runs (100)", "/api/runs".to_owned()),
    ];
    println!("{:<34} {:>10} {:>10}", "page", "median", "max");
    for (name, path) in &pages {
        let mut times = Vec::new();
        for i in 0..8 {
            let t = Instant::now();
            let resp = router
                .clone()
                .oneshot(Request::get(path.as_str()).body(Body::empty())?)
                .await?;
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 26).await?;
            let took = t.elapsed();
            anyhow::ensure!(status.is_success(), "{path}: {status}");
            anyhow::ensure!(body.len() > 200, "{path}: an empty page");
            if i > 0 {
                times.push(took);
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<34} {:>8.1} ms {:>7.1} ms",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    Ok(())
}

fn run_id(run: usize) -> String {
    format!("p{}-{run:08}", run % PIPELINES)
}

/// Run 0 is the newest; a run an hour per pipeline.
fn start_of(run: usize, _runs: usize, now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    let hour = (run / PIPELINES) as i64;
    now - Span::hours(hour + 1) + Span::seconds((run % PIPELINES) as i64)
}

fn row(run: usize, k: usize, now: chrono::DateTime<Utc>) -> RunLogRow {
    let at = start_of(run, 0, now) + Span::seconds(k as i64 * 20);
    let failed = run % 20 == 7;
    let (step, job, status) = match k {
        0 => ("submit", Some("extract"), "SUBMITTED"),
        1 => ("poll", Some("extract"), "SUCCEEDED"),
        2 => ("submit", Some("publish"), "SUBMITTED"),
        3 => (
            "poll",
            Some("publish"),
            if failed { "FAILED" } else { "SUCCEEDED" },
        ),
        _ => ("submit", None, if failed { "FAILED" } else { "SUCCEEDED" }),
    };
    RunLogRow {
        td_timestamp: at,
        last_modified_at: at,
        environment: "bench".to_owned(),
        status: status.to_owned(),
        event_id: format!("{}-{k}", run_id(run)),
        run_id: run_id(run),
        pipeline: Some(format!("p{}", run % PIPELINES)),
        step: step.to_owned(),
        attempt: 1,
        job: job.map(str::to_owned),
        dataproc_job_id: job.map(|j| format!("cv-{j}-{run}")),
        error: failed.then(|| "exit status 1: boom".to_owned()),
        detail: "{}".to_owned(),
        run_date: Some(at.date_naive().to_string()),
        ..RunLogRow::default()
    }
}

fn fill(path: &std::path::Path, runs: usize, now: chrono::DateTime<Utc>) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT OR IGNORE INTO run_log (td_timestamp, last_modified_at, environment, status, dataproc_job_id, \
             event_id, run_id, pipeline, step, attempt, job, error, detail, run_date) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for run in 0..runs {
            for k in 0..ROWS_PER_RUN {
                let r = row(run, k, now);
                insert.execute(rusqlite::params![
                    ts(r.td_timestamp),
                    ts(r.last_modified_at),
                    r.environment,
                    r.status,
                    r.dataproc_job_id,
                    r.event_id,
                    r.run_id,
                    r.pipeline,
                    r.step,
                    r.attempt,
                    r.job,
                    r.error,
                    r.detail,
                    r.run_date,
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}
