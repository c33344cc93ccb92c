//! Starting a job: one batch attempt, or one run per active `for_each` row. A `for_each` job's
//! rows fan out as one `dev.conveyor.row.queued` event each, which the submit function takes
//! one delivery at a time: a request never starts a whole table's batches (1,000 rows one after
//! another would outlast the request's timeout, be redelivered and dead-lettered), and each row
//! is retried on its own.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use futures::{StreamExt as _, TryStreamExt as _};
use tracing::{info, instrument, warn};

use super::super::{Context, Outcome, StepError, publish};
use crate::config::{BatchSpec, Job, Pipeline, table_safe};
use crate::event::{ChildRun, ConveyorEvent, Detail, EventType, Status, StepName};
use crate::names::{JobId, RunId};
use crate::ports::{BatchRequest, PortError};
use crate::run_origin::RunOrigin;

/// The most rows a `for_each` table may give one job.
const MAX_ROWS: usize = 1_000;

/// How many row events are published at once (Pub/Sub answers each publish in tens of
/// milliseconds: a thousand rows take a few seconds, not minutes).
const PUBLISH_AT_ONCE: usize = 16;

/// The engine name a `for_each` job's own run-log rows carry: the job is its rows' runs.
pub(in crate::steps) const FOR_EACH: &str = "for_each";

/// Starts job `index` of `run_id`. `base` carries the run's values (`vars`) and what it is
/// about (object, table).
pub(in crate::steps) async fn start_job(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    index: usize,
    mut base: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(job) = pipeline.jobs.get(index) else {
        return Ok(());
    };
    base.job = Some(job.name.to_string());
    base.children.clear();
    base.row.clear();
    base.engine_state = None;
    base.error = None;
    base.retry_at = None;
    base.log = None;
    if let Some(when) = &job.when {
        match condition_holds(ctx, pipeline, job, run_id, &base).await {
            Ok(true) => {}
            Ok(false) => {
                let why = format!("skipped: when {} is false", when.describe());
                return super::graph::skip_job(ctx, pipeline, run_id, index, base, why, outcome)
                    .await;
            }
            Err(e) if e.is_transient() => return Err(StepError::Transient(e.to_string())),
            Err(e) => {
                let error = Some(format!("when {}: {e}", when.describe()));
                return finish_job(ctx, pipeline, run_id, base, Status::Failed, error, outcome)
                    .await;
            }
        }
    }
    match &job.for_each {
        None => {
            let attempt =
                super::super::rerun::first_attempt(ctx, pipeline, run_id, job, &base).await?;
            submit_attempt(ctx, pipeline, job, run_id, attempt, base, outcome).await
        }
        Some(_) => start_rows(ctx, pipeline, job, run_id, base, outcome).await,
    }
}

/// The run of one `for_each` row: derived from the job's run and the row's key, so a
/// redelivered start finds the same runs.
pub(in crate::steps) fn row_run_id(
    pipeline: &Pipeline,
    job: &Job,
    run_id: &RunId,
    key: &str,
) -> RunId {
    RunId::for_origin(
        &pipeline.name,
        &RunOrigin::ForEachRow {
            run: run_id,
            job: job.name.as_str(),
            key,
        },
    )
}

/// The id a `for_each` job's own rows carry (its rows' batches have their own).
pub(in crate::steps) fn group_job_id(job: &Job, run_id: &RunId) -> JobId {
    JobId::derive(job.name.as_str(), run_id, 0)
}

/// The active rows of `fe` (its table read, or its inline rows), or why the job fails: the
/// table cannot be read for good, it has more than [`MAX_ROWS`] rows, or two active rows share
/// a key.
///
/// # Errors
/// Transient when the warehouse cannot be reached.
async fn active_rows(
    ctx: &Context,
    fe: &crate::config::ForEach,
) -> Result<Result<Vec<crate::config::ForEachRow>, String>, StepError> {
    let raw = match &fe.table {
        None => fe.inline_rows(),
        Some(table) => match ctx.ports.warehouse.read_table(table, MAX_ROWS + 1).await {
            Ok(rows) => rows,
            Err(e) if e.is_transient() => return Err(StepError::Transient(e.to_string())),
            Err(e) => return Ok(Err(format!("cannot read the for_each table {table}: {e}"))),
        },
    };
    if raw.len() > MAX_ROWS {
        return Ok(Err(format!(
            "for_each gives more than {MAX_ROWS} rows: split the job or filter the table"
        )));
    }
    let rows: Vec<_> = fe.to_rows(&raw).into_iter().filter(|r| r.active).collect();
    let mut keys = BTreeSet::new();
    if let Some(dup) = rows.iter().find(|r| !keys.insert(r.key.clone())) {
        return Ok(Err(format!(
            "two active rows have the key {:?}: set `for_each.key_column` to a unique column",
            dup.key
        )));
    }
    Ok(Ok(rows))
}

/// Records the job as RUNNING with one run per active row of its `for_each`, then queues each
/// row (`dev.conveyor.row.queued`), whose own delivery starts its batch: the poll tick ends the
/// job when every row's run has ended.
async fn start_rows(
    ctx: &Context,
    pipeline: &Pipeline,
    job: &Job,
    run_id: &RunId,
    base: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(fe) = &job.for_each else {
        return Ok(());
    };
    let rows = match active_rows(ctx, fe).await? {
        Ok(rows) => rows,
        Err(why) => {
            let why = Some(why);
            return finish_job(ctx, pipeline, run_id, base, Status::Failed, why, outcome).await;
        }
    };
    if rows.is_empty() {
        info!(pipeline = %pipeline.name, job = %job.name, "no active row; the job has nothing to run");
        return finish_job(
            ctx,
            pipeline,
            run_id,
            base,
            Status::Succeeded,
            None,
            outcome,
        )
        .await;
    }
    let mut children = Vec::new();
    let mut queued = Vec::new();
    for row in rows {
        let child = row_run_id(pipeline, job, run_id, &row.key);
        let mut detail = base.clone();
        detail.vars.extend(row.columns.clone());
        detail.vars.insert("row".to_owned(), row.key.clone());
        detail
            .vars
            .insert("parent_run_id".to_owned(), run_id.to_string());
        detail.row = row.columns;
        detail.job = Some(job.name.to_string());
        queued.push(ctx.event(
            EventType::RowQueued,
            child.clone(),
            Some(pipeline.name.clone()),
            StepName::Submit,
            1,
            Status::Submitted,
            detail,
        ));
        children.push(ChildRun {
            key: row.key,
            run_id: child,
        });
    }
    let count = children.len();
    let mut detail = base;
    detail.job_id = Some(group_job_id(job, run_id));
    detail.engine = Some(FOR_EACH.to_owned());
    detail.started_at = Some(Utc::now());
    detail.children = children;
    // The job's RUNNING row (with its rows' runs) first: the poll tick ends the job when every
    // row it lists has ended, so it must know them before any row can end.
    let ev = ctx.event(
        EventType::BatchRunning,
        run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Submit,
        1,
        Status::Running,
        detail,
    );
    publish(ctx, outcome, ev).await?;
    // A redelivery publishes the rows again: each row's batch id is derived from its run, so
    // a row started already is adopted, not started twice.
    let bus = &ctx.ports.bus;
    let published: Vec<String> = futures::stream::iter(queued)
        .map(|ev| async move {
            bus.publish(&ev)
                .await
                .map(|()| format!("{} {}", ev.kind, ev.run_id))
                .map_err(|e| StepError::Transient(format!("cannot publish {}: {e}", ev.kind)))
        })
        .buffered(PUBLISH_AT_ONCE)
        .try_collect()
        .await?;
    outcome.events.extend(published);
    info!(pipeline = %pipeline.name, job = %job.name, rows = count, "for_each rows queued");
    outcome.summary = format!("job {}: {count} row(s) queued", job.name);
    Ok(())
}

/// Starts one queued `for_each` row: its batch's first attempt.
pub(in crate::steps) async fn start_row(
    ctx: &Context,
    pipeline: &Pipeline,
    event: &ConveyorEvent,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let name = event.detail.job.as_deref().unwrap_or_default();
    let Some((_, job)) = pipeline.job(name) else {
        return Err(StepError::Rejected(format!(
            "queued row of {}: pipeline {} has no job {name:?}",
            event.run_id, pipeline.name
        )));
    };
    if job.for_each.is_none() {
        return Err(StepError::Rejected(format!(
            "queued row of {}: job {name} of pipeline {} has no for_each",
            event.run_id, pipeline.name
        )));
    }
    submit_attempt(
        ctx,
        pipeline,
        job,
        &event.run_id,
        1,
        event.detail.clone(),
        outcome,
    )
    .await
}

/// Ends a job at once (nothing to run, or it cannot start): `dev.conveyor.batch.finished`, which
/// the chain follows like any job's end.
async fn finish_job(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    mut detail: Detail,
    status: Status,
    error: Option<String>,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    if let Some(e) = &error {
        warn!(pipeline = %pipeline.name, run_id = %run_id, error = %e, "job ends before it starts");
    }
    detail.error = error;
    detail.started_at.get_or_insert_with(Utc::now);
    outcome.summary = format!(
        "job {} {}",
        detail.job.as_deref().unwrap_or("?"),
        status.as_str()
    );
    let ev = ctx.event(
        EventType::BatchFinished,
        run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Submit,
        1,
        status,
        detail,
    );
    publish(ctx, outcome, ev).await
}

/// The request of attempt `attempt` of `job` in `run_id`, built the same way every time: the
/// poll step rebuilds it from the run log to hand an engine what it was submitted with.
pub(in crate::steps) fn batch_request(
    pipeline: &Pipeline,
    job: &Job,
    run_id: &RunId,
    attempt: u32,
    vars: &BTreeMap<String, String>,
    row: &BTreeMap<String, String>,
) -> BatchRequest {
    let job_id = JobId::derive(job.name.as_str(), run_id, attempt);
    let mut vars = vars.clone();
    // `{yyyy}`, `{date-1d}`, … : derived from the run date for the names the job uses.
    let derived: Vec<(String, String)> = job
        .spec
        .parameters()
        .iter()
        .flat_map(|(_, v)| crate::config::parameter_placeholders(v))
        .filter(|n| !vars.contains_key(n))
        .filter_map(|n| crate::config::derived_value(&n, &vars).map(|v| (n, v)))
        .collect();
    let offsets: Vec<String> = derived
        .iter()
        .filter(|(n, _)| crate::config::date_offset(n).is_some())
        .map(|(n, _)| n.clone())
        .collect();
    vars.extend(derived);
    if matches!(job.spec, BatchSpec::Sql(_)) {
        // SQL takes the run's captures (and its date) in their table-safe form, as
        // `load.table` does; every other value must be table-safe already.
        for name in pipeline
            .captures()
            .iter()
            .map(String::as_str)
            .chain(["date"])
            .chain(offsets.iter().map(String::as_str))
        {
            if let Some(v) = vars.get_mut(name) {
                *v = table_safe(v);
            }
        }
    }
    vars.insert("run_id".to_owned(), run_id.to_string());
    vars.insert("pipeline".to_owned(), pipeline.name.to_string());
    vars.insert("attempt".to_owned(), attempt.to_string());
    vars.insert("job_id".to_owned(), job_id.to_string());
    vars.insert("job".to_owned(), job.name.to_string());
    BatchRequest {
        job_id,
        run_id: run_id.clone(),
        attempt,
        spec: job.spec.clone(),
        vars,
        job: job.name.to_string(),
        row: row.clone(),
    }
}

/// Submits attempt `attempt` of `job` in `run_id` and publishes `dev.conveyor.batch.submitted`.
/// A job that already exists under the deterministic id is adopted, not submitted again; one
/// the engine refuses ends the job FAILED.
#[instrument(skip_all, fields(pipeline = %pipeline.name, job = %job.name, run_id = %run_id, attempt))]
pub(in crate::steps) async fn submit_attempt(
    ctx: &Context,
    pipeline: &Pipeline,
    job: &Job,
    run_id: &RunId,
    attempt: u32,
    mut detail: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let mut req = batch_request(pipeline, job, run_id, attempt, &detail.vars, &detail.row);
    let job_id = req.job_id.clone();
    // `{secret:NAME}` values go to the engine's request only: never into the event, its
    // run-log row or a log line.
    let secrets = match read_secrets(ctx, job).await {
        Ok(values) => {
            req.vars.extend(values);
            Ok(())
        }
        Err(e) if e.is_transient() => return Err(StepError::Transient(e.to_string())),
        Err(e) => Err(e),
    };
    detail.job = Some(job.name.to_string());
    detail.job_id = Some(job_id.clone());
    detail.engine = Some(job.spec.engine().to_owned());
    detail.retry_at = None;
    detail.engine_state = None;
    detail.error = None;
    detail.started_at = Some(Utc::now());
    let submitted = match secrets {
        Ok(()) => super::claim::submit(ctx, &req).await,
        Err(e) => Err(e),
    };
    match submitted {
        Ok(s) => {
            info!(job_id = %s.job_id, adopted = s.adopted, "batch submitted");
            let ev = ctx.event(
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
            let ev = ctx.event(
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

/// The values of the `{secret:NAME}` placeholders of `job`, by placeholder name.
///
/// # Errors
/// A secret that cannot be read (permanent: missing, not UTF-8; transient: the store is
/// down). The message names the secret, never a value.
async fn read_secrets(ctx: &Context, job: &Job) -> Result<Vec<(String, String)>, PortError> {
    let names: BTreeSet<String> = job
        .spec
        .parameters()
        .iter()
        .flat_map(|(_, v)| crate::config::parameter_placeholders(v))
        .filter(|n| crate::config::secret_name(n).is_some())
        .collect();
    let mut out = Vec::new();
    for name in names {
        let Some(secret) = crate::config::secret_name(&name) else {
            continue;
        };
        let reference = crate::config::SecretRef::parse(secret)
            .map_err(|e| PortError::permanent(format!("{{{name}}}: {e}")))?;
        let value = ctx.ports.secrets.access(&reference).await?;
        let text = String::from_utf8(value.expose().to_vec())
            .map_err(|_| PortError::permanent(format!("secret {reference} is not UTF-8 text")))?;
        out.push((name, text.trim_end_matches(['\n', '\r']).to_owned()));
    }
    Ok(out)
}

/// Whether `job`'s `when` holds for `run_id`: its placeholders rendered with the run's values
/// (captures, dates and their offsets table-safe, as in a `sql` job).
///
/// # Errors
/// A condition that cannot be rendered or that the warehouse refuses (permanent), or a
/// warehouse that cannot be reached (transient).
async fn condition_holds(
    ctx: &Context,
    pipeline: &Pipeline,
    job: &Job,
    run_id: &RunId,
    base: &Detail,
) -> Result<bool, PortError> {
    let Some(when) = &job.when else {
        return Ok(true);
    };
    let vars = table_safe_vars(pipeline, Some(job), run_id, base);
    let render = |t: &str| crate::config::render_parameter(t, &vars).map_err(PortError::permanent);
    if let Some(table) = &when.table_exists {
        let table = crate::names::TableRef::parse(&render(table)?)
            .map_err(|e| PortError::permanent(e.to_string()))?;
        return match ctx.ports.warehouse.row_count(&table).await {
            Ok(_) => Ok(true),
            Err(PortError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        };
    }
    if let Some(query) = &when.query {
        let rows = ctx.ports.warehouse.select(&render(query)?, 1).await?;
        let value = rows.first().and_then(|r| r.values().next().cloned());
        return Ok(value.is_some_and(|v| crate::config::job_truthy(v.trim())));
    }
    Ok(true)
}

/// The run's values for `job`'s conditions and checks (or, without a job, the pipeline's
/// checks): its request's values and every date
/// placeholder, with the captures, the date and its offsets table-safe (as in a `sql` job).
pub(in crate::steps) fn table_safe_vars(
    pipeline: &Pipeline,
    job: Option<&Job>,
    run_id: &RunId,
    base: &Detail,
) -> BTreeMap<String, String> {
    let (mut vars, templates): (BTreeMap<String, String>, Vec<&str>) = match job {
        Some(job) => (
            batch_request(pipeline, job, run_id, 1, &base.vars, &base.row).vars,
            job.when
                .iter()
                .flat_map(|w| [w.table_exists.as_deref(), w.query.as_deref()])
                .flatten()
                .chain(job.checks.iter().flat_map(|c| c.templates()))
                .collect(),
        ),
        None => {
            let mut vars = base.vars.clone();
            vars.insert("run_id".to_owned(), run_id.to_string());
            vars.insert("pipeline".to_owned(), pipeline.name.to_string());
            (
                vars,
                pipeline.checks.iter().flat_map(|c| c.templates()).collect(),
            )
        }
    };
    for name in templates
        .into_iter()
        .flat_map(crate::config::parameter_placeholders)
    {
        if !vars.contains_key(&name)
            && let Some(v) = crate::config::derived_value(&name, &vars)
        {
            vars.insert(name, v);
        }
    }
    let captures = pipeline.captures();
    for (name, v) in &mut vars {
        if name == "date" || captures.contains(name) || crate::config::date_offset(name).is_some() {
            *v = table_safe(v);
        }
    }
    vars
}
