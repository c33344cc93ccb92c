//! What follows a job's end: the next job, or the run's end; and what follows a run's end:
//! the pipelines started `after` it (fan-in), with no process waiting for anything.
//!
//! Fan-in is claimed by a deterministic run id: the downstream run of a date is
//! `RunId::for_origin(downstream, RunOrigin::After { date })`, so the upstreams finishing at the same moment,
//! a redelivered event and the poll tick's sweep all compute the same run and its jobs adopt
//! what another already started.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration, Utc};
use tracing::{info, warn};

use super::super::{Context, Outcome, StepError, publish};
use super::start_job;

use crate::config::Pipeline;
use crate::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use crate::names::{PipelineName, RunId, TableRef};
use crate::ports::{RunLogQuery, RunLogRow};
use crate::run_origin::RunOrigin;

/// How far back the poll tick looks for upstream runs whose fan-in may not have started.
const SWEEP_LOOKBACK_HOURS: i64 = 48;

/// A job of `pipeline` ended (`dev.conveyor.batch.finished`): start the next, or end the run.
pub(super) async fn after_job(
    ctx: &Context,
    pipeline: &Pipeline,
    e: &ConveyorEvent,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    if e.detail.vars.contains_key("parent_run_id") {
        outcome.summary = format!(
            "{} is a for_each row's run: its job ends when every row has ended",
            e.run_id
        );
        return Ok(());
    }
    let name = e.detail.job.as_deref().unwrap_or("batch");
    let Some((index, _)) = pipeline.job(name) else {
        outcome.summary = format!("pipeline {} has no job {name:?} any more", pipeline.name);
        return Ok(());
    };
    if crate::run_state::event_retry_pending(e) {
        outcome.summary = format!("job {name} failed; the poll step retries it");
        return Ok(());
    }
    if pipeline.has_rules() {
        return super::graph::after_job(ctx, pipeline, e, index, outcome).await;
    }
    let mut base = e.detail.clone();
    // Past the run's timeout (at the job's end: a redelivery decides the same) no further job
    // starts; a last job that succeeded still ends the run SUCCEEDED.
    let last_succeeded = e.status == Status::Succeeded && index + 1 == pipeline.jobs.len();
    if !last_succeeded
        && let Some(why) = super::super::run_timeout::exceeded(pipeline, &e.detail, e.time)
    {
        base.error = Some(match e.status {
            Status::Succeeded => format!("{why}; no job started after {name}"),
            status => format!(
                "{why}; job {name} {status}: {}",
                e.detail.error.as_deref().unwrap_or("no error given")
            ),
        });
        return end_run(ctx, pipeline, &e.run_id, Status::TimedOut, base, outcome).await;
    }
    match e.status {
        Status::Succeeded if index + 1 < pipeline.jobs.len() => {
            base.job_id = None;
            base.engine = None;
            start_job(ctx, pipeline, &e.run_id, index + 1, base, outcome).await
        }
        Status::Succeeded => {
            end_run(ctx, pipeline, &e.run_id, Status::Succeeded, base, outcome).await
        }
        Status::Failed | Status::TimedOut => {
            base.error = Some(format!(
                "job {name} {}: {}",
                e.status,
                e.detail.error.as_deref().unwrap_or("no error given")
            ));
            end_run(ctx, pipeline, &e.run_id, e.status, base, outcome).await
        }
        other => {
            outcome.summary = format!("job {name} {other}: nothing to do");
            Ok(())
        }
    }
}

/// Publishes the end of `run_id` (`dev.conveyor.run.finished`).
pub(in crate::steps) async fn end_run(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    mut status: Status,
    mut detail: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    if status == Status::Succeeded && !pipeline.checks.is_empty() {
        // The pipeline's checks decide whether a run whose jobs all succeeded succeeds.
        let report = super::super::checks::run_for_pipeline(ctx, pipeline, run_id, &detail)
            .await
            .map_err(|e| StepError::Transient(format!("cannot run the pipeline's checks: {e}")))?;
        if let Some(failure) = report.failure {
            status = Status::Failed;
            detail.error = Some(failure);
        } else if !report.warnings.is_empty() {
            detail.error = Some(format!("CHECK_WARN: {}", report.warnings.join("; ")));
        }
    }
    detail.job = None;
    detail.job_id = None;
    detail.engine = None;
    detail.engine_state = None;
    detail.retry_at = None;
    detail.log = None;
    detail.children.clear();
    detail.row.clear();
    let date = run_date(&detail, Utc::now());
    detail.vars.entry("date".to_owned()).or_insert(date);
    info!(pipeline = %pipeline.name, run_id = %run_id, status = %status, "run finished");
    // A re-run ends the run again: its end is a new row (attempt 2 after the first re-run).
    let attempt = super::super::rerun::end_attempt(&detail);
    let ev = ctx.event(
        EventType::RunFinished,
        run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Submit,
        attempt,
        status,
        detail,
    );
    outcome.summary = format!("run {run_id} {status}");
    publish(ctx, outcome, ev).await?;
    // A slot of `max_active_runs` is free: the oldest queued run starts.
    let started = super::queue::release(ctx, pipeline, Some(run_id), outcome).await?;
    if started > 0 {
        outcome
            .summary
            .push_str(&format!("; started {started} queued run(s)"));
    }
    Ok(())
}

/// The run date of a run: its `date` value (a capture or the start's day), else the UTC day
/// it started.
fn run_date(detail: &Detail, fallback: chrono::DateTime<Utc>) -> String {
    match detail.vars.get("date") {
        Some(d) => d.clone(),
        None => detail
            .started_at
            .unwrap_or(fallback)
            .format("%Y-%m-%d")
            .to_string(),
    }
}

/// The run id of `downstream`'s run for `date`.
pub(in crate::steps) fn after_run_id(downstream: &PipelineName, date: &str) -> RunId {
    RunId::for_origin(downstream, &RunOrigin::After { date })
}

/// A run ended: for each active pipeline started `after` its pipeline, start that pipeline's
/// run for the same date once every upstream has a SUCCEEDED run of that date.
pub(super) async fn fan_in(
    ctx: &Context,
    e: &ConveyorEvent,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(upstream) = &e.pipeline else {
        return Ok(());
    };
    if e.status != Status::Succeeded {
        outcome.summary = format!("run {} {}: no fan-in", e.run_id, e.status);
        return Ok(());
    }
    let date = run_date(&e.detail, e.time);
    let mut started = Vec::new();
    for p in ctx
        .config
        .pipelines
        .iter()
        .filter(|p| p.active && p.trigger.after.contains(upstream))
    {
        // The upstream that finished is known from its event; the others are read from the
        // run log.
        let others: Vec<&PipelineName> =
            p.trigger.after.iter().filter(|u| *u != upstream).collect();
        let mut missing = Vec::new();
        for u in others {
            if !succeeded_dates(ctx, u, Utc::now() - Duration::days(31))
                .await?
                .contains(&date)
            {
                missing.push(u.to_string());
            }
        }
        if missing.is_empty() {
            start_after(ctx, p, &date, outcome).await?;
            started.push(p.name.to_string());
        } else {
            info!(pipeline = %p.name, date = %date, waiting_for = ?missing, "fan-in waits for upstreams");
        }
    }
    if !started.is_empty() {
        outcome.summary = format!("started {} for {date}", started.join(", "));
    } else if outcome.summary.is_empty() {
        outcome.summary = format!("run {} SUCCEEDED; nothing starts after it yet", e.run_id);
    }
    Ok(())
}

/// The dates on which `pipeline` has a SUCCEEDED run end since `since`.
async fn succeeded_dates(
    ctx: &Context,
    pipeline: &PipelineName,
    since: chrono::DateTime<Utc>,
) -> Result<BTreeSet<String>, StepError> {
    let Some(p) = ctx.config.pipeline(pipeline.as_str()) else {
        return Ok(BTreeSet::new());
    };
    let rows = run_ends(ctx, &ctx.config.run_log_table(p), pipeline, since).await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let detail: Detail = serde_json::from_str(&r.detail).ok()?;
            Some(run_date(&detail, r.td_timestamp))
        })
        .collect())
}

/// The SUCCEEDED run ends of `pipeline` since `since`: rows of the submit step that name no
/// job.
async fn run_ends(
    ctx: &Context,
    table: &TableRef,
    pipeline: &PipelineName,
    since: chrono::DateTime<Utc>,
) -> Result<Vec<RunLogRow>, StepError> {
    let rows = ctx
        .ports
        .run_log
        .rows(
            table,
            &RunLogQuery {
                pipeline: Some(pipeline.to_string()),
                since: Some(since),
                statuses: vec![Status::Succeeded.as_str().to_owned()],
                ..RunLogQuery::default()
            },
        )
        .await
        .map_err(|e| StepError::Transient(format!("cannot read the run log: {e}")))?;
    Ok(rows
        .into_iter()
        .filter(|r| r.step == StepName::Submit.as_str() && r.job.is_none())
        .collect())
}

/// Starts `p`'s run for `date`: its first job, under the run id every caller computes alike.
async fn start_after(
    ctx: &Context,
    p: &Pipeline,
    date: &str,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let run_id = after_run_id(&p.name, date);
    info!(pipeline = %p.name, run_id = %run_id, date, "every upstream succeeded; starting");
    let base = Detail {
        vars: BTreeMap::from([("date".to_owned(), date.to_owned())]),
        started_at: Some(Utc::now()),
        ..Detail::default()
    };
    let mut one = Outcome::default();
    super::start_run(ctx, p, &run_id, base, &mut one).await?;
    outcome.events.append(&mut one.events);
    Ok(())
}

/// The poll tick's safety net for fan-in: an upstream's end may be read before another's row
/// is visible in the run log, so both checks can miss. For each pipeline started `after`
/// others, every date of the last two days on which all its upstreams succeeded and it has no
/// run yet gets its run. Returns how many runs it started.
pub(in crate::steps) async fn sweep_after(
    ctx: &Context,
    outcome: &mut Outcome,
) -> Result<usize, StepError> {
    let since = Utc::now() - Duration::hours(SWEEP_LOOKBACK_HOURS);
    let mut started = 0;
    for p in ctx
        .config
        .pipelines
        .iter()
        .filter(|p| p.active && !p.trigger.after.is_empty())
    {
        let mut common: Option<BTreeSet<String>> = None;
        for u in &p.trigger.after {
            let dates = succeeded_dates(ctx, u, since).await?;
            common = Some(match common {
                None => dates,
                Some(c) => c.intersection(&dates).cloned().collect(),
            });
        }
        for date in common.unwrap_or_default() {
            let run_id = after_run_id(&p.name, &date);
            let table = ctx.config.run_log_table(p);
            let existing = ctx
                .ports
                .run_log
                .rows(
                    &table,
                    &RunLogQuery {
                        run_id: Some(run_id.to_string()),
                        limit: 1,
                        ..RunLogQuery::default()
                    },
                )
                .await
                .map_err(|e| StepError::Transient(format!("cannot read the run log: {e}")))?;
            if existing.is_empty() {
                warn!(pipeline = %p.name, date = %date, "fan-in found by the sweep, not by an event; starting");
                start_after(ctx, p, &date, outcome).await?;
                started += 1;
            }
        }
    }
    Ok(started)
}
