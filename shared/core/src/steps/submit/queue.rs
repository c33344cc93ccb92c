//! `max_active_runs`: a run that would start beyond its pipeline's limit is recorded QUEUED
//! (`dev.conveyor.run.queued`, carrying what the run needs to start), and queued runs start,
//! oldest run date first, when a slot frees: when a run of the pipeline ends, and on every poll
//! tick (a queued row written after the end that freed its slot).
//!
//! The run log says which runs are *queued* (their only job rows are QUEUED) and which are
//! *going* (a job row other than QUEUED and no run end). Admission is a slot taken atomically
//! in the state bucket (`slots.rs`): the run log is written asynchronously by the log step, so
//! starts decided at the same instant (a burst, a backfill posting dates back to back) would
//! each see the last slot free in it. Without a state bucket, admission falls back to counting
//! the going runs in the run log, which such a burst can pass. Starting a run twice is harmless
//! (deterministic job ids adopt).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::super::{Context, Outcome, StepError, publish};
use crate::config::Pipeline;
use crate::event::{Detail, EventType, Status, StepName};
use crate::names::RunId;
use crate::ports::RunLogQuery;
use crate::run_state::{is_run_end, is_terminal};

/// How far back the run log is read for a pipeline's going and queued runs.
const LOOKBACK_DAYS: i64 = 14;

/// A run waiting for a slot.
struct Queued {
    run_id: RunId,
    date: String,
    at: DateTime<Utc>,
    base: Detail,
}

/// The pipeline's going runs (by id) and its queued runs, oldest run date first.
struct Runs {
    going: BTreeSet<String>,
    ended: BTreeSet<String>,
    queued: Vec<Queued>,
}

impl super::slots::Seen for Runs {
    fn going(&self, run: &str) -> bool {
        self.going.contains(run)
    }
    fn ended(&self, run: &str) -> bool {
        self.ended.contains(run)
    }
}

/// The slots of `pipeline`, when the steps have a state bucket.
fn slots<'a>(ctx: &'a Context, pipeline: &Pipeline) -> Option<super::slots::Slots<'a>> {
    ctx.options
        .state_bucket
        .as_ref()
        .map(|bucket| super::slots::Slots::new(ctx.ports.store.as_ref(), bucket, pipeline))
}

/// Whether `row` is a job's row (not the load's, not the run's end).
fn job_row(row: &crate::ports::RunLogRow) -> bool {
    !matches!(row.step.as_str(), "load" | "stage") && !is_run_end(row)
}

async fn runs_of(ctx: &Context, pipeline: &Pipeline) -> Result<Runs, StepError> {
    let table = ctx.config.run_log_target(Some(pipeline)).table.clone();
    let query = RunLogQuery {
        pipeline: Some(pipeline.name.to_string()),
        since: Some(Utc::now() - chrono::Duration::days(LOOKBACK_DAYS)),
        ..RunLogQuery::default()
    };
    let rows = ctx
        .ports
        .run_log
        .rows(&table, &query)
        .await
        .map_err(StepError::from_port)?;
    let mut by_run: BTreeMap<&str, Vec<&crate::ports::RunLogRow>> = BTreeMap::new();
    for r in &rows {
        by_run.entry(r.run_id.as_str()).or_default().push(r);
    }
    let mut going = BTreeSet::new();
    let mut ended = BTreeSet::new();
    let mut queued = Vec::new();
    for (run, rows) in by_run {
        if rows.iter().any(|r| is_run_end(r) && is_terminal(&r.status)) {
            ended.insert(run.to_owned());
            continue;
        }
        let started = rows
            .iter()
            .any(|r| job_row(r) && r.status != Status::Queued.as_str());
        if started {
            going.insert(run.to_owned());
            continue;
        }
        let Some(row) = rows.iter().find(|r| r.status == Status::Queued.as_str()) else {
            continue;
        };
        let (Ok(run_id), Ok(base)) = (
            RunId::parse(run),
            serde_json::from_str::<Detail>(&row.detail),
        ) else {
            warn!(
                run_id = run,
                "a QUEUED row that cannot be read; left queued"
            );
            continue;
        };
        queued.push(Queued {
            run_id,
            date: row.run_date.clone().unwrap_or_default(),
            at: row.td_timestamp,
            base,
        });
    }
    queued.sort_by(|a, b| {
        (a.date.as_str(), a.at, a.run_id.as_str()).cmp(&(b.date.as_str(), b.at, b.run_id.as_str()))
    });
    Ok(Runs {
        going,
        ended,
        queued,
    })
}

/// Whether `run_id` may start now under `limit`: it holds or takes a slot. Without a state
/// bucket: it is going already (a redelivery), or fewer than `limit` other runs are.
pub(super) async fn admits(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    limit: u32,
) -> Result<bool, StepError> {
    let runs = runs_of(ctx, pipeline).await?;
    if let Some(slots) = slots(ctx, pipeline) {
        return slots.claim(run_id, limit, &runs, Utc::now()).await;
    }
    if runs.going.contains(run_id.as_str()) {
        return Ok(true);
    }
    Ok(runs.going.len() < limit as usize)
}

/// Records `run_id` QUEUED with `base`, what it needs to start.
pub(super) async fn queue(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    mut base: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let limit = pipeline.max_active_runs.unwrap_or_default();
    base.job = pipeline
        .first_jobs()
        .first()
        .map(|i| pipeline.jobs[*i].name.to_string());
    info!(pipeline = %pipeline.name, run_id = %run_id, limit, "run queued: the pipeline has max_active_runs runs going");
    let event = ctx.event(
        EventType::RunQueued,
        run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Submit,
        1,
        Status::Queued,
        base,
    );
    publish(ctx, outcome, event).await?;
    outcome.summary = format!(
        "run {run_id} QUEUED: {} has {limit} run(s) going (max_active_runs)",
        pipeline.name
    );
    Ok(())
}

/// Starts queued runs of `pipeline`, oldest run date first, into the slots free now (`ending`:
/// a run that is ending, whose end is not in the run log yet). Returns how many started.
pub(in crate::steps) async fn release(
    ctx: &Context,
    pipeline: &Pipeline,
    ending: Option<&RunId>,
    outcome: &mut Outcome,
) -> Result<usize, StepError> {
    let Some(limit) = pipeline.max_active_runs else {
        return Ok(0);
    };
    if let Some(slots) = slots(ctx, pipeline) {
        if let Some(ending) = ending {
            slots.free(ending).await?;
        }
        let runs = runs_of(ctx, pipeline).await?;
        let mut started = 0;
        for q in &runs.queued {
            if !slots.claim(&q.run_id, limit, &runs, Utc::now()).await? {
                break;
            }
            start_queued(ctx, pipeline, q, outcome).await?;
            started += 1;
        }
        return Ok(started);
    }
    let runs = runs_of(ctx, pipeline).await?;
    let going = runs
        .going
        .iter()
        .filter(|r| ending.is_none_or(|e| e.as_str() != r.as_str()))
        .count();
    let free = (limit as usize).saturating_sub(going);
    let mut started = 0;
    for q in runs.queued.iter().take(free) {
        start_queued(ctx, pipeline, q, outcome).await?;
        started += 1;
    }
    Ok(started)
}

async fn start_queued(
    ctx: &Context,
    pipeline: &Pipeline,
    q: &Queued,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let mut base = q.base.clone();
    base.job = None;
    info!(pipeline = %pipeline.name, run_id = %q.run_id, date = %q.date, "queued run started: a slot is free");
    let mut one = Outcome::default();
    super::start_jobs(ctx, pipeline, &q.run_id, base, &mut one).await?;
    outcome.events.append(&mut one.events);
    Ok(())
}

/// The poll tick's sweep: starts the queued runs of every pipeline with `max_active_runs`
/// into the slots free now. Returns how many started.
pub(in crate::steps) async fn sweep_queued(
    ctx: &Context,
    outcome: &mut Outcome,
) -> Result<usize, StepError> {
    let mut started = 0;
    for pipeline in ctx.config.pipelines.iter().filter(|p| p.active) {
        if pipeline.max_active_runs.is_some() {
            started += release(ctx, pipeline, None, outcome).await?;
        }
    }
    Ok(started)
}
