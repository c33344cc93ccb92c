//! `load.batch.window`: the arrivals of one table within a time window are loaded by one job
//! (bqtail's batching), with no process waiting for the window to end.
//!
//! Windows are aligned to multiples of `window` since the Unix epoch (a 5m window: 10:00–10:05,
//! 10:05–10:10). The state is a few small objects under `_conveyor/windows/` in the trigger's
//! bucket (never loaded as data):
//!
//! ```text
//! _conveyor/windows/PIPELINE/open/TABLE-WINDOW    index of open windows (the tick lists it)
//! _conveyor/windows/PIPELINE/TABLE/WINDOW/open     claim of the first arrival: table, end
//! _conveyor/windows/PIPELINE/TABLE/WINDOW/m/OBJ    one per arrival (create_new: once)
//! _conveyor/windows/PIPELINE/TABLE/WINDOW/closing  claim of the closer
//! _conveyor/windows/PIPELINE/TABLE/WINDOW/manifest the objects the window's job loads
//! _conveyor/windows/PIPELINE/TABLE/joined/OBJ      the period an object generation joined
//! ```
//!
//! An object generation's period is recorded (`create_new`) before it joins a window, and a
//! later delivery of it (Pub/Sub's redelivery, a restarted watcher's rescan) goes back to that
//! period's windows instead of the current one: it finds itself in a closed window's manifest
//! and is acknowledged as a duplicate, or finds its window still open. So a generation is in
//! one window's manifest however late it is delivered again.
//!
//! An arrival writes its member object, then looks for `closing`; the closer writes `closing`,
//! then lists the members into the manifest. So an arrival either is listed, or sees `closing`
//! and waits for the manifest (503, redelivered) and, when it is not in it, joins the next
//! window (`WINDOW` is `START-SEQ`): nothing is lost and nothing loads twice. A window closes
//! when a poll tick or a later arrival finds it past its end, or when it reaches `max_files`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::io::AsyncReadExt as _;
use tracing::{info, instrument, warn};

use super::super::{Context, Outcome, StepError};
use super::job::{Loader, failed};
use super::{LOAD_JOB, run_vars, table_for};
use crate::config::{LoadBatch, Pipeline, WindowBatch};
use crate::event::{Detail, ObjectRef};
use crate::names::{BucketName, ObjectName, RunId, short_hash};
use crate::ports::{ByteStream, MAX_LOAD_URIS, PortError};
use crate::run_origin::RunOrigin;

/// The `open` claim: what the closer needs to load the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Opened {
    /// The table (`dataset.table`), for messages.
    table: String,
    /// The first arrival's captures: they name the table.
    captures: BTreeMap<String, String>,
    /// When the window ends.
    ends: DateTime<Utc>,
    /// `load.batch.auto`: the window of an arrival to a table that had no window in the
    /// previous period; it ends as it opens, so its one arrival loads at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    at_once: bool,
}

/// Where one window's state lives.
struct Window {
    bucket: BucketName,
    pipeline: String,
    table_key: String,
    id: String,
}

impl Window {
    fn base(&self) -> String {
        format!(
            "{}windows/{}/{}/{}/",
            crate::INTERNAL_PREFIX,
            self.pipeline,
            self.table_key,
            self.id
        )
    }

    fn name(&self, rest: &str) -> Result<ObjectName, StepError> {
        ObjectName::parse(&format!("{}{rest}", self.base()))
            .map_err(|e| StepError::Rejected(e.to_string()))
    }

    fn index(&self) -> Result<ObjectName, StepError> {
        ObjectName::parse(&format!(
            "{}{}-{}",
            open_prefix(&self.pipeline),
            self.table_key,
            self.id
        ))
        .map_err(|e| StepError::Rejected(e.to_string()))
    }

    /// A window of the same table (its `id` to be set).
    fn same_table(&self) -> Self {
        Self {
            bucket: self.bucket.clone(),
            pipeline: self.pipeline.clone(),
            table_key: self.table_key.clone(),
            id: String::new(),
        }
    }

    fn run_id(&self, pipeline: &Pipeline) -> RunId {
        RunId::for_origin(
            &pipeline.name,
            &RunOrigin::Window {
                table_key: &self.table_key,
                id: &self.id,
            },
        )
    }
}

/// The prefix of the index of a pipeline's open windows.
fn open_prefix(pipeline: &str) -> String {
    format!("{}windows/{pipeline}/open/", crate::INTERNAL_PREFIX)
}

pub(super) fn body(bytes: Vec<u8>) -> ByteStream {
    Box::pin(std::io::Cursor::new(bytes))
}

fn port(e: PortError) -> StepError {
    StepError::from_port(e)
}

async fn exists(ctx: &Context, bucket: &BucketName, name: &ObjectName) -> Result<bool, StepError> {
    Ok(ctx
        .ports
        .store
        .head(bucket, name)
        .await
        .map_err(port)?
        .is_some())
}

/// Reads a small JSON state object; `None` when it does not exist.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    bucket: &BucketName,
    name: &ObjectName,
) -> Result<Option<T>, StepError> {
    let mut reader = match ctx.ports.store.open(bucket, name).await {
        Ok(r) => r,
        Err(PortError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(port(e)),
    };
    let mut buf = Vec::new();
    reader
        .read_to_end(&mut buf)
        .await
        .map_err(|e| StepError::Transient(format!("read {name}: {e}")))?;
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| StepError::Rejected(format!("unreadable window state {name}: {e}")))
}

/// Adds an arrival to its table's current window, and closes the window when it is full.
#[instrument(skip_all, fields(pipeline = %pipeline.name, object = %object.uri()))]
pub(super) async fn arrive(
    ctx: &Context,
    pipeline: &Pipeline,
    w: &WindowBatch,
    object: &ObjectRef,
    captures: BTreeMap<String, String>,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(spec) = &pipeline.load else {
        return Ok(());
    };
    let table = match table_for(spec, &captures) {
        Ok(t) => t,
        Err(e) => {
            let run_id = RunId::for_origin(
                &pipeline.name,
                &RunOrigin::Object {
                    bucket: object.bucket.as_str(),
                    name: object.name.as_str(),
                    generation: &object.generation,
                },
            );
            let detail = Detail {
                object: Some(object.clone()),
                error: Some(e),
                job: Some(LOAD_JOB.to_owned()),
                ..Detail::default()
            };
            return failed(ctx, pipeline, &run_id, detail, outcome).await;
        }
    };
    let secs = w.window.as_secs().max(1);
    let now = ctx.clock.now();
    let table_key = short_hash(&[&table.to_string()]);
    let member_key = short_hash(&[&object.uri(), &object.generation]);
    let start = joined_period(
        ctx,
        pipeline,
        &object.bucket,
        &table_key,
        &member_key,
        now.timestamp().div_euclid(secs as i64) * secs as i64,
    )
    .await?;
    let ends = DateTime::from_timestamp(start + secs as i64, 0).unwrap_or(now);
    let member = serde_json::to_vec(object).map_err(|e| StepError::Rejected(e.to_string()))?;
    let store = &ctx.ports.store;
    for seq in 0..1000u32 {
        let window = Window {
            bucket: object.bucket.clone(),
            pipeline: pipeline.name.to_string(),
            table_key: table_key.clone(),
            id: format!("{start}-{seq}"),
        };
        // A window that is closing or closed is not reopened: its manifest says whether this
        // generation was loaded by it (a redelivery: a duplicate) or goes to the next one.
        match in_manifest(ctx, &window, object, &table.to_string()).await? {
            Some(true) => {
                info!(window = %window.id, "a redelivered arrival: already in a closed window");
                outcome.summary = format!(
                    "{} generation {} is already in window {} of {table}: a duplicate delivery, \
                     not loaded again",
                    object.uri(),
                    object.generation,
                    window.id
                );
                return Ok(());
            }
            Some(false) => continue,
            None => {}
        }
        // `auto`: the first window of a period after a period with none (a quiet table)
        // ends now: its arrival loads at once. A table then gets at most one job per
        // period: a period with two (this one, and the window of the arrivals after it)
        // follows one with none.
        let at_once = w.auto
            && seq == 0
            && !exists(
                ctx,
                &window.bucket,
                &Window {
                    id: format!("{}-0", start - secs as i64),
                    ..window.same_table()
                }
                .name("open")?,
            )
            .await?;
        let opened = Opened {
            table: table.to_string(),
            captures: captures.clone(),
            ends: if at_once { now } else { ends },
            at_once,
        };
        let claim = serde_json::to_vec(&opened).map_err(|e| StepError::Rejected(e.to_string()))?;
        store
            .create_new(&window.bucket, &window.name("open")?, body(claim))
            .await
            .map_err(port)?;
        store
            .create_new(&window.bucket, &window.index()?, body(Vec::new()))
            .await
            .map_err(port)?;
        let member_name = window.name(&format!("m/{member_key}"))?;
        store
            .create_new(&window.bucket, &member_name, body(member.clone()))
            .await
            .map_err(port)?;
        // The closer may have claimed the window meanwhile, and listed this member or not.
        match in_manifest(ctx, &window, object, &table.to_string()).await? {
            Some(true) => {
                outcome.summary = format!("{} is in window {} of {table}", object.uri(), window.id);
                return Ok(());
            }
            Some(false) => continue,
            None => {}
        }
        outcome.summary = format!("{} joined window {} of {table}", object.uri(), window.id);
        let members = store
            .list(&window.bucket, &format!("{}m/", window.base()))
            .await
            .map_err(port)?;
        if members.len() >= w.max_files {
            info!(window = %window.id, files = members.len(), "window is full; closing it");
            close(ctx, pipeline, &window, outcome).await?;
        }
        // A later arrival closes what has ended.
        sweep_pipeline(ctx, pipeline, &object.bucket, outcome).await?;
        return Ok(());
    }
    Err(StepError::Rejected(format!(
        "{}: every window of this period is closed",
        object.uri()
    )))
}

/// The period (the start of its window, in seconds since the epoch) an object generation
/// joined: recorded by its first delivery (`now_start`, the current period), read by every
/// later one.
async fn joined_period(
    ctx: &Context,
    pipeline: &Pipeline,
    bucket: &BucketName,
    table_key: &str,
    member_key: &str,
    now_start: i64,
) -> Result<i64, StepError> {
    let name = ObjectName::parse(&format!(
        "{}windows/{}/{table_key}/joined/{member_key}",
        crate::INTERNAL_PREFIX,
        pipeline.name
    ))
    .map_err(|e| StepError::Rejected(e.to_string()))?;
    if let Some(start) = read_json::<i64>(ctx, bucket, &name).await? {
        return Ok(start);
    }
    let created = ctx
        .ports
        .store
        .create_new(bucket, &name, body(now_start.to_string().into_bytes()))
        .await
        .map_err(port)?;
    if created.is_some() {
        return Ok(now_start);
    }
    // A concurrent delivery recorded it first: its period is this generation's.
    read_json::<i64>(ctx, bucket, &name)
        .await?
        .ok_or_else(|| StepError::Transient(format!("{name} was created and is gone")))
}

/// Whether `window` loaded `object`'s generation: `None` while it is open, `Some(true)` when
/// its manifest lists it, `Some(false)` when it closed without it. A window that is closing
/// but has no manifest yet is a transient error: the arrival is retried once it is written.
async fn in_manifest(
    ctx: &Context,
    window: &Window,
    object: &ObjectRef,
    table: &str,
) -> Result<Option<bool>, StepError> {
    if !exists(ctx, &window.bucket, &window.name("closing")?).await? {
        return Ok(None);
    }
    let Some(manifest) =
        read_json::<Vec<ObjectRef>>(ctx, &window.bucket, &window.name("manifest")?).await?
    else {
        return Err(StepError::Transient(format!(
            "window {} of {table} is closing; the arrival is retried once its manifest is written",
            window.id
        )));
    };
    Ok(Some(manifest.iter().any(|m| {
        m.bucket == object.bucket && m.name == object.name && m.generation == object.generation
    })))
}

/// Closes `window`: claims it, writes the manifest of its members, loads them in one job.
async fn close(
    ctx: &Context,
    pipeline: &Pipeline,
    window: &Window,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Some(spec) = &pipeline.load else {
        return Ok(());
    };
    let store = &ctx.ports.store;
    let Some(opened) = read_json::<Opened>(ctx, &window.bucket, &window.name("open")?).await?
    else {
        warn!(window = %window.id, "an open window without its claim; dropping it from the index");
        store
            .delete(&window.bucket, &window.index()?, None)
            .await
            .map_err(port)?;
        return Ok(());
    };
    store
        .create_new(&window.bucket, &window.name("closing")?, body(Vec::new()))
        .await
        .map_err(port)?;
    let manifest_name = window.name("manifest")?;
    let manifest = match read_json::<Vec<ObjectRef>>(ctx, &window.bucket, &manifest_name).await? {
        Some(m) => m,
        None => {
            let mut members = Vec::new();
            let mut token = None;
            loop {
                let page = store
                    .list_page(&window.bucket, &format!("{}m/", window.base()), token)
                    .await
                    .map_err(port)?;
                for meta in page.objects {
                    if let Some(o) =
                        read_json::<ObjectRef>(ctx, &window.bucket, &meta.object.name).await?
                    {
                        members.push(o);
                    }
                }
                match page.next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            members.sort_by(|a, b| a.name.cmp(&b.name));
            let bytes =
                serde_json::to_vec(&members).map_err(|e| StepError::Rejected(e.to_string()))?;
            match store
                .create_new(&window.bucket, &manifest_name, body(bytes))
                .await
                .map_err(port)?
            {
                Some(_) => members,
                // Another closer wrote it first: its list is the window's.
                None => read_json(ctx, &window.bucket, &manifest_name)
                    .await?
                    .unwrap_or_default(),
            }
        }
    };
    let run_id = window.run_id(pipeline);
    let mut detail = Detail {
        started_at: Some(ctx.clock.now()),
        vars: run_vars(&opened.captures),
        job: Some(LOAD_JOB.to_owned()),
        ..Detail::default()
    };
    detail.vars.insert("window".to_owned(), window.id.clone());
    if let Some(LoadBatch::Window(w)) = &spec.batch
        && w.auto
    {
        detail
            .vars
            .insert("batch".to_owned(), auto_note(w, &opened, manifest.len()));
    }
    let mut loader = match Loader::new(ctx, pipeline, spec, &run_id, &opened.captures, detail) {
        Ok(l) => l,
        Err(detail) => return failed(ctx, pipeline, &run_id, *detail, outcome).await,
    };
    let files = manifest.len();
    for chunk in manifest.chunks(MAX_LOAD_URIS) {
        loader.chunk(chunk.to_vec()).await?;
    }
    loader.set_var("files", files.to_string());
    let mut one = Outcome::default();
    loader.finish(&mut one).await?;
    outcome.events.append(&mut one.events);
    info!(window = %window.id, table = %opened.table, files, "window closed");
    store
        .delete(&window.bucket, &window.index()?, None)
        .await
        .map_err(port)?;
    Ok(())
}

/// What `load.batch.auto` did with a window of `files` arrivals, for the run log's `batch`:
/// loaded at once (the table was quiet), or waited for the window's end (with the rate the
/// window saw).
fn auto_note(w: &WindowBatch, opened: &Opened, files: usize) -> String {
    let secs = w.window.as_secs().max(1);
    if opened.at_once {
        format!("auto: at once (no window of this table in the previous {secs}s)")
    } else {
        let rate = (files as u64).saturating_mul(3600) / secs;
        format!("auto window={secs}s (rate {rate}/h)")
    }
}

/// The active pipelines that load through windows, with their trigger's bucket.
fn window_pipelines(ctx: &Context) -> impl Iterator<Item = (&Pipeline, &BucketName)> {
    ctx.config
        .pipelines
        .iter()
        .filter(|p| p.active)
        .filter_map(|p| {
            let is_window = matches!(
                p.load.as_ref().and_then(|l| l.batch.as_ref()),
                Some(LoadBatch::Window(_))
            );
            let trigger = p.trigger.object.as_ref()?;
            is_window.then_some((p, &trigger.bucket))
        })
}

/// The open windows of `pipeline` (its index under `_conveyor/windows/P/open/`) with their
/// `open` claims; an index entry whose claim is gone is skipped.
async fn listed_windows(
    ctx: &Context,
    pipeline: &Pipeline,
    bucket: &BucketName,
) -> Result<Vec<(Window, Opened)>, StepError> {
    let prefix = open_prefix(pipeline.name.as_str());
    let mut out = Vec::new();
    for meta in ctx.ports.store.list(bucket, &prefix).await.map_err(port)? {
        let Some((table_key, id)) = meta
            .object
            .name
            .as_str()
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        let window = Window {
            bucket: bucket.clone(),
            pipeline: pipeline.name.to_string(),
            table_key: table_key.to_owned(),
            id: id.to_owned(),
        };
        if let Some(opened) = read_json::<Opened>(ctx, bucket, &window.name("open")?).await? {
            out.push((window, opened));
        }
    }
    Ok(out)
}

/// The poll tick's part: closes every ended window of every active window pipeline. Returns
/// how many it closed.
pub(in crate::steps) async fn sweep_windows(
    ctx: &Context,
    outcome: &mut Outcome,
) -> Result<usize, StepError> {
    let mut closed = 0;
    for (p, bucket) in window_pipelines(ctx) {
        closed += sweep_pipeline(ctx, p, bucket, outcome).await?;
    }
    Ok(closed)
}

/// Closes the ended windows of `pipeline`. Returns how many.
async fn sweep_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    bucket: &BucketName,
    outcome: &mut Outcome,
) -> Result<usize, StepError> {
    let now = ctx.clock.now();
    let mut closed = 0;
    for (window, opened) in listed_windows(ctx, pipeline, bucket).await? {
        if opened.ends <= now {
            close(ctx, pipeline, &window, outcome).await?;
            closed += 1;
        }
    }
    Ok(closed)
}

/// The open windows of every active window pipeline, one line each: the table, its files
/// and when it closes.
///
/// # Errors
/// The store's error.
pub(in crate::steps) async fn open_windows(ctx: &Context) -> Result<Vec<String>, StepError> {
    let mut out = Vec::new();
    for (p, bucket) in window_pipelines(ctx) {
        for (window, opened) in listed_windows(ctx, p, bucket).await? {
            let files = ctx
                .ports
                .store
                .list(bucket, &format!("{}m/", window.base()))
                .await
                .map_err(port)?
                .len();
            out.push(format!(
                "pipeline {}: window {} of {} holds {files} file(s), not loaded until it closes at {}",
                p.name,
                window.id,
                opened.table,
                opened.ends.format("%H:%M:%S")
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use chrono::TimeZone as _;

    use super::*;
    use crate::clock::ManualClock;
    use crate::event::ConveyorEvent;
    use crate::inbound::Inbound;
    use crate::names::JobId;
    use crate::ports::{EventBus, ObjectStore as _, Ports};
    use crate::steps::{StepName, handle};
    use crate::testing::{DoneJobs, MemoryStore};

    /// Keeps the `batch` var of every event published.
    #[derive(Default)]
    struct Notes(Mutex<Vec<String>>);

    #[async_trait]
    impl EventBus for Notes {
        async fn publish(&self, e: &ConveyorEvent) -> Result<(), PortError> {
            if let Some(note) = e.detail.vars.get("batch") {
                self.0.lock().expect("lock").push(note.clone());
            }
            Ok(())
        }
    }

    struct Sim {
        ctx: Context,
        clock: Arc<ManualClock>,
        store: Arc<MemoryStore>,
        jobs: Arc<DoneJobs>,
        notes: Arc<Notes>,
    }

    impl Sim {
        fn new(batch: &str) -> Self {
            let config = crate::config::parse_str(
                &format!(
                    "pipelines:\n  - name: p\n    trigger: {{ object: {{ bucket: landing, pattern: \"in/*.csv\" }} }}\n    load: {{ table: ds.t, format: CSV, batch: {batch} }}\n"
                ),
                "t.yaml",
            )
            .expect("config");
            let store = Arc::new(MemoryStore::default());
            let jobs = Arc::new(DoneJobs::default());
            let notes = Arc::new(Notes::default());
            let ports = Ports {
                store: store.clone(),
                warehouse: jobs.clone(),
                bus: notes.clone(),
                ..Ports::unwired()
            };
            // A whole number of 62 s periods since the epoch.
            let t0 = Utc
                .timestamp_opt(62 * 28_500_000, 0)
                .single()
                .expect("time");
            let clock = Arc::new(ManualClock::new(t0));
            let mut ctx = Context::new(Arc::new(config), ports);
            ctx.clock = clock.clone();
            Self {
                ctx,
                clock,
                store,
                jobs,
                notes,
            }
        }

        fn at(&self, secs: i64) {
            self.clock.set(
                Utc.timestamp_opt(62 * 28_500_000 + secs, 0)
                    .single()
                    .expect("time"),
            );
        }

        async fn arrive(&self, secs: i64, name: &str) {
            self.at(secs);
            let meta = self
                .store
                .put(
                    &BucketName::parse("landing").expect("bucket"),
                    &ObjectName::parse(name).expect("name"),
                    body(b"1\n".to_vec()),
                )
                .await
                .expect("put");
            handle(StepName::Load, &self.ctx, Inbound::Object(meta.object))
                .await
                .expect("arrival");
        }

        async fn tick(&self, secs: i64) {
            self.at(secs);
            let mut outcome = Outcome::default();
            sweep_windows(&self.ctx, &mut outcome).await.expect("sweep");
        }

        /// Each job id with its sources' names (a job handed over again: its last sources).
        fn by_id(&self) -> BTreeMap<JobId, Vec<String>> {
            let jobs = self.jobs.jobs.lock().expect("lock");
            jobs.iter()
                .map(|j| {
                    let names = j.sources.iter().map(|s| s.name.to_string()).collect();
                    (j.job_id.clone(), names)
                })
                .collect()
        }

        /// The sizes of the jobs, in the order of their first source's name.
        fn sizes(&self) -> Vec<usize> {
            let jobs = self.by_id();
            let mut v: Vec<(String, usize)> = jobs
                .values()
                .map(|s| (s.iter().min().cloned().unwrap_or_default(), s.len()))
                .collect();
            v.sort();
            v.into_iter().map(|(_, n)| n).collect()
        }

        /// Every loaded name, and whether any was loaded twice.
        fn loaded_once(&self) -> (BTreeSet<String>, bool) {
            let jobs = self.by_id();
            let all: Vec<&String> = jobs.values().flatten().collect();
            let set: BTreeSet<String> = all.iter().map(|s| (*s).clone()).collect();
            let twice = set.len() != all.len();
            (set, twice)
        }
    }

    #[tokio::test]
    async fn auto_loads_a_quiet_tables_arrival_at_once_and_a_burst_in_one_window_job() {
        let sim = Sim::new("{ auto: true }");
        // A quiet table: the first arrival loads at once.
        sim.arrive(1, "in/a00.csv").await;
        assert_eq!(sim.sizes(), [1], "a quiet table's arrival loads at once");
        // A burst in the same period waits for the window's end (62 s).
        for i in 1..10 {
            sim.arrive(1 + i, &format!("in/a{i:02}.csv")).await;
        }
        sim.tick(61).await;
        assert_eq!(sim.sizes(), [1], "the burst waits for its window's end");
        sim.tick(62).await;
        assert_eq!(sim.sizes(), [1, 9]);
        // The next period follows a busy one: its arrival waits too.
        sim.arrive(70, "in/b00.csv").await;
        assert_eq!(sim.sizes(), [1, 9]);
        sim.tick(124).await;
        assert_eq!(sim.sizes(), [1, 9, 1]);
        // After a quiet period, at once again.
        sim.arrive(62 * 5 + 3, "in/c00.csv").await;
        assert_eq!(sim.sizes(), [1, 9, 1, 1]);
        let (loaded, twice) = sim.loaded_once();
        assert_eq!(loaded.len(), 12);
        assert!(!twice);
        assert_eq!(
            *sim.notes.0.lock().expect("lock"),
            [
                "auto: at once (no window of this table in the previous 62s)",
                "auto window=62s (rate 522/h)",
                "auto window=62s (rate 58/h)",
                "auto: at once (no window of this table in the previous 62s)",
            ]
        );
    }

    #[tokio::test]
    async fn auto_keeps_a_busy_table_to_one_job_per_window_and_loads_every_arrival_once() {
        let sim = Sim::new("{ auto: true }");
        // 600 arrivals in one simulated hour at uneven gaps (bursts and lulls, some longer
        // than a window), each tick a minute apart as Cloud Scheduler's.
        let mut t = 0i64;
        let mut next_tick = 60;
        let mut x: u64 = 7;
        for i in 0..600 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            t += match (x >> 33) % 10 {
                0 => 90,
                1..=3 => 0,
                _ => 3,
            };
            while next_tick <= t {
                sim.tick(next_tick).await;
                next_tick += 60;
            }
            sim.arrive(t, &format!("in/f{i:04}.csv")).await;
        }
        sim.tick(t + 62).await;
        let (loaded, twice) = sim.loaded_once();
        assert_eq!(loaded.len(), 600, "every arrival is loaded");
        assert!(!twice, "no arrival is loaded twice");
        let periods = (t + 62) / 62 + 1;
        let jobs = sim.sizes().len() as i64;
        assert!(
            jobs <= periods,
            "{jobs} jobs in {periods} windows of 62 s: at most one per window"
        );
        assert!(
            jobs > 1 && jobs < 600,
            "arrivals are grouped, not loaded one by one: {jobs}"
        );
    }
}
