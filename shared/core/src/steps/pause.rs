//! Pausing a pipeline without a redeploy: `conveyor pause|resume` write a state row in the
//! pipeline's run log (step `pause`, status `PAUSED` or `RESUMED`), and the starts of a run —
//! a schedule's tick, a manual start, a stage, an object's arrival — read the newest one: a
//! paused pipeline starts nothing until it is resumed. Its arrivals and ticks while paused are
//! skipped (logged); after `resume`, `conveyor trigger --date`/`backfill` start what was
//! skipped. Only functions with a run log read it ([`is_paused`]).

use chrono::Utc;

use super::{Context, StepError};
use crate::config::Pipeline;
use crate::names::{RunId, short_hash};
use crate::ports::{RunLogQuery, RunLogRow};

/// The status of a pause row.
pub const PAUSED: &str = "PAUSED";
/// The status of a resume row.
pub const RESUMED: &str = "RESUMED";
/// The step of pause and resume rows.
pub const PAUSE_STEP: &str = "pause";

/// Whether `pipeline` is paused: its newest pause or resume row is a pause.
///
/// # Errors
/// Transient when the run log cannot be read.
pub async fn is_paused(ctx: &Context, pipeline: &Pipeline) -> Result<bool, StepError> {
    // A function without a run log (the deployed load and stage functions) cannot read the
    // pause: the submit function (every scheduled and manual start of a batch) and the
    // embedded runtime do.
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
        run_id: RunId::derive(&pipeline.name, &[PAUSE_STEP]).to_string(),
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
