//! Pausing a pipeline without a redeploy: `conveyor pause|resume` write a state row in the
//! pipeline's run log (step `pause`, status `PAUSED` or `RESUMED`), and the starts of a run —
//! a schedule's tick, a manual start, a stage, an object's arrival — read the newest one (one
//! run-log read per start or arrival): a paused pipeline starts nothing until it is resumed.
//! A manual start is refused; an arrival or a scheduled tick is recorded as a `PAUSED` row of
//! its own (`dev.conveyor.start.paused`, [`hold`]) and, with `pause: { arrivals: hold }` (the
//! default), started by `conveyor resume` ([`held`] lists them); with `arrivals: skip` it is
//! never started (`conveyor trigger --date`/`backfill` start those dates later).
//!
//! A held row is newer than its pause row and older than the resume row (its time is the
//! arrival's), so "the newest PAUSED or RESUMED row" still says whether the pipeline is paused.

use std::collections::BTreeMap;

use chrono::Utc;

use super::{Context, Outcome, StepError, publish};
use crate::config::{PausedArrivals, Pipeline};
use crate::event::{Detail, EventType, ObjectRef, Status, StepName};
use crate::inbound::StartRequest;
use crate::names::{RunId, short_hash};
use crate::ports::{RunLogQuery, RunLogRow};

/// The status of a pause row.
pub const PAUSED: &str = "PAUSED";
/// The status of a resume row.
pub const RESUMED: &str = "RESUMED";
/// The step of pause and resume rows.
pub const PAUSE_STEP: &str = "pause";

/// The run id of a pipeline's pause and resume rows (one run per pipeline), so the pause is
/// read by an indexed run id rather than from every row of the pipeline.
pub fn pause_run_id(pipeline: &crate::names::PipelineName) -> RunId {
    RunId::derive(pipeline, &[PAUSE_STEP])
}

/// Whether `pipeline` is paused: its newest pause or resume row is a pause.
///
/// # Errors
/// Transient when the run log cannot be read.
pub async fn is_paused(ctx: &Context, pipeline: &Pipeline) -> Result<bool, StepError> {
    // A runtime without a run log cannot read the pause (every deployed function that starts
    // something has one: stage, load, submit).
    if !ctx.ports.run_log.wired() {
        return Ok(false);
    }
    let table = ctx.config.run_log_table(pipeline);
    let rows = ctx
        .ports
        .run_log
        .rows(
            &table,
            &RunLogQuery {
                run_id: Some(pause_run_id(&pipeline.name).to_string()),
                pipeline: Some(pipeline.name.to_string()),
                statuses: vec![PAUSED.to_owned(), RESUMED.to_owned()],
                limit: 1,
                ..RunLogQuery::default()
            },
        )
        .await;
    match rows {
        Ok(rows) => Ok(rows.first().is_some_and(|r| r.status == PAUSED)),
        // A run log not written yet holds no pause.
        Err(crate::ports::PortError::NotFound(_)) => Ok(false),
        Err(e) => Err(StepError::from_port(e)),
    }
}

/// Pauses (`paused`) or resumes `pipeline`: records the state row, with who and why.
///
/// # Errors
/// Transient when the run log cannot be written.
pub async fn set_paused(
    ctx: &Context,
    pipeline: &Pipeline,
    paused: bool,
    by: &str,
    reason: &str,
) -> Result<RunLogRow, StepError> {
    let now = Utc::now();
    let status = if paused { PAUSED } else { RESUMED };
    let row = RunLogRow {
        td_timestamp: now,
        last_modified_at: now,
        environment: ctx.config.environment.clone(),
        status: status.to_owned(),
        event_id: short_hash(&[pipeline.name.as_str(), status, &now.to_rfc3339()]),
        run_id: pause_run_id(&pipeline.name).to_string(),
        pipeline: Some(pipeline.name.to_string()),
        step: PAUSE_STEP.to_owned(),
        attempt: 1,
        started_at: Some(now),
        finished_at: Some(now),
        detail: serde_json::json!({"by": by, "reason": reason}).to_string(),
        ..RunLogRow::default()
    };
    ctx.ports
        .run_log
        .record(&ctx.config.run_log_table(pipeline), &row)
        .await
        .map_err(StepError::from_port)?;
    Ok(row)
}

/// Whether a start of `pipeline` was held (one run-log read): while it is paused a scheduled
/// tick is recorded `PAUSED` ([`hold`]; `true`), a manual start refused; else `false`: start.
///
/// # Errors
/// Rejected for a manual start while paused; transient when the run log or the bus fails.
pub(super) async fn held_start(
    ctx: &Context,
    pipeline: &Pipeline,
    start: &StartRequest,
    step: StepName,
    outcome: &mut Outcome,
) -> Result<bool, StepError> {
    if start.origin != crate::inbound::Origin::Schedule {
        refuse_if_paused(ctx, pipeline).await?;
        return Ok(false);
    }
    if !is_paused(ctx, pipeline).await? {
        return Ok(false);
    }
    let date = super::submit::run_date(pipeline, start);
    hold(ctx, pipeline, step, Arrived::Tick(start, &date), outcome).await?;
    Ok(true)
}

/// Refuses a start of `pipeline` while it is paused.
pub(super) async fn refuse_if_paused(ctx: &Context, pipeline: &Pipeline) -> Result<(), StepError> {
    if is_paused(ctx, pipeline).await? {
        tracing::warn!(pipeline = %pipeline.name, "pipeline paused: start skipped");
        return Err(StepError::Rejected(format!(
            "pipeline {} is paused (`conveyor resume {}` starts it again)",
            pipeline.name, pipeline.name
        )));
    }
    Ok(())
}

/// What reached a paused pipeline.
#[derive(Debug, Clone, Copy)]
pub enum Arrived<'a> {
    /// An object arrived (the load step), with the pattern's captures.
    Object(&'a ObjectRef, &'a BTreeMap<String, String>),
    /// A scheduled tick (the stage or submit step), with its run date.
    Tick(&'a StartRequest, &'a str),
}

/// The job a held arrival's or tick's row names, so it is no run's end and reads as what it
/// is in `status`.
pub const HELD_JOB: &str = "paused";

/// Records what reached the paused `pipeline` as a `PAUSED` row (`dev.conveyor.start.paused`,
/// from `step`): held for `conveyor resume`, or skipped, as `pause.arrivals` says. Its run id
/// derives from what arrived (the object and its generation; the tick's time), so a
/// redelivery records it once.
///
/// # Errors
/// Transient when the bus fails.
pub async fn hold(
    ctx: &Context,
    pipeline: &Pipeline,
    step: StepName,
    arrived: Arrived<'_>,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let held = pipeline.pause.arrivals == PausedArrivals::Hold;
    let fate = if held {
        format!("held until `conveyor resume {}`", pipeline.name)
    } else {
        "skipped (pause.arrivals: skip)".to_owned()
    };
    let mut detail = Detail {
        job: Some(HELD_JOB.to_owned()),
        ..Detail::default()
    };
    let (key, what) = match arrived {
        Arrived::Object(object, captures) => {
            detail.object = Some(object.clone());
            detail.vars = captures.clone();
            (
                format!("{}#{}", object.uri(), object.generation),
                object.uri(),
            )
        }
        Arrived::Tick(start, date) => {
            detail.started_at = Some(start.at);
            detail.vars.insert("date".to_owned(), date.to_owned());
            let at = start.at.to_rfc3339();
            (format!("tick {at}"), format!("the tick of {at}"))
        }
    };
    detail.vars.insert("held".to_owned(), held.to_string());
    detail.error = Some(format!("pipeline {} paused: {what} {fate}", pipeline.name));
    let run_id = RunId::derive(&pipeline.name, &[PAUSE_STEP, &key]);
    tracing::warn!(pipeline = %pipeline.name, what = %what, held, "pipeline paused: not started");
    outcome.summary = format!("pipeline {} is paused: {what} {fate}", pipeline.name);
    let ev = ctx.event(
        EventType::StartPaused,
        run_id,
        Some(pipeline.name.clone()),
        step,
        1,
        Status::Paused,
        detail,
    );
    publish(ctx, outcome, ev).await
}

/// What was held while `pipeline` was paused (its newest pause, up to now): the `PAUSED` rows
/// of arrivals and ticks since it, oldest first, each with its detail. Empty when the pipeline
/// is not paused or held nothing. Skipped ones (`pause.arrivals: skip`) are not listed.
///
/// # Errors
/// Transient when the run log cannot be read.
pub async fn held(
    ctx: &Context,
    pipeline: &Pipeline,
) -> Result<Vec<(RunLogRow, Detail)>, StepError> {
    let rows = ctx
        .pipeline_rows(
            pipeline,
            RunLogQuery {
                statuses: vec![PAUSED.to_owned(), RESUMED.to_owned()],
                ..RunLogQuery::default()
            },
        )
        .await?;
    let mut out = Vec::new();
    for row in rows {
        if row.status == RESUMED {
            break;
        }
        if row.step == PAUSE_STEP {
            continue;
        }
        let Ok(detail) = serde_json::from_str::<Detail>(&row.detail) else {
            continue;
        };
        if detail.vars.get("held").map(String::as_str) == Some("true") {
            out.push((row, detail));
        }
    }
    out.reverse();
    Ok(out)
}
