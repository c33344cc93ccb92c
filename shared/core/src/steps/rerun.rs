//! Re-running a run from its failure, and marking a job succeeded: an operator's decisions,
//! recorded in the run log like every other transition.
//!
//! A re-run keeps the run (its id, its run date, the jobs that succeeded) and starts a new
//! attempt of the failed job (or of `--from JOB`) and, as each succeeds, of the jobs after it:
//! the run's values carry `rerun = K` (the K-th re-run), each job it starts gets the attempt
//! after that job's last one ([`first_attempt`]), and the run's end is recorded again with
//! attempt K + 1 ([`end_attempt`]), so the run's state — a job's *last* attempt, the run's
//! *last* end ([`crate::run_state`]) — reads SUCCEEDED once they succeed.

use std::collections::BTreeMap;

use super::{Context, Outcome, StepError, publish};
use crate::config::{Job, Pipeline};
use crate::event::{Detail, EventType, Status, StepName};
use crate::names::RunId;
use crate::ports::{RunLogQuery, RunLogRow};
use crate::run_state::{RunState, is_run_end, job_key};

/// The value of a run naming its re-run (`rerun = K`).
pub const RERUN_VAR: &str = "rerun";

/// The attempt a job of a run starts with: 1, or in a re-run the attempt after the job's last
/// one (so its job id is new and the engine runs it again instead of adopting the old one).
pub(super) async fn first_attempt(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    job: &Job,
    base: &Detail,
) -> Result<u32, StepError> {
    if !base.vars.contains_key(RERUN_VAR) {
        return Ok(1);
    }
    let rows = run_rows(ctx, pipeline, run_id).await?;
    Ok(1 + rows
        .iter()
        .filter(|r| job_key(r).as_deref() == Some(job.name.as_str()))
        .map(|r| r.attempt)
        .max()
        .unwrap_or(0))
}

/// The attempt of a run's end: 1, or K + 1 at the end of its K-th re-run.
pub(super) fn end_attempt(detail: &Detail) -> u32 {
    detail
        .vars
        .get(RERUN_VAR)
        .and_then(|k| k.parse::<u32>().ok())
        .map_or(1, |k| k.saturating_add(1))
}

/// The rows of `run_id`, in the pipeline's run log.
async fn run_rows(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
) -> Result<Vec<RunLogRow>, StepError> {
    let table = ctx.config.run_log_table(pipeline);
    ctx.ports
        .run_log
        .rows(
            &table,
            &RunLogQuery {
                run_id: Some(run_id.to_string()),
                ..RunLogQuery::default()
            },
        )
        .await
        .map_err(StepError::from_port)
}

/// The pipeline of `config` a run id belongs to (`<pipeline>-<hash>`): the longest pipeline
/// name it starts with.
pub fn pipeline_of_run<'a>(
    config: &'a crate::config::Config,
    run_id: &str,
) -> Option<&'a Pipeline> {
    config
        .pipelines
        .iter()
        .filter(|p| {
            run_id
                .strip_prefix(p.name.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
        })
        .max_by_key(|p| p.name.as_str().len())
}

fn pipeline_of<'a>(ctx: &'a Context, run_id: &RunId) -> Result<&'a Pipeline, StepError> {
    pipeline_of_run(&ctx.config, run_id.as_str()).ok_or_else(|| {
        StepError::Rejected(format!("run {run_id} belongs to no pipeline of this file"))
    })
}

/// What a re-run or a mark-success works from: the run's pipeline, its rows, the values its
/// jobs ran with, and the number of this re-run.
struct Ended<'a> {
    pipeline: &'a Pipeline,
    rows: Vec<RunLogRow>,
    base: Detail,
    rerun: u32,
}

/// `pipeline`'s job called `name`, with its index.
///
/// # Errors
/// Rejected when the pipeline has no such job.
fn job_of<'a>(
    pipeline: &'a Pipeline,
    name: &str,
) -> Result<(usize, &'a crate::config::Job), StepError> {
    pipeline.job(name).ok_or_else(|| {
        StepError::Rejected(format!("pipeline {} has no job {name:?}", pipeline.name))
    })
}

async fn ended_run<'a>(ctx: &'a Context, run_id: &RunId) -> Result<Ended<'a>, StepError> {
    let pipeline = pipeline_of(ctx, run_id)?;
    let rows = run_rows(ctx, pipeline, run_id).await?;
    let Some(state) = RunState::from_rows(&rows) else {
        return Err(StepError::Rejected(format!(
            "no run {run_id} in the run log {}",
            ctx.config.run_log_table(pipeline)
        )));
    };
    if !state.ended() {
        return Err(StepError::Rejected(format!(
            "run {run_id} is {} (not ended): wait for it, or let it time out",
            state.status
        )));
    }
    // The run's values, as its newest row with values holds them (the run date among them).
    let mut newest: Vec<&RunLogRow> = rows.iter().collect();
    newest.sort_by(|a, b| crate::run_state::newest_first(a, b));
    let vars: BTreeMap<String, String> = newest
        .iter()
        .filter_map(|r| serde_json::from_str::<Detail>(&r.detail).ok())
        .map(|d| d.vars)
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    let ends = rows
        .iter()
        .filter(|r| is_run_end(r))
        .map(|r| r.attempt)
        .max();
    let rerun = ends.unwrap_or(1);
    // A re-run's whole-run timeout counts from the re-run.
    let mut base = Detail {
        vars,
        run_started_at: Some(ctx.clock.now()),
        ..Detail::default()
    };
    base.vars.insert(RERUN_VAR.to_owned(), rerun.to_string());
    base.vars
        .insert(super::submit::STARTED_BY.to_owned(), "rerun".to_owned());
    Ok(Ended {
        pipeline,
        rows,
        base,
        rerun,
    })
}

/// The newest status of each job's last attempt in `rows`.
fn last_statuses(rows: &[RunLogRow]) -> BTreeMap<String, (u32, String)> {
    let mut out: BTreeMap<String, (u32, String, chrono::DateTime<chrono::Utc>)> = BTreeMap::new();
    for r in rows {
        let Some(job) = job_key(r) else { continue };
        let e =
            out.entry(job)
                .or_insert((0, String::new(), chrono::DateTime::<chrono::Utc>::MIN_UTC));
        let newer = (
            r.attempt,
            crate::run_state::status_rank(&r.status),
            r.td_timestamp,
        ) > (e.0, crate::run_state::status_rank(&e.1), e.2);
        if newer {
            *e = (r.attempt, r.status.clone(), r.td_timestamp);
        }
    }
    out.into_iter().map(|(k, (a, s, _))| (k, (a, s))).collect()
}

/// Records the run as RUNNING again: a row of the run's end kind (the submit step's, naming
/// no job) with the attempt its next end will have, so the run's last end is no longer the
/// failed one and the run reads RUNNING until the re-run ends it ([`crate::run_state`]).
async fn reopen(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    rerun: u32,
    base: &Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let ev = ctx.event(
        EventType::BatchRunning,
        run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Submit,
        rerun.saturating_add(1),
        Status::Running,
        Detail {
            vars: base.vars.clone(),
            started_at: Some(ctx.clock.now()),
            run_started_at: base.run_started_at,
            ..Detail::default()
        },
    );
    publish(ctx, outcome, ev).await
}

/// Re-runs an ended run from `from` (a job of its pipeline), else from its first job whose
/// last attempt did not succeed: a new attempt of that job, then of each job after it.
///
/// # Errors
/// Rejected when the run is unknown or still open, `from` is no job of its pipeline, or
/// nothing failed and no `from` was given; transient when the run log or the bus fails.
pub async fn rerun(
    ctx: &Context,
    run_id: &RunId,
    from: Option<&str>,
) -> Result<Outcome, StepError> {
    rerun_by(ctx, run_id, from, None).await
}

/// [`rerun`], started by `operator` (the console's caller) when given: the re-run's rows
/// record who (`vars.rerun_by`, started by `operator`).
///
/// # Errors
/// As [`rerun`].
pub async fn rerun_by(
    ctx: &Context,
    run_id: &RunId,
    from: Option<&str>,
    operator: Option<&str>,
) -> Result<Outcome, StepError> {
    let Ended {
        pipeline,
        rows,
        mut base,
        rerun,
    } = ended_run(ctx, run_id).await?;
    if let Some(op) = operator {
        base.vars.insert("rerun_by".to_owned(), op.to_owned());
        base.vars
            .insert(super::submit::STARTED_BY.to_owned(), "operator".to_owned());
    }
    let statuses = last_statuses(&rows);
    let index = match from {
        Some(name) => job_of(pipeline, name)?.0,
        None => pipeline
            .jobs
            .iter()
            .position(|j| {
                statuses
                    .get(j.name.as_str())
                    .is_none_or(|(_, s)| s != "SUCCEEDED")
            })
            .ok_or_else(|| {
                StepError::Rejected(format!(
                    "every job of run {run_id} succeeded: give --from JOB to run one again"
                ))
            })?,
    };
    let mut outcome = Outcome::default();
    reopen(ctx, pipeline, run_id, rerun, &base, &mut outcome).await?;
    super::submit::start_job(ctx, pipeline, run_id, index, base, &mut outcome).await?;
    outcome.summary = format!(
        "re-run {rerun} of {run_id} from job {}: {}",
        pipeline.jobs[index].name, outcome.summary
    );
    Ok(outcome)
}

/// Records that job `job` of an ended run is to count as succeeded (an operator's decision,
/// with `reason` and who made it): a SUCCEEDED attempt of the job, after its last one. The
/// jobs after it then start (as in a re-run), or the run ends SUCCEEDED when it was the last.
///
/// # Errors
/// Rejected when the run is unknown or still open or `job` is no job of its pipeline;
/// transient when the run log or the bus fails.
pub async fn mark_success(
    ctx: &Context,
    run_id: &RunId,
    job: &str,
    reason: &str,
    operator: &str,
) -> Result<Outcome, StepError> {
    let ended = ended_run(ctx, run_id).await?;
    let pipeline = ended.pipeline;
    let (_, spec) = job_of(pipeline, job)?;
    let attempt = 1 + last_statuses(&ended.rows).get(job).map_or(0, |(a, _)| *a);
    let mut base = ended.base;
    base.job = Some(spec.name.to_string());
    base.engine = Some(spec.spec.engine().to_owned());
    base.engine_state = Some("MARKED_SUCCESS".to_owned());
    base.started_at = Some(ctx.clock.now());
    base.vars
        .insert("marked_by".to_owned(), operator.to_owned());
    base.vars
        .insert(super::submit::STARTED_BY.to_owned(), "operator".to_owned());
    base.vars.insert(
        "reason".to_owned(),
        reason.chars().take(500).collect::<String>(),
    );
    let ev = ctx.event(
        EventType::BatchFinished,
        run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Poll,
        attempt,
        Status::Succeeded,
        base,
    );
    let mut outcome = Outcome {
        summary: format!(
            "job {job} of {run_id} marked SUCCEEDED (attempt {attempt}) by {operator}"
        ),
        events: Vec::new(),
    };
    reopen(ctx, pipeline, run_id, ended.rerun, &ev.detail, &mut outcome).await?;
    publish(ctx, &mut outcome, ev).await?;
    Ok(outcome)
}
