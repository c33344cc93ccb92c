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
//! job).

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
use conveyor_core::names::{BucketName, TableRef};
use conveyor_core::ports::{BatchEngine, PortError, Ports};
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
    /// Deliveries of one event before a transient failure is recorded as final.
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
        let sources = Connector::new(Arc::new(store.clone()), Arc::new(secrets));
        let ports = Ports {
            store: Arc::new(store.clone()),
            bus: Arc::new(bus),
            warehouse: Arc::new(warehouse.clone()),
            batch,
            run_log: Arc::new(warehouse.clone()),
            sources: Arc::new(sources),
            sinks: Arc::new(conveyor_core::ports::Unwired),
            rows: Arc::new(warehouse.clone()),
            alerts: None,
        };
        Ok(Self {
            ctx: Context::new(config, ports),
            store,
            warehouse,
            state_dir: state_dir.to_path_buf(),
            bus_rx: Some(bus_rx),
            pending,
            unsettled: Arc::new(AtomicUsize::new(0)),
            observed: tokio::sync::broadcast::channel(4096).0,
        })
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
        let watcher = Watcher::new(self.store.clone(), buckets, options.watch_interval)
            .with_gauge(self.unsettled.clone());
        if options.watch_buckets {
            tasks.spawn(watcher.run(obj_tx));
        }
        {
            let ctx = ctx.clone();
            let pending = pending.clone();
            let max = options.max_deliveries;
            let permits = Arc::new(Semaphore::new(ARRIVALS_AT_ONCE));
            tasks.spawn(async move {
                while let Some(object) = obj_rx.recv().await {
                    pending.fetch_add(1, Ordering::SeqCst);
                    let ctx = ctx.clone();
                    let pending = pending.clone();
                    let permits = permits.clone();
                    tokio::spawn(async move {
                        deliver_limited(
                            &ctx,
                            StepName::Load,
                            Inbound::Object(object),
                            max,
                            Some(&permits),
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
            async move {
                while let Some(event) = bus_rx.recv().await {
                    let _ = observed.send(event.clone());
                    let ctx = ctx.clone();
                    let pending = pending.clone();
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
                            deliver(&ctx, StepName::Load, Inbound::Object(object), max).await;
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

/// Delivers `inbound` to `step` as a push subscription would: a transient failure is retried
/// with backoff (1 s doubling to 10 s) up to `max` deliveries, then recorded as failed (the
/// dead-letter topic of production); a rejection is recorded once.
async fn deliver(ctx: &Context, step: StepName, inbound: Inbound, max: u32) {
    deliver_limited(ctx, step, inbound, max, None).await;
}

/// [`deliver`], each attempt holding a permit of `permits` (none is held while waiting to
/// redeliver).
async fn deliver_limited(
    ctx: &Context,
    step: StepName,
    inbound: Inbound,
    max: u32,
    permits: Option<&Semaphore>,
) {
    let mut delay = Duration::from_millis(250);
    for delivery in 1..=max {
        let permit = match permits {
            // The semaphore is never closed.
            Some(p) => p.acquire().await.ok(),
            None => None,
        };
        let result = steps::handle(step, ctx, inbound.clone()).await;
        drop(permit);
        match result {
            Ok(_) => return,
            Err(StepError::Rejected(reason)) => {
                let body = describe_inbound(&inbound);
                if let Err(e) = steps::record_rejection(ctx, step, body.as_bytes(), &reason).await {
                    error!(step = %step, error = %e, "cannot record a rejection");
                }
                return;
            }
            Err(StepError::Transient(reason)) => {
                warn!(step = %step, delivery, error = %reason, "transient failure; redelivering");
                if delivery == max {
                    dead_letter(ctx, step, &inbound, &reason, max).await;
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
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
        if let Err(e) =
            steps::record_rejection(ctx, step, describe_inbound(inbound).as_bytes(), reason).await
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
                });
                let ctx2 = ctx.clone();
                tokio::spawn(async move { deliver(&ctx2, step, start, max).await });
                next.insert(p.name.to_string(), fire_after(now));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
