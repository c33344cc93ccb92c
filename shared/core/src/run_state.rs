//! One definition of a run's state, from its run-log rows: what `conveyor status`, the console,
//! the poll step and the latest-status views (BigQuery's `run_latest_status`, PostgreSQL's
//! `<table>_latest_status`) all say a run is.
//!
//! The rule: a run is FAILED (or TIMED_OUT, REJECTED) when the **last attempt of any of its
//! jobs** ended so, whatever other jobs' attempts were — a retried job's attempt 2 that
//! SUCCEEDED does not hide a later job's failure. Otherwise the run's end row (the submit
//! step's `dev.conveyor.run.finished`) decides; otherwise its newest row, `RETRYING` when that
//! is a failed attempt with a retry scheduled.
//!
//! The row that decides is the first of the run's rows ordered by [`RunState::from_rows`]'s
//! ranking; the views rank with the same keys in SQL (`infra/modules/conveyor/run_latest_status.sql`
//! and `conveyor-postgres`), and tests run both against this definition.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::event::{ConveyorEvent, EventType, Status};
use crate::ports::RunLogRow;

/// The status a run shows while a failed attempt waits for its retry.
pub const RETRYING: &str = "RETRYING";

/// Whether `status` is a failure: FAILED, TIMED_OUT or REJECTED.
pub fn is_failure(status: &str) -> bool {
    matches!(status, "FAILED" | "TIMED_OUT" | "REJECTED" | "MISSED")
}

/// Whether `status` ends a run (or a task): a success, a failure, SUPERSEDED, SKIPPED (a
/// job whose `run_if` or `when` kept it from running), or PAUSED / RESUMED (an arrival or tick
/// a paused pipeline held or skipped — `conveyor resume` starts a run of its own for it — and
/// the pause's own rows): nothing of it is in flight.
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "SUCCEEDED" | "SUPERSEDED" | "SKIPPED" | "PAUSED" | "RESUMED"
    ) || is_failure(status)
}

/// Whether `row` is a failed attempt with a retry scheduled (`retry_at` in its detail).
pub fn retry_pending(row: &RunLogRow) -> bool {
    row.status == "FAILED"
        && serde_json::from_str::<serde_json::Value>(&row.detail)
            .ok()
            .and_then(|d| d.get("retry_at").cloned())
            .is_some_and(|v| !v.is_null())
}

/// Whether `event` is a failed attempt with a retry scheduled: what [`retry_pending`] says of
/// its run-log row.
pub fn event_retry_pending(event: &ConveyorEvent) -> bool {
    event.status == Status::Failed && event.detail.retry_at.is_some()
}

/// Whether `row` records the end of the whole run (`dev.conveyor.run.finished`: written by the
/// submit step, naming no job), not a task of it.
pub fn is_run_end(row: &RunLogRow) -> bool {
    row.step == "submit"
        && row.job.is_none()
        && row.job_id.is_none()
        && row.dataproc_job_id.is_none()
}

/// The task `row` belongs to: its job (`load`, a job's name), `batch` for batch rows of older
/// releases that name none, else its step; `None` for the run's end.
pub fn job_key(row: &RunLogRow) -> Option<String> {
    if is_run_end(row) {
        return None;
    }
    Some(match &row.job {
        Some(j) => j.clone(),
        None if row.dataproc_job_id.is_some() || matches!(row.step.as_str(), "submit" | "poll") => {
            "batch".to_owned()
        }
        None => row.step.clone(),
    })
}

/// How far along a status is: rows of one instant sort by it.
pub fn status_rank(status: &str) -> u8 {
    match status {
        // A run waiting for a slot (`max_active_runs`): before its first job's submission.
        "QUEUED" => 0,
        "SUBMITTED" => 1,
        "RUNNING" => 2,
        _ => 3,
    }
}

/// Where a step is in the chain: rows of one instant sort by it.
pub fn step_rank(step: &str) -> u8 {
    match step {
        "poll" => 4,
        "submit" => 3,
        "load" => 2,
        "stage" => 1,
        _ => 0,
    }
}

/// Rows newest first: by time, then (rows of one instant) the furthest status first.
pub fn newest_first(a: &RunLogRow, b: &RunLogRow) -> std::cmp::Ordering {
    b.td_timestamp
        .cmp(&a.td_timestamp)
        .then(status_rank(&b.status).cmp(&status_rank(&a.status)))
}

/// Whether `event` ends its run in failure, so that it alerts (once per failed run):
/// `dev.conveyor.run.finished` FAILED or TIMED_OUT, a failed load (`dev.conveyor.step.failed`
/// FAILED with no retry: a load's run ends with it) and a REJECTED request. A job's
/// `dev.conveyor.batch.finished` never does: the run's end follows it (its error names the job).
pub fn ends_run_in_failure(event: &ConveyorEvent) -> bool {
    match event.status {
        Status::Rejected => true,
        Status::Failed | Status::TimedOut => match event.kind {
            EventType::RunFinished => true,
            EventType::StepFailed => !event_retry_pending(event),
            _ => false,
        },
        _ => false,
    }
}

/// A run's state, from its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunState {
    /// `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `REJECTED`, `SUPERSEDED`, `SKIPPED`, `SUBMITTED`, `RUNNING`,
    /// `RETRYING`, ... (see the module's rule).
    pub status: String,
    /// The event id of the row that decides it (the row the latest-status views show).
    pub event_id: String,
    /// The job of that row (`None` for the run's end).
    pub job: Option<String>,
    /// That row's error, if it has one.
    pub error: Option<String>,
    /// When that row's transition happened.
    pub at: DateTime<Utc>,
}

impl RunState {
    /// The state of the run whose rows are `rows` (any order; rows of one run). `None` without
    /// rows.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a RunLogRow>) -> Option<Self> {
        let rows: Vec<(&RunLogRow, Option<String>)> =
            rows.into_iter().map(|r| (r, job_key(r))).collect();
        let mut last_attempt: BTreeMap<Option<&str>, u32> = BTreeMap::new();
        for (r, key) in &rows {
            let a = last_attempt.entry(key.as_deref()).or_default();
            *a = (*a).max(r.attempt);
        }
        let final_failure = |r: &RunLogRow, key: &Option<String>| {
            is_failure(&r.status)
                && !retry_pending(r)
                && last_attempt.get(&key.as_deref()) == Some(&r.attempt)
        };
        let (deciding, key) = rows.iter().max_by_key(|(r, key)| {
            (
                final_failure(r, key),
                key.is_none(),
                r.td_timestamp,
                step_rank(&r.step),
                status_rank(&r.status),
            )
        })?;
        Some(Self {
            status: if retry_pending(deciding) {
                RETRYING.to_owned()
            } else {
                deciding.status.clone()
            },
            event_id: deciding.event_id.clone(),
            job: key.clone(),
            error: deciding.error.clone().filter(|e| !e.is_empty()),
            at: deciding.td_timestamp,
        })
    }

    /// Whether the run has ended (its status is terminal).
    pub fn ended(&self) -> bool {
        is_terminal(&self.status)
    }

    /// Whether it ended in anything but success.
    pub fn failed(&self) -> bool {
        is_failure(&self.status)
    }

    /// Whether it ended in success.
    pub fn succeeded(&self) -> bool {
        self.status == "SUCCEEDED"
    }

    /// One state per run of `rows` (rows of any runs, any order), by run id.
    pub fn by_run<'a>(rows: impl IntoIterator<Item = &'a RunLogRow>) -> BTreeMap<String, Self> {
        let mut groups: BTreeMap<&str, Vec<&RunLogRow>> = BTreeMap::new();
        for r in rows {
            groups.entry(r.run_id.as_str()).or_default().push(r);
        }
        groups
            .into_iter()
            .filter_map(|(id, rows)| Some((id.to_owned(), Self::from_rows(rows)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(job: Option<&str>, step: &str, attempt: u32, status: &str, secs: i64) -> RunLogRow {
        RunLogRow {
            event_id: format!("{job:?}-{step}-{attempt}-{status}-{secs}"),
            run_id: "r1".to_owned(),
            pipeline: Some("p".to_owned()),
            step: step.to_owned(),
            attempt,
            status: status.to_owned(),
            job: job.map(str::to_owned),
            dataproc_job_id: job.map(|j| format!("cv-{j}-{attempt}")),
            td_timestamp: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
            detail: "{}".to_owned(),
            ..RunLogRow::default()
        }
    }

    fn retry(mut r: RunLogRow) -> RunLogRow {
        r.detail = r#"{"retry_at":"2026-01-01T00:00:00Z"}"#.to_owned();
        r
    }

    fn run_end(status: &str, secs: i64) -> RunLogRow {
        let mut r = row(None, "submit", 1, status, secs);
        r.dataproc_job_id = None;
        r
    }

    /// job1 attempt 1 FAILED (retried), attempt 2 SUCCEEDED; job2 attempt 1 FAILED.
    fn retried_then_failed() -> Vec<RunLogRow> {
        vec![
            row(Some("load"), "load", 1, "SUCCEEDED", 0),
            row(Some("job1"), "submit", 1, "SUBMITTED", 1),
            retry(row(Some("job1"), "poll", 1, "FAILED", 2)),
            row(Some("job1"), "submit", 2, "SUBMITTED", 3),
            row(Some("job1"), "poll", 2, "SUCCEEDED", 4),
            row(Some("job2"), "submit", 1, "SUBMITTED", 5),
            row(Some("job2"), "poll", 1, "FAILED", 6),
        ]
    }

    #[test]
    fn a_rerun_that_succeeds_ends_the_run_again_and_the_run_reads_succeeded() {
        let mut rows = retried_then_failed();
        rows.push(run_end("FAILED", 7));
        assert_eq!(RunState::from_rows(&rows).expect("state").status, "FAILED");
        // The re-run: job2 attempt 2 succeeds and the run ends again (its end's attempt 2).
        rows.push(row(Some("job2"), "submit", 2, "SUBMITTED", 20));
        rows.push(row(Some("job2"), "poll", 2, "SUCCEEDED", 21));
        let mut end = run_end("SUCCEEDED", 22);
        end.attempt = 2;
        rows.push(end);
        let state = RunState::from_rows(&rows).expect("state");
        assert_eq!(state.status, "SUCCEEDED", "{state:?}");
        assert_eq!(state.job, None, "the run's last end decides");
    }

    #[test]
    fn a_later_jobs_failure_is_not_hidden_by_an_earlier_jobs_successful_retry() {
        let state = RunState::from_rows(&retried_then_failed()).expect("state");
        assert_eq!(state.status, "FAILED");
        assert_eq!(state.job.as_deref(), Some("job2"));
        assert!(state.failed() && state.ended());
    }

    #[test]
    fn a_failed_job_decides_even_when_a_row_of_another_job_is_newer() {
        // A row written after the failure (a late RUNNING of job1 attempt 2) does not hide it.
        let mut rows = retried_then_failed();
        rows.push(row(Some("job1"), "poll", 2, "RUNNING", 9));
        assert_eq!(RunState::from_rows(&rows).expect("state").status, "FAILED");
        // Nor does the run's own end.
        rows.push(run_end("FAILED", 10));
        assert_eq!(RunState::from_rows(&rows).expect("state").status, "FAILED");
    }

    #[test]
    fn a_failed_attempt_that_was_retried_successfully_does_not_fail_the_run() {
        let rows: Vec<RunLogRow> = retried_then_failed().into_iter().take(5).collect();
        assert_eq!(
            RunState::from_rows(&rows).expect("state").status,
            "SUCCEEDED"
        );
        let mut ended = rows.clone();
        ended.push(run_end("SUCCEEDED", 5));
        let state = RunState::from_rows(&ended).expect("state");
        assert_eq!(state.status, "SUCCEEDED");
        assert_eq!(state.job, None, "the run's end decides");
    }

    #[test]
    fn a_failed_attempt_with_its_retry_pending_is_retrying_and_open() {
        let rows: Vec<RunLogRow> = retried_then_failed().into_iter().take(3).collect();
        let state = RunState::from_rows(&rows).expect("state");
        assert_eq!(state.status, RETRYING);
        assert!(!state.ended() && !state.failed());
        // Its next attempt running: RUNNING.
        let rows: Vec<RunLogRow> = retried_then_failed().into_iter().take(4).collect();
        assert_eq!(
            RunState::from_rows(&rows).expect("state").status,
            "SUBMITTED"
        );
    }

    #[test]
    fn a_timed_out_last_attempt_fails_the_run_and_rows_of_one_instant_rank_by_progress() {
        let mut rows = vec![
            row(Some("job1"), "submit", 1, "SUBMITTED", 0),
            row(Some("job1"), "poll", 1, "RUNNING", 0),
        ];
        assert_eq!(RunState::from_rows(&rows).expect("state").status, "RUNNING");
        rows.push(row(Some("job1"), "poll", 1, "TIMED_OUT", 0));
        assert_eq!(
            RunState::from_rows(&rows).expect("state").status,
            "TIMED_OUT"
        );
    }

    #[test]
    fn retry_pending_reads_the_detail_as_json_not_as_text() {
        let mut r = row(Some("j"), "poll", 1, "FAILED", 0);
        r.detail = r#"{"vars":{"note":"\"retry_at\""},"retry_at":null}"#.to_owned();
        assert!(!retry_pending(&r));
        r.detail = "not json \"retry_at\"".to_owned();
        assert!(!retry_pending(&r));
        assert!(retry_pending(&retry(r)));
    }

    #[test]
    fn only_a_runs_end_alerts_not_the_failed_job_before_it() {
        use crate::event::{Detail, StepName};
        use crate::names::{PipelineName, RunId};
        let p = PipelineName::parse("p").expect("name");
        let ev = |kind, status, retry: bool| {
            ConveyorEvent::new(
                kind,
                RunId::derive(&p, &["x"]),
                Some(p.clone()),
                StepName::Poll,
                1,
                status,
                Detail {
                    retry_at: retry.then(Utc::now),
                    ..Detail::default()
                },
            )
        };
        assert!(!ends_run_in_failure(&ev(
            EventType::BatchFinished,
            Status::Failed,
            false
        )));
        assert!(!ends_run_in_failure(&ev(
            EventType::BatchFinished,
            Status::TimedOut,
            false
        )));
        assert!(ends_run_in_failure(&ev(
            EventType::RunFinished,
            Status::Failed,
            false
        )));
        assert!(ends_run_in_failure(&ev(
            EventType::RunFinished,
            Status::TimedOut,
            false
        )));
        assert!(!ends_run_in_failure(&ev(
            EventType::RunFinished,
            Status::Succeeded,
            false
        )));
        assert!(ends_run_in_failure(&ev(
            EventType::StepFailed,
            Status::Failed,
            false
        )));
        assert!(ends_run_in_failure(&ev(
            EventType::StepFailed,
            Status::Rejected,
            false
        )));
    }
}
