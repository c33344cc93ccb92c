//! Runs from run-log rows: one summary per run (the default view of `conveyor status` and the
//! console's grids) and its tasks (the bars of a run's timeline).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use conveyor_core::config::Config;
use conveyor_core::names::TableRef;
use conveyor_core::ports::{PortError, RunLog, RunLogQuery, RunLogRow};
use conveyor_core::run_state::RunState;
use serde::Serialize;

/// Every run-log table `config` names: the file's and each pipeline's own.
pub fn run_log_tables(config: &Config) -> Vec<TableRef> {
    let mut set = BTreeSet::new();
    set.insert(config.run_log.table.to_string());
    for p in &config.pipelines {
        set.insert(config.run_log_table(p).to_string());
    }
    set.iter().filter_map(|t| TableRef::parse(t).ok()).collect()
}

/// The rows `query` selects from every table of `tables`, newest first, at most
/// `query.limit` (0: all). A table that does not exist yet has none.
///
/// # Errors
/// The run log's error.
pub async fn read_rows(
    run_log: &dyn RunLog,
    tables: &[TableRef],
    query: &RunLogQuery,
) -> Result<Vec<RunLogRow>, PortError> {
    let mut rows = Vec::new();
    for t in tables {
        match run_log.rows(t, query).await {
            Ok(r) => rows.extend(r),
            // A table nothing was written to yet holds no runs.
            Err(PortError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if tables.len() > 1 {
        rows.sort_by(newest_first);
        // Two tables may hold the same event if a pipeline's table changed.
        let mut seen = BTreeSet::new();
        rows.retain(|r| seen.insert(r.event_id.clone()));
    }
    if query.limit > 0 {
        rows.truncate(query.limit);
    }
    Ok(rows)
}

use conveyor_core::run_state::job_key;
pub use conveyor_core::run_state::{is_run_end, is_terminal, newest_first, retry_pending};

/// One run, summarised from its rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// The pipeline (absent for a rejection that could not name one).
    pub pipeline: Option<String>,
    /// The run date (`YYYY-MM-DD`) its rows record: the logical date it is for.
    pub run_date: Option<String>,
    /// Its state by [`RunState`]: FAILED when any job's last attempt failed; `RETRYING` while
    /// a failed attempt waits for its retry.
    pub status: String,
    /// When the run started: its earliest `started_at` or `td_timestamp`.
    pub started: DateTime<Utc>,
    /// Its newest transition.
    pub updated: DateTime<Utc>,
    /// When it ended, once its newest status is terminal.
    pub finished: Option<DateTime<Utc>>,
    /// The error of the row that decides its state, else the newest error.
    pub error: Option<String>,
    /// Objects it read (`gs://bucket/name`).
    pub objects: Vec<String>,
    /// Tables it wrote (`dataset.table`).
    pub tables: Vec<String>,
    /// Load and batch job ids.
    pub jobs: Vec<String>,
    /// Rows loaded, summed over its loads.
    pub rows_loaded: u64,
    /// Its run-log rows.
    pub events: usize,
    /// Its first row's time: with the run id, where it stands in the console's pages
    /// (`before=` of the next page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<DateTime<Utc>>,
}

impl RunSummary {
    /// From start to end (or to `now` while it runs).
    pub fn duration(&self, now: DateTime<Utc>) -> chrono::Duration {
        self.finished.unwrap_or(now) - self.started
    }

    /// Whether it ended in anything but success.
    pub fn failed(&self) -> bool {
        conveyor_core::run_state::is_failure(&self.status)
    }
}

/// One summary per run in `rows` (any order), newest run first.
pub fn summarize(rows: &[RunLogRow]) -> Vec<RunSummary> {
    let mut by_run: BTreeMap<&str, Vec<&RunLogRow>> = BTreeMap::new();
    for r in rows {
        by_run.entry(r.run_id.as_str()).or_default().push(r);
    }
    let mut out: Vec<RunSummary> = by_run
        .into_values()
        .map(|mut rows| {
            rows.sort_by(|a, b| newest_first(a, b));
            summary(&rows)
        })
        .collect();
    out.sort_by(|a, b| b.started.cmp(&a.started).then(a.run_id.cmp(&b.run_id)));
    out
}

/// One summary per run of `page`, in the page's order (newest first).
pub fn summarize_page(page: &conveyor_core::run_page::RunsPage) -> Vec<RunSummary> {
    page.runs
        .iter()
        .filter(|r| !r.rows.is_empty())
        .map(|r| {
            let mut rows: Vec<&RunLogRow> = r.rows.iter().collect();
            rows.sort_by(|a, b| newest_first(a, b));
            let mut s = summary(&rows);
            s.first = Some(r.start.first);
            s
        })
        .collect()
}

/// `rows` of one run, newest first.
fn summary(rows: &[&RunLogRow]) -> RunSummary {
    let newest = rows[0];
    let state = RunState::from_rows(rows.iter().copied());
    let status = state
        .as_ref()
        .map_or_else(|| newest.status.clone(), |s| s.status.clone());
    let started = rows
        .iter()
        .map(|r| r.started_at.unwrap_or(r.td_timestamp).min(r.td_timestamp))
        .min()
        .unwrap_or(newest.td_timestamp);
    let updated = rows
        .iter()
        .map(|r| r.td_timestamp)
        .max()
        .unwrap_or(newest.td_timestamp);
    let finished = is_terminal(&status).then_some(updated);
    let mut objects = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut jobs = BTreeSet::new();
    let mut rows_loaded = 0;
    for r in rows {
        if let Some(o) = &r.source_object {
            objects.insert(o.clone());
        }
        if let (Some(d), Some(t)) = (&r.db_name, &r.table_name) {
            tables.insert(format!("{d}.{t}"));
        }
        if let Some(j) = r.job_id.as_ref().or(r.dataproc_job_id.as_ref()) {
            jobs.insert(j.clone());
        }
        if r.status == "SUCCEEDED" {
            rows_loaded += r.rows_loaded.unwrap_or(0);
        }
    }
    RunSummary {
        run_id: newest.run_id.clone(),
        pipeline: rows.iter().find_map(|r| r.pipeline.clone()),
        run_date: rows.iter().find_map(|r| r.run_date.clone()),
        status,
        started,
        updated,
        finished,
        error: state.and_then(|s| s.error).or_else(|| {
            rows.iter()
                .find_map(|r| r.error.clone().filter(|e| !e.is_empty()))
        }),
        objects: objects.into_iter().collect(),
        tables: tables.into_iter().collect(),
        jobs: jobs.into_iter().collect(),
        rows_loaded,
        events: rows.len(),
        first: rows.iter().map(|r| r.td_timestamp).min(),
    }
}

/// One bar of a run's timeline: a step, or one attempt of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    /// What people read: `stage`, `load`, `batch attempt 2`, `dedupe attempt 1`.
    pub label: String,
    /// The graph node it belongs to: `stage`, `load`, or the job's name (`batch` for a
    /// pipeline's single `batch:`).
    pub node: String,
    /// The attempt.
    pub attempt: u32,
    /// Its first transition (or `started_at`).
    pub start: DateTime<Utc>,
    /// Its last transition; `None` while it runs.
    pub end: Option<DateTime<Utc>>,
    /// Its newest status.
    pub status: String,
    /// Its error, if it failed.
    pub error: Option<String>,
    /// The load or batch job id.
    pub job_id: Option<String>,
    /// The tails of its standard output and error (local and SSH jobs), as last read.
    pub log: Option<conveyor_core::task_log::TaskLog>,
    /// Links to its Google job's console page and logs ([`with_links`]).
    pub links: Vec<conveyor_core::links::Link>,
}

/// `tasks` of a run of `pipeline` in `config`, each with the links of its Google job; a `sql`
/// job's only when `bigquery` says where the deployment's BigQuery jobs run.
pub fn with_links(
    mut tasks: Vec<Task>,
    config: &Config,
    pipeline: &str,
    bigquery: Option<&conveyor_core::links::BigQueryPlace>,
) -> Vec<Task> {
    let Some(p) = config.pipeline(pipeline) else {
        return tasks;
    };
    for t in &mut tasks {
        if let (Some((_, job)), Some(id)) = (p.job(&t.node), &t.job_id) {
            // The deployment's BigQuery project and location are not in the pipeline file: a
            // `sql` job has a link only when the console was told them.
            t.links = conveyor_core::links::job_links(&job.spec, id, bigquery);
        }
    }
    tasks
}

/// The task log a row's detail holds.
fn task_log(row: &RunLogRow) -> Option<conveyor_core::task_log::TaskLog> {
    #[derive(serde::Deserialize)]
    struct WithLog {
        log: Option<conveyor_core::task_log::TaskLog>,
    }
    if !row.detail.contains("\"log\"") {
        return None;
    }
    serde_json::from_str::<WithLog>(&row.detail).ok()?.log
}

/// The tasks of one run's `rows` (any order), in the order they started.
pub fn tasks(rows: &[RunLogRow]) -> Vec<Task> {
    let mut groups: BTreeMap<(String, u32), Vec<&RunLogRow>> = BTreeMap::new();
    for r in rows {
        // The run's end has no task.
        if let Some(node) = job_key(r) {
            groups.entry((node, r.attempt)).or_default().push(r);
        }
    }
    let mut out: Vec<Task> = groups
        .into_iter()
        .map(|((node, attempt), mut rows)| {
            rows.sort_by(|a, b| newest_first(a, b));
            let newest = rows[0];
            let start = rows
                .iter()
                .map(|r| r.started_at.unwrap_or(r.td_timestamp).min(r.td_timestamp))
                .min()
                .unwrap_or(newest.td_timestamp);
            let end = rows.iter().map(|r| r.td_timestamp).max();
            // A failed attempt stays FAILED while its retry is pending (the run is RETRYING).
            let status = newest.status.clone();
            let batchy = !matches!(node.as_str(), "stage" | "load" | "log");
            Task {
                label: if batchy {
                    format!("{node} attempt {attempt}")
                } else {
                    node.clone()
                },
                node,
                attempt,
                start,
                end: if is_terminal(&status) { end } else { None },
                error: rows
                    .iter()
                    .find_map(|r| r.error.clone().filter(|e| !e.is_empty())),
                job_id: rows
                    .iter()
                    .find_map(|r| r.dataproc_job_id.clone().or(r.job_id.clone())),
                log: rows.iter().find_map(|r| task_log(r)),
                links: Vec::new(),
                status,
            }
        })
        .collect();
    out.sort_by(|a, b| a.start.cmp(&b.start).then(a.label.cmp(&b.label)));
    out
}

/// What a pipeline is doing, beside its runs: the overview's and its page's state column.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineState {
    /// The pipeline.
    pub pipeline: String,
    /// `active: false` in the file: nothing starts it.
    pub active: bool,
    /// Paused by `conveyor pause` (its newest pause row), with who and why.
    pub paused: Option<Paused>,
    /// Runs with an open job now (the poll tick's open jobs of the last two days).
    pub running: usize,
    /// The next time its schedule fires (active and not paused only).
    pub next_run: Option<DateTime<Utc>>,
    /// Its `expect` deadline passed today without a SUCCEEDED run of today's run date:
    /// the date and the deadline.
    pub late: Option<(chrono::NaiveDate, DateTime<Utc>)>,
}

/// A pause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paused {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// A grid by run date (Airflow's grid view): a row per pipeline (or per job of one), a
/// column per run date, each cell the newest run of that date.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Grid {
    /// The rows, in the file's order.
    pub rows: Vec<GridRow>,
}

/// One row of a [`Grid`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridRow {
    /// The pipeline or job.
    pub label: String,
    /// A cell per date of the grid (`None`: no run of that date).
    pub cells: Vec<Option<GridCell>>,
}

/// One cell of a [`Grid`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GridCell {
    /// The status of the newest run of the date (or of the job in it).
    pub status: String,
    /// That run.
    pub run_id: String,
    /// How many runs the date has.
    pub runs: usize,
}

fn date_index(dates: &[chrono::NaiveDate], run_date: Option<&str>) -> Option<usize> {
    let d = chrono::NaiveDate::parse_from_str(run_date?, "%Y-%m-%d").ok()?;
    dates.iter().position(|x| *x == d)
}

/// The grid of every pipeline by run date, from a page of runs (newest first): the graph's
/// pipelines in the file's order, then the ones only the run log names.
pub fn pipeline_grid(
    page: &conveyor_core::run_page::RunsPage,
    graph: Option<&crate::graph::Graph>,
    dates: &[chrono::NaiveDate],
) -> Grid {
    let runs = summarize_page(page);
    let mut labels: Vec<String> = graph
        .map(|g| g.pipelines().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
    for r in &runs {
        if let Some(p) = &r.pipeline
            && !labels.contains(p)
        {
            labels.push(p.clone());
        }
    }
    let mut rows: Vec<GridRow> = labels
        .into_iter()
        .map(|label| GridRow {
            label,
            cells: vec![None; dates.len()],
        })
        .collect();
    for r in &runs {
        let (Some(p), Some(i)) = (&r.pipeline, date_index(dates, r.run_date.as_deref())) else {
            continue;
        };
        if let Some(row) = rows.iter_mut().find(|row| &row.label == p) {
            add(&mut row.cells[i], &r.status, &r.run_id);
        }
    }
    Grid { rows }
}

/// The page's runs are newest first: the first of a date fills the cell, later ones count.
fn add(cell: &mut Option<GridCell>, status: &str, run_id: &str) {
    match cell {
        Some(c) => c.runs += 1,
        None => {
            *cell = Some(GridCell {
                status: status.to_owned(),
                run_id: run_id.to_owned(),
                runs: 1,
            });
        }
    }
}

/// The grid of one pipeline's tasks (stage, load, each job) by run date: each cell the task's
/// last attempt in the newest run of the date.
pub fn job_grid(
    page: &conveyor_core::run_page::RunsPage,
    graph: Option<&crate::graph::Graph>,
    dates: &[chrono::NaiveDate],
) -> Grid {
    let mut labels: Vec<String> = graph
        .map(|g| {
            g.nodes
                .iter()
                .filter(|n| n.kind != crate::graph::NodeKind::Trigger)
                .map(|n| n.task.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut newest: Vec<Option<(&conveyor_core::run_page::PagedRun, usize)>> =
        vec![None; dates.len()];
    for r in &page.runs {
        let date = r.rows.iter().find_map(|x| x.run_date.as_deref());
        if let Some(i) = date_index(dates, date) {
            match &mut newest[i] {
                Some((_, n)) => *n += 1,
                None => newest[i] = Some((r, 1)),
            }
        }
    }
    let mut cells: BTreeMap<String, Vec<Option<GridCell>>> = BTreeMap::new();
    for (i, slot) in newest.iter().enumerate() {
        let Some((run, n)) = slot else { continue };
        let mut last: BTreeMap<String, (u32, String)> = BTreeMap::new();
        for t in tasks(&run.rows) {
            let e = last.entry(t.node.clone()).or_insert((0, String::new()));
            if t.attempt >= e.0 {
                *e = (t.attempt, t.status.clone());
            }
        }
        for (node, (_, status)) in last {
            if !labels.contains(&node) {
                labels.push(node.clone());
            }
            cells.entry(node).or_insert_with(|| vec![None; dates.len()])[i] = Some(GridCell {
                status,
                run_id: run.start.run_id.clone(),
                runs: *n,
            });
        }
    }
    Grid {
        rows: labels
            .into_iter()
            .map(|label| GridRow {
                cells: cells
                    .remove(&label)
                    .unwrap_or_else(|| vec![None; dates.len()]),
                label,
            })
            .collect(),
    }
}

/// A duration as people read it: `850ms`, `12s`, `3m 05s`, `2h 10m`.
pub fn human_duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60),
        _ => format!("{}h {:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(run: &str, step: &str, status: &str, secs: i64) -> RunLogRow {
        RunLogRow {
            event_id: format!("{run}-{step}-{status}-{secs}"),
            run_id: run.to_owned(),
            pipeline: Some("sales".to_owned()),
            step: step.to_owned(),
            attempt: 1,
            status: status.to_owned(),
            td_timestamp: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
            ..RunLogRow::default()
        }
    }

    #[test]
    fn a_run_takes_its_newest_status_and_its_error_and_spans_its_rows() {
        let mut load = row("r1", "load", "SUCCEEDED", 0);
        load.db_name = Some("analytics".into());
        load.table_name = Some("sales".into());
        load.rows_loaded = Some(5);
        load.source_object = Some("gs://landing/a.csv".into());
        let mut sub = row("r1", "submit", "SUBMITTED", 1);
        sub.dataproc_job_id = Some("cv-batch-1".into());
        let mut failed = row("r1", "poll", "FAILED", 9);
        failed.dataproc_job_id = Some("cv-batch-1".into());
        failed.error = Some("exit 3".into());
        let other = row("r2", "load", "SUCCEEDED", 20);
        let runs = summarize(&[sub, failed, load, other]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].run_id, "r2", "newest run first");
        let r1 = &runs[1];
        assert_eq!(r1.status, "FAILED");
        assert!(r1.failed());
        assert_eq!(r1.error.as_deref(), Some("exit 3"));
        assert_eq!(r1.duration(Utc::now()).num_seconds(), 9);
        assert_eq!(r1.tables, vec!["analytics.sales"]);
        assert_eq!(r1.objects, vec!["gs://landing/a.csv"]);
        assert_eq!(r1.rows_loaded, 5);
        assert_eq!(r1.events, 3);
    }

    #[test]
    fn a_failed_attempt_with_a_retry_is_retrying_and_still_open() {
        let mut f = row("r1", "poll", "FAILED", 5);
        f.detail = r#"{"retry_at":"2026-01-01T00:00:00Z"}"#.into();
        let runs = summarize(&[row("r1", "load", "SUCCEEDED", 0), f]);
        assert_eq!(runs[0].status, "RETRYING");
        assert_eq!(runs[0].finished, None);
    }

    #[test]
    fn a_run_whose_second_job_failed_after_the_first_was_retried_is_failed() {
        let job = |j: &str, step: &str, attempt: u32, status: &str, secs: i64| {
            let mut r = row("r1", step, status, secs);
            r.job = Some(j.into());
            r.attempt = attempt;
            r.dataproc_job_id = Some(format!("cv-{j}-{attempt}"));
            r
        };
        let mut first = job("job1", "poll", 1, "FAILED", 2);
        first.detail = r#"{"retry_at":"2026-01-01T00:00:00Z"}"#.into();
        let mut second = job("job2", "poll", 1, "FAILED", 6);
        second.error = Some("exit 1".into());
        let rows = [
            job("job1", "submit", 1, "SUBMITTED", 1),
            first,
            job("job1", "submit", 2, "SUBMITTED", 3),
            // Written by an instance whose clock is ahead: newer than job2's failure.
            job("job1", "poll", 2, "SUCCEEDED", 7),
            job("job2", "submit", 1, "SUBMITTED", 5),
            second,
        ];
        let runs = summarize(&rows);
        assert_eq!(runs[0].status, "FAILED");
        assert_eq!(runs[0].error.as_deref(), Some("exit 1"));
    }

    #[test]
    fn tasks_group_a_batch_attempt_and_order_by_start() {
        let mut s1 = row("r1", "submit", "SUBMITTED", 2);
        s1.dataproc_job_id = Some("j1".into());
        let mut p1 = row("r1", "poll", "SUCCEEDED", 7);
        p1.dataproc_job_id = Some("j1".into());
        let tasks = tasks(&[p1, row("r1", "load", "SUCCEEDED", 1), s1]);
        let labels: Vec<&str> = tasks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["load", "batch attempt 1"]);
        assert_eq!(tasks[1].status, "SUCCEEDED");
        assert_eq!(
            (tasks[1].end.unwrap() - tasks[1].start).num_seconds(),
            5,
            "from submission to the end"
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(chrono::Duration::milliseconds(850)), "850ms");
        assert_eq!(human_duration(chrono::Duration::seconds(185)), "3m 05s");
        assert_eq!(human_duration(chrono::Duration::minutes(130)), "2h 10m");
    }
}
