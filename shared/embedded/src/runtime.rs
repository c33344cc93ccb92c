//! The embedded runtime: the whole chain on one machine, through the same step code the
//! Cloud Run functions run.
//!
//! It plays the parts Google Cloud plays in production: the bucket watcher stands for GCS
//! notifications, the dispatcher for Pub/Sub push subscriptions (routing each event to the
//! steps subscribed to its type, redelivering on transient errors), and timers for Cloud
//! Scheduler (poll ticks and cron schedules).
//!
//! State lives under one directory (default `.conveyor/`): `buckets/` (one directory per
//! bucket), `warehouse/` (SQLite files, one per dataset), `batches/` (one directory per batch
//! job), `retry/` (arrivals that failed on a transient cause and are retried until they load
//! or a permanent cause appears).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use conveyor_core::config::Config;
use conveyor_core::engines::Engines;
use conveyor_core::event::{ConveyorEvent, Detail, EventType, ObjectRef, Status, StepName};
use conveyor_core::inbound::{Inbound, Origin, StartRequest};
use conveyor_core::names::{BucketName, JobId, ObjectName, RunId, TableRef};
use conveyor_core::ports::{BatchEngine, LoadState, PortError, Ports};
use conveyor_core::run_origin::RunOrigin;
use conveyor_core::steps::{self, Context, StepError};
use conveyor_sources::Connector;

use crate::{
    DirSecrets, InProcessBus, LocalBatchEngine, LocalStore, SqliteSqlEngine, SqliteWarehouse,
    Watcher,
};

/// Object arrivals handled at once. Every load writes through the one warehouse connection,
/// so more gain nothing: a burst of arrivals (10,000 files dropped at once) waits in the queue
/// instead of running 10,000 superseded-generation checks and file reads side by side, which
/// filled the blocking thread pool (and memory) and made the load holding the connection wait
/// behind them for its own file reads.
const ARRIVALS_AT_ONCE: usize = 4;

/// Timings of the embedded runtime.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// How often bucket directories are scanned.
    pub watch_interval: Duration,
    /// How often the poll step is ticked.
    pub tick_interval: Duration,
    /// Whether cron schedules fire (`conveyor dev`), or only arrivals and manual starts.
    pub schedules: bool,
    /// Deliveries of one event before a transient failure is recorded as final. Object
    /// arrivals are not given up: they are kept (under `retry/`) and retried with backoff
    /// until they load or a permanent cause appears.
    pub max_deliveries: u32,
    /// Whether files in the buckets are noticed and loaded (GCS notifications). `conveyor
    /// backfill` turns it off: only the objects it announces are loaded.
    pub watch_buckets: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            watch_interval: Duration::from_millis(500),
            tick_interval: Duration::from_secs(1),
            schedules: false,
            max_deliveries: 8,
            watch_buckets: true,
        }
    }
}

/// The embedded adapters wired into a [`Context`], plus what drives them.
pub struct Embedded {
    ctx: Context,
    store: LocalStore,
    warehouse: SqliteWarehouse,
    state_dir: PathBuf,
    bus_rx: Option<mpsc::UnboundedReceiver<ConveyorEvent>>,
    pending: Arc<AtomicUsize>,
    unsettled: Arc<AtomicUsize>,
    observed: tokio::sync::broadcast::Sender<ConveyorEvent>,
    retries: RetryQueue,
}

/// Tells whether the embedded runtime has nothing left to do; cheap to clone, usable while
/// the runtime runs.
#[derive(Clone)]
pub struct QuietProbe {
    pending: Arc<AtomicUsize>,
    unsettled: Arc<AtomicUsize>,
    run_log: Arc<dyn conveyor_core::ports::RunLog>,
    tables: Vec<TableRef>,
}

impl QuietProbe {
    /// Events and arrivals not yet handled, plus files not yet settled in the buckets.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst) + self.unsettled.load(Ordering::SeqCst)
    }

    /// Whether nothing is in flight: no unhandled event or arrival, no unsettled file and no
    /// open batch.
    ///
    /// # Errors
    /// When the run log cannot be read.
    pub async fn is_quiet(&self) -> Result<bool, PortError> {
        if self.pending() > 0 {
            return Ok(false);
        }
        for t in &self.tables {
            if !self
                .run_log
                .open_batches(t, chrono::DateTime::<Utc>::MIN_UTC)
                .await?
                .is_empty()
            {
                return Ok(false);
            }
        }
        Ok(self.pending() == 0)
    }
}

/// The lineage adapter the file's `lineage:` asks for: its `url`, else `lineage.jsonl` in the
/// state directory; none without the key.
fn lineage_port(
    config: &Config,
    state_dir: &Path,
) -> Option<Arc<dyn conveyor_core::ports::Lineage>> {
    let lineage = config.lineage.as_ref()?;
    Some(match &lineage.url {
        Some(url) => Arc::new(crate::lineage::LineageHttp::new(url.clone())),
        None => Arc::new(crate::lineage::LineageFile::new(
            state_dir.join(crate::lineage::LINEAGE_FILE),
        )),
    })
}

/// The local bucket where the steps keep the objects they take atomically (the
/// `max_active_runs` slots, engines' submit claims: see
/// [`conveyor_core::steps::StepOptions::state_bucket`]).
pub const STATE_BUCKET: &str = "conveyor-state";

impl Embedded {
    /// Opens (creating when missing) the embedded state under `state_dir`. Batches run as
    /// local processes (`engine: local`); a Google Cloud engine is refused with a message
    /// saying so (see [`Engines`]).
    ///
    /// # Errors
    /// When a directory or database cannot be created.
    pub fn open(config: Arc<Config>, state_dir: &Path) -> Result<Self, PortError> {
        Self::open_with(config, state_dir, Engines::new())
    }

    /// Opens the embedded state under `state_dir` with `engines` as the batch port, plus
    /// `engine: local` (local processes) and `engine: sql` (the SQLite warehouse) unless
    /// `engines` has them: the embedded chain driving other engines, such as the Google
    /// Cloud engines pointed at a test server.
    ///
    /// # Errors
    /// When a directory or database cannot be created.
    pub fn open_with(
        config: Arc<Config>,
        state_dir: &Path,
        engines: Engines,
    ) -> Result<Self, PortError> {
        let io = |e: std::io::Error| PortError::transient(format!("{}: {e}", state_dir.display()));
        let store = LocalStore::new(state_dir.join("buckets")).map_err(io)?;
        let warehouse = SqliteWarehouse::open_local(state_dir.join("warehouse"), store.clone())?;
        let local = LocalBatchEngine::new(state_dir.join("batches")).map_err(io)?;
        let batch: Arc<dyn BatchEngine> = Arc::new(
            Engines::new()
                .with_local(Arc::new(local))
                .with("sql", Arc::new(SqliteSqlEngine::new(warehouse.clone())))
                .extend(engines),
        );
        let (bus, bus_rx) = InProcessBus::new();
        let pending = bus.pending();
        let secrets = DirSecrets::new(state_dir.join("secrets"));
        let secrets = Arc::new(secrets);
        let sources = Connector::new(Arc::new(store.clone()), secrets.clone());
        let ports = Ports {
            store: Arc::new(store.clone()),
            bus: Arc::new(bus),
            warehouse: Arc::new(warehouse.clone()),
            batch,
            run_log: Arc::new(warehouse.clone()),
            sources: Arc::new(sources),
            sinks: Arc::new(conveyor_core::ports::Unwired),
            rows: Arc::new(warehouse.clone()),
            secrets,
            alerts: None,
            lineage: lineage_port(&config, state_dir),
            notifier: Some(Arc::new(crate::LocalNotifier::new(
                state_dir.join("topics"),
            ))),
        };
        let mut ctx = Context::new(config, ports);
        ctx.options.state_bucket = Some(
            BucketName::parse(STATE_BUCKET)
                .map_err(|e| PortError::permanent(format!("{STATE_BUCKET}: {e}")))?,
        );
        Ok(Self {
            ctx,
            store,
            warehouse,
            state_dir: state_dir.to_path_buf(),
            bus_rx: Some(bus_rx),
            pending,
            unsettled: Arc::new(AtomicUsize::new(0)),
            observed: tokio::sync::broadcast::channel(4096).0,
            retries: RetryQueue {
                dir: state_dir.join("retry"),
            },
        })
    }

    /// Replaces the steps' clock (the system's by default): a test's
    /// [`conveyor_core::clock::ManualClock`], so load windows close when the test moves it on
    /// rather than after real time.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn conveyor_core::clock::Clock>) -> Self {
        self.ctx.clock = clock;
        self
    }

    /// Replaces the additional run-log sinks (none by default: a pipeline file naming one is
    /// refused by the log step until the runtime wires it; the CLI wires PostgreSQL).
    #[must_use]
    pub fn with_run_log_sinks(mut self, sinks: Arc<dyn conveyor_core::ports::RunLogSinks>) -> Self {
        self.ctx.ports.sinks = sinks;
        self
    }

    /// Every event the runtime dispatches from now on, for progress output (`conveyor dev`
    /// prints a line per finished step). A receiver that falls behind loses the oldest.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ConveyorEvent> {
        self.observed.subscribe()
    }

    /// The step context (for HTTP routers and direct calls).
    pub fn context(&self) -> Context {
        self.ctx.clone()
    }

    /// The local object store.
    pub fn store(&self) -> &LocalStore {
        &self.store
    }

    /// The SQLite warehouse.
    pub fn warehouse(&self) -> &SqliteWarehouse {
        &self.warehouse
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Every run-log table the configuration names.
    pub fn run_log_tables(&self) -> Vec<TableRef> {
        let mut set = BTreeSet::new();
        set.insert(self.ctx.config.run_log.table.to_string());
        for p in &self.ctx.config.pipelines {
            set.insert(self.ctx.config.run_log_table(p).to_string());
        }
        set.iter().filter_map(|t| TableRef::parse(t).ok()).collect()
    }

    /// A probe of the runtime's activity, for waiting until every run has finished.
    pub fn quiet_probe(&self) -> QuietProbe {
        QuietProbe {
            pending: self.pending.clone(),
            unsettled: self.unsettled.clone(),
            run_log: self.ctx.ports.run_log.clone(),
            tables: self.run_log_tables(),
        }
    }

    /// Runs the watcher, the dispatcher and the timers until `shutdown` completes. Can be
    /// called once.
    pub async fn run(&mut self, options: RuntimeOptions, shutdown: impl Future<Output = ()>) {
        let Some(mut bus_rx) = self.bus_rx.take() else {
            error!("the embedded runtime is already running");
            return;
        };
        let ctx = self.ctx.clone();
        let pending = self.pending.clone();
        let mut tasks = JoinSet::new();

        // Bucket watcher → load step (GCS notifications in production).
        let buckets: Vec<BucketName> = ctx
            .config
            .pipelines
            .iter()
            .filter_map(|p| p.trigger.object.as_ref().map(|o| o.bucket.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (obj_tx, mut obj_rx) = mpsc::unbounded_channel::<ObjectRef>();
        // Arrivals still failing when the last run stopped carry on first.
        for object in self.retries.waiting().await {
            info!(object = %object.uri(), "retrying an arrival kept from an earlier run");
            let _ = obj_tx.send(object);
        }
        let loaded = self.loaded_before_content_generations(&buckets).await;
        let watcher = Watcher::new(self.store.clone(), buckets, options.watch_interval)
            .with_gauge(self.unsettled.clone())
            .with_loaded(loaded);
        if options.watch_buckets {
            tasks.spawn(watcher.run(obj_tx));
        } else {
            drop(obj_tx);
        }
        let retries = self.retries.clone();
        {
            let ctx = ctx.clone();
            let pending = pending.clone();
            let max = options.max_deliveries;
            let permits = Arc::new(Semaphore::new(ARRIVALS_AT_ONCE));
            let retries = retries.clone();
            tasks.spawn(async move {
                while let Some(object) = obj_rx.recv().await {
                    pending.fetch_add(1, Ordering::SeqCst);
                    let ctx = ctx.clone();
                    let pending = pending.clone();
                    let permits = permits.clone();
                    let retries = retries.clone();
                    tokio::spawn(async move {
                        deliver_limited(
                            &ctx,
                            StepName::Load,
                            Inbound::Object(object),
                            max,
                            Some(&permits),
                            Some(&retries),
                        )
                        .await;
                        pending.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        }

        // Poll ticks (a Cloud Scheduler job in production).
        {
            let ctx = ctx.clone();
            let every = options.tick_interval;
            tasks.spawn(async move {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let tick = Inbound::Start(StartRequest {
                        pipeline: None,
                        origin: Origin::Schedule,
                        at: Utc::now(),
                        key: None,
                        date: None,
                    });
                    if let Err(e) = steps::handle(StepName::Poll, &ctx, tick).await {
                        warn!(error = %e, "poll tick failed");
                    }
                }
            });
        }

        // Cron schedules (Cloud Scheduler jobs in production).
        if options.schedules {
            let ctx = ctx.clone();
            let max = options.max_deliveries;
            tasks.spawn(async move { schedules(ctx, max).await });
        }

        // Event dispatch (Pub/Sub push subscriptions in production).
        let dispatcher = {
            let ctx = ctx.clone();
            let max = options.max_deliveries;
            let observed = self.observed.clone();
            let watching = options.watch_buckets;
            let retries = retries.clone();
            async move {
                while let Some(event) = bus_rx.recv().await {
                    let _ = observed.send(event.clone());
                    let ctx = ctx.clone();
                    let pending = pending.clone();
                    let retries = retries.clone();
                    tokio::spawn(async move {
                        let subscribers: Vec<StepName> = StepName::ALL
                            .into_iter()
                            .filter(|s| steps::subscriptions(*s).contains(&event.kind))
                            .collect();
                        // The log step first, so the run log holds a batch before poll looks.
                        for step in subscribers.iter().rev() {
                            deliver(&ctx, *step, Inbound::Event(Box::new(event.clone())), max)
                                .await;
                        }
                        // A staged object reaches load by one path, its arrival (as in
                        // production, the bucket's notification). With no watcher (`conveyor
                        // backfill`), the staged event stands in for the arrival.
                        if !watching
                            && event.kind == EventType::ObjectStaged
                            && let Some(object) = event.detail.object.clone()
                        {
                            let inbound = Inbound::Object(object);
                            deliver_limited(
                                &ctx,
                                StepName::Load,
                                inbound,
                                max,
                                None,
                                Some(&retries),
                            )
                            .await;
                        }
                        pending.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            }
        };
        tokio::select! {
            () = dispatcher => {}
            () = shutdown => info!("shutting down the embedded runtime"),
        }
        tasks.abort_all();
    }
}

impl Embedded {
    /// The files in `buckets` that a version whose generations were modification times
    /// loaded already (their load job under that generation is done), found once per state
    /// dir (`generations` records that it was done): they are not loaded again because their
    /// generation is now named by their content.
    async fn loaded_before_content_generations(
        &self,
        buckets: &[BucketName],
    ) -> Vec<(BucketName, ObjectName)> {
        let marker = self.state_dir.join("generations");
        if marker.exists() {
            return Vec::new();
        }
        let mut found = Vec::new();
        for bucket in buckets {
            let store = self.store.clone();
            let b = bucket.clone();
            let names = tokio::task::spawn_blocking(move || {
                store
                    .names_blocking(&b)
                    .into_iter()
                    .filter_map(|n| {
                        let legacy = crate::store::legacy_generation(&store.path(&b, &n))?;
                        Some((n, legacy))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (name, legacy) in names {
                let pipelines = self.ctx.config.pipelines.iter().filter(|p| {
                    p.trigger.object.as_ref().is_some_and(|t| {
                        &t.bucket == bucket && t.pattern.captures(name.as_str()).is_some()
                    })
                });
                for p in pipelines {
                    let run = RunId::for_origin(
                        &p.name,
                        &RunOrigin::Object {
                            bucket: bucket.as_str(),
                            name: name.as_str(),
                            generation: &legacy,
                        },
                    );
                    let job = JobId::derive("load", &run, 1);
                    let done = self.ctx.ports.warehouse.load_state(&job).await;
                    if matches!(done, Ok(s) if matches!(s.state, LoadState::Done { .. })) {
                        found.push((bucket.clone(), name.clone()));
                        break;
                    }
                }
            }
        }
        if !found.is_empty() {
            info!(
                files = found.len(),
                "files loaded by an earlier version are not loaded again"
            );
        }
        if let Err(e) = std::fs::write(&marker, "content\n") {
            warn!(error = %e, "cannot record the generations' scheme in the state dir");
        }
        found
    }
}

/// Delivers `inbound` to `step` as a push subscription would: a transient failure is retried
/// with backoff (1 s doubling to 10 s) up to `max` deliveries, then recorded as failed (the
/// dead-letter topic of production); a rejection is recorded once.
async fn deliver(ctx: &Context, step: StepName, inbound: Inbound, max: u32) {
    deliver_limited(ctx, step, inbound, max, None, None).await;
}

/// The longest wait between two deliveries of an arrival that keeps failing on a transient
/// cause (a full disk, a locked database).
const ARRIVAL_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// [`deliver`], each attempt holding a permit of `permits` (none is held while waiting to
/// redeliver). With `retries`, an object arrival is never given up on a transient cause: it
/// is kept in the queue (which outlives the process) and retried with backoff up to
/// [`ARRIVAL_BACKOFF_MAX`] until it loads or a permanent cause appears.
async fn deliver_limited(
    ctx: &Context,
    step: StepName,
    inbound: Inbound,
    max: u32,
    permits: Option<&Semaphore>,
    retries: Option<&RetryQueue>,
) {
    let arrival = match (&inbound, retries) {
        (Inbound::Object(o), Some(q)) => Some((o.clone(), q)),
        _ => None,
    };
    let mut delay = Duration::from_millis(250);
    let mut delivery: u32 = 0;
    loop {
        delivery = delivery.saturating_add(1);
        let permit = match permits {
            // The semaphore is never closed.
            Some(p) => p.acquire().await.ok(),
            None => None,
        };
        let result = steps::handle(step, ctx, inbound.clone()).await;
        drop(permit);
        match result {
            Ok(_) => break,
            Err(StepError::Rejected(reason)) => {
                let body = describe_inbound(&inbound);
                let about = about_inbound(ctx, &inbound);
                if let Err(e) =
                    steps::record_rejection_about(ctx, step, body.as_bytes(), &reason, &about).await
                {
                    error!(step = %step, error = %e, "cannot record a rejection");
                }
                break;
            }
            Err(StepError::Transient(reason)) => {
                warn!(step = %step, delivery, error = %reason, "transient failure; redelivering");
                if let Some((object, queue)) = &arrival {
                    queue.keep(object, delivery, &reason).await;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(ARRIVAL_BACKOFF_MAX);
                    continue;
                }
                if delivery >= max {
                    dead_letter(ctx, step, &inbound, &reason, max).await;
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    if let Some((object, queue)) = &arrival {
        queue.done(object).await;
    }
}

/// What a refused input is about: an arrival names its object and the first active pipeline
/// whose trigger it matches.
fn about_inbound(ctx: &Context, inbound: &Inbound) -> steps::About {
    let Inbound::Object(object) = inbound else {
        return steps::About::default();
    };
    let pipeline = ctx
        .config
        .pipelines
        .iter()
        .filter(|p| p.active)
        .find(|p| {
            p.trigger.object.as_ref().is_some_and(|t| {
                t.bucket == object.bucket && t.pattern.captures(object.name.as_str()).is_some()
            })
        })
        .map(|p| p.name.clone());
    steps::About {
        pipeline,
        object: Some(object.clone()),
    }
}

fn describe_inbound(inbound: &Inbound) -> String {
    match inbound {
        Inbound::Event(e) => serde_json::to_string(e).unwrap_or_default(),
        Inbound::Object(o) => o.uri(),
        Inbound::Start(s) => format!("{:?}", s.pipeline),
        Inbound::Ignored(s) => s.clone(),
    }
}

async fn dead_letter(ctx: &Context, step: StepName, inbound: &Inbound, reason: &str, max: u32) {
    let Inbound::Event(e) = inbound else {
        // An arrival or start names no run yet: record it as refused input.
        let about = about_inbound(ctx, inbound);
        let body = describe_inbound(inbound);
        if let Err(e) =
            steps::record_rejection_about(ctx, step, body.as_bytes(), reason, &about).await
        {
            error!(step = %step, error = %e, "cannot record a dead-lettered delivery");
        }
        return;
    };
    let (run_id, pipeline) = (e.run_id.clone(), e.pipeline.clone());
    if step == StepName::Log {
        error!(run_id = %run_id, error = %reason, "the run log is unavailable; event dropped after {max} deliveries");
        return;
    }
    let ev = ConveyorEvent::new(
        EventType::StepFailed,
        run_id,
        pipeline,
        step,
        1,
        Status::Failed,
        Detail {
            error: Some(format!("gave up after {max} deliveries: {reason}")),
            ..Detail::default()
        },
    );
    if let Err(e) = ctx.ports.bus.publish(&ev).await {
        error!(error = %e, "cannot record a dead-lettered delivery");
    }
}

/// Arrivals that failed on a transient cause and wait to be delivered again, one small JSON
/// file each under the state directory (`retry/`), so a restart carries on where the last
/// run stopped; removed once the arrival loads or is refused.
#[derive(Clone)]
struct RetryQueue {
    dir: PathBuf,
}

/// One kept arrival.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kept {
    object: ObjectRef,
    deliveries: u32,
    last_error: String,
}

impl RetryQueue {
    fn file(&self, object: &ObjectRef) -> PathBuf {
        use sha2::Digest as _;
        let key = sha2::Sha256::digest(
            format!("{}\0{}\0{}", object.bucket, object.name, object.generation).as_bytes(),
        );
        self.dir.join(format!("{}.json", hex::encode(&key[..16])))
    }

    /// Keeps `object` (written whole, then renamed into place).
    async fn keep(&self, object: &ObjectRef, deliveries: u32, reason: &str) {
        let kept = Kept {
            object: object.clone(),
            deliveries,
            last_error: steps::bounded_reason(reason),
        };
        let (dir, file) = (self.dir.clone(), self.file(object));
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&kept).unwrap_or_default())?;
            std::fs::rename(&tmp, &file)
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            warn!(object = %object.uri(), "cannot keep a failing arrival in the retry queue; it is retried while this process runs");
        }
    }

    /// Forgets `object` (loaded, or refused).
    async fn done(&self, object: &ObjectRef) {
        let _ = tokio::fs::remove_file(self.file(object)).await;
    }

    /// The arrivals kept by an earlier run.
    async fn waiting(&self) -> Vec<ObjectRef> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return Vec::new();
            };
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .filter_map(|bytes| serde_json::from_slice::<Kept>(&bytes).ok())
                .map(|k| k.object)
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

async fn schedules(ctx: Context, max: u32) {
    let mut next: HashMap<String, chrono::DateTime<Utc>> = HashMap::new();
    loop {
        let now = Utc::now();
        for p in ctx.config.pipelines.iter().filter(|p| p.active) {
            let Some(s) = &p.trigger.schedule else {
                continue;
            };
            // In the schedule's own time zone, as Cloud Scheduler evaluates it.
            let fire_after = |t| {
                conveyor_core::schedules::next_fire(&s.cron, &s.time_zone, t)
                    .unwrap_or(t + chrono::Duration::days(3650))
            };
            let due = *next
                .entry(p.name.to_string())
                .or_insert_with(|| fire_after(now));
            if due <= now {
                let step = if p.stage.is_some() {
                    StepName::Stage
                } else {
                    StepName::Submit
                };
                info!(pipeline = %p.name, step = %step, "schedule fired");
                let start = Inbound::Start(StartRequest {
                    pipeline: Some(p.name.clone()),
                    origin: Origin::Schedule,
                    at: due,
                    key: None,
                    date: None,
                });
                let ctx2 = ctx.clone();
                tokio::spawn(async move { deliver(&ctx2, step, start, max).await });
                next.insert(p.name.to_string(), fire_after(now));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use conveyor_core::names::{JobId, ObjectName};
    use conveyor_core::ports::{LoadJob, LoadStatus, RunLogRow, Warehouse};

    use super::*;

    /// The SQLite warehouse, whose first `failures` loads fail as a full disk would.
    struct Flaky {
        inner: SqliteWarehouse,
        failures: AtomicUsize,
    }

    #[async_trait]
    impl Warehouse for Flaky {
        async fn load(&self, job: &LoadJob, wait: Duration) -> Result<LoadStatus, PortError> {
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(PortError::transient("No space left on device"));
            }
            self.inner.load(job, wait).await
        }
        async fn load_state(&self, job_id: &JobId) -> Result<LoadStatus, PortError> {
            self.inner.load_state(job_id).await
        }
        async fn row_count(&self, table: &TableRef) -> Result<u64, PortError> {
            self.inner.row_count(table).await
        }
        async fn read_table(
            &self,
            table: &TableRef,
            limit: usize,
        ) -> Result<Vec<BTreeMap<String, String>>, PortError> {
            self.inner.read_table(table, limit).await
        }
    }

    const SALES: &str = r#"
pipelines:
  - name: sales
    trigger: { object: { bucket: landing, pattern: "in/**" } }
    load: { table: "ds.sales", format: CSV }
"#;

    fn open(state: &Path, failures: usize) -> Embedded {
        let config = Arc::new(conveyor_core::config::parse_str(SALES, "t.yaml").unwrap());
        let mut embedded = Embedded::open(config, state).unwrap();
        let flaky = Flaky {
            inner: embedded.warehouse.clone(),
            failures: AtomicUsize::new(failures),
        };
        embedded.ctx.ports.warehouse = Arc::new(flaky);
        embedded
    }

    fn options(watch: bool) -> RuntimeOptions {
        RuntimeOptions {
            watch_interval: Duration::from_millis(20),
            tick_interval: Duration::from_millis(50),
            schedules: false,
            max_deliveries: 2,
            watch_buckets: watch,
        }
    }

    async fn rows(e: &Embedded) -> u64 {
        e.warehouse
            .row_count(&TableRef::parse("ds.sales").unwrap())
            .await
            .unwrap_or(0)
    }

    async fn run_log(ctx: &Context) -> Vec<RunLogRow> {
        let t = TableRef::parse("conveyor.run_log").unwrap();
        ctx.ports.run_log.recent(&t, 1000).await.unwrap()
    }

    /// Runs `e` until `done` holds (checked every 50 ms) or `limit` passes; whether it held.
    async fn run_until<F, Fut>(e: &mut Embedded, watch: bool, limit: Duration, done: F) -> bool
    where
        F: Fn(Context, SqliteWarehouse) -> Fut,
        Fut: Future<Output = bool>,
    {
        let (ctx, warehouse) = (e.ctx.clone(), e.warehouse.clone());
        let check = async {
            let deadline = tokio::time::Instant::now() + limit;
            while tokio::time::Instant::now() < deadline {
                if done(ctx.clone(), warehouse.clone()).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        e.run(options(watch), check).await;
        done(e.ctx.clone(), e.warehouse.clone()).await
    }

    #[tokio::test]
    async fn an_arrival_failing_on_a_transient_cause_is_kept_and_retried_until_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // Four failures, with two deliveries allowed: it used to be given up (REJECTED, no
        // pipeline named) after the second and never loaded.
        let mut e = open(&state, 4);
        let bucket = e.store.bucket_dir(&BucketName::parse("landing").unwrap());
        std::fs::create_dir_all(bucket.join("in")).unwrap();
        std::fs::write(bucket.join("in/a.csv"), "id\n1\n2\n").unwrap();
        let retry_dir = state.join("retry");
        let seen_kept = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = seen_kept.clone();
        let loaded = run_until(&mut e, true, Duration::from_secs(20), move |_, w| {
            let (seen, retry_dir) = (seen.clone(), retry_dir.clone());
            async move {
                if std::fs::read_dir(&retry_dir).is_ok_and(|mut d| d.next().is_some()) {
                    seen.store(true, Ordering::SeqCst);
                }
                w.row_count(&TableRef::parse("ds.sales").unwrap())
                    .await
                    .is_ok_and(|n| n == 2)
            }
        })
        .await;
        assert!(loaded, "the arrival was never loaded");
        assert!(
            seen_kept.load(Ordering::SeqCst),
            "the failing arrival was not kept"
        );
        assert!(
            std::fs::read_dir(state.join("retry")).is_ok_and(|mut d| d.next().is_none()),
            "a loaded arrival stays in the retry queue"
        );
        let log = run_log(&e.ctx).await;
        assert!(
            log.iter().all(|r| r.status != "REJECTED"),
            "{:?}",
            log.iter()
                .map(|r| (&r.status, &r.error))
                .collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn an_arrival_kept_by_an_earlier_run_is_retried_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut e = open(&state, 0);
        let b = BucketName::parse("landing").unwrap();
        let n = ObjectName::parse("in/a.csv").unwrap();
        let meta = conveyor_core::ports::ObjectStore::put(
            &e.store,
            &b,
            &n,
            Box::pin(&b"id\n1\n2\n3\n"[..]),
        )
        .await
        .unwrap();
        // What a run that stopped while the arrival was failing left behind.
        e.retries
            .keep(&meta.object, 8, "No space left on device")
            .await;
        // No watcher: only the kept arrival can load the file.
        let loaded = run_until(&mut e, false, Duration::from_secs(20), |_, w| async move {
            w.row_count(&TableRef::parse("ds.sales").unwrap())
                .await
                .is_ok_and(|n| n == 3)
        })
        .await;
        assert!(loaded, "the kept arrival was not retried");
        assert!(e.retries.waiting().await.is_empty());
        assert_eq!(rows(&e).await, 3);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_refused_arrival_names_its_pipeline_and_object() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut e = open(&state, 0);
        let bucket = e.store.bucket_dir(&BucketName::parse("landing").unwrap());
        std::fs::create_dir_all(bucket.join("in")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(bucket.join("in/pipe.csv"))
            .status()
            .unwrap();
        assert!(made.success());
        let object = ObjectRef {
            bucket: BucketName::parse("landing").unwrap(),
            name: ObjectName::parse("in/pipe.csv").unwrap(),
            generation: String::new(),
            size: None,
        };
        let ctx = e.ctx.clone();
        let retries = e.retries.clone();
        let delivered = tokio::time::timeout(
            Duration::from_secs(10),
            deliver_limited(
                &ctx,
                StepName::Load,
                Inbound::Object(object),
                2,
                None,
                Some(&retries),
            ),
        )
        .await;
        assert!(
            delivered.is_ok(),
            "a FIFO was retried or blocked the delivery"
        );
        let logged = run_until(
            &mut e,
            false,
            Duration::from_secs(10),
            |ctx, _| async move { run_log(&ctx).await.iter().any(|r| r.status == "REJECTED") },
        )
        .await;
        assert!(logged);
        let log = run_log(&e.ctx).await;
        let row = log.iter().find(|r| r.status == "REJECTED").unwrap();
        assert_eq!(row.pipeline.as_deref(), Some("sales"), "{row:?}");
        assert_eq!(
            row.source_object.as_deref(),
            Some("gs://landing/in/pipe.csv"),
            "{row:?}"
        );
        assert!(
            row.error
                .as_deref()
                .is_some_and(|e| e.contains("not a regular file")),
            "{row:?}"
        );
    }

    #[tokio::test]
    async fn files_loaded_by_a_version_with_mtime_generations_are_not_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut e = open(&state, 0);
        let b = BucketName::parse("landing").unwrap();
        let name = ObjectName::parse("in/a.csv").unwrap();
        let path = e.store.path(&b, &name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "id\n1\n2\n").unwrap();
        // What the earlier version did: the arrival named by its modification time, loaded.
        let legacy = crate::store::legacy_generation(&path).unwrap();
        let pipeline = conveyor_core::names::PipelineName::parse("sales").unwrap();
        let run = RunId::derive(&pipeline, &[b.as_str(), name.as_str(), &legacy]);
        let spec = e.ctx.config.pipelines[0].load.clone().unwrap();
        let job = LoadJob {
            write: spec.write_disposition,
            create: spec.create_disposition,
            schema: spec.schema.clone(),
            max_record_bytes: spec.max_record_bytes,
            generations_checked: false,
            ..LoadJob::new(
                JobId::derive("load", &run, 1),
                vec![ObjectRef {
                    bucket: b.clone(),
                    name: name.clone(),
                    generation: legacy,
                    size: None,
                }],
                TableRef::parse("ds.sales").unwrap(),
                spec.format,
            )
            .with_header_row()
        };
        e.warehouse.load(&job, Duration::ZERO).await.unwrap();
        assert_eq!(rows(&e).await, 2);
        // The first start of this version: the file is not a new generation.
        let start = tokio::time::Instant::now();
        let doubled = run_until(&mut e, true, Duration::from_secs(2), |_, w| async move {
            w.row_count(&TableRef::parse("ds.sales").unwrap())
                .await
                .is_ok_and(|n| n > 2)
        })
        .await;
        assert!(
            !doubled,
            "a file loaded before the upgrade was loaded again"
        );
        assert!(start.elapsed() >= Duration::from_secs(2));
        assert!(state.join("generations").exists());
    }
}
