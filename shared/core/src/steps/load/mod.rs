//! load: an object arrived; load it into the table of every active pipeline whose trigger
//! pattern it matches — on its own, with its folder when it is the folder's marker, or with
//! the arrivals of a time window.
//!
//! Exactly once per object generation: the event's generation is checked against the store
//! (an event for a generation that is no longer live is acknowledged as superseded: the newer
//! generation's own event loads it), and every load job has a deterministic id that a
//! redelivery adopts.
//!
//! # Layout
//! - `mod.rs`: the arrival: which pipelines, what is data, which generation.
//! - `job.rs`: running one load job without holding the request (a long one goes to the poll
//!   tick), and its events.
//! - `marker.rs`: `load.batch.marker`: a folder in one job.
//! - `window.rs`: `load.batch.window`: a time window's arrivals in one job.

mod fields;
mod job;
mod marker;
mod on_success;
mod order;
mod window;

use std::collections::BTreeMap;

use chrono::Utc;
use tracing::{info, instrument};

use job::Finished;

pub(super) use job::load_state_event;
pub(super) use on_success::after_done;
pub(super) use order::sweep_ordered;
pub(super) use window::sweep_windows;

/// What loads wait for besides work in flight, one line each: open windows (until they
/// close) and folders whose parts wait for their marker.
///
/// # Errors
/// The store's error.
pub(super) async fn waiting(ctx: &Context) -> Result<Vec<String>, StepError> {
    let mut out = window::open_windows(ctx).await?;
    out.extend(marker::folders_without_marker(ctx).await?);
    out.extend(order::queued(ctx).await?);
    Ok(out)
}

use super::{Context, Outcome, StepError, describe};
use crate::config::{LoadBatch, LoadSpec, MarkerCovers, Pipeline, render_table, table_safe};
use crate::event::{Detail, EventType, ObjectRef, StepName};
use crate::inbound::Inbound;
use crate::names::{RunId, TableRef};
use crate::run_origin::RunOrigin;

/// The job name load events carry in the run log.
pub(super) const LOAD_JOB: &str = "load";

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
    if let Some(c) = object
        .name
        .as_str()
        .chars()
        .find(|c| matches!(c, '*' | '?' | '['))
    {
        // BigQuery expands wildcards in source URIs: such a name would load other objects.
        return Err(StepError::Rejected(format!(
            "{}: object names with {c:?} are not loaded (BigQuery would read the name as a \
             wildcard and load other objects)",
            object.uri()
        )));
    }
    let mut outcome = Outcome::default();
    let matching: Vec<(&Pipeline, Arrival)> = ctx
        .config
        .pipelines
        .iter()
        .filter(|p| p.active)
        .filter_map(|p| Some((p, arrival(p, &object)?)))
        .collect();
    if matching.is_empty() {
        info!(object = %object.uri(), "no active pipeline matches; nothing to load");
        outcome.summary = format!("no active pipeline matches {}", object.uri());
        return Ok(outcome);
    }
    if matching.iter().all(|(_, a)| matches!(a, Arrival::NotData)) {
        outcome.summary = format!(
            "{} is not data (load.ignore: hidden, marker or temporary file)",
            object.uri()
        );
        return Ok(outcome);
    }
    if matching.iter().all(|(_, a)| matches!(a, Arrival::Part)) {
        outcome.summary = format!("{} waits for its folder's marker", object.uri());
        return Ok(outcome);
    }
    let trusted = !object.generation.is_empty()
        && matching
            .iter()
            .all(|(p, _)| p.load.as_ref().is_some_and(|l| !l.check_generation));
    let object = if trusted {
        // Every matching pipeline said its objects are never overwritten
        // (`load.check_generation: false`): the event's generation is loaded as named.
        object
    } else {
        let Some(object) = live_generation(ctx, object, &mut outcome).await? else {
            return Ok(outcome);
        };
        object
    };
    for (pipeline, arrival) in matching {
        match arrival {
            Arrival::NotData | Arrival::Part => {}
            Arrival::Data(captures) | Arrival::Marker(captures)
                if super::pause::is_paused(ctx, pipeline).await? =>
            {
                // Recorded PAUSED: held for `conveyor resume`, or skipped (`pause.arrivals`).
                let arrived = super::pause::Arrived::Object(&object, &captures);
                super::pause::hold(ctx, pipeline, StepName::Load, arrived, &mut outcome).await?;
            }
            Arrival::Data(captures) if ordered(pipeline) => {
                order::arrive(ctx, pipeline, &object, captures, false, &mut outcome).await?;
            }
            Arrival::Data(captures) => {
                match pipeline.load.as_ref().and_then(|l| l.batch.as_ref()) {
                    Some(LoadBatch::Window(w)) => {
                        window::arrive(ctx, pipeline, w, &object, captures, &mut outcome).await?;
                    }
                    _ => {
                        load_one(ctx, pipeline, &object, captures, &mut outcome).await?;
                    }
                }
            }
            Arrival::Marker(captures) if ordered(pipeline) => {
                order::arrive(ctx, pipeline, &object, captures, true, &mut outcome).await?;
            }
            Arrival::Marker(captures) => {
                marker::load_folder(ctx, pipeline, &object, captures, &mut outcome).await?;
            }
            Arrival::Gate => {
                order::open_gate(ctx, pipeline, &object, &mut outcome).await?;
            }
        }
    }
    Ok(outcome)
}

/// What an arriving object is to one pipeline.
enum Arrival {
    /// Data to load, with the pattern's captures.
    Data(BTreeMap<String, String>),
    /// A part of a marker batch's folder: it waits for the marker.
    Part,
    /// The marker of a folder the pattern's files live in, with the folder's captures.
    Marker(BTreeMap<String, String>),
    /// Matched, but not data (`load.ignore`).
    NotData,
    /// The start gate of an ordered pipeline (`load.start_after.marker`).
    Gate,
}

/// Whether `pipeline`'s loads go through its tables' ordered queues (`load.order`).
fn ordered(pipeline: &Pipeline) -> bool {
    pipeline.load.as_ref().is_some_and(|l| l.order.is_some())
}

/// What `object` is to `pipeline`, or `None` when it does not concern it.
fn arrival(pipeline: &Pipeline, object: &ObjectRef) -> Option<Arrival> {
    let load = pipeline.load.as_ref()?;
    let trigger = pipeline.trigger.object.as_ref()?;
    if trigger.bucket != object.bucket {
        return None;
    }
    let name = object.name.as_str();
    if load.order.is_some()
        && load
            .start_after
            .as_ref()
            .is_some_and(|s| object.name.file_name() == s.marker)
    {
        return Some(Arrival::Gate);
    }
    if let Some(LoadBatch::Marker(m)) = &load.batch
        && object.name.file_name() == m.marker
    {
        let folder = name.rsplit_once('/').map_or("", |(f, _)| f);
        return match m.covers {
            MarkerCovers::Folder => trigger.pattern.folder_captures(folder),
            MarkerCovers::Subfolders => trigger.pattern.ancestor_captures(folder),
        }
        .map(Arrival::Marker);
    }
    let captures = trigger.pattern.captures(name)?;
    if load.ignores(name) {
        return Some(Arrival::NotData);
    }
    if matches!(load.batch, Some(LoadBatch::Marker(_))) {
        return Some(Arrival::Part);
    }
    Some(Arrival::Data(captures))
}

/// The object as the store has it now, when it is still the generation the event names.
/// A request that names no generation (a hand-written `curl`) means the live generation. An
/// event for a generation that is no longer live is recorded as superseded and acknowledged:
/// the newer generation's own arrival loads it, so each generation's content loads once.
async fn live_generation(
    ctx: &Context,
    mut object: ObjectRef,
    outcome: &mut Outcome,
) -> Result<Option<ObjectRef>, StepError> {
    let live = match ctx.ports.store.head(&object.bucket, &object.name).await {
        Ok(Some(meta)) => meta.object,
        Ok(None) => {
            if object.generation.is_empty() {
                return Err(StepError::Rejected(format!(
                    "{} does not exist",
                    object.uri()
                )));
            }
            superseded(ctx, &object, None, outcome).await?;
            return Ok(None);
        }
        Err(e) => return Err(StepError::from_port(e)),
    };
    if object.generation.is_empty() {
        object.generation = live.generation;
        object.size = object.size.or(live.size);
        return Ok(Some(object));
    }
    if object.generation != live.generation {
        superseded(ctx, &object, Some(&live.generation), outcome).await?;
        return Ok(None);
    }
    object.size = object.size.or(live.size);
    Ok(Some(object))
}

/// Records that an arrival's generation is no longer live (overwritten or deleted),
/// aggregated like rejections (a flood of forged generations is one row and a count), the
/// caller's generation stored at most [`super::MAX_GENERATION`] bytes long.
async fn superseded(
    ctx: &Context,
    object: &ObjectRef,
    live: Option<&str>,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let generation = super::bounded_generation(&object.generation);
    let what = match live {
        Some(g) => format!("generation {g} is live now"),
        None => "the object is gone".to_owned(),
    };
    info!(object = %object.uri(), generation = %generation, live = ?live, "superseded arrival; not loaded");
    let reason = format!(
        "generation {generation} of {} is not loaded: {what}; the newer generation's own arrival loads it",
        object.uri()
    );
    outcome.summary = format!("{} generation {generation}: superseded", object.uri());
    let about = super::About {
        pipeline: None,
        object: Some(object.clone()),
    };
    let recorded = super::rejections::record_superseded(ctx, live.is_none(), &reason, &about)
        .await
        .map_err(|e| StepError::Transient(format!("cannot record a superseded arrival: {e}")))?;
    if let Some(ev) = recorded {
        outcome.events.push(format!("{} {}", ev.kind, ev.run_id));
    }
    Ok(())
}

/// The run's values: the captures as they are, the table, and the run date (the `date`
/// capture, else the UTC day the object arrived).
fn run_vars(captures: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut vars = captures.clone();
    vars.entry("date".to_owned())
        .or_insert_with(|| Utc::now().format("%Y-%m-%d").to_string());
    vars
}

/// The destination of `spec` for `captures` (made table-safe).
fn table_for(spec: &LoadSpec, captures: &BTreeMap<String, String>) -> Result<TableRef, String> {
    let safe: BTreeMap<String, String> = captures
        .iter()
        .map(|(k, v)| (k.clone(), table_safe(v)))
        .collect();
    render_table(&spec.table, captures, &safe)
        .map_err(|e| e.to_string())
        .and_then(|t| TableRef::parse(&t).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot name the table: {e}"))
}

/// The run of one object's load: its generation's.
fn object_run_id(pipeline: &Pipeline, object: &ObjectRef) -> RunId {
    RunId::for_origin(
        &pipeline.name,
        &RunOrigin::Object {
            bucket: object.bucket.as_str(),
            name: object.name.as_str(),
            generation: &object.generation,
        },
    )
}

#[instrument(skip_all, fields(pipeline = %pipeline.name, object = %object.uri()))]
async fn load_one(
    ctx: &Context,
    pipeline: &Pipeline,
    object: &ObjectRef,
    captures: BTreeMap<String, String>,
    outcome: &mut Outcome,
) -> Result<Finished, StepError> {
    let Some(spec) = &pipeline.load else {
        return Ok(Finished::Loaded);
    };
    let run_id = object_run_id(pipeline, object);
    let detail = Detail {
        object: Some(object.clone()),
        started_at: Some(Utc::now()),
        vars: run_vars(&captures),
        job: Some(LOAD_JOB.to_owned()),
        ..Detail::default()
    };
    job::load(
        ctx,
        pipeline,
        spec,
        &run_id,
        vec![object.clone()],
        &captures,
        detail,
        outcome,
    )
    .await
}
