//! The five steps. Each takes an [`Inbound`], does its one side effect through the ports, and
//! publishes the events that chain to the next step.
//!
//! # Layout
//! One file per step: `stage.rs`, `load.rs`, `submit.rs`, `poll.rs`, `log.rs`, and
//! `messages.rs` (the load function's Pub/Sub messages into rows); this file holds
//! what they share: the [`Context`], the [`StepError`] that decides acknowledgement, and
//! [`handle`], the dispatch every function and the embedded runtime call. `wiring.rs`:
//! [`check_wiring`], the start-up check that a runtime wires every port its step needs.

mod checks;
pub mod freshness;
mod lineage;
mod load;
mod log;
pub mod messages;
pub mod pause;
mod poll;
mod rejections;
pub mod rerun;
mod run_timeout;
mod stage;
mod submit;
mod wiring;

use std::sync::Arc;

use serde::Serialize;

pub use lineage::{lineage_events, run_uuid, source_tables};
pub use log::{CHECK_WARN, check_warned, ends_in_failure, row_for};
pub use rejections::{
    About, MAX_GENERATION, Rejections, bounded_generation, bounded_reason, record_rejection,
    record_rejection_about,
};
pub use rerun::{mark_success, rerun, rerun_by};
pub use stage::{ProgressKind, StageProgress, StageReport, stage_pipeline};
pub use submit::STARTED_BY;
pub use wiring::{WiringError, check_wiring};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Pipeline};
use crate::event::{ConveyorEvent, EventType, StepName};
use crate::inbound::Inbound;
use crate::ports::{PortError, Ports};

/// What every step works with.
#[derive(Clone)]
pub struct Context {
    /// The pipelines.
    pub config: Arc<Config>,
    /// The ports.
    pub ports: Ports,
    /// Settings of the runtime (not of the pipelines).
    pub options: StepOptions,
    /// The rejections this process has recorded, so repeats are counted, not each recorded.
    pub rejections: Rejections,
    /// The time the steps' events carry (the system clock unless a test sets another).
    pub clock: Arc<dyn Clock>,
}

impl Context {
    /// A context with the default [`StepOptions`].
    pub fn new(config: Arc<Config>, ports: Ports) -> Self {
        Self {
            config,
            ports,
            options: StepOptions::default(),
            rejections: Rejections::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The rows of `pipeline`'s run log that `query` selects, for that pipeline (`query`'s own
    /// `pipeline` is replaced); a run log not created yet reads as no rows.
    ///
    /// # Errors
    /// Transient when the run log cannot be read.
    pub(crate) async fn pipeline_rows(
        &self,
        pipeline: &crate::config::Pipeline,
        query: crate::ports::RunLogQuery,
    ) -> Result<Vec<crate::ports::RunLogRow>, StepError> {
        let query = crate::ports::RunLogQuery {
            pipeline: Some(pipeline.name.to_string()),
            ..query
        };
        let table = self.config.run_log_table(pipeline);
        match self.ports.run_log.rows(&table, &query).await {
            Ok(rows) => Ok(rows),
            Err(crate::ports::PortError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(StepError::from_port(e)),
        }
    }

    /// A new event at the context's clock's time.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &self,
        kind: EventType,
        run_id: crate::names::RunId,
        pipeline: Option<crate::names::PipelineName>,
        step: StepName,
        attempt: u32,
        status: crate::event::Status,
        detail: crate::event::Detail,
    ) -> ConveyorEvent {
        ConveyorEvent::new(kind, run_id, pipeline, step, attempt, status, detail)
            .at(self.clock.now())
    }
}

/// Settings of the runtime the steps run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOptions {
    /// How long a load request waits for its load job before handing it to the poll tick
    /// (no request holds compute for minutes). Default 10 s.
    pub load_wait: std::time::Duration,
    /// How long one poll tick may work: it checks open jobs until this is spent and leaves the
    /// rest to the next tick, so ticks (Cloud Scheduler, every minute) never overlap. Default
    /// 45 s.
    pub tick_budget: std::time::Duration,
    /// The bucket where steps keep small claim objects under `_conveyor/` that must be taken
    /// atomically (`create_new`): the `max_active_runs` slots of a pipeline, the submit claims
    /// of engines whose submit is not idempotent. `None`: no such bucket (admission falls
    /// back to reading the run log, which is not atomic; see the delivery guarantees).
    pub state_bucket: Option<crate::names::BucketName>,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            load_wait: std::time::Duration::from_secs(10),
            tick_budget: std::time::Duration::from_secs(45),
            state_bucket: None,
        }
    }
}

/// Why a step did not complete. Permanent problems that a step can record (a file with bad
/// rows, a refused batch) are not errors: the step records them as `dev.conveyor.step.failed`
/// and returns an [`Outcome`]. Exhaustive on purpose: every runtime maps exactly these two
/// (acknowledge and record, or ask for redelivery).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The request is unusable (malformed, unknown pipeline, wrong function): permanent, so
    /// it is recorded and not retried.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A backend failed in a way that may pass: the request should be redelivered.
    #[error("transient: {0}")]
    Transient(String),
}

impl StepError {
    pub(crate) fn from_port(e: PortError) -> Self {
        if e.is_transient() {
            Self::Transient(e.to_string())
        } else {
            Self::Rejected(e.to_string())
        }
    }
}

/// What a step did, as the HTTP response and the CLI report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// One line for people.
    pub summary: String,
    /// The events published.
    pub events: Vec<String>,
}

impl Outcome {
    fn note(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            events: Vec::new(),
        }
    }
}

/// Runs `step` on `inbound`.
///
/// # Errors
/// [`StepError::Rejected`] for input the step cannot use, [`StepError::Transient`] when a
/// backend failed and a redelivery may succeed.
pub async fn handle(step: StepName, ctx: &Context, inbound: Inbound) -> Result<Outcome, StepError> {
    if let Inbound::Ignored(why) = &inbound {
        return Ok(Outcome::note(why.clone()));
    }
    // Each step's future is boxed: they are kilobytes (a load's ~5.6 kB, a poll's ~7.7 kB), and
    // held inline this future would be as large as the largest and be moved whole through every
    // layer of the HTTP stack on every request.
    match step {
        StepName::Stage => Box::pin(stage::handle(ctx, inbound)).await,
        StepName::Load => Box::pin(load::handle(ctx, inbound)).await,
        StepName::Submit => Box::pin(submit::handle(ctx, inbound)).await,
        StepName::Poll => Box::pin(poll::handle(ctx, inbound)).await,
        StepName::Log => Box::pin(log::handle(ctx, inbound)).await,
    }
}

/// What loads wait for besides work in flight, one line each: open `load.batch.window`
/// windows (until they close) and folders whose parts wait for their `load.batch.marker`.
/// `conveyor run` reports these rather than calling the run done.
///
/// # Errors
/// When the object store cannot be read.
pub async fn waiting_loads(ctx: &Context) -> Result<Vec<String>, StepError> {
    load::waiting(ctx).await
}

/// The event types each step consumes: the embedded bus routes by this table, and the Pub/Sub
/// push subscriptions filter by it in production.
pub fn subscriptions(step: StepName) -> &'static [EventType] {
    match step {
        StepName::Stage => &[],
        // Staged objects reach load by one path: their arrival (the landing bucket's
        // notification; the embedded watcher), never also by the staged event.
        StepName::Load => &[],
        StepName::Submit => &[
            EventType::TableLoaded,
            EventType::BatchFinished,
            EventType::RunFinished,
            EventType::RowQueued,
        ],
        StepName::Poll => &[EventType::BatchSubmitted],
        StepName::Log => &EventType::ALL,
    }
}

/// What kind of request `inbound` is, for rejection messages.
pub(crate) fn describe(inbound: &Inbound) -> String {
    match inbound {
        Inbound::Event(e) => format!("{} events", e.kind),
        Inbound::Object(_) => "object arrivals".to_owned(),
        Inbound::Start(s) if s.pipeline.is_none() => "ticks".to_owned(),
        Inbound::Start(_) => "start requests".to_owned(),
        Inbound::Ignored(_) => "ignored messages".to_owned(),
    }
}

/// Publishes `event`, mapping a bus failure to a transient step error.
pub(crate) async fn publish(
    ctx: &Context,
    outcome: &mut Outcome,
    event: ConveyorEvent,
) -> Result<(), StepError> {
    ctx.ports
        .bus
        .publish(&event)
        .await
        .map_err(|e| StepError::Transient(format!("cannot publish {}: {e}", event.kind)))?;
    outcome
        .events
        .push(format!("{} {}", event.kind, event.run_id));
    Ok(())
}

/// The active pipeline called `name`.
pub(crate) fn active_pipeline<'a>(ctx: &'a Context, name: &str) -> Result<&'a Pipeline, StepError> {
    let p = ctx
        .config
        .pipeline(name)
        .ok_or_else(|| StepError::Rejected(format!("unknown pipeline {name:?}")))?;
    if !p.active {
        return Err(StepError::Rejected(format!(
            "pipeline {name:?} is inactive"
        )));
    }
    Ok(p)
}
