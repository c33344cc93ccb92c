//! load: an object arrived; load it into the table of every active pipeline whose trigger
//! pattern it matches.

use std::collections::BTreeMap;

use tracing::{info, instrument, warn};

use super::{Context, Outcome, StepError, describe, publish};
use crate::config::{Pipeline, render, table_safe};
use crate::event::{ConveyorEvent, Detail, EventType, ObjectRef, Status, StepName};
use crate::inbound::Inbound;
use crate::names::{JobId, RunId, TableRef};
use crate::ports::{LoadJob, LoadState, LoadStatus, PortError};

/// How long the load request waits for its job.
const LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

pub(super) async fn handle(ctx: &Context, inbound: Inbound) -> Result<Outcome, StepError> {
    let object = match inbound {
        Inbound::Object(o) => o,
        Inbound::Event(e) if e.kind == EventType::ObjectStaged => e
            .detail
            .object
            .clone()
            .ok_or_else(|| StepError::Rejected("staged event without an object".to_owned()))?,
        other => {
            return Err(StepError::Rejected(format!(
                "the load function takes object arrivals, not {}",
                describe(&other)
            )));
        }
    };
    if object.name.as_str().starts_with(crate::INTERNAL_PREFIX) {
        // Conveyor's own state, such as a stage watermark: never data to load.
        return Ok(Outcome::note(format!("{} is Conveyor state", object.uri())));
    }
    let object = with_generation(ctx, object).await?;
    let mut outcome = Outcome::default();
    let mut matched = 0;
    for pipeline in ctx
        .config
        .pipelines
        .iter()
        .filter(|p| p.active && p.load.is_some())
    {
        let Some(trigger) = &pipeline.trigger.object else {
            continue;
        };
        if trigger.bucket != object.bucket {
            continue;
        }
        let Some(captures) = trigger.pattern.captures(object.name.as_str()) else {
            continue;
        };
        matched += 1;
        load_one(ctx, pipeline, &object, captures, &mut outcome).await?;
    }
    if matched == 0 {
        info!(object = %object.uri(), "no active pipeline matches; nothing to load");
        outcome.summary = format!("no active pipeline matches {}", object.uri());
    }
    Ok(outcome)
}

/// A request that names no generation (a hand-written `curl`) means the object as it is now:
/// its current generation makes the run id the same as the arrival notification's, so the
/// object is not loaded a second time.
async fn with_generation(ctx: &Context, mut object: ObjectRef) -> Result<ObjectRef, StepError> {
    if !object.generation.is_empty() {
        return Ok(object);
    }
    match ctx.ports.store.head(&object.bucket, &object.name).await {
        Ok(Some(meta)) => {
            object.generation = meta.object.generation;
            object.size = object.size.or(meta.object.size);
            Ok(object)
        }
        Ok(None) => Err(StepError::Rejected(format!(
            "{} does not exist",
            object.uri()
        ))),
        Err(e) => Err(StepError::from_port(e)),
    }
}

#[instrument(skip_all, fields(pipeline = %pipeline.name, object = %object.uri()))]
async fn load_one(
    ctx: &Context,
    pipeline: &Pipeline,
    object: &ObjectRef,
    captures: BTreeMap<String, String>,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(spec) = &pipeline.load else {
        return Ok(());
    };
    let run_id = RunId::derive(
        &pipeline.name,
        &[
            object.bucket.as_str(),
            object.name.as_str(),
            &object.generation,
        ],
    );
    let safe: BTreeMap<String, String> = captures
        .iter()
        .map(|(k, v)| (k.clone(), table_safe(v)))
        .collect();
    let started = chrono::Utc::now();
    let mut detail = Detail {
        object: Some(object.clone()),
        started_at: Some(started),
        vars: captures.clone(),
        ..Detail::default()
    };
    let table = match render(&spec.table, &safe)
        .map_err(|e| e.to_string())
        .and_then(|t| TableRef::parse(&t).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => {
            detail.error = Some(format!("cannot name the table: {e}"));
            let ev = ConveyorEvent::new(
                EventType::StepFailed,
                run_id,
                Some(pipeline.name.clone()),
                StepName::Load,
                1,
                Status::Failed,
                detail,
            );
            return publish(ctx, outcome, ev).await;
        }
    };
    let job_id = JobId::derive("load", &run_id, 1);
    detail.table = Some(table.to_string());
    detail.job_id = Some(job_id.clone());
    detail.vars.insert("table".to_owned(), table.to_string());
    let job = LoadJob {
        job_id,
        sources: vec![object.clone()],
        table: table.clone(),
        format: spec.format,
        write: spec.write_disposition,
        create: spec.create_disposition,
        schema: spec.schema.clone(),
        partition: spec.partition.clone(),
        clustering: spec.clustering.clone(),
        skip_leading_rows: spec.skip_leading_rows,
        max_bad_records: spec.max_bad_records,
        allow_quoted_newlines: spec.allow_quoted_newlines,
        schema_update_options: spec.schema_update_options.clone(),
    };
    let loaded = match ctx.ports.warehouse.load(&job, LOAD_WAIT).await {
        Ok(LoadStatus {
            state: LoadState::Done { rows },
            adopted,
        }) => Ok((rows, adopted)),
        Ok(LoadStatus {
            state: LoadState::Running,
            ..
        }) => Err(PortError::Transient(format!(
            "load job {} is still running; a redelivery adopts it",
            job.job_id
        ))),
        Ok(LoadStatus {
            state: LoadState::Failed { message, transient },
            ..
        }) => Err(if transient {
            PortError::Transient(message)
        } else {
            PortError::Permanent(message)
        }),
        Err(e) => Err(e),
    };
    match loaded {
        Ok((rows, adopted)) => {
            info!(table = %table, rows, adopted, "loaded");
            detail.rows = Some(rows);
            let ev = ConveyorEvent::new(
                EventType::TableLoaded,
                run_id,
                Some(pipeline.name.clone()),
                StepName::Load,
                1,
                Status::Succeeded,
                detail,
            );
            outcome.summary = format!("loaded {rows} rows into {table}");
            publish(ctx, outcome, ev).await
        }
        Err(e @ PortError::Transient(_)) => {
            warn!(table = %table, error = %e, "load failed; will be retried");
            Err(StepError::Transient(e.to_string()))
        }
        Err(e) => {
            warn!(table = %table, error = %e, "load failed permanently");
            detail.error = Some(e.to_string());
            let ev = ConveyorEvent::new(
                EventType::StepFailed,
                run_id,
                Some(pipeline.name.clone()),
                StepName::Load,
                1,
                Status::Failed,
                detail,
            );
            outcome.summary = format!("load into {table} failed: {e}");
            publish(ctx, outcome, ev).await
        }
    }
}
