//! log: write every Conveyor event as a run-log row.

use tracing::{debug, warn};

use super::{Context, Outcome, StepError, describe};
use crate::config::OnFailure;
use crate::event::{ConveyorEvent, Status};
use crate::inbound::Inbound;
use crate::ports::{PortError, RunLogRow};

pub(super) async fn handle(ctx: &Context, inbound: Inbound) -> Result<Outcome, StepError> {
    let Inbound::Event(event) = inbound else {
        return Err(StepError::Rejected(format!(
            "the log function takes Conveyor events, not {}",
            describe(&inbound)
        )));
    };
    if event.kind == crate::event::EventType::RowQueued {
        // A request to start a row, not a transition: the row's batch is recorded when it is
        // submitted.
        return Ok(Outcome {
            summary: format!("{} is not a transition; nothing recorded", event.kind),
            events: Vec::new(),
        });
    }
    let pipeline = event
        .pipeline
        .as_ref()
        .and_then(|p| ctx.config.pipeline(p.as_str()));
    let target = ctx.config.run_log_target(pipeline);
    let table = target.table.clone();
    let mut row = row_for(&event, &ctx.config.environment);
    // The job's own `db` / `table` and `run_log` destinations, when the row is a job's.
    let job = pipeline
        .zip(event.detail.job.as_deref())
        .and_then(|(p, j)| p.job(j))
        .map(|(_, j)| j);
    if let Some(job) = job {
        name_what_the_job_is_about(job, &event, &mut row);
    }
    ctx.ports
        .run_log
        .record(&table, &row)
        .await
        .map_err(StepError::from_port)?;
    let sinks: Vec<_> = target
        .sinks()
        .into_iter()
        .filter(|s| match s {
            crate::config::RunLogSink::Postgres(_) => job.is_none_or(|j| j.logs_to_postgres()),
        })
        .collect();
    record_in_sinks(ctx, &sinks, &row).await?;
    emit_lineage(ctx, &event).await?;
    let warned = check_warned(&event);
    if ends_in_failure(&event) || warned {
        if !warned {
            warn!(run_id = %event.run_id, pipeline = event.pipeline.as_ref().map_or("", |p| p.as_str()), step = %event.step, status = %event.status, error = event.detail.error.as_deref().unwrap_or(""), "run ended in failure");
        }
        if let Some(alerts) = &ctx.ports.alerts {
            alerts.publish(&event).await.map_err(|e| {
                StepError::Transient(format!("cannot publish to the alerts topic: {e}"))
            })?;
        }
        if let Some(p) = pipeline {
            on_failure(ctx, p, &event).await?;
        }
    }
    debug!(run_id = %event.run_id, status = %event.status, "run log row written");
    Ok(Outcome {
        summary: format!(
            "recorded {} {} for {}",
            event.step, event.status, event.run_id
        ),
        events: Vec::new(),
    })
}

/// A pipeline's `on_failure` actions for `event`, which ends a run in failure. A notice that
/// may pass (the topic or the webhook down) asks for redelivery; one refused for good (a
/// missing secret, a webhook answering 4xx) is logged and the others still go.
async fn on_failure(
    ctx: &Context,
    pipeline: &crate::config::Pipeline,
    event: &ConveyorEvent,
) -> Result<(), StepError> {
    if pipeline.on_failure.is_empty() {
        return Ok(());
    }
    let Some(notifier) = &ctx.ports.notifier else {
        warn!(pipeline = %pipeline.name, "on_failure is set but this deployment sends no notices");
        return Ok(());
    };
    for action in &pipeline.on_failure {
        let sent = match action {
            OnFailure::Publish(topic) => notifier.publish(topic, event).await,
            OnFailure::Webhook(hook) => match ctx.ports.secrets.access(&hook.url_secret).await {
                Ok(url) => match std::str::from_utf8(url.expose()) {
                    Ok(url) => notifier.post(url.trim(), &notice(event)).await,
                    Err(_) => Err(PortError::permanent("the webhook URL secret is not text")),
                },
                Err(e) => Err(e),
            },
        };
        match sent {
            Ok(()) => {}
            Err(e) if e.is_transient() => {
                return Err(StepError::Transient(format!(
                    "cannot send an on_failure notice: {e}"
                )));
            }
            Err(e) => {
                warn!(pipeline = %pipeline.name, run_id = %event.run_id, error = %e, "on_failure notice refused; not sent");
            }
        }
    }
    Ok(())
}

/// The JSON a webhook gets: `text` (what Slack and Google Chat incoming webhooks show) and
/// the failure's fields.
fn notice(event: &ConveyorEvent) -> serde_json::Value {
    let pipeline = event.pipeline.as_ref().map_or("", |p| p.as_str());
    let error = event.detail.error.as_deref().unwrap_or("no error given");
    serde_json::json!({
        "text": format!(
            "Conveyor: pipeline {pipeline} run {} {} at step {}: {error}",
            event.run_id, event.status, event.step
        ),
        "pipeline": pipeline,
        "run_id": event.run_id.to_string(),
        "status": event.status.to_string(),
        "step": event.step.to_string(),
        "event": event.kind.to_string(),
        "error": error,
        "time": event.time,
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
        run_date: crate::run_date::of_vars(&d.vars),
    }
}

/// Fills `row`'s `db_name` and `table_name` from the job's `db` and `table` (rendered with the
/// event's values; a template that cannot be rendered is left out, with a warning).
fn name_what_the_job_is_about(
    job: &crate::config::Job,
    event: &ConveyorEvent,
    row: &mut RunLogRow,
) {
    let render = |field: &str, template: &Option<String>| {
        let template = template.as_ref()?;
        match crate::config::render_parameter(template, &event.detail.vars) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(run_id = %event.run_id, job = %job.name, field, error = %e, "cannot fill the job's run-log field");
                None
            }
        }
    };
    if let Some(db) = render("db", &job.db) {
        row.db_name = Some(db);
    }
    if let Some(table) = render("table", &job.table) {
        row.table_name = Some(table);
    }
}

/// Writes `row` to each additional sink. Every failure asks for redelivery, even a permanent
/// one (a refused login, a missing privilege): the run-log write is idempotent, so the event
/// is retried until the sink is fixed or it reaches the dead-letter topic, where an alert
/// fires; a sink's row is never dropped silently.
async fn record_in_sinks(
    ctx: &Context,
    sinks: &[crate::config::RunLogSink],
    row: &RunLogRow,
) -> Result<(), StepError> {
    for sink in sinks {
        if let Err(e) = ctx.ports.sinks.record(sink, row).await {
            tracing::error!(sink = %sink, run_id = %row.run_id, event_id = %row.event_id, error = %e, "cannot write a run-log row to a sink");
            return Err(StepError::Transient(format!("{sink}: {e}")));
        }
    }
    Ok(())
}

/// Sends `event`'s OpenLineage run events to the lineage port, when one is wired. A failure
/// asks for redelivery, as a sink's does: the events carry deterministic run ids, so the
/// redelivered ones are the same events.
async fn emit_lineage(ctx: &Context, event: &ConveyorEvent) -> Result<(), StepError> {
    let (Some(_), Some(lineage)) = (&ctx.config.lineage, &ctx.ports.lineage) else {
        return Ok(());
    };
    for run_event in super::lineage_events(event, &ctx.config, &lineage.tables()) {
        if let Err(e) = lineage.emit(&run_event).await {
            tracing::error!(run_id = %event.run_id, lineage_run = run_event.run_id(), event_type = run_event.event_type(), error = %e, "cannot send an OpenLineage event");
            return Err(StepError::Transient(format!("lineage: {e}")));
        }
    }
    Ok(())
}

/// Whether `event` is a job or run that SUCCEEDED with `warn` checks failing (its error starts
/// with [`CHECK_WARN`]): published to the alerts topic as well, once per job or run end.
pub fn check_warned(event: &ConveyorEvent) -> bool {
    event.status == Status::Succeeded
        && matches!(
            event.kind,
            crate::event::EventType::BatchFinished | crate::event::EventType::RunFinished
        )
        && event
            .detail
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with(CHECK_WARN))
}

/// The start of the error of a job or run that SUCCEEDED with `warn` checks failing.
pub const CHECK_WARN: &str = "CHECK_WARN:";

/// Whether `event` ends its run in failure, so that it is logged as `run ended in failure` and
/// published to the alerts topic: once per failed run, at its end (see
/// [`crate::run_state::ends_run_in_failure`]).
pub fn ends_in_failure(event: &ConveyorEvent) -> bool {
    crate::run_state::ends_run_in_failure(event)
}
