//! The open jobs of a run log: what the poll tick follows, stated once for every run log
//! (SQLite, BigQuery, PostgreSQL).
//!
//! The rule ([`open_jobs`]): of each job of each run, its newest row — highest attempt, then
//! furthest status (SUBMITTED < RUNNING < an ended one), then latest time, then the row
//! written last — when that row leaves the job open ([`is_open`]): SUBMITTED, RUNNING, or a
//! failed attempt with its retry scheduled. A row's job is its `job`, or `batch` for a batch
//! row of an older release that names none ([`open_job_key`]); rows of no job (the run's end,
//! the stage step's) are never open.
//!
//! A run log does not rank in its own SQL: it reads the **candidates** — the rows since the
//! poll's look-back of the runs that have a row which may be open ([`candidate_condition`],
//! one description written out per [`SqlDialect`]) — and hands them to [`open_jobs`]. The
//! condition only narrows what is read: a run none of whose rows meets it has no open job.

use std::collections::BTreeMap;

use crate::ports::RunLogRow;
use crate::run_state::{retry_pending, status_rank};

/// The SQL dialects of the run logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    /// The embedded database's (`json_extract`).
    Sqlite,
    /// GoogleSQL (`JSON_VALUE`).
    BigQuery,
    /// PostgreSQL (the text of the detail: a cast to `jsonb` would fail the read on a detail
    /// that is not JSON).
    Postgres,
}

/// The statuses that leave a job open by themselves.
const OPEN_STATUSES: [&str; 2] = ["SUBMITTED", "RUNNING"];

/// The SQL condition on one row (columns `status` and `detail`) that holds for every row
/// [`is_open`] accepts: SUBMITTED, RUNNING, or FAILED with a `retry_at` in its detail.
pub fn candidate_condition(dialect: SqlDialect) -> String {
    let statuses = OPEN_STATUSES
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let retry_at = match dialect {
        SqlDialect::Sqlite => "json_extract(detail, '$.retry_at') IS NOT NULL",
        SqlDialect::BigQuery => "JSON_VALUE(detail, '$.retry_at') IS NOT NULL",
        // Wider than the rule (a `"retry_at": null` passes): the rule decides.
        SqlDialect::Postgres => "strpos(detail, '\"retry_at\"') > 0",
    };
    format!("(status IN ({statuses}) OR (status = 'FAILED' AND {retry_at}))")
}

/// The job `row` belongs to for the poll tick: its `job`, else `batch` for a batch row of an
/// older release (it has a batch job id); `None` for a row of no job.
pub fn open_job_key(row: &RunLogRow) -> Option<&str> {
    match (&row.job, &row.dataproc_job_id) {
        (Some(job), _) => Some(job),
        (None, Some(_)) => Some("batch"),
        (None, None) => None,
    }
}

/// Whether `row`, as its job's newest row, leaves the job open.
pub fn is_open(row: &RunLogRow) -> bool {
    OPEN_STATUSES.contains(&row.status.as_str()) || retry_pending(row)
}

/// The open jobs among `rows` (the rows of any runs, each event once): one row per open job,
/// oldest first. Of rows that rank alike, the later one in `rows` wins (a run log hands its
/// rows in the order it stored them).
pub fn open_jobs(rows: impl IntoIterator<Item = RunLogRow>) -> Vec<RunLogRow> {
    let mut newest: BTreeMap<(String, String), RunLogRow> = BTreeMap::new();
    for row in rows {
        let Some(job) = open_job_key(&row) else {
            continue;
        };
        let key = (row.run_id.clone(), job.to_owned());
        let rank = |r: &RunLogRow| (r.attempt, status_rank(&r.status), r.td_timestamp);
        match newest.get(&key) {
            Some(held) if rank(held) > rank(&row) => {}
            _ => {
                newest.insert(key, row);
            }
        }
    }
    let mut open: Vec<RunLogRow> = newest.into_values().filter(is_open).collect();
    open.sort_by_key(|r| r.td_timestamp);
    open
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn row(run: &str, job: Option<&str>, attempt: u32, status: &str, secs: i64) -> RunLogRow {
        RunLogRow {
            event_id: format!("{run}-{job:?}-{attempt}-{status}-{secs}"),
            run_id: run.to_owned(),
            step: "poll".to_owned(),
            attempt,
            status: status.to_owned(),
            job: job.map(str::to_owned),
            td_timestamp: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
            detail: "{}".to_owned(),
            ..RunLogRow::default()
        }
    }

    fn ids(rows: &[RunLogRow]) -> Vec<&str> {
        rows.iter().map(|r| r.event_id.as_str()).collect()
    }

    #[test]
    fn the_newest_row_of_each_job_decides_by_attempt_then_status_then_time() {
        let mut retry = row("r1", Some("a"), 1, "FAILED", 1);
        retry.detail = r#"{"retry_at":"2026-01-01T00:00:00Z"}"#.to_owned();
        let rows = vec![
            row("r1", Some("a"), 1, "SUBMITTED", 0),
            retry.clone(),
            row("r2", Some("a"), 2, "RUNNING", 0),
            // An older attempt's row written later does not reopen the job.
            row("r2", Some("a"), 1, "SUBMITTED", 5),
            row("r3", Some("a"), 1, "RUNNING", 3),
            row("r3", Some("a"), 1, "SUBMITTED", 3),
            row("r4", Some("a"), 1, "SUBMITTED", 0),
            row("r4", Some("a"), 1, "SUCCEEDED", 0),
        ];
        let open = open_jobs(rows);
        assert_eq!(
            ids(&open),
            [
                "r2-Some(\"a\")-2-RUNNING-0",
                &retry.event_id,
                "r3-Some(\"a\")-1-RUNNING-3"
            ]
        );
    }

    #[test]
    fn rows_of_no_job_are_never_open_and_old_batch_rows_are_job_batch() {
        let mut old = row("r1", None, 1, "RUNNING", 0);
        old.dataproc_job_id = Some("cv-batch-1".to_owned());
        let open = open_jobs(vec![row("r2", None, 1, "RUNNING", 0), old.clone()]);
        assert_eq!(ids(&open), [old.event_id.as_str()]);
    }

    #[test]
    fn a_failed_row_is_open_only_with_a_retry_at() {
        let mut r = row("r1", Some("a"), 1, "FAILED", 0);
        assert!(!is_open(&r));
        r.detail = r#"{"retry_at":null}"#.to_owned();
        assert!(!is_open(&r));
        r.detail = r#"{"retry_at":"2026-01-01T00:00:00Z"}"#.to_owned();
        assert!(is_open(&r));
        assert!(candidate_condition(SqlDialect::Sqlite).contains("json_extract"));
    }
}
