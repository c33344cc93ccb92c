//! The run log's contract, the same on every adapter: the same rows written to SQLite, the
//! BigQuery emulator and PostgreSQL give the same open jobs (what the poll tick follows), and
//! those are the ones core's rule ([`conveyor_core::open_jobs`]) and this table name.
//!
//! Without the BigQuery emulator or a PostgreSQL server those parts skip loudly (under
//! `CI=true` they fail, as the other emulator tests do).

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use conveyor_core::names::TableRef;
use conveyor_core::open_jobs::open_jobs;
use conveyor_core::ports::{RunLog, RunLogQuery, RunLogRow, RunLogSinks, RunStart, RunsQuery};
use conveyor_core::run_page::starts_in_memory;
use conveyor_e2e::Emulators;
use conveyor_embedded::{LocalStore, SqliteWarehouse};

/// When the runs happen; the poll reads from an hour before.
fn base() -> DateTime<Utc> {
    Utc.timestamp_opt(1_765_000_000, 0).single().expect("time")
}

fn since() -> DateTime<Utc> {
    base() - Duration::hours(1)
}

/// A row of `run`'s `job` (None: a row naming none) at second `secs`.
fn row(run: &str, job: Option<&str>, attempt: u32, status: &str, secs: i64) -> RunLogRow {
    let at = base() + Duration::seconds(secs);
    RunLogRow {
        event_id: format!("{run}-{}-{attempt}-{status}-{secs}", job.unwrap_or("none")),
        run_id: format!("conf-{run}"),
        pipeline: Some("conf".to_owned()),
        step: match status {
            "SUBMITTED" => "submit",
            _ => "poll",
        }
        .to_owned(),
        attempt,
        status: status.to_owned(),
        job: job.map(str::to_owned),
        job_id: job.map(|j| format!("cv-{j}-{run}-a{attempt}")),
        dataproc_job_id: job.map(|j| format!("cv-{j}-{run}-a{attempt}")),
        td_timestamp: at,
        last_modified_at: at,
        environment: "test".to_owned(),
        detail: "{}".to_owned(),
        // Each run its own date: the column is read back as written on every adapter.
        run_date: Some(format!("2025-12-{:02}", 1 + run.len() % 28)),
        ..RunLogRow::default()
    }
}

fn with_detail(mut r: RunLogRow, detail: &str) -> RunLogRow {
    r.detail = detail.to_owned();
    r
}

const RETRY: &str = r#"{"retry_at":"2025-12-06T06:00:00Z","engine":"local"}"#;

/// The rows, in the order they are written, and the event ids of the open jobs, oldest
/// first.
fn cases() -> (Vec<RunLogRow>, Vec<String>) {
    let a = Some("a");
    let mut old_batch = row("old", None, 1, "RUNNING", 80);
    old_batch.dataproc_job_id = Some("cv-batch-old-a1".to_owned());
    old_batch.event_id = "old-batch-running".to_owned();
    let mut stage = row("stage", None, 1, "RUNNING", 90);
    stage.step = "stage".to_owned();
    stage.event_id = "stage-running".to_owned();
    let rows = vec![
        // Submitted only: open.
        row("submitted", a, 1, "SUBMITTED", 10),
        // Running: open, by its RUNNING row.
        row("running", a, 1, "SUBMITTED", 11),
        row("running", a, 1, "RUNNING", 12),
        // Ended: closed.
        row("ended", a, 1, "SUBMITTED", 13),
        row("ended", a, 1, "RUNNING", 14),
        row("ended", a, 1, "SUCCEEDED", 15),
        // A failed attempt waiting for its retry: open, by the FAILED row.
        row("retrying", a, 1, "SUBMITTED", 16),
        with_detail(row("retrying", a, 1, "FAILED", 17), RETRY),
        // Retried: open, by attempt 2.
        row("retried", a, 1, "SUBMITTED", 18),
        with_detail(row("retried", a, 1, "FAILED", 19), RETRY),
        row("retried", a, 2, "SUBMITTED", 20),
        // Failed for good (no retry, or `retry_at: null`): closed.
        row("failed", a, 1, "SUBMITTED", 21),
        row("failed", a, 1, "FAILED", 22),
        row("nulled", a, 1, "SUBMITTED", 23),
        with_detail(row("nulled", a, 1, "FAILED", 24), r#"{"retry_at":null}"#),
        // Attempt 2 succeeded; attempt 1's late RUNNING row does not reopen it.
        row("late", a, 2, "SUCCEEDED", 25),
        row("late", a, 1, "RUNNING", 26),
        // Rows of one instant: the furthest status decides (RUNNING).
        row("instant", a, 1, "RUNNING", 27),
        row("instant", a, 1, "SUBMITTED", 27),
        // Two jobs of one run: the loaded job is closed, the other open.
        row("two", Some("load"), 1, "SUCCEEDED", 28),
        row("two", Some("b"), 1, "RUNNING", 29),
        // Before the look-back: not read.
        row("ancient", a, 1, "RUNNING", -7200),
        // A row of an older release naming no job but a batch: job `batch`, open.
        old_batch,
        // A row of no job (the stage step's): never open.
        stage,
    ];
    let open = [
        "submitted-a-1-SUBMITTED-10",
        "running-a-1-RUNNING-12",
        "retrying-a-1-FAILED-17",
        "retried-a-2-SUBMITTED-20",
        "instant-a-1-RUNNING-27",
        "two-b-1-RUNNING-29",
        "old-batch-running",
    ];
    (rows, open.iter().map(|s| (*s).to_owned()).collect())
}

fn ids(rows: &[RunLogRow]) -> Vec<String> {
    rows.iter().map(|r| r.event_id.clone()).collect()
}

/// Whether `rows` are what the table says, and whole (each column read back as written).
fn assert_open(adapter: &str, got: &[RunLogRow]) {
    let (rows, open) = cases();
    assert_eq!(ids(got), open, "{adapter}: the open jobs");
    for g in got {
        let written = rows
            .iter()
            .find(|r| r.event_id == g.event_id)
            .expect("written");
        assert_eq!(g, written, "{adapter}: the row read back");
    }
}

#[test]
fn cores_rule_gives_the_open_jobs_of_the_table() {
    let (rows, _) = cases();
    let read: Vec<RunLogRow> = rows
        .into_iter()
        .filter(|r| r.td_timestamp >= since())
        .collect();
    assert_open("core", &open_jobs(read));
}

#[tokio::test]
async fn sqlite_gives_the_open_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path().join("b")).expect("store");
    let w = SqliteWarehouse::open(dir.path().join("w"), Arc::new(store)).expect("warehouse");
    let table = TableRef::parse("conveyor.run_log").expect("table");
    for r in &cases().0 {
        w.record(&table, r).await.expect("record");
    }
    let got = w.open_batches(&table, since()).await.expect("open");
    assert_open("SQLite", &got);
    assert_run_date_filters("SQLite", &w, &table).await;
    for r in &other_rows() {
        w.record(&table, r).await.expect("record");
    }
    assert_run_pages("SQLite", &(&w as &dyn RunLog, &table)).await;
}

/// Rows of a second pipeline, for the page filters: a run per date, some failed.
fn other_rows() -> Vec<RunLogRow> {
    let mut out = Vec::new();
    for i in 0..6_i64 {
        let run = format!("o{i}");
        for (k, status) in ["RUNNING", if i % 3 == 0 { "FAILED" } else { "SUCCEEDED" }]
            .iter()
            .enumerate()
        {
            let mut r = row(&run, Some("load"), 1, status, 200 + i * 10 + k as i64);
            r.pipeline = Some("other".to_owned());
            r.run_date = Some(format!("2025-11-{:02}", 10 + i));
            out.push(r);
        }
    }
    // Two runs whose first rows share an instant: the run id orders them.
    for run in ["tie-a", "tie-b"] {
        let mut r = row(run, Some("load"), 1, "SUCCEEDED", 500);
        r.pipeline = Some("other".to_owned());
        out.push(r);
    }
    out
}

/// A run log's page queries, whichever adapter answers them.
#[async_trait::async_trait]
trait Pages: Sync {
    async fn starts(&self, q: &RunsQuery) -> Vec<RunStart>;
    async fn rows_of(&self, ids: &[String]) -> Vec<RunLogRow>;
}

#[async_trait::async_trait]
impl Pages for (&dyn RunLog, &TableRef) {
    async fn starts(&self, q: &RunsQuery) -> Vec<RunStart> {
        self.0.run_starts(self.1, q).await.expect("run starts")
    }
    async fn rows_of(&self, ids: &[String]) -> Vec<RunLogRow> {
        self.0
            .rows_of_runs(self.1, ids, None)
            .await
            .expect("rows of runs")
    }
}

/// The page queries answer as core's reference ([`starts_in_memory`]) does on the rows
/// written: every run once by its first row, newest first, after the cursor, filtered by
/// pipeline, run dates and (a superset) status; and a run's rows are all of its rows.
async fn assert_run_pages(adapter: &str, log: &dyn Pages) {
    let mut rows = cases().0;
    rows.extend(other_rows());
    let date = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let all = starts_in_memory(&rows, &RunsQuery::default());
    assert!(all.len() > 15, "the cases have runs: {}", all.len());
    let queries = [
        RunsQuery::default(),
        RunsQuery {
            limit: 4,
            ..RunsQuery::default()
        },
        RunsQuery {
            before: Some(all[3].clone()),
            limit: 5,
            ..RunsQuery::default()
        },
        RunsQuery {
            // The tie: tie-b comes first, then tie-a after its cursor.
            before: all.iter().find(|s| s.run_id == "conf-tie-b").cloned(),
            limit: 1,
            ..RunsQuery::default()
        },
        RunsQuery {
            pipeline: Some("other".to_owned()),
            ..RunsQuery::default()
        },
        RunsQuery {
            statuses: vec!["FAILED".to_owned()],
            ..RunsQuery::default()
        },
        RunsQuery {
            statuses: vec!["RETRYING".to_owned(), "RUNNING".to_owned()],
            pipeline: Some("conf".to_owned()),
            limit: 3,
            ..RunsQuery::default()
        },
        RunsQuery {
            date_from: date("2025-11-11"),
            date_to: date("2025-11-13"),
            ..RunsQuery::default()
        },
    ];
    for q in &queries {
        let want = starts_in_memory(&rows, q);
        assert!(!want.is_empty(), "{q:?}: the cases cover it");
        assert_eq!(log.starts(q).await, want, "{adapter}: {q:?}");
    }
    let ids = vec!["conf-retried".to_owned(), "conf-o2".to_owned()];
    let mut got: Vec<String> = log
        .rows_of(&ids)
        .await
        .iter()
        .map(|r| r.event_id.clone())
        .collect();
    got.sort();
    let mut want: Vec<String> = rows
        .iter()
        .filter(|r| ids.contains(&r.run_id))
        .map(|r| r.event_id.clone())
        .collect();
    want.sort();
    assert_eq!(got, want, "{adapter}: the rows of two runs");
}

/// Reads by run date select the rows of those dates (inclusive), whenever they were written.
async fn assert_run_date_filters(adapter: &str, log: &dyn RunLog, table: &TableRef) {
    let date = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let (rows, _) = cases();
    for (from, to) in [
        ("2025-12-06", "2025-12-06"),
        ("2025-12-05", "2025-12-07"),
        ("2025-12-08", "2025-12-31"),
    ] {
        let got = log
            .rows(
                table,
                &RunLogQuery {
                    date_from: date(from),
                    date_to: date(to),
                    ..RunLogQuery::default()
                },
            )
            .await
            .expect("rows");
        let mut got = ids(&got);
        got.sort();
        let mut want: Vec<String> = rows
            .iter()
            .filter(|r| {
                let d = r.run_date.as_deref().unwrap_or("");
                d >= from && d <= to
            })
            .map(|r| r.event_id.clone())
            .collect();
        want.sort();
        assert!(!want.is_empty(), "{from}..{to}: the cases cover it");
        assert_eq!(got, want, "{adapter}: run dates {from} to {to}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_gives_the_open_jobs_on_bqemulator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        &["start-bigquery"],
        "the run-log conformance test on BigQuery",
    ) else {
        return;
    };
    emu.dataset("conveyor").await;
    let bq = emu.bigquery();
    let table = TableRef::parse("conveyor.run_log").expect("table");
    for r in &cases().0 {
        bq.record(&table, r).await.expect("record");
    }
    let got = bq.open_batches(&table, since()).await.expect("open");
    assert_open("BigQuery", &got);
    assert_run_date_filters("BigQuery", &bq, &table).await;
    for r in &other_rows() {
        bq.record(&table, r).await.expect("record");
    }
    assert_run_pages("BigQuery", &(&bq as &dyn RunLog, &table)).await;
}

#[tokio::test]
async fn postgres_gives_the_open_jobs() {
    let Some(server) = super::postgres::Server::start() else {
        return;
    };
    let sinks = server.verified();
    let sink = super::postgres::sink();
    for r in &cases().0 {
        sinks.record(&sink, r).await.expect("record");
    }
    let got = sinks.open_jobs(&sink, since()).await.expect("open");
    assert_open("PostgreSQL", &got);
    for r in &other_rows() {
        sinks.record(&sink, r).await.expect("record");
    }
    assert_run_pages("PostgreSQL", &(&sinks, &sink)).await;
}

#[async_trait::async_trait]
impl Pages
    for (
        &conveyor_postgres::PostgresSinks,
        &conveyor_core::config::RunLogSink,
    )
{
    async fn starts(&self, q: &RunsQuery) -> Vec<RunStart> {
        self.0.run_starts(self.1, q).await.expect("run starts")
    }
    async fn rows_of(&self, ids: &[String]) -> Vec<RunLogRow> {
        self.0
            .rows_of_runs(self.1, ids)
            .await
            .expect("rows of runs")
    }
}
