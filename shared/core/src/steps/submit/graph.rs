//! The jobs as a graph (`needs`, `run_if`): what follows a job's end when a pipeline's jobs are
//! more than a line where a failure ends the run.
//!
//! The state of a run's jobs is read from the run log, with the job that just ended taken
//! from its own event (its row may not be written yet). Every job that has not started and
//! whose needs have all ended is decided: started (its ids are deterministic, so two
//! deliveries that decide it both adopt one job) or SKIPPED (a deterministic event id, so one
//! row). SKIPPED cascades in the same delivery; the run ends once every job has ended.
//!
//! Two needs ending at the same moment may each read the other as still running, and so
//! neither starts the job that needs both: the poll tick's [`sweep_graphs`] decides, for each
//! run with an ended job, no open job and no end, what an event would have.

use std::collections::BTreeMap;

use chrono::Utc;
use tracing::{info, warn};

use super::super::{Context, Outcome, StepError, publish};
use super::{end_run, start_job};
use crate::config::{Ended, Pipeline};
use crate::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use crate::names::{JobId, RunId};
use crate::ports::{RunLogQuery, RunLogRow};
use crate::run_state::RunState;

/// Where one job of a run stands.
#[derive(Debug, Clone, PartialEq)]
enum Stand {
    /// No row yet.
    NotStarted,
    /// Submitted, running, or waiting for a retry.
    Open,
    /// Ended for good: its status (SUCCEEDED, FAILED, TIMED_OUT, SKIPPED) and error.
    Ended(Status, Option<String>),
}

impl Stand {
    fn ended(&self) -> Option<Ended> {
        match self {
            Self::Ended(Status::Succeeded, _) => Some(Ended::Succeeded),
            Self::Ended(Status::Skipped, _) => Some(Ended::Skipped),
            Self::Ended(_, _) => Some(Ended::Failed),
            _ => None,
        }
    }
}

/// The stand of each job of `pipeline` (by index) in `run_id`, from its run-log rows.
fn stands(pipeline: &Pipeline, rows: &[RunLogRow]) -> Vec<Stand> {
    pipeline
        .jobs
        .iter()
        .map(|job| {
            let state = RunState::from_rows(
                rows.iter()
                    .filter(|r| r.job.as_deref() == Some(job.name.as_str())),
            );
            match state {
                None => Stand::NotStarted,
                Some(s) if s.ended() => match Status::parse(&s.status) {
                    Some(status) => Stand::Ended(status, s.error),
                    None => Stand::Open,
                },
                Some(_) => Stand::Open,
            }
        })
        .collect()
}

/// A job of a graph pipeline ended (`e`, job `index`): decide what follows.
pub(super) async fn after_job(
    ctx: &Context,
    pipeline: &Pipeline,
    e: &ConveyorEvent,
    index: usize,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    // A SKIPPED job's end is followed like any other (a job skipped by its `when` decides
    // nothing by itself); decisions made already are made again under the same ids.
    let rows = run_rows(ctx, pipeline, &e.run_id).await?;
    let mut stands = stands(pipeline, &rows);
    stands[index] = Stand::Ended(e.status, e.detail.error.clone());
    let mut base = e.detail.clone();
    base.job_id = None;
    base.engine = None;
    advance(ctx, pipeline, &e.run_id, stands, base, e.time, outcome).await
}

/// The rows of `run_id` in `pipeline`'s run log.
async fn run_rows(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
) -> Result<Vec<RunLogRow>, StepError> {
    ctx.ports
        .run_log
        .rows(
            &ctx.config.run_log_table(pipeline),
            &RunLogQuery {
                run_id: Some(run_id.to_string()),
                ..RunLogQuery::default()
            },
        )
        .await
        .map_err(|e| StepError::Transient(format!("cannot read the run log: {e}")))
}

/// Starts or skips every job whose needs have all ended, cascading skips; ends the run when
/// every job has ended and nothing was started. Past the run's whole-run timeout at `at`, it
/// starts nothing: once no job is open (the poll tick cancels them) the run ends TIMED_OUT.
#[allow(clippy::too_many_arguments)]
async fn advance(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    mut stands: Vec<Stand>,
    mut base: Detail,
    at: chrono::DateTime<Utc>,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    if let Some(why) = super::super::run_timeout::exceeded(pipeline, &base, at)
        && stands.contains(&Stand::NotStarted)
    {
        if stands.contains(&Stand::Open) {
            outcome.summary = format!("{why}; waiting for the poll tick to cancel its open jobs");
            return Ok(());
        }
        let never: Vec<&str> = pipeline
            .jobs
            .iter()
            .zip(&stands)
            .filter(|(_, s)| **s == Stand::NotStarted)
            .map(|(j, _)| j.name.as_str())
            .collect();
        base.error = Some(format!("{why}; not started: {}", never.join(", ")));
        return end_run(ctx, pipeline, run_id, Status::TimedOut, base, outcome).await;
    }
    let mut started = Vec::new();
    let mut skipped = Vec::new();
    loop {
        let mut changed = false;
        for i in 0..pipeline.jobs.len() {
            if stands[i] != Stand::NotStarted {
                continue;
            }
            let needs = pipeline.needs_of(i);
            if needs.is_empty() {
                // Jobs that need nothing start with the run, not here.
                continue;
            }
            let Some(ended) = needs
                .iter()
                .map(|n| stands[*n].ended())
                .collect::<Option<Vec<Ended>>>()
            else {
                continue;
            };
            let job = &pipeline.jobs[i];
            changed = true;
            if job.run_if.allows(&ended) {
                let mut one = Outcome::default();
                start_job(ctx, pipeline, run_id, i, base.clone(), &mut one).await?;
                outcome.events.append(&mut one.events);
                started.push(job.name.to_string());
                stands[i] = Stand::Open;
            } else {
                let why = format!(
                    "skipped: run_if {} is not met by {}",
                    job.run_if.as_str(),
                    needs
                        .iter()
                        .map(|n| format!(
                            "{} {}",
                            pipeline.jobs[*n].name,
                            match &stands[*n] {
                                Stand::Ended(s, _) => s.as_str(),
                                _ => "?",
                            }
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                skip_job(ctx, pipeline, run_id, i, base.clone(), why.clone(), outcome).await?;
                skipped.push(job.name.to_string());
                stands[i] = Stand::Ended(Status::Skipped, Some(why));
            }
        }
        if !changed {
            break;
        }
    }
    if !started.is_empty() || !skipped.is_empty() {
        info!(pipeline = %pipeline.name, run_id = %run_id, started = ?started, skipped = ?skipped, "jobs decided");
        outcome.summary = format!(
            "started [{}], skipped [{}]",
            started.join(", "),
            skipped.join(", ")
        );
    }
    if !started.is_empty() || stands.iter().any(|s| s.ended().is_none()) {
        if started.is_empty() && skipped.is_empty() {
            outcome.summary = "waiting for other jobs of the run".to_owned();
        }
        return Ok(());
    }
    // Every job has ended: the run ends FAILED (TIMED_OUT) when any job did, whatever ran
    // after it (a cleanup that succeeded does not hide the failure it cleaned up after).
    let failures: Vec<(Status, String)> = pipeline
        .jobs
        .iter()
        .zip(&stands)
        .filter_map(|(job, s)| match s {
            Stand::Ended(st @ (Status::Failed | Status::TimedOut | Status::Rejected), err) => {
                Some((
                    *st,
                    format!(
                        "job {} {st}: {}",
                        job.name,
                        err.as_deref().unwrap_or("no error given")
                    ),
                ))
            }
            _ => None,
        })
        .collect();
    let mut detail = base;
    let status = match failures.first() {
        None => {
            detail.error = None;
            Status::Succeeded
        }
        Some((status, _)) => {
            detail.error = Some(
                failures
                    .iter()
                    .map(|(_, e)| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            *status
        }
    };
    let mut one = Outcome::default();
    end_run(ctx, pipeline, run_id, status, detail, &mut one).await?;
    outcome.events.append(&mut one.events);
    if started.is_empty() && skipped.is_empty() {
        outcome.summary = one.summary;
    } else {
        outcome.summary = format!("{}; {}", outcome.summary, one.summary);
    }
    Ok(())
}

/// Records job `index` of `run_id` as SKIPPED (`dev.conveyor.batch.finished`), under an id
/// derived from the job and the run so a second delivery's skip is the same row.
pub(super) async fn skip_job(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    index: usize,
    mut detail: Detail,
    why: String,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let job = &pipeline.jobs[index];
    detail.job = Some(job.name.to_string());
    detail.job_id = Some(JobId::derive(job.name.as_str(), run_id, 0));
    detail.engine = None;
    detail.engine_state = None;
    detail.retry_at = None;
    detail.children.clear();
    detail.row.clear();
    detail.started_at = Some(Utc::now());
    detail.error = Some(why);
    info!(pipeline = %pipeline.name, run_id = %run_id, job = %job.name, "job skipped");
    let ev = ctx.event(
        EventType::BatchFinished,
        run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Submit,
        1,
        Status::Skipped,
        detail,
    );
    publish(ctx, outcome, ev).await
}

/// The poll tick's safety net for graphs: in each active pipeline whose jobs form a graph,
/// every run of the look-back with an ended job, no open job and no end is advanced as an
/// event would have advanced it. Returns how many runs it moved.
pub(in crate::steps) async fn sweep_graphs(
    ctx: &Context,
    since: chrono::DateTime<Utc>,
    outcome: &mut Outcome,
) -> Result<usize, StepError> {
    let mut moved = 0;
    for p in ctx
        .config
        .pipelines
        .iter()
        .filter(|p| p.active && p.has_rules())
    {
        let rows = ctx
            .ports
            .run_log
            .rows(
                &ctx.config.run_log_table(p),
                &RunLogQuery {
                    pipeline: Some(p.name.to_string()),
                    since: Some(since),
                    ..RunLogQuery::default()
                },
            )
            .await
            .map_err(|e| StepError::Transient(format!("cannot read the run log: {e}")))?;
        let mut runs: BTreeMap<&str, Vec<RunLogRow>> = BTreeMap::new();
        for r in &rows {
            runs.entry(r.run_id.as_str()).or_default().push(r.clone());
        }
        for (run, rows) in runs {
            if rows.iter().any(crate::run_state::is_run_end) {
                continue;
            }
            let stands = stands(p, &rows);
            if stands.contains(&Stand::Open) || !stands.iter().any(|s| s.ended().is_some()) {
                continue;
            }
            // The newest row of a job carries the run's values; a `for_each` row's own run
            // (its values name its parent) is not a run of the pipeline.
            let Some(detail) = rows
                .iter()
                .filter(|r| r.job.as_deref().is_some_and(|j| p.job(j).is_some()))
                .max_by_key(|r| r.td_timestamp)
                .and_then(|r| serde_json::from_str::<Detail>(&r.detail).ok())
            else {
                continue;
            };
            if detail.vars.contains_key("parent_run_id") {
                continue;
            }
            let Ok(run_id) = RunId::parse(run) else {
                continue;
            };
            warn!(pipeline = %p.name, run_id = %run_id, "a graph run with no open job and no end; the sweep advances it");
            let mut base = detail;
            base.job_id = None;
            base.engine = None;
            base.error = None;
            let mut one = Outcome::default();
            advance(ctx, p, &run_id, stands, base, Utc::now(), &mut one).await?;
            if !one.events.is_empty() {
                moved += 1;
            }
            outcome.events.append(&mut one.events);
        }
    }
    Ok(moved)
}
