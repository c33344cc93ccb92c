//! submit: start the pipeline's batch with a deterministic id, after a load or on a start
//! request. The poll step reuses [`submit_attempt`] for retries and [`batch_request`] to
//! rebuild what it submitted.
//!
//! One start is one run, except for a Data Fusion pipeline with `runs` rows: each active row
//! becomes a run of its own (see [`submit_runs`]), retried and logged on its own.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use tracing::{info, instrument, warn};

use super::{Context, Outcome, StepError, active_pipeline, describe, publish};
use crate::config::{BatchSpec, Pipeline};
use crate::event::{ConveyorEvent, Detail, EventType, Status, StepName};
use crate::inbound::{Inbound, Origin, StartRequest};
use crate::names::{JobId, RunId};
use crate::ports::{BatchRequest, PortError};

pub(super) async fn handle(ctx: &Context, inbound: Inbound) -> Result<Outcome, StepError> {
    let mut outcome = Outcome::default();
    match inbound {
        Inbound::Event(e) if e.kind == EventType::TableLoaded => {
            let Some(name) = &e.pipeline else {
                return Err(StepError::Rejected(
                    "loaded event without a pipeline".to_owned(),
                ));
            };
            let pipeline = active_pipeline(ctx, name.as_str())?;
            if pipeline.batch.is_none() {
                outcome.summary =
                    format!("pipeline {name} has no batch; the run ends with the load");
                return Ok(outcome);
            }
            let mut base = e.detail.clone();
            base.error = None;
            base.rows = None;
            submit_runs(ctx, pipeline, &e.run_id, base, &mut outcome).await?;
        }
        Inbound::Start(start) => {
            let Some(name) = &start.pipeline else {
                return Err(StepError::Rejected(
                    "a start request must name a pipeline".to_owned(),
                ));
            };
            let pipeline = active_pipeline(ctx, name.as_str())?;
            check_origin(pipeline, &start)?;
            if pipeline.batch.is_none() {
                return Err(StepError::Rejected(format!(
                    "pipeline {name} has no batch to submit"
                )));
            }
            let run_id = start_run_id(pipeline, &start);
            let base = Detail {
                vars: BTreeMap::from([(
                    "date".to_owned(),
                    start.at.format("%Y-%m-%d").to_string(),
                )]),
                ..Detail::default()
            };
            submit_runs(ctx, pipeline, &run_id, base, &mut outcome).await?;
        }
        other => {
            return Err(StepError::Rejected(format!(
                "the submit function takes conveyor.table.loaded events and start requests, not {}",
                describe(&other)
            )));
        }
    }
    Ok(outcome)
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

/// The run id of a start: one run per pipeline per scheduled minute, or per manual key.
pub(super) fn start_run_id(pipeline: &Pipeline, start: &StartRequest) -> RunId {
    let minute = |t: DateTime<Utc>| {
        t.with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(t)
            .to_rfc3339()
    };
    match (&start.origin, &start.key) {
        (_, Some(key)) => RunId::derive(&pipeline.name, &["key", key]),
        (Origin::Schedule, None) => RunId::derive(&pipeline.name, &["schedule", &minute(start.at)]),
        (Origin::Manual, None) => {
            RunId::derive(&pipeline.name, &["manual", &start.at.to_rfc3339()])
        }
    }
}

/// The request of attempt `attempt` of `run_id`'s batch, built the same way every time: the
/// poll step rebuilds it from the run log to hand an engine what it was submitted with.
pub(super) fn batch_request(
    pipeline: &Pipeline,
    spec: &BatchSpec,
    run_id: &RunId,
    attempt: u32,
    vars: &BTreeMap<String, String>,
) -> BatchRequest {
    let job_id = JobId::derive("batch", run_id, attempt);
    let mut vars = vars.clone();
    vars.insert("run_id".to_owned(), run_id.to_string());
    vars.insert("pipeline".to_owned(), pipeline.name.to_string());
    vars.insert("attempt".to_owned(), attempt.to_string());
    vars.insert("job_id".to_owned(), job_id.to_string());
    BatchRequest {
        job_id,
        run_id: run_id.clone(),
        attempt,
        spec: spec.clone(),
        vars,
    }
}

/// Starts the runs of one start of the pipeline: one run, or (a Data Fusion pipeline with
/// `runs`) one run per active row. A row's run id derives from the parent run and the row's
/// key, so a redelivered start finds the same runs; its `vars` carry the row's key (`row`)
/// and the parent run (`parent_run_id`), so retries and the engine find the row again.
async fn submit_runs(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    base: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(rows) = pipeline.batch.as_ref().and_then(BatchSpec::fan_out) else {
        return submit_attempt(ctx, pipeline, run_id, 1, base, outcome).await;
    };
    if rows.is_empty() {
        outcome.summary = format!(
            "pipeline {} has no active row of runtime arguments: nothing to run",
            pipeline.name
        );
        return Ok(());
    }
    let mut summaries = Vec::new();
    for row in rows {
        let child = RunId::derive(&pipeline.name, &[run_id.as_str(), "row", &row]);
        let mut detail = base.clone();
        detail.vars.insert("row".to_owned(), row.clone());
        detail
            .vars
            .insert("parent_run_id".to_owned(), run_id.to_string());
        let mut one = Outcome::default();
        submit_attempt(ctx, pipeline, &child, 1, detail, &mut one).await?;
        outcome.events.append(&mut one.events);
        summaries.push(format!("row {row}: {}", one.summary));
    }
    outcome.summary = summaries.join("; ");
    Ok(())
}

/// Submits attempt `attempt` of `run_id`'s batch and publishes `conveyor.batch.submitted`.
/// A job that already exists under the deterministic id is adopted, not submitted again.
#[instrument(skip_all, fields(pipeline = %pipeline.name, run_id = %run_id, attempt))]
pub(super) async fn submit_attempt(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    attempt: u32,
    mut detail: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(spec) = &pipeline.batch else {
        return Ok(());
    };
    let req = batch_request(pipeline, spec, run_id, attempt, &detail.vars);
    let job_id = req.job_id.clone();
    detail.job_id = Some(job_id.clone());
    detail.engine = Some(spec.engine().to_owned());
    detail.retry_at = None;
    detail.engine_state = None;
    detail.started_at = Some(Utc::now());
    match ctx.ports.batch.submit(&req).await {
        Ok(s) => {
            info!(job_id = %s.job_id, adopted = s.adopted, "batch submitted");
            let ev = ConveyorEvent::new(
                EventType::BatchSubmitted,
                run_id.clone(),
                Some(pipeline.name.clone()),
                StepName::Submit,
                attempt,
                Status::Submitted,
                detail,
            );
            outcome.summary = format!(
                "submitted {job_id}{}",
                if s.adopted {
                    " (adopted existing job)"
                } else {
                    ""
                }
            );
            publish(ctx, outcome, ev).await
        }
        Err(e @ PortError::Transient(_)) => Err(StepError::Transient(e.to_string())),
        Err(e) => {
            warn!(job_id = %job_id, error = %e, "batch refused");
            detail.error = Some(e.to_string());
            let ev = ConveyorEvent::new(
                EventType::BatchFinished,
                run_id.clone(),
                Some(pipeline.name.clone()),
                StepName::Submit,
                attempt,
                Status::Failed,
                detail,
            );
            outcome.summary = format!("batch {job_id} refused: {e}");
            publish(ctx, outcome, ev).await
        }
    }
}
