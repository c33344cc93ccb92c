//! submit: runs a pipeline's jobs in order, each with a deterministic id, and ends runs.
//!
//! It reacts to:
//! - `dev.conveyor.table.loaded`: the run's first job (or the run's end when it has no jobs);
//! - a start request (schedule, `curl`, `conveyor run`): the first job of a new run;
//! - `dev.conveyor.batch.finished`: the next job after a SUCCEEDED one, or the run's end after the
//!   last one or after a job that failed for good;
//! - `dev.conveyor.run.finished` (SUCCEEDED): pipelines started `after` this one whose every
//!   upstream now has a SUCCEEDED run for the same date (fan-in, see `chain.rs`);
//! - `dev.conveyor.row.queued`: one `for_each` row's batch (a job's rows fan out as one event
//!   each, so no request starts a whole table's batches).
//!
//! # Layout
//! - `mod.rs`: the dispatch, start requests and their run ids.
//! - `job.rs`: starting a job: one batch, or one `dev.conveyor.row.queued` per `for_each` row
//!   and each row's batch; the request of an attempt, rebuilt the same way by the poll step.
//! - `chain.rs`: what follows a job's end, run ends, fan-in.
//! - `claim.rs`: the create-only claim a submit of `cloud_run_job` or `http` takes before
//!   calling the engine, so two deliveries at once start one job.
//! - `queue.rs`: `max_active_runs`: runs recorded QUEUED, started in date order when a slot
//!   frees; `slots.rs`: the slots, taken atomically in the state bucket.
//! - `graph.rs`: the same when the jobs form a graph (`needs`, `run_if`): jobs decided once
//!   their needs ended, SKIPPED, and the poll tick's sweep of stalled graph runs.

mod chain;
mod claim;
mod graph;
mod job;
mod queue;
mod slots;

use std::collections::BTreeMap;

pub(super) use chain::{end_run, sweep_after};
pub(super) use graph::sweep_graphs;
pub(super) use job::{FOR_EACH, batch_request, start_job, submit_attempt, table_safe_vars};
pub(super) use queue::sweep_queued;

#[cfg(test)]
mod tests;

/// The value of a run's values naming what started it (or its latest re-run): `schedule`,
/// `manual` (a trigger, a backfill, a request), `rerun`, `operator` (mark-success). An
/// object's run names its object (`source_object`).
pub const STARTED_BY: &str = "started_by";

use super::{Context, Outcome, StepError, active_pipeline, describe};
use crate::config::Pipeline;
use crate::event::{Detail, EventType, StepName};
use crate::inbound::{Inbound, Origin, StartRequest};
use crate::names::RunId;
use crate::run_origin::RunOrigin;

pub(super) async fn handle(ctx: &Context, inbound: Inbound) -> Result<Outcome, StepError> {
    let mut outcome = Outcome::default();
    match inbound {
        Inbound::Event(e) if e.kind == EventType::TableLoaded => {
            let pipeline = event_pipeline(ctx, e.pipeline.as_ref(), "loaded")?;
            let mut base = e.detail.clone();
            base.error = None;
            base.rows = None;
            base.job = None;
            base.job_id = None;
            if pipeline.jobs.is_empty() {
                end_run(
                    ctx,
                    pipeline,
                    &e.run_id,
                    crate::event::Status::Succeeded,
                    base,
                    &mut outcome,
                )
                .await?;
                outcome.summary = format!(
                    "pipeline {} has no jobs; the run ends with the load",
                    pipeline.name
                );
            } else {
                start_run(ctx, pipeline, &e.run_id, base, &mut outcome).await?;
            }
        }
        Inbound::Event(e) if e.kind == EventType::BatchFinished => {
            let pipeline = event_pipeline(ctx, e.pipeline.as_ref(), "finished")?;
            chain::after_job(ctx, pipeline, &e, &mut outcome).await?;
        }
        Inbound::Event(e) if e.kind == EventType::RunFinished => {
            chain::fan_in(ctx, &e, &mut outcome).await?;
        }
        Inbound::Event(e) if e.kind == EventType::RowQueued => {
            let pipeline = event_pipeline(ctx, e.pipeline.as_ref(), "queued row")?;
            job::start_row(ctx, pipeline, &e, &mut outcome).await?;
        }
        Inbound::Start(start) => {
            let Some(name) = &start.pipeline else {
                return Err(StepError::Rejected(
                    "a start request must name a pipeline".to_owned(),
                ));
            };
            let pipeline = active_pipeline(ctx, name.as_str())?;
            check_origin(pipeline, &start)?;
            if super::pause::held_start(ctx, pipeline, &start, StepName::Submit, &mut outcome)
                .await?
            {
                return Ok(outcome);
            }
            if pipeline.jobs.is_empty() {
                return Err(StepError::Rejected(format!(
                    "pipeline {name} has no jobs to run"
                )));
            }
            let run_id = start_run_id(pipeline, &start);
            let started_by = match start.origin {
                Origin::Schedule => "schedule",
                Origin::Manual => "manual",
            };
            let mut vars = BTreeMap::from([
                ("date".to_owned(), run_date(pipeline, &start)),
                (STARTED_BY.to_owned(), started_by.to_owned()),
            ]);
            vars.extend(data_interval(pipeline, &start));
            let base = Detail {
                vars,
                started_at: Some(start.at),
                ..Detail::default()
            };
            start_run(ctx, pipeline, &run_id, base, &mut outcome).await?;
        }
        other => {
            return Err(StepError::Rejected(format!(
                "the submit function takes dev.conveyor.table.loaded, dev.conveyor.batch.finished, \
                 dev.conveyor.run.finished and dev.conveyor.row.queued events and start requests, \
                 not {}",
                describe(&other)
            )));
        }
    }
    Ok(outcome)
}

/// Starts `run_id`, or, when its pipeline has `max_active_runs` runs going already, records
/// it QUEUED (see `queue.rs`).
async fn start_run(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    base: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    if let Some(limit) = pipeline.max_active_runs
        && !queue::admits(ctx, pipeline, run_id, limit).await?
    {
        return queue::queue(ctx, pipeline, run_id, base, outcome).await;
    }
    start_jobs(ctx, pipeline, run_id, base, outcome).await
}

/// Starts the jobs of `run_id` that need nothing: the first job of a line, every root of a
/// graph (side by side).
async fn start_jobs(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    mut base: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    // What the whole-run `timeout` counts from: the start's own time (a redelivery computes
    // the same), else now.
    let at = base.started_at.unwrap_or_else(|| ctx.clock.now());
    super::run_timeout::start(&mut base, at);
    if base.trace_id.is_none() {
        base.trace_id = crate::trace::current_trace_id();
    }
    let first = pipeline.first_jobs();
    if first.len() == 1 {
        return start_job(ctx, pipeline, run_id, first[0], base, outcome).await;
    }
    let mut names = Vec::new();
    for i in first {
        let mut one = Outcome::default();
        start_job(ctx, pipeline, run_id, i, base.clone(), &mut one).await?;
        outcome.events.append(&mut one.events);
        names.push(pipeline.jobs[i].name.to_string());
    }
    outcome.summary = format!("started {} side by side", names.join(", "));
    Ok(())
}

/// The active pipeline an event names.
fn event_pipeline<'a>(
    ctx: &'a Context,
    name: Option<&crate::names::PipelineName>,
    what: &str,
) -> Result<&'a Pipeline, StepError> {
    let Some(name) = name else {
        return Err(StepError::Rejected(format!(
            "{what} event without a pipeline"
        )));
    };
    active_pipeline(ctx, name.as_str())
}

pub(super) fn check_origin(pipeline: &Pipeline, start: &StartRequest) -> Result<(), StepError> {
    match start.origin {
        Origin::Manual if !pipeline.trigger.manual => Err(StepError::Rejected(format!(
            "pipeline {} does not allow manual starts (trigger.manual: false)",
            pipeline.name
        ))),
        Origin::Schedule if pipeline.trigger.schedule.is_none() => Err(StepError::Rejected(
            format!("pipeline {} has no schedule", pipeline.name),
        )),
        _ => Ok(()),
    }
}

/// A scheduled start's data interval: from the schedule's previous fire to this one (the
/// scheduled time). Other starts cover their run date's day (see
/// [`crate::config::derived_value`]).
fn data_interval(pipeline: &Pipeline, start: &StartRequest) -> Vec<(String, String)> {
    let (Origin::Schedule, Some(s)) = (&start.origin, &pipeline.trigger.schedule) else {
        return Vec::new();
    };
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match crate::schedules::previous_fire(&s.cron, &s.time_zone, start.at) {
        Ok(from) => vec![
            ("data_interval_start".to_owned(), fmt(from)),
            ("data_interval_end".to_owned(), fmt(start.at)),
        ],
        Err(e) => {
            tracing::warn!(pipeline = %pipeline.name, error = %e, "no data interval for this start");
            Vec::new()
        }
    }
}

/// The run date of a start (`YYYY-MM-DD`): the date it names (`trigger --date`,
/// `backfill`), else a schedule's fire date in the schedule's time zone, else the UTC day of
/// its time.
pub(in crate::steps) fn run_date(pipeline: &Pipeline, start: &StartRequest) -> String {
    let date = match (start.date, &start.origin, &pipeline.trigger.schedule) {
        (Some(d), _, _) => d,
        (None, Origin::Schedule, Some(s)) => crate::schedules::fire_date(start.at, &s.time_zone),
        (None, _, _) => start.at.date_naive(),
    };
    date.format("%Y-%m-%d").to_string()
}

/// The run id of a start: one run per manual key; one run per pipeline and run date for a
/// start naming its date (`trigger --date`, `backfill`) and for a schedule firing at most
/// once a day, so these name the same run; else one run per pipeline per scheduled minute
/// (Cloud Scheduler's retry of a tick carries the same scheduled time) or — a manual start
/// without a key or a date — per minute, so a `curl` repeated at once starts nothing twice.
pub(super) fn start_run_id(pipeline: &Pipeline, start: &StartRequest) -> RunId {
    let date = run_date(pipeline, start);
    let daily = |s: &crate::config::ScheduleTrigger| {
        crate::run_date::parse(&date)
            .is_some_and(|d| crate::schedules::fires_at_most_once_on(&s.cron, &s.time_zone, d))
    };
    let origin = match (&start.origin, &start.key) {
        (_, Some(key)) => RunOrigin::Key { key },
        (_, None) if start.date.is_some() => RunOrigin::Date { date: &date },
        (Origin::Schedule, None) if pipeline.trigger.schedule.as_ref().is_some_and(daily) => {
            RunOrigin::Date { date: &date }
        }
        (Origin::Schedule, None) => RunOrigin::ScheduleMinute { at: start.at },
        (Origin::Manual, None) => RunOrigin::ManualMinute { at: start.at },
    };
    RunId::for_origin(&pipeline.name, &origin)
}
