//! log: write every Conveyor event as a run-log row.

use tracing::debug;

use super::{Context, Outcome, StepError, describe};
use crate::event::{ConveyorEvent, Status};
use crate::inbound::Inbound;
use crate::ports::RunLogRow;

pub(super) async fn handle(ctx: &Context, inbound: Inbound) -> Result<Outcome, StepError> {
    let Inbound::Event(event) = inbound else {
        return Err(StepError::Rejected(format!(
            "the log function takes Conveyor events, not {}",
            describe(&inbound)
        )));
    };
    let table = match event
        .pipeline
        .as_ref()
        .and_then(|p| ctx.config.pipeline(p.as_str()))
    {
        Some(p) => ctx.config.run_log_table(p),
        None => ctx.config.run_log.table.clone(),
    };
    let row = row_for(&event, &ctx.config.environment);
    ctx.ports
        .run_log
        .record(&table, &row)
        .await
        .map_err(StepError::from_port)?;
    debug!(run_id = %event.run_id, status = %event.status, "run log row written");
    Ok(Outcome {
        summary: format!(
            "recorded {} {} for {}",
            event.step, event.status, event.run_id
        ),
        events: Vec::new(),
    })
}

/// The run-log row of `event`.
pub fn row_for(event: &ConveyorEvent, environment: &str) -> RunLogRow {
    let d = &event.detail;
    let (db_name, table_name) = match d
        .table
        .as_deref()
        .and_then(|t| crate::names::TableRef::parse(t).ok())
    {
        Some(t) => (Some(t.dataset), Some(t.table)),
        None => (None, None),
    };
    let terminal = matches!(
        event.status,
        Status::Succeeded | Status::Failed | Status::TimedOut | Status::Rejected
    );
    // A `for_each` job's own rows are not a batch: its rows' batches are.
    let is_batch = d
        .engine
        .as_deref()
        .is_some_and(|e| e != super::submit::FOR_EACH);
    RunLogRow {
        db_name,
        table_name,
        td_timestamp: event.time,
        last_modified_at: chrono::Utc::now(),
        environment: environment.to_owned(),
        status: event.status.as_str().to_owned(),
        dataproc_job_id: if is_batch {
            d.job_id.as_ref().map(|j| j.to_string())
        } else {
            None
        },
        event_id: event.id(),
        run_id: event.run_id.to_string(),
        pipeline: event.pipeline.as_ref().map(|p| p.to_string()),
        step: event.step.to_string(),
        attempt: event.attempt,
        source_object: d.object.as_ref().map(|o| o.uri()),
        job_id: d.job_id.as_ref().map(|j| j.to_string()),
        error: d.error.clone(),
        started_at: d.started_at,
        finished_at: terminal.then_some(event.time),
        rows_loaded: d.rows,
        detail: serde_json::to_string(d).unwrap_or_default(),
        job: d.job.clone(),
    }
}
