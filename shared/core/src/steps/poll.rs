//! poll: follow submitted batches to a terminal state, holding no compute while waiting.
//!
//! A `dev.conveyor.batch.submitted` event gets one immediate check; after that, each tick (Cloud
//! Scheduler, or the embedded runtime's timer) checks every open batch. The state lives in the
//! run log: a run's newest batch row says SUBMITTED, RUNNING, or FAILED with a retry time. So a
//! poll instance can stop at any moment and the next tick carries on.
//!
//! The same rules hold for every engine: only the configured success states (default: the
//! engine's terminal success) count as success; a failed attempt is resubmitted as a new
//! attempt id after an exponential backoff until `max_attempts`; past its timeout a job is
//! cancelled and the run ends TIMED_OUT; an engine that cannot answer (quota, outage, a job not
//! visible just after its creation) leaves the run open for the next check and counts as no
//! failure; and whatever a job holds (an ephemeral cluster) is released when it ends, in any
//! state, before the run closes.
//!
//! Besides batches, the tick finishes what else waits without a request: load jobs that
//! outlived their request (`dev.conveyor.load.running`), `for_each` jobs whose rows have all
//! ended, and (as safety nets) pipelines started `after` others and graph runs whose jobs'
//! ends were each read before the other's (see `submit/graph.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use tracing::{error, info, warn};

use super::{
    Context, Outcome, StepError, active_pipeline, describe, publish,
    submit::{batch_request, submit_attempt, sweep_after, sweep_graphs, sweep_queued},
};
use crate::config::{BatchSpec, Job, Pipeline};
use crate::event::{Detail, EventType, Status, StepName};
use crate::inbound::Inbound;
use crate::names::{JobId, PipelineName, RunId};
use crate::ports::{JobState, LoadState, PortError, RunLogQuery, RunLogRow};
use crate::run_state::RunState;

/// How long a job may be missing from its engine after its submission before that counts as
/// the attempt's failure: some APIs answer 404 for a moment after a create.
const NOT_FOUND_GRACE: Duration = Duration::from_secs(120);

/// One open job attempt, as the poll step sees it.
struct Open {
    pipeline: PipelineName,
    run_id: RunId,
    attempt: u32,
    status: Status,
    detail: Detail,
}

impl Open {
    /// The job it is about: `load`, a job's name, or (rows of older releases) `batch`.
    fn job(&self) -> &str {
        self.detail.job.as_deref().unwrap_or("batch")
    }
}

pub(super) async fn handle(ctx: &Context, inbound: Inbound) -> Result<Outcome, StepError> {
    let mut outcome = Outcome::default();
    match inbound {
        Inbound::Event(e) if e.kind == EventType::BatchSubmitted => {
            let Some(pipeline) = e.pipeline.clone() else {
                return Err(StepError::Rejected(
                    "submitted event without a pipeline".to_owned(),
                ));
            };
            let open = Open {
                pipeline,
                run_id: e.run_id.clone(),
                attempt: e.attempt,
                status: Status::Submitted,
                detail: e.detail.clone(),
            };
            check(ctx, open, &mut outcome).await?;
        }
        Inbound::Start(start) => tick(ctx, &start, &mut outcome).await?,
        other => {
            return Err(StepError::Rejected(format!(
                "the poll function takes dev.conveyor.batch.submitted events and ticks, not {}",
                describe(&other)
            )));
        }
    }
    Ok(outcome)
}

/// A tick: checks every open job, closes ended load windows and sweeps fan-in, within
/// [`super::StepOptions::tick_budget`]. Past the budget it stops (a check in flight is dropped,
/// as if the instance had stopped: every check is idempotent) and leaves the rest to the next
/// tick, so ticks never overlap. The open jobs are taken in an order that turns with each
/// tick's minute, so a budget too small for all of them still reaches each in turn.
async fn tick(
    ctx: &Context,
    start: &crate::inbound::StartRequest,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let budget = ctx.options.tick_budget;
    let deadline = tokio::time::Instant::now() + budget;
    let spent = || {
        StepError::Transient(format!(
            "the tick's budget ({}) was spent reading the run log",
            humantime::format_duration(budget)
        ))
    };
    let mut tables = BTreeSet::new();
    for p in &ctx.config.pipelines {
        if start.pipeline.as_ref().is_none_or(|n| n == &p.name) {
            tables.insert(ctx.config.run_log_table(p).to_string());
        }
    }
    let mut open = Vec::new();
    for table in tables {
        let Ok(table) = crate::names::TableRef::parse(&table) else {
            continue;
        };
        let rows = tokio::time::timeout_at(
            deadline,
            ctx.ports
                .run_log
                .open_batches(&table, Utc::now() - lookback(ctx)),
        )
        .await
        .map_err(|_| spent())?
        .map_err(StepError::from_port)?;
        for row in rows {
            let Some(o) = open_from_row(&row) else {
                warn!(run_id = %row.run_id, "open batch row is unreadable; skipped");
                continue;
            };
            if start.pipeline.as_ref().is_none_or(|n| n == &o.pipeline) {
                open.push(o);
            }
        }
    }
    let total = open.len();
    if total > 0 {
        let turn = usize::try_from((start.at.timestamp() / 60).rem_euclid(total as i64))
            .unwrap_or_default();
        open.rotate_left(turn);
    }
    let mut checked = 0;
    let mut out_of_budget = false;
    for o in open {
        if tokio::time::Instant::now() >= deadline {
            out_of_budget = true;
            break;
        }
        let run_id = o.run_id.clone();
        match tokio::time::timeout_at(deadline, check(ctx, o, outcome)).await {
            Ok(Ok(())) => checked += 1,
            // One job's transient error must not stop the others: the next tick retries it.
            Ok(Err(e)) => {
                checked += 1;
                warn!(run_id = %run_id, error = %e, "check failed; next tick retries");
            }
            Err(_) => {
                warn!(run_id = %run_id, "the tick's budget ran out during this check; the next tick checks it again");
                out_of_budget = true;
                break;
            }
        }
    }
    let mut swept = 0;
    if !out_of_budget {
        match tokio::time::timeout_at(deadline, super::load::sweep_windows(ctx, outcome)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(windows = n, "closed ended load windows"),
            Ok(Err(e)) => warn!(error = %e, "closing load windows failed; the next tick retries"),
            Err(_) => out_of_budget = true,
        }
    }
    if !out_of_budget {
        // Ordered loads (`load.order`): a load this tick saw DONE lets its queue go on.
        match tokio::time::timeout_at(deadline, super::load::sweep_ordered(ctx, outcome)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "draining ordered loads failed; the next tick retries"),
            Err(_) => out_of_budget = true,
        }
    }
    if !out_of_budget {
        match tokio::time::timeout_at(deadline, sweep_after(ctx, outcome)).await {
            Ok(Ok(n)) => swept = n,
            Ok(Err(e)) => warn!(error = %e, "fan-in sweep failed; the next tick retries"),
            Err(_) => out_of_budget = true,
        }
    }
    if !out_of_budget {
        let since = Utc::now() - lookback(ctx);
        match tokio::time::timeout_at(deadline, sweep_graphs(ctx, since, outcome)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(runs = n, "advanced graph runs no event had advanced"),
            Ok(Err(e)) => warn!(error = %e, "graph sweep failed; the next tick retries"),
            Err(_) => out_of_budget = true,
        }
    }
    if !out_of_budget {
        // `max_active_runs`: queued runs whose slot freed without starting them.
        match tokio::time::timeout_at(deadline, sweep_queued(ctx, outcome)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(runs = n, "started queued runs"),
            Ok(Err(e)) => warn!(error = %e, "queued-run sweep failed; the next tick retries"),
            Err(_) => out_of_budget = true,
        }
    }
    let mut missed = Vec::new();
    if !out_of_budget {
        // Freshness deadlines (`expect`): one MISSED row and one alert per late run date.
        match tokio::time::timeout_at(deadline, super::freshness::check(ctx, Utc::now())).await {
            Ok(Ok(m)) => missed = m,
            Ok(Err(e)) => warn!(error = %e, "freshness check failed; the next tick retries"),
            Err(_) => out_of_budget = true,
        }
    }
    outcome.summary = format!("checked {checked} open job(s)");
    for m in &missed {
        outcome.summary.push_str(&format!("; MISSED: {m}"));
    }
    if swept > 0 {
        outcome
            .summary
            .push_str(&format!("; started {swept} fan-in run(s)"));
    }
    if out_of_budget {
        let left = total - checked;
        warn!(checked, left, budget = %humantime::format_duration(budget), "tick budget spent; the next tick carries on");
        outcome.summary.push_str(&format!(
            "; budget of {} spent: {left} open job(s) and the sweeps left for the next tick",
            humantime::format_duration(budget)
        ));
    }
    Ok(())
}

/// How far back the tick reads the run log for open jobs: the longest a job of any pipeline
/// may stay open (every attempt to its timeout, with the longest backoff between them),
/// plus a day. Each tick then scans days, not the whole table.
fn lookback(ctx: &Context) -> chrono::Duration {
    let longest = ctx
        .config
        .pipelines
        .iter()
        .flat_map(|p| p.jobs.iter().map(|j| p.poll_for(j)))
        .map(|policy| {
            (policy.timeout + policy.backoff.max).saturating_mul(policy.max_attempts.max(1))
        })
        .max()
        .unwrap_or_default();
    chrono::Duration::from_std(longest).unwrap_or(chrono::Duration::days(365))
        + chrono::Duration::days(1)
}

fn open_from_row(row: &RunLogRow) -> Option<Open> {
    let mut detail: Detail = serde_json::from_str(&row.detail).ok()?;
    if detail.job.is_none() {
        detail.job = row.job.clone();
    }
    Some(Open {
        pipeline: PipelineName::parse(row.pipeline.as_deref()?).ok()?,
        run_id: RunId::parse(&row.run_id).ok()?,
        attempt: row.attempt,
        status: Status::parse(&row.status)?,
        detail,
    })
}

async fn check(ctx: &Context, open: Open, outcome: &mut Outcome) -> Result<(), StepError> {
    let pipeline = match active_pipeline(ctx, open.pipeline.as_str()) {
        Ok(p) => p,
        Err(e) => {
            info!(run_id = %open.run_id, error = %e, "not following this job");
            return Ok(());
        }
    };
    if open.job() == "load" {
        return check_load(ctx, pipeline, open, outcome).await;
    }
    let Some((_, job)) = pipeline.job(open.job()) else {
        info!(run_id = %open.run_id, job = open.job(), "the pipeline has no such job any more");
        return Ok(());
    };
    if open.detail.engine.as_deref() == Some(super::submit::FOR_EACH) {
        return check_rows(ctx, pipeline, job, &open, outcome).await;
    }
    check_batch(ctx, pipeline, job, open, outcome).await
}

/// A load job that outlived its request: `dev.conveyor.table.loaded` once it is DONE.
async fn check_load(
    ctx: &Context,
    pipeline: &Pipeline,
    open: Open,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(job_id) = open.detail.job_id.clone() else {
        return Err(StepError::Rejected(format!(
            "run {} has no load job id to follow",
            open.run_id
        )));
    };
    let mut detail = open.detail.clone();
    let elapsed = (Utc::now() - detail.started_at.unwrap_or_else(Utc::now))
        .to_std()
        .unwrap_or_default();
    let (kind, status) = match super::load::load_state_event(ctx, &open.run_id, &detail).await {
        Ok(state) => match state {
            LoadState::Running => {
                outcome.summary = format!("load {job_id} running");
                return Ok(());
            }
            LoadState::Done { rows } => {
                info!(run_id = %open.run_id, job_id = %job_id, rows, "load job done");
                detail.rows = Some(rows);
                // `load.on_success`: done before the event, so a transient failure is
                // retried by the next tick (each action at most once).
                if let Some(e) = super::load::after_done(ctx, pipeline, &open.run_id).await? {
                    detail.vars.insert("on_success_error".to_owned(), e);
                }
                outcome.summary = format!("load {job_id} loaded {rows} rows");
                (EventType::TableLoaded, Status::Succeeded)
            }
            LoadState::Failed { message, .. } => {
                detail.error = Some(message);
                outcome.summary = format!("load {job_id} failed");
                (EventType::StepFailed, Status::Failed)
            }
        },
        Err(PortError::NotFound(e)) if elapsed >= NOT_FOUND_GRACE => {
            detail.error = Some(format!("the load job is gone: {e}"));
            (EventType::StepFailed, Status::Failed)
        }
        Err(e) if e.is_transient() || matches!(e, PortError::NotFound(_)) => {
            warn!(run_id = %open.run_id, job_id = %job_id, error = %e, "cannot read the load job yet");
            return Ok(());
        }
        Err(e) => {
            detail.error = Some(e.to_string());
            (EventType::StepFailed, Status::Failed)
        }
    };
    let ev = poll_event(ctx, pipeline, &open, kind, status, detail);
    publish(ctx, outcome, ev).await
}

/// The poll step's event about `open`'s attempt of a job of `pipeline`.
fn poll_event(
    ctx: &Context,
    pipeline: &Pipeline,
    open: &Open,
    kind: EventType,
    status: Status,
    detail: Detail,
) -> crate::event::ConveyorEvent {
    ctx.event(
        kind,
        open.run_id.clone(),
        Some(pipeline.name.clone()),
        StepName::Poll,
        open.attempt,
        status,
        detail,
    )
}

/// Ends `job`'s attempt TIMED_OUT because its run passed the pipeline's whole-run timeout
/// (`detail.error` says so).
async fn timed_out_with_the_run(
    ctx: &Context,
    pipeline: &Pipeline,
    job: &Job,
    open: &Open,
    detail: Detail,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    outcome.summary = format!("job {} timed out with the run", job.name);
    let ev = poll_event(
        ctx,
        pipeline,
        open,
        EventType::BatchFinished,
        Status::TimedOut,
        detail,
    );
    publish(ctx, outcome, ev).await
}

/// A `for_each` job: it ends when every row's run has ended — SUCCEEDED when all did, else
/// FAILED naming the rows that did not. Each row's own retries and timeout are its own.
async fn check_rows(
    ctx: &Context,
    pipeline: &Pipeline,
    job: &Job,
    open: &Open,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    if let Some(why) = super::run_timeout::exceeded(pipeline, &open.detail, Utc::now()) {
        // Each row's run carries the same start: its own open batch is cancelled by the same
        // rule. The job ends now, for every row.
        let mut detail = open.detail.clone();
        detail.error = Some(why);
        return timed_out_with_the_run(ctx, pipeline, job, open, detail, outcome).await;
    }
    let children = &open.detail.children;
    let since = open
        .detail
        .started_at
        .map(|t| t - chrono::Duration::minutes(10));
    let rows = ctx
        .ports
        .run_log
        .rows(
            &ctx.config.run_log_table(pipeline),
            &RunLogQuery {
                pipeline: Some(pipeline.name.to_string()),
                since,
                ..RunLogQuery::default()
            },
        )
        .await
        .map_err(StepError::from_port)?;
    let mut pending = 0;
    let mut failed = Vec::new();
    for child in children {
        // The row's run for this job, by the one definition of a run's state.
        let state = RunState::from_rows(rows.iter().filter(|r| {
            r.run_id == child.run_id.as_str() && r.job.as_deref() == Some(job.name.as_str())
        }));
        let Some(state) = state else {
            pending += 1;
            continue;
        };
        if state.failed() {
            failed.push(format!(
                "{} ({}: {})",
                child.key,
                state.status,
                state.error.as_deref().unwrap_or("no error given")
            ));
        } else if !state.succeeded() {
            pending += 1;
        }
    }
    if pending > 0 {
        outcome.summary = format!(
            "job {}: {pending} of {} row(s) still running",
            job.name,
            children.len()
        );
        return Ok(());
    }
    let mut detail = open.detail.clone();
    let status = if failed.is_empty() {
        Status::Succeeded
    } else {
        detail.error = Some(format!(
            "{} of {} row(s) failed: {}",
            failed.len(),
            children.len(),
            failed.join("; ")
        ));
        Status::Failed
    };
    let status = if status == Status::Succeeded {
        let Some(status) = checked(ctx, pipeline, job, &open.run_id, &mut detail, outcome).await
        else {
            return Ok(());
        };
        status
    } else {
        status
    };
    info!(run_id = %open.run_id, job = %job.name, status = %status, "every row has ended");
    outcome.summary = format!("job {} {status}", job.name);
    let ev = poll_event(
        ctx,
        pipeline,
        open,
        EventType::BatchFinished,
        status,
        detail,
    );
    publish(ctx, outcome, ev).await
}

async fn check_batch(
    ctx: &Context,
    pipeline: &Pipeline,
    job: &Job,
    open: Open,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let spec = &job.spec;
    let now = Utc::now();
    let policy = pipeline.poll_for(job);
    let mut detail = open.detail.clone();
    detail.error = None;
    // Past the pipeline's whole-run timeout the job ends TIMED_OUT like one past its own.
    let run_over = super::run_timeout::exceeded(pipeline, &open.detail, now);

    if open.status == Status::Failed {
        if let Some(why) = run_over {
            // A failed attempt waiting for a retry it will not get: nothing runs to cancel.
            detail.retry_at = None;
            detail.error = Some(format!(
                "{why}; no retry after: {}",
                open.detail.error.as_deref().unwrap_or("no error given")
            ));
            return timed_out_with_the_run(ctx, pipeline, job, &open, detail, outcome).await;
        }
        // A failed attempt waiting for its retry.
        match detail.retry_at {
            Some(at) if at <= now => {
                let mut base = detail.clone();
                base.retry_at = None;
                base.log = None;
                return submit_attempt(
                    ctx,
                    pipeline,
                    job,
                    &open.run_id,
                    open.attempt + 1,
                    base,
                    outcome,
                )
                .await;
            }
            _ => return Ok(()),
        }
    }
    let Some(job_id) = detail.job_id.clone() else {
        return Err(StepError::Rejected(format!(
            "run {} has no job id to follow",
            open.run_id
        )));
    };
    let finish = |status: Status, detail: Detail| {
        poll_event(
            ctx,
            pipeline,
            &open,
            EventType::BatchFinished,
            status,
            detail,
        )
    };
    let started = detail.started_at.unwrap_or(now);
    let elapsed = (now - started).to_std().unwrap_or_default();
    let timed_out = elapsed >= policy.timeout || run_over.is_some();
    let mut req = batch_request(
        pipeline,
        job,
        &open.run_id,
        open.attempt,
        &detail.vars,
        &detail.row,
    );
    req.job_id = job_id.clone();
    let state = match ctx.ports.batch.follow(&req).await {
        Ok(state) => state,
        // An engine that cannot answer now (quota, outage, a job not visible yet just after its
        // creation) says nothing about the job: the run stays open for the next check.
        Err(e)
            if !timed_out
                && (e.is_transient()
                    || (matches!(e, PortError::NotFound(_)) && elapsed < NOT_FOUND_GRACE)) =>
        {
            warn!(run_id = %open.run_id, job_id = %job_id, error = %e, "cannot read the batch state; the next check retries");
            outcome.summary = format!("{job_id}: {e}; checked again on the next tick");
            return Ok(());
        }
        // Past the deadline an unanswered state still means: cancel.
        Err(e) if e.is_transient() => JobState {
            log: None,
            state: "UNKNOWN".to_owned(),
            terminal: false,
            error: Some(e.to_string()),
        },
        // A job the engine has lost, or cannot show, ended as far as Conveyor can tell.
        Err(e) => JobState {
            log: None,
            state: if matches!(e, PortError::NotFound(_)) {
                "NOT_FOUND".to_owned()
            } else {
                "UNKNOWN".to_owned()
            },
            terminal: true,
            error: Some(e.to_string()),
        },
    };
    detail.engine_state = Some(state.state.clone());
    if state.log.is_some() {
        detail.log = state.log.clone();
    }
    let success = policy.success_states(spec);
    let succeeded = state.terminal && success.iter().any(|s| s.eq_ignore_ascii_case(&state.state));
    if state.terminal {
        // Release before the run closes: a release that fails transiently is retried by the
        // next check, which sees the same terminal state.
        if !release(ctx, spec, &job_id, outcome).await {
            return Ok(());
        }
    }
    if succeeded {
        info!(run_id = %open.run_id, job_id = %job_id, state = %state.state, "batch succeeded");
        outcome.summary = format!("{job_id} {}", state.state);
        let Some(status) = checked(ctx, pipeline, job, &open.run_id, &mut detail, outcome).await
        else {
            return Ok(());
        };
        return publish(ctx, outcome, finish(status, detail)).await;
    }
    if state.terminal && !timed_out {
        detail.error = Some(
            state
                .error
                .clone()
                .unwrap_or_else(|| format!("ended in state {}", state.state)),
        );
        if open.attempt < policy.max_attempts {
            let delay = policy.backoff.delay(open.attempt);
            detail.retry_at = Some(now + chrono::Duration::from_std(delay).unwrap_or_default());
            info!(run_id = %open.run_id, job_id = %job_id, attempt = open.attempt, retry_in = ?delay, "batch failed; retry scheduled");
        } else {
            detail.retry_at = None;
            warn!(run_id = %open.run_id, job_id = %job_id, attempt = open.attempt, "batch failed; no attempts left");
        }
        outcome.summary = format!("{job_id} failed in state {}", state.state);
        return publish(ctx, outcome, finish(Status::Failed, detail)).await;
    }
    if timed_out {
        // Also reached by a job found ended (not successfully) after its deadline, such as one
        // cancelled by an earlier check whose release had to wait: a timeout is final.
        if !state.terminal {
            warn!(run_id = %open.run_id, job_id = %job_id, ?elapsed, "batch timed out; cancelling");
            match ctx.ports.batch.cancel(spec, &job_id).await {
                Ok(()) => {}
                Err(e) if e.is_transient() => {
                    warn!(run_id = %open.run_id, job_id = %job_id, error = %e, "cannot cancel yet; the next check retries");
                    outcome.summary = format!("{job_id} timed out; cancel pending: {e}");
                    return Ok(());
                }
                Err(e) => {
                    error!(run_id = %open.run_id, job_id = %job_id, error = %e, "cannot cancel the timed-out batch; cancel it by hand");
                }
            }
            if !release(ctx, spec, &job_id, outcome).await {
                return Ok(());
            }
        }
        detail.error = Some(match &run_over {
            Some(why) => format!("{why}; cancelled in state {}", state.state),
            None => format!(
                "timed out after {} (limit {}) in state {}; cancelled",
                humantime::format_duration(std::time::Duration::from_secs(elapsed.as_secs())),
                humantime::format_duration(policy.timeout),
                state.state
            ),
        });
        outcome.summary = format!("{job_id} timed out");
        return publish(ctx, outcome, finish(Status::TimedOut, detail)).await;
    }
    if open.status == Status::Submitted
        && spec
            .running_states()
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&state.state))
    {
        let ev = poll_event(
            ctx,
            pipeline,
            &open,
            EventType::BatchRunning,
            Status::Running,
            detail,
        );
        outcome.summary = format!("{job_id} running");
        return publish(ctx, outcome, ev).await;
    }
    outcome.summary = format!("{job_id} {}", state.state);
    Ok(())
}

/// Runs the checks of a job that SUCCEEDED: its status after them (FAILED with
/// `CHECK_FAILED` when an `error` check failed; failed `warn` checks in its error), or `None`
/// when the warehouse cannot be reached (the next check runs them again).
async fn checked(
    ctx: &Context,
    pipeline: &Pipeline,
    job: &Job,
    run_id: &RunId,
    detail: &mut Detail,
    outcome: &mut Outcome,
) -> Option<Status> {
    match super::checks::run(ctx, pipeline, job, run_id, detail).await {
        Ok(report) => {
            if let Some(failure) = report.failure {
                detail.error = Some(failure);
                detail.retry_at = None;
                outcome.summary = format!("job {} failed its checks", job.name);
                return Some(Status::Failed);
            }
            if !report.warnings.is_empty() {
                detail.error = Some(format!("CHECK_WARN: {}", report.warnings.join("; ")));
            }
            Some(Status::Succeeded)
        }
        Err(e) => {
            warn!(run_id = %run_id, job = %job.name, error = %e, "cannot run the job's checks yet; the next check retries");
            outcome.summary = format!("job {}: checks wait: {e}", job.name);
            None
        }
    }
}

/// Releases what the ended job `job_id` holds (an ephemeral cluster). `false` when the engine
/// could not be reached: the run must stay open so the next check releases it.
async fn release(ctx: &Context, spec: &BatchSpec, job_id: &JobId, outcome: &mut Outcome) -> bool {
    match ctx.ports.batch.release(spec, job_id).await {
        Ok(()) => true,
        Err(e) if e.is_transient() => {
            warn!(job_id = %job_id, error = %e, "cannot release the batch's resources yet; the next check retries");
            outcome.summary = format!("{job_id} ended; release pending: {e}");
            false
        }
        Err(e) => {
            error!(job_id = %job_id, error = %e, "cannot release the batch's resources; release them by hand");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::super::{Context, handle, row_for};
    use crate::config::BatchSpec;
    use crate::event::{ConveyorEvent, Detail, EventType, Status, StepName};
    use crate::inbound::{Inbound, Origin, StartRequest};
    use crate::names::{JobId, PipelineName, RunId, TableRef};
    use crate::ports::{
        BatchEngine, BatchRequest, EventBus, JobState, PortError, Ports, RunLog, RunLogQuery,
        RunLogRow, Submitted,
    };

    /// A run log holding `rows` open batch rows.
    struct Open(Vec<RunLogRow>);

    #[async_trait]
    impl RunLog for Open {
        async fn record(&self, _: &TableRef, _: &RunLogRow) -> Result<(), PortError> {
            Ok(())
        }
        async fn rows(&self, _: &TableRef, _: &RunLogQuery) -> Result<Vec<RunLogRow>, PortError> {
            Ok(Vec::new())
        }
        async fn open_batches(
            &self,
            _: &TableRef,
            _: DateTime<Utc>,
        ) -> Result<Vec<RunLogRow>, PortError> {
            Ok(self.0.clone())
        }
    }

    /// An engine that takes `delay` to answer each state read, and records which jobs it read.
    struct Slow {
        delay: Duration,
        read: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl BatchEngine for Slow {
        async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
            Ok(Submitted {
                job_id: req.job_id.clone(),
                adopted: true,
            })
        }
        async fn state(&self, _: &BatchSpec, job_id: &JobId) -> Result<JobState, PortError> {
            tokio::time::sleep(self.delay).await;
            self.read.lock().expect("lock").push(job_id.to_string());
            Ok(JobState {
                log: None,
                state: "RUNNING".to_owned(),
                terminal: false,
                error: None,
            })
        }
        async fn cancel(&self, _: &BatchSpec, _: &JobId) -> Result<(), PortError> {
            Ok(())
        }
    }

    struct Quiet;

    #[async_trait]
    impl EventBus for Quiet {
        async fn publish(&self, _: &ConveyorEvent) -> Result<(), PortError> {
            Ok(())
        }
    }

    fn context(jobs: usize, delay: Duration) -> (Context, Arc<Slow>) {
        let config = crate::config::parse_str(
            "pipelines:\n  - name: p\n    trigger: { manual: true }\n    batch: { engine: local, command: \"true\" }\n    poll: { timeout: 1d }\n",
            "t.yaml",
        )
        .expect("config");
        let pipeline = PipelineName::parse("p").expect("name");
        let rows = (0..jobs)
            .map(|i| {
                let run_id = RunId::derive(&pipeline, &["open", &i.to_string()]);
                let job_id = JobId::derive("batch", &run_id, 1);
                let event = ConveyorEvent::new(
                    EventType::BatchSubmitted,
                    run_id,
                    Some(pipeline.clone()),
                    StepName::Submit,
                    1,
                    Status::Submitted,
                    Detail {
                        job: Some("batch".to_owned()),
                        job_id: Some(job_id),
                        engine: Some("local".to_owned()),
                        started_at: Some(Utc::now()),
                        ..Detail::default()
                    },
                );
                row_for(&event, "test")
            })
            .collect();
        let engine = Arc::new(Slow {
            delay,
            read: Mutex::default(),
        });
        let ports = Ports {
            run_log: Arc::new(Open(rows)),
            batch: engine.clone(),
            bus: Arc::new(Quiet),
            ..Ports::unwired()
        };
        (Context::new(Arc::new(config), ports), engine)
    }

    fn tick_at(minute: i64) -> Inbound {
        Inbound::Start(StartRequest {
            pipeline: None,
            origin: Origin::Schedule,
            at: DateTime::from_timestamp(minute * 60, 0).expect("time"),
            key: None,
            date: None,
        })
    }

    // Real time, scaled down: each state read takes DELAY, a tick may work BUDGET. The
    // bounds leave room for a loaded machine and still tell the old behaviour (every job,
    // one after another: 10 × DELAY) from the new.
    const DELAY: Duration = Duration::from_millis(150);
    const BUDGET: Duration = Duration::from_millis(400);

    #[tokio::test]
    async fn a_tick_stops_checking_when_its_budget_is_spent_and_says_what_is_left() {
        let (mut ctx, engine) = context(10, DELAY);
        ctx.options.tick_budget = BUDGET;
        let began = std::time::Instant::now();
        let outcome = handle(StepName::Poll, &ctx, tick_at(0))
            .await
            .expect("tick");
        let took = began.elapsed();
        assert!(
            took < BUDGET * 3,
            "a tick ran {took:?}, far past its budget of {BUDGET:?}: it would overlap the next"
        );
        let read = engine.read.lock().expect("lock").len();
        assert!(
            (1..=3).contains(&read),
            "{read} of 10 jobs checked in {BUDGET:?} at {DELAY:?} each"
        );
        assert!(
            outcome.summary.contains("left for the next tick"),
            "{}",
            outcome.summary
        );
    }

    #[tokio::test]
    async fn a_tick_within_its_budget_checks_every_open_job() {
        let (ctx, engine) = context(10, Duration::from_millis(1));
        let outcome = handle(StepName::Poll, &ctx, tick_at(0))
            .await
            .expect("tick");
        assert_eq!(engine.read.lock().expect("lock").len(), 10);
        assert_eq!(outcome.summary, "checked 10 open job(s)");
    }

    #[tokio::test]
    async fn ticks_that_run_out_of_budget_reach_every_job_in_turn() {
        let (mut ctx, engine) = context(5, DELAY);
        ctx.options.tick_budget = BUDGET;
        let mut seen = std::collections::BTreeSet::new();
        for minute in 0..5 {
            handle(StepName::Poll, &ctx, tick_at(minute))
                .await
                .expect("tick");
            seen.extend(engine.read.lock().expect("lock").drain(..));
        }
        assert_eq!(
            seen.len(),
            5,
            "jobs never checked: a budget that starves some"
        );
    }
}
