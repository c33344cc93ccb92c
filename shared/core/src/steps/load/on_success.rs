//! `load.on_success`: once a run's load jobs are all DONE, each source is deleted or moved
//! (bqtail's `onSuccess`), by whichever step sees the DONE first (the load request, or the
//! poll tick for a long job), before `dev.conveyor.table.loaded` is published.
//!
//! The sources of each job are written before the job starts, to
//! `_conveyor/sources/PIPELINE/RUN/K` in the trigger's bucket, so the poll tick finds them.
//! Every action names the loaded generation, so it happens once however often the DONE is
//! seen (a redelivery, a second tick, an ordered queue re-applying its holder): a source
//! already gone is left alone, a copy already made (same content at the destination) is not
//! made again, and a newer generation written at the source meanwhile is neither copied nor
//! deleted.

use tracing::{info, warn};

use super::super::{Context, StepError};
use super::window::{body, read_json};
use crate::config::{OnSuccess, Pipeline, render};
use crate::event::ObjectRef;
use crate::names::{ObjectName, RunId};
use crate::ports::PortError;

fn port(e: PortError) -> StepError {
    StepError::from_port(e)
}

/// Where job `k`'s sources of `run_id` are kept.
fn manifest(pipeline: &Pipeline, run_id: &RunId, k: usize) -> Result<ObjectName, StepError> {
    ObjectName::parse(&format!("{}{k}", prefix(pipeline, run_id)))
        .map_err(|e| StepError::Rejected(format!("cannot name a load's source list: {e}")))
}

fn prefix(pipeline: &Pipeline, run_id: &RunId) -> String {
    format!(
        "{}sources/{}/{run_id}/",
        crate::INTERNAL_PREFIX,
        pipeline.name
    )
}

/// Keeps job `k`'s sources for the action after DONE (nothing without `on_success`).
///
/// # Errors
/// The store's error.
pub(super) async fn keep_sources(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
    k: usize,
    sources: &[ObjectRef],
) -> Result<(), StepError> {
    let (Some(_), Some(trigger)) = (
        pipeline.load.as_ref().and_then(|l| l.on_success.as_ref()),
        &pipeline.trigger.object,
    ) else {
        return Ok(());
    };
    let bytes = serde_json::to_vec(sources).map_err(|e| StepError::Rejected(e.to_string()))?;
    // `None` on a redelivery: the list of its first delivery stands (the same sources).
    ctx.ports
        .store
        .create_new(
            &trigger.bucket,
            &manifest(pipeline, run_id, k)?,
            body(bytes),
        )
        .await
        .map_err(port)?;
    Ok(())
}

/// Deletes or moves every source of `run_id`, whose loads are DONE. Returns what went
/// wrong for good (a source that cannot be moved), to record with the run; the load itself
/// stands.
///
/// # Errors
/// A transient error of the store: the caller is retried and the actions are done again
/// (each at most once).
pub(in crate::steps) async fn after_done(
    ctx: &Context,
    pipeline: &Pipeline,
    run_id: &RunId,
) -> Result<Option<String>, StepError> {
    let (Some(on), Some(trigger)) = (
        pipeline.load.as_ref().and_then(|l| l.on_success.as_ref()),
        &pipeline.trigger.object,
    ) else {
        return Ok(None);
    };
    let store = &ctx.ports.store;
    let lists = store
        .list(&trigger.bucket, &prefix(pipeline, run_id))
        .await
        .map_err(port)?;
    let mut problems = Vec::new();
    let mut done = 0usize;
    for list in lists {
        let Some(sources) =
            read_json::<Vec<ObjectRef>>(ctx, &trigger.bucket, &list.object.name).await?
        else {
            continue;
        };
        for source in &sources {
            match act(ctx, pipeline, on, source).await {
                Ok(true) => done += 1,
                Ok(false) => {}
                Err(StepError::Rejected(why)) => problems.push(why),
                Err(e) => return Err(e),
            }
        }
    }
    info!(pipeline = %pipeline.name, run_id = %run_id, sources = done, "on_success done");
    if problems.is_empty() {
        return Ok(None);
    }
    warn!(pipeline = %pipeline.name, run_id = %run_id, problems = problems.len(), "on_success left sources in place");
    let mut text = problems.into_iter().take(3).collect::<Vec<_>>().join("; ");
    text.truncate(1000);
    Ok(Some(text))
}

/// Deletes or moves `source`: `true` when this call did it, `false` when it was done
/// already (or a newer generation is live).
async fn act(
    ctx: &Context,
    pipeline: &Pipeline,
    on: &OnSuccess,
    source: &ObjectRef,
) -> Result<bool, StepError> {
    let store = &ctx.ports.store;
    let Some(to) = &on.move_to else {
        return store
            .delete(&source.bucket, &source.name, Some(&source.generation))
            .await
            .map_err(port);
    };
    let captures = pipeline
        .trigger
        .object
        .as_ref()
        .and_then(|t| t.pattern.captures(source.name.as_str()))
        .unwrap_or_default();
    let dest = render(to, &OnSuccess::vars(source.name.as_str(), &captures))
        .map_err(|e| StepError::Rejected(format!("on_success.move_to for {}: {e}", source.uri())))
        .and_then(|d| {
            ObjectName::parse(&d).map_err(|e| {
                StepError::Rejected(format!("on_success.move_to for {}: {e}", source.uri()))
            })
        })?;
    if let Some(t) = &pipeline.trigger.object
        && let Some(load) = &pipeline.load
        && t.pattern.captures(dest.as_str()).is_some()
        && !load.ignores(dest.as_str())
    {
        return Err(StepError::Rejected(format!(
            "on_success.move_to would move {} to gs://{}/{dest}, which the trigger pattern \
             matches: it would load again; left in place",
            source.uri(),
            source.bucket
        )));
    }
    move_object(ctx, source, &dest).await
}

/// Moves generation `source` to `dest` in its bucket: `true` when this call did it, `false`
/// when it was moved already (or a newer generation is live, which stays).
///
/// # Errors
/// The store's error.
pub(super) async fn move_object(
    ctx: &Context,
    source: &ObjectRef,
    dest: &ObjectName,
) -> Result<bool, StepError> {
    let store = &ctx.ports.store;
    let Some(live) = store
        .head(&source.bucket, &source.name)
        .await
        .map_err(port)?
        .filter(|m| m.object.generation == source.generation)
    else {
        // Moved already, or replaced by a newer generation that is not ours to move.
        return Ok(false);
    };
    let copied = store
        .head(&source.bucket, dest)
        .await
        .map_err(port)?
        .is_some_and(|d| !live.etag.is_empty() && d.etag == live.etag);
    if !copied
        && store
            .copy(
                &source.bucket,
                &source.name,
                &source.generation,
                &source.bucket,
                dest,
            )
            .await
            .map_err(port)?
            .is_none()
    {
        return Ok(false);
    }
    store
        .delete(&source.bucket, &source.name, Some(&source.generation))
        .await
        .map_err(port)
}
