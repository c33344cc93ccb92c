//! `load.order: by_name` and `load.start_after`: the loads of one table applied one at a time,
//! in object name order (GEBI's `ORDERME`), none before the start marker exists (GEBI's
//! `_HISTORYDONE`).
//!
//! The state is a few small objects under `_conveyor/order/` in the trigger's bucket:
//!
//! ```text
//! _conveyor/order/PIPELINE/TABLE/q/NAME#GENERATION  one per queued source (create_new: once)
//! _conveyor/order/PIPELINE/TABLE/lock               the source being applied
//! ```
//!
//! An arrival (an object, or with `batch.marker` a folder's marker) joins its table's queue
//! and drains it: the holder of `lock` (`create_new`, so one at a time) is the queue's first
//! name; it loads under the same deterministic run and job ids as an unordered arrival, so a
//! redelivery, a second drain or a restart adopts its job and nothing loads twice. Once the
//! job is DONE the entry and the lock are removed and the next name is taken. A job still
//! running is left to the poll tick, whose sweep drains every queue again. A failed load
//! stops its queue (incrementals must not be applied over a hole) until its source is
//! replaced by a new generation or removed: then the next drain drops it and goes on.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use super::super::{Context, Outcome, StepError};
use super::job::{Finished, load_job_id};
use super::marker::{load_folder, marker_run_id};
use super::window::{body, read_json};
use super::{load_one, object_run_id, table_for};
use crate::config::{LoadSpec, Pipeline};
use crate::event::ObjectRef;
use crate::names::{BucketName, ObjectName, RunId, short_hash};
use crate::ports::{LoadState, PortError};

/// The most sources one drain applies; the poll tick's sweep goes on with the rest, so one
/// request never works through a whole backlog.
const MAX_PER_DRAIN: usize = 100;

/// A queued source.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Queued {
    /// The object (with its generation), or the marker of a folder.
    object: ObjectRef,
    /// The pattern's captures (they name the table).
    captures: BTreeMap<String, String>,
    /// Whether `object` is a marker: its folder is the load.
    #[serde(default)]
    marker: bool,
}

impl Queued {
    fn run_id(&self, pipeline: &Pipeline) -> RunId {
        if self.marker {
            marker_run_id(pipeline, &self.object)
        } else {
            object_run_id(pipeline, &self.object)
        }
    }
}

/// Where one table's queue lives.
struct Queue {
    bucket: BucketName,
    /// `_conveyor/order/PIPELINE/TABLE/`.
    base: String,
}

impl Queue {
    fn new(bucket: &BucketName, pipeline: &Pipeline, table: &str) -> Self {
        Self {
            bucket: bucket.clone(),
            base: format!(
                "{}{}",
                pipeline_prefix(pipeline),
                short_hash(&[bucket.as_str(), table])
            ),
        }
    }

    fn name(&self, rest: &str) -> Result<ObjectName, StepError> {
        ObjectName::parse(&format!("{}/{rest}", self.base))
            .map_err(|e| StepError::Rejected(format!("cannot name the ordered queue's state: {e}")))
    }

    fn entries(&self) -> String {
        format!("{}/q/", self.base)
    }

    fn entry(&self, object: &ObjectRef) -> Result<ObjectName, StepError> {
        self.name(&format!("q/{}#{}", object.name, object.generation))
    }
}

fn pipeline_prefix(pipeline: &Pipeline) -> String {
    format!("{}order/{}/", crate::INTERNAL_PREFIX, pipeline.name)
}

fn port(e: PortError) -> StepError {
    StepError::from_port(e)
}

/// Queues an arrival for its table and drains the queue.
#[instrument(skip_all, fields(pipeline = %pipeline.name, object = %object.uri()))]
pub(super) async fn arrive(
    ctx: &Context,
    pipeline: &Pipeline,
    object: &ObjectRef,
    captures: BTreeMap<String, String>,
    marker: bool,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(spec) = &pipeline.load else {
        return Ok(());
    };
    let table = match table_for(spec, &captures) {
        Ok(t) => t,
        // The load records why the table cannot be named.
        Err(_) if marker => {
            load_folder(ctx, pipeline, object, captures, outcome).await?;
            return Ok(());
        }
        Err(_) => {
            load_one(ctx, pipeline, object, captures, outcome).await?;
            return Ok(());
        }
    };
    let queue = Queue::new(&object.bucket, pipeline, &table.to_string());
    let item = Queued {
        object: object.clone(),
        captures,
        marker,
    };
    let bytes = serde_json::to_vec(&item).map_err(|e| StepError::Rejected(e.to_string()))?;
    // Already there on a redelivery: the queue holds each generation once.
    ctx.ports
        .store
        .create_new(&queue.bucket, &queue.entry(object)?, body(bytes))
        .await
        .map_err(port)?;
    drain(ctx, pipeline, spec, &queue, outcome).await
}

/// The start marker arrived: every queue of the pipeline drains.
pub(super) async fn open_gate(
    ctx: &Context,
    pipeline: &Pipeline,
    marker: &ObjectRef,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    info!(pipeline = %pipeline.name, marker = %marker.uri(), "start marker arrived; ordered queues drain");
    let n = drain_pipeline(ctx, pipeline, &marker.bucket, outcome).await?;
    if outcome.summary.is_empty() {
        outcome.summary = format!("{}: start marker; {n} queue(s) drained", marker.uri());
    }
    Ok(())
}

/// The queues of `pipeline` in `bucket`: their bases and their entries.
async fn queues(
    ctx: &Context,
    pipeline: &Pipeline,
    bucket: &BucketName,
) -> Result<BTreeMap<String, Vec<String>>, StepError> {
    let prefix = pipeline_prefix(pipeline);
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for meta in ctx.ports.store.list(bucket, &prefix).await.map_err(port)? {
        let name = meta.object.name.as_str();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((key, what)) = rest.split_once('/') else {
            continue;
        };
        let entries = out.entry(format!("{prefix}{key}")).or_default();
        if let Some(entry) = what.strip_prefix("q/") {
            entries.push(entry.to_owned());
        }
    }
    Ok(out)
}

async fn drain_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    bucket: &BucketName,
    outcome: &mut Outcome,
) -> Result<usize, StepError> {
    let Some(spec) = &pipeline.load else {
        return Ok(0);
    };
    let bases: BTreeSet<String> = queues(ctx, pipeline, bucket).await?.into_keys().collect();
    for base in &bases {
        let queue = Queue {
            bucket: bucket.clone(),
            base: base.clone(),
        };
        drain(ctx, pipeline, spec, &queue, outcome).await?;
    }
    Ok(bases.len())
}

/// Drains every ordered queue (the poll tick): a load the tick saw DONE lets the next start.
///
/// # Errors
/// The store's or the warehouse's error.
pub(in crate::steps) async fn sweep_ordered(
    ctx: &Context,
    outcome: &mut Outcome,
) -> Result<usize, StepError> {
    let mut n = 0;
    for p in ctx.config.pipelines.iter().filter(|p| p.active) {
        let (Some(load), Some(trigger)) = (&p.load, &p.trigger.object) else {
            continue;
        };
        if load.order.is_some() {
            // The sweep's own summary stays the tick's.
            let mut own = Outcome::default();
            n += drain_pipeline(ctx, p, &trigger.bucket, &mut own).await?;
            outcome.events.extend(own.events);
        }
    }
    Ok(n)
}

/// The ordered queues with sources not yet loaded, one line each.
///
/// # Errors
/// The store's error.
pub(in crate::steps) async fn queued(ctx: &Context) -> Result<Vec<String>, StepError> {
    let mut out = Vec::new();
    for p in ctx.config.pipelines.iter().filter(|p| p.active) {
        let (Some(load), Some(trigger)) = (&p.load, &p.trigger.object) else {
            continue;
        };
        if load.order.is_none() {
            continue;
        }
        for entries in queues(ctx, p, &trigger.bucket).await?.into_values() {
            let Some(first) = entries.first() else {
                continue;
            };
            let first = first.rsplit_once('#').map_or(first.as_str(), |(n, _)| n);
            let gate = load
                .start_after
                .as_ref()
                .map(|s| format!(" (nothing loads before {} exists)", s.marker))
                .unwrap_or_default();
            out.push(format!(
                "pipeline {}: {} source(s) queued for ordered loads, first gs://{}/{first}{gate}",
                p.name,
                entries.len(),
                trigger.bucket
            ));
        }
    }
    Ok(out)
}

/// Whether the store still has `object`'s generation.
async fn live(ctx: &Context, object: &ObjectRef) -> Result<bool, StepError> {
    Ok(ctx
        .ports
        .store
        .head(&object.bucket, &object.name)
        .await
        .map_err(port)?
        .is_some_and(|m| object.generation.is_empty() || m.object.generation == object.generation))
}

/// Whether the start gate is open for `object`: no gate, or its marker exists in the
/// object's folder or a folder above.
async fn gate_open(ctx: &Context, spec: &LoadSpec, object: &ObjectRef) -> Result<bool, StepError> {
    let Some(gate) = &spec.start_after else {
        return Ok(true);
    };
    for candidate in gate.candidates(object.name.as_str()) {
        let Ok(name) = ObjectName::parse(&candidate) else {
            continue;
        };
        if ctx
            .ports
            .store
            .head(&object.bucket, &name)
            .await
            .map_err(port)?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The state of `run_id`'s first load job: `None` when it was never started.
async fn first_job(ctx: &Context, run_id: &RunId) -> Result<Option<LoadState>, StepError> {
    match ctx
        .ports
        .warehouse
        .load_state(&load_job_id(run_id, 1))
        .await
    {
        Ok(s) => Ok(Some(s.state)),
        Err(PortError::NotFound(_)) => Ok(None),
        Err(e) => Err(port(e)),
    }
}

/// Applies the queue's sources in order while each loads within its request.
async fn drain(
    ctx: &Context,
    pipeline: &Pipeline,
    spec: &LoadSpec,
    queue: &Queue,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let store = &ctx.ports.store;
    let lock = queue.name("lock")?;
    for _ in 0..MAX_PER_DRAIN {
        let Some(meta) = store.head(&queue.bucket, &lock).await.map_err(port)? else {
            // Nobody holds the queue: the first name takes it, once the gate is open.
            let Some(first) = store
                .list_page(&queue.bucket, &queue.entries(), None)
                .await
                .map_err(port)?
                .objects
                .into_iter()
                .next()
            else {
                return Ok(());
            };
            let Some(item) = read_json::<Queued>(ctx, &queue.bucket, &first.object.name).await?
            else {
                continue;
            };
            if !live(ctx, &item.object).await? {
                info!(object = %item.object.uri(), generation = %item.object.generation, "queued generation is no longer live; dropped");
                store
                    .delete(&queue.bucket, &first.object.name, None)
                    .await
                    .map_err(port)?;
                continue;
            }
            if !gate_open(ctx, spec, &item.object).await? {
                let marker = spec.start_after.as_ref().map_or("", |s| s.marker.as_str());
                outcome.summary = format!(
                    "{} queued: nothing of its table loads before {marker} exists",
                    item.object.uri()
                );
                return Ok(());
            }
            let bytes =
                serde_json::to_vec(&item).map_err(|e| StepError::Rejected(e.to_string()))?;
            // `None`: another drain took the queue first; its holder is read next turn.
            store
                .create_new(&queue.bucket, &lock, body(bytes))
                .await
                .map_err(port)?;
            continue;
        };
        let Some(item) = read_json::<Queued>(ctx, &queue.bucket, &lock).await? else {
            continue;
        };
        let run_id = item.run_id(pipeline);
        let state = first_job(ctx, &run_id).await?;
        if state.is_none() && !live(ctx, &item.object).await? {
            // Overwritten or removed before its load started: the newer generation has its
            // own entry.
            info!(object = %item.object.uri(), "queued generation is no longer live; dropped");
            release(ctx, queue, &item, &lock, &meta.object.generation).await?;
            continue;
        }
        if matches!(state, Some(LoadState::Running)) {
            outcome.summary = format!(
                "{} queued behind {}, still loading; the poll tick goes on",
                queue.bucket,
                item.object.uri()
            );
            return Ok(());
        }
        // Started or not, DONE or FAILED: applying it again adopts its job and publishes
        // what it came to (the same event ids), so a drain that stopped halfway loses nothing.
        let finished = if item.marker {
            load_folder(ctx, pipeline, &item.object, item.captures.clone(), outcome).await?
        } else {
            load_one(ctx, pipeline, &item.object, item.captures.clone(), outcome).await?
        };
        match finished {
            Finished::Running => return Ok(()),
            Finished::Failed if live(ctx, &item.object).await? => {
                warn!(pipeline = %pipeline.name, object = %item.object.uri(), "ordered load failed; its table's queue waits until the source is replaced or removed");
                outcome.summary = format!(
                    "load of {} failed: its table's ordered queue stops until the source is replaced or removed",
                    item.object.uri()
                );
                return Ok(());
            }
            // Loaded, or failed and replaced since: the next name's turn.
            Finished::Loaded | Finished::Failed => {
                release(ctx, queue, &item, &lock, &meta.object.generation).await?;
            }
        }
    }
    Ok(())
}

/// Removes `item` from its queue and frees the queue (the lock of `generation` only: a
/// drain that took it since keeps it).
async fn release(
    ctx: &Context,
    queue: &Queue,
    item: &Queued,
    lock: &ObjectName,
    generation: &str,
) -> Result<(), StepError> {
    let store = &ctx.ports.store;
    store
        .delete(&queue.bucket, &queue.entry(&item.object)?, None)
        .await
        .map_err(port)?;
    store
        .delete(&queue.bucket, lock, Some(generation))
        .await
        .map_err(port)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;

    use super::*;
    use crate::event::ConveyorEvent;
    use crate::inbound::Inbound;
    use crate::names::{JobId, TableRef};
    use crate::ports::{EventBus, LoadJob, LoadStatus, ObjectStore as _, Ports, Warehouse};
    use crate::steps::{StepName, handle};
    use crate::testing::MemoryStore;

    /// Load jobs that run until the test says they are done.
    #[derive(Default)]
    struct Held {
        /// Every `load` call: the job id and its first source's name.
        calls: Mutex<Vec<(JobId, String)>>,
        done: Mutex<Vec<JobId>>,
    }

    impl Held {
        fn state(&self, id: &JobId) -> LoadState {
            if self.done.lock().expect("lock").contains(id) {
                LoadState::Done { rows: 1 }
            } else {
                LoadState::Running
            }
        }
    }

    #[async_trait]
    impl Warehouse for Held {
        async fn load(
            &self,
            job: &LoadJob,
            _: std::time::Duration,
        ) -> Result<LoadStatus, PortError> {
            let mut calls = self.calls.lock().expect("lock");
            let adopted = calls.iter().any(|(id, _)| id == &job.job_id);
            calls.push((job.job_id.clone(), job.sources[0].name.to_string()));
            Ok(LoadStatus {
                state: self.state(&job.job_id),
                adopted,
            })
        }
        async fn load_state(&self, id: &JobId) -> Result<LoadStatus, PortError> {
            if !self
                .calls
                .lock()
                .expect("lock")
                .iter()
                .any(|(j, _)| j == id)
            {
                return Err(PortError::not_found("no such job"));
            }
            Ok(LoadStatus {
                state: self.state(id),
                adopted: true,
            })
        }
        async fn row_count(&self, _: &TableRef) -> Result<u64, PortError> {
            Ok(0)
        }
        async fn read_table(
            &self,
            _: &TableRef,
            _: usize,
        ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
            Ok(Vec::new())
        }
    }

    struct Quiet;

    #[async_trait]
    impl EventBus for Quiet {
        async fn publish(&self, _: &ConveyorEvent) -> Result<(), PortError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_next_name_waits_until_the_load_before_it_is_done_and_redeliveries_start_nothing() {
        let config = crate::config::parse_str(
            "pipelines:\n  - name: p\n    trigger: { object: { bucket: landing, pattern: \"in/{file}.csv\" } }\n    load: { table: ds.t, format: CSV, order: by_name }\n",
            "t.yaml",
        )
        .expect("config");
        let store = Arc::new(MemoryStore::default());
        let warehouse = Arc::new(Held::default());
        let ports = Ports {
            store: store.clone(),
            warehouse: warehouse.clone(),
            bus: Arc::new(Quiet),
            ..Ports::unwired()
        };
        let ctx = Context::new(Arc::new(config), ports);
        let bucket = BucketName::parse("landing").expect("bucket");
        let mut arrivals = BTreeMap::new();
        for name in ["in/b.csv", "in/a.csv"] {
            let meta = store
                .put(
                    &bucket,
                    &ObjectName::parse(name).expect("name"),
                    body(b"1\n".to_vec()),
                )
                .await
                .expect("put");
            arrivals.insert(name, meta.object.clone());
            handle(StepName::Load, &ctx, Inbound::Object(meta.object))
                .await
                .expect("arrival");
        }
        let loaded = || -> Vec<String> {
            warehouse
                .calls
                .lock()
                .expect("lock")
                .iter()
                .map(|(_, n)| n.clone())
                .collect()
        };
        assert_eq!(loaded(), ["in/b.csv"], "a waits while b loads");
        // A tick while b still runs starts nothing.
        let mut outcome = Outcome::default();
        sweep_ordered(&ctx, &mut outcome).await.expect("sweep");
        assert_eq!(loaded(), ["in/b.csv"]);
        // b is DONE: the tick lets a go.
        let b_job = warehouse.calls.lock().expect("lock")[0].0.clone();
        warehouse.done.lock().expect("lock").push(b_job);
        sweep_ordered(&ctx, &mut outcome).await.expect("sweep");
        assert_eq!(loaded(), ["in/b.csv", "in/b.csv", "in/a.csv"]);
        // A redelivered arrival of b joins the queue again and adopts its DONE job; a's
        // still runs, so nothing new starts.
        handle(
            StepName::Load,
            &ctx,
            Inbound::Object(arrivals["in/b.csv"].clone()),
        )
        .await
        .expect("redelivery");
        let ids: std::collections::BTreeSet<JobId> = warehouse
            .calls
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(ids.len(), 2, "one job per object: {:?}", loaded());
    }
}
