//! Runs whose state the latest-status views must report as [`RunState`] defines it: the rows
//! the chain writes for each, as the log step writes them ([`row_for`]).

use chrono::{Duration, TimeZone, Utc};
use conveyor_core::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use conveyor_core::names::{JobId, PipelineName, RunId};
use conveyor_core::ports::RunLogRow;
use conveyor_core::run_state::RunState;
use conveyor_core::steps::row_for;

/// One run: its name, the state it must show, its rows.
pub struct RunCase {
    /// What the run is.
    pub name: &'static str,
    /// The status it must show (`run_status` in the views).
    pub expected: &'static str,
    /// Its run-log rows.
    pub rows: Vec<RunLogRow>,
}

impl RunCase {
    /// Its run id.
    pub fn run_id(&self) -> &str {
        &self.rows[0].run_id
    }

    /// Its state by [`RunState::from_rows`].
    pub fn state(&self) -> RunState {
        RunState::from_rows(&self.rows).unwrap_or_else(|| panic!("{}: no rows", self.name))
    }
}

/// A row of `job`'s attempt at second `secs` of the run.
fn job_row(
    run: &str,
    job: &str,
    attempt: u32,
    status: Status,
    secs: i64,
    retry: bool,
) -> RunLogRow {
    let pipeline = PipelineName::parse("views").expect("pipeline");
    let run_id = RunId::derive(&pipeline, &[run]);
    let (kind, step) = match status {
        Status::Submitted => (EventType::BatchSubmitted, StepName::Submit),
        Status::Running => (EventType::BatchRunning, StepName::Poll),
        _ => (EventType::BatchFinished, StepName::Poll),
    };
    let start = Utc.timestamp_opt(1_765_000_000, 0).single().expect("time");
    let mut e = ConveyorEvent::new(
        kind,
        run_id.clone(),
        Some(pipeline),
        step,
        attempt,
        status,
        Detail {
            job: Some(job.to_owned()),
            job_id: Some(JobId::derive(job, &run_id, attempt)),
            engine: Some("local".to_owned()),
            error: matches!(status, Status::Failed).then(|| format!("{job} exit 1")),
            retry_at: retry.then_some(start + Duration::seconds(secs + 60)),
            ..Detail::default()
        },
    );
    e.time = start + Duration::seconds(secs);
    row_for(&e, "test")
}

/// The run's end (`dev.conveyor.run.finished`) at second `secs`.
fn run_end(run: &str, status: Status, secs: i64) -> RunLogRow {
    run_end_attempt(run, status, secs, 1)
}

/// The run's end of attempt `attempt` (a re-run ends the run again with the next attempt).
fn run_end_attempt(run: &str, status: Status, secs: i64, attempt: u32) -> RunLogRow {
    let pipeline = PipelineName::parse("views").expect("pipeline");
    let mut e = ConveyorEvent::new(
        EventType::RunFinished,
        RunId::derive(&pipeline, &[run]),
        Some(pipeline),
        StepName::Submit,
        attempt,
        status,
        Detail::default(),
    );
    e.time = Utc
        .timestamp_opt(1_765_000_000 + secs, 0)
        .single()
        .expect("time");
    row_for(&e, "test")
}

/// The runs: job 1 failed, was retried and succeeded, then job 2 failed (FAILED); the same
/// with job 1's success written by an instance whose clock is ahead (FAILED); a retry pending
/// (RETRYING); a retried job that succeeded (SUCCEEDED); a job running (RUNNING); a failed
/// run re-run from its failed job, which succeeded (SUCCEEDED: its last end decides); a re-run
/// in flight (RUNNING: the re-opened run's row is its last end).
pub fn run_cases() -> Vec<RunCase> {
    use Status::{Failed, Running, Submitted, Succeeded};
    let retried_then_failed = |run: &str, job1_done: i64| {
        vec![
            job_row(run, "job1", 1, Submitted, 1, false),
            job_row(run, "job1", 1, Failed, 2, true),
            job_row(run, "job1", 2, Submitted, 3, false),
            job_row(run, "job1", 2, Succeeded, job1_done, false),
            job_row(run, "job2", 1, Submitted, 5, false),
            job_row(run, "job2", 1, Failed, 6, false),
            run_end(run, Failed, 7),
        ]
    };
    vec![
        RunCase {
            name: "job1 retried then succeeded, job2 failed",
            expected: "FAILED",
            rows: retried_then_failed("a", 4),
        },
        RunCase {
            name: "the same, job1's success stamped later by a clock ahead",
            expected: "FAILED",
            rows: retried_then_failed("b", 9),
        },
        RunCase {
            name: "a failed attempt waiting for its retry",
            expected: "RETRYING",
            rows: vec![
                job_row("c", "job1", 1, Submitted, 1, false),
                job_row("c", "job1", 1, Failed, 2, true),
            ],
        },
        RunCase {
            name: "a retried job that succeeded",
            expected: "SUCCEEDED",
            rows: vec![
                job_row("d", "job1", 1, Submitted, 1, false),
                job_row("d", "job1", 1, Failed, 2, true),
                job_row("d", "job1", 2, Submitted, 3, false),
                job_row("d", "job1", 2, Succeeded, 4, false),
                run_end("d", Succeeded, 5),
            ],
        },
        RunCase {
            name: "a job running",
            expected: "RUNNING",
            rows: vec![
                job_row("e", "job1", 1, Submitted, 1, false),
                job_row("e", "job1", 1, Running, 2, false),
            ],
        },
        RunCase {
            name: "a failed run re-run from its failed job",
            expected: "SUCCEEDED",
            rows: {
                let mut rows = retried_then_failed("f", 4);
                rows.push(job_row("f", "job2", 2, Submitted, 20, false));
                rows.push(job_row("f", "job2", 2, Succeeded, 21, false));
                rows.push(run_end_attempt("f", Succeeded, 22, 2));
                rows
            },
        },
        RunCase {
            name: "a re-run in flight (the run re-opened, its failed job submitted again)",
            expected: "RUNNING",
            rows: {
                let mut rows = retried_then_failed("g", 4);
                rows.push(run_end_attempt("g", Running, 20, 2));
                rows.push(job_row("g", "job2", 2, Submitted, 21, false));
                rows
            },
        },
    ]
}
