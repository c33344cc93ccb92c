//! The submit step with a recording bus and a counting batch engine: how a `for_each` job's
//! rows fan out.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::config::BatchSpec;
use crate::event::{ConveyorEvent, EventType, Status, StepName};
use crate::inbound::{Inbound, Origin, StartRequest};
use crate::names::{JobId, PipelineName};
use crate::ports::{BatchEngine, BatchRequest, EventBus, JobState, PortError, Ports, Submitted};
use crate::steps::{Context, handle};

#[derive(Default)]
struct Recorder(Mutex<Vec<ConveyorEvent>>);

#[async_trait]
impl EventBus for Recorder {
    async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError> {
        self.0.lock().expect("lock").push(event.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Counter(Mutex<Vec<BatchRequest>>);

#[async_trait]
impl BatchEngine for Counter {
    async fn submit(&self, req: &BatchRequest) -> Result<Submitted, PortError> {
        self.0.lock().expect("lock").push(req.clone());
        Ok(Submitted {
            job_id: req.job_id.clone(),
            adopted: false,
        })
    }
    async fn state(&self, _: &BatchSpec, _: &JobId) -> Result<JobState, PortError> {
        Err(PortError::permanent("not followed here"))
    }
    async fn cancel(&self, _: &BatchSpec, _: &JobId) -> Result<(), PortError> {
        Ok(())
    }
}

const ROWS: usize = 300;

fn context() -> (Context, Arc<Recorder>, Arc<Counter>) {
    let rows: Vec<String> = (0..ROWS)
        .map(|i| format!("{{unit: u{i}, active: {}}}", i % 3 != 0))
        .collect();
    let yaml = format!(
        "pipelines:\n  - name: units\n    trigger: {{ manual: true }}\n    jobs:\n      - name: per_unit\n        engine: local\n        command: \"run {{unit}}\"\n        for_each: {{ rows: [{}] }}\n",
        rows.join(", ")
    );
    let config = crate::config::parse_str(&yaml, "t.yaml").expect("config");
    let bus = Arc::new(Recorder::default());
    let batch = Arc::new(Counter::default());
    let ports = Ports {
        bus: bus.clone(),
        batch: batch.clone(),
        ..Ports::unwired()
    };
    (Context::new(Arc::new(config), ports), bus, batch)
}

fn start() -> Inbound {
    Inbound::Start(StartRequest {
        pipeline: Some(PipelineName::parse("units").expect("name")),
        origin: Origin::Manual,
        at: chrono::Utc::now(),
        key: Some("k1".to_owned()),
        date: None,
    })
}

#[tokio::test]
async fn starting_a_for_each_job_queues_its_rows_and_submits_no_batch_in_that_request() {
    let (ctx, bus, batch) = context();
    handle(StepName::Submit, &ctx, start())
        .await
        .expect("start");
    assert!(
        batch.0.lock().expect("lock").is_empty(),
        "the starting request submitted batches itself"
    );
    let events = bus.0.lock().expect("lock").clone();
    let active = (0..ROWS).filter(|i| i % 3 != 0).count();
    let queued: Vec<&ConveyorEvent> = events
        .iter()
        .filter(|e| e.kind == EventType::RowQueued)
        .collect();
    assert_eq!(queued.len(), active, "one event per active row");
    let group = events
        .iter()
        .position(|e| e.kind == EventType::BatchRunning)
        .expect("the job's RUNNING event");
    assert_eq!(group, 0, "the job lists its rows before any row is queued");
    assert_eq!(events[group].detail.children.len(), active);
    let runs: std::collections::BTreeSet<_> = queued.iter().map(|e| e.run_id.clone()).collect();
    assert_eq!(runs.len(), active, "each row is its own run");
    assert!(
        events[group]
            .detail
            .children
            .iter()
            .all(|c| runs.contains(&c.run_id)),
        "the rows queued are the rows the job waits for"
    );
}

#[tokio::test]
async fn each_queued_row_submits_exactly_its_own_batch() {
    let (ctx, bus, batch) = context();
    handle(StepName::Submit, &ctx, start())
        .await
        .expect("start");
    let queued: Vec<ConveyorEvent> = bus
        .0
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e.kind == EventType::RowQueued)
        .cloned()
        .collect();
    let row = queued[5].clone();
    bus.0.lock().expect("lock").clear();
    handle(
        StepName::Submit,
        &ctx,
        Inbound::Event(Box::new(row.clone())),
    )
    .await
    .expect("row");
    let submitted = batch.0.lock().expect("lock").clone();
    assert_eq!(submitted.len(), 1);
    assert_eq!(submitted[0].run_id, row.run_id);
    assert_eq!(submitted[0].attempt, 1);
    assert_eq!(
        submitted[0].vars.get("unit"),
        row.detail.row.get("unit"),
        "the row's columns reach its batch"
    );
    let published = bus.0.lock().expect("lock").clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].kind, EventType::BatchSubmitted);
    assert_eq!(published[0].status, Status::Submitted);
    assert_eq!(published[0].run_id, row.run_id);
    // A redelivered row submits the same deterministic job id again (the engine adopts it).
    handle(StepName::Submit, &ctx, Inbound::Event(Box::new(row)))
        .await
        .expect("redelivered row");
    let again = batch.0.lock().expect("lock").clone();
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].job_id, again[1].job_id);
}

#[tokio::test]
async fn a_queued_row_naming_a_job_without_for_each_is_refused() {
    let (ctx, bus, _) = context();
    handle(StepName::Submit, &ctx, start())
        .await
        .expect("start");
    let mut row = bus
        .0
        .lock()
        .expect("lock")
        .iter()
        .find(|e| e.kind == EventType::RowQueued)
        .cloned()
        .expect("a row");
    row.detail.job = Some("no_such_job".to_owned());
    let e = handle(StepName::Submit, &ctx, Inbound::Event(Box::new(row)))
        .await
        .expect_err("refused");
    assert!(e.to_string().contains("no job \"no_such_job\""), "{e}");
}

/// A start request as Pub/Sub pushes it: `data` is `{"pipeline": "units"}`.
fn pushed_start(message_id: &str) -> String {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(br#"{"pipeline":"units"}"#);
    format!(
        r#"{{"subscription":"projects/p/subscriptions/s","message":{{"data":"{data}","messageId":"{message_id}","publishTime":"2026-12-01T00:00:00Z"}}}}"#
    )
}

/// The run a delivery of `body` starts, when it is received `later` after now.
fn run_of_delivery(ctx: &Context, body: &str, later: chrono::Duration) -> crate::names::RunId {
    let (_, parsed) = crate::inbound::parse_http(&http::HeaderMap::new(), body.as_bytes());
    let Ok(Inbound::Start(mut start)) = parsed else {
        panic!("not a start request: {parsed:?}")
    };
    start.at += later;
    let pipeline = ctx.config.pipeline("units").expect("pipeline");
    super::start_run_id(pipeline, &start)
}

#[test]
fn a_start_pushed_through_pubsub_and_redelivered_a_minute_later_is_the_same_run() {
    let (ctx, _, _) = context();
    let first = run_of_delivery(&ctx, &pushed_start("1001"), chrono::Duration::zero());
    let redelivered = run_of_delivery(&ctx, &pushed_start("1001"), chrono::Duration::seconds(61));
    let an_hour_later = run_of_delivery(&ctx, &pushed_start("1001"), chrono::Duration::hours(1));
    assert_eq!(
        first, redelivered,
        "a redelivery a minute later starts another run"
    );
    assert_eq!(first, an_hour_later);
    let other = run_of_delivery(&ctx, &pushed_start("1002"), chrono::Duration::zero());
    assert_ne!(first, other, "two messages are two runs");
}

#[test]
fn a_callers_key_and_a_replayed_messages_original_id_name_the_run() {
    use base64::Engine as _;
    let (ctx, _, _) = context();
    let data =
        base64::engine::general_purpose::STANDARD.encode(br#"{"pipeline":"units","key":"k1"}"#);
    let keyed = |id: &str| {
        format!(r#"{{"subscription":"s","message":{{"data":"{data}","messageId":"{id}"}}}}"#)
    };
    assert_eq!(
        run_of_delivery(&ctx, &keyed("1"), chrono::Duration::zero()),
        run_of_delivery(&ctx, &keyed("2"), chrono::Duration::zero()),
        "the caller's key wins over the message id"
    );
    let plain = base64::engine::general_purpose::STANDARD.encode(br#"{"pipeline":"units"}"#);
    let replay = format!(
        r#"{{"subscription":"s","message":{{"data":"{plain}","messageId":"9001","attributes":{{"conveyor-replay-of":"1001"}}}}}}"#
    );
    assert_eq!(
        run_of_delivery(&ctx, &replay, chrono::Duration::hours(5)),
        run_of_delivery(&ctx, &pushed_start("1001"), chrono::Duration::zero()),
        "a replayed dead letter is the run of the message it replays"
    );
}

/// The events a step publishes carry its context's clock's time, not the wall clock's.
#[tokio::test]
async fn the_events_of_a_start_carry_the_contexts_clock() {
    use chrono::TimeZone;
    let (mut ctx, bus, _) = context();
    let t = chrono::Utc
        .timestamp_opt(1_700_000_000, 0)
        .single()
        .expect("time");
    ctx.clock = Arc::new(crate::clock::ManualClock::new(t));
    handle(StepName::Submit, &ctx, start())
        .await
        .expect("start");
    let events = bus.0.lock().expect("lock").clone();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e.time == t), "{events:?}");
}

#[test]
fn a_daily_schedule_a_dated_trigger_and_a_backfill_name_one_run_per_date_in_the_schedules_zone() {
    let yaml = r#"
pipelines:
  - name: tokyo
    trigger: { manual: true, schedule: { cron: "0 1 * * *", time_zone: Asia/Tokyo } }
    batch: { engine: local, command: "true" }
  - name: hourly
    trigger: { manual: true, schedule: { cron: "0 * * * *" } }
    batch: { engine: local, command: "true" }
"#;
    let config = crate::config::parse_str(yaml, "t.yaml").expect("config");
    let tokyo = config.pipeline("tokyo").expect("tokyo");
    let hourly = config.pipeline("hourly").expect("hourly");
    let at = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&chrono::Utc)
    };
    let start = |origin, t: &str, date: Option<&str>| StartRequest {
        pipeline: None,
        origin,
        at: at(t),
        key: None,
        date: date.map(|d| d.parse().expect("date")),
    };
    // 01:00 in Tokyo on the 21st is 16:00 UTC on the 20th: the run is the 21st's.
    let tick = start(Origin::Schedule, "2026-11-20T16:00:00Z", None);
    assert_eq!(super::run_date(tokyo, &tick), "2026-11-21");
    let trigger = start(Origin::Manual, "2026-12-01T09:13:00Z", Some("2026-11-21"));
    assert_eq!(super::run_date(tokyo, &trigger), "2026-11-21");
    assert_eq!(
        super::start_run_id(tokyo, &tick),
        super::start_run_id(tokyo, &trigger),
        "the tick of a daily schedule and a trigger of its date are one run"
    );
    let other_day = start(Origin::Manual, "2026-12-01T09:13:00Z", Some("2026-11-22"));
    assert_ne!(
        super::start_run_id(tokyo, &tick),
        super::start_run_id(tokyo, &other_day)
    );
    // A schedule firing hourly keeps one run per tick.
    let t1 = start(Origin::Schedule, "2026-11-20T16:00:00Z", None);
    let t2 = start(Origin::Schedule, "2026-11-20T17:00:00Z", None);
    assert_ne!(
        super::start_run_id(hourly, &t1),
        super::start_run_id(hourly, &t2)
    );
    assert_eq!(super::run_date(hourly, &t2), "2026-11-20");
}

/// `max_active_runs`: a run log in memory that the test fills from the bus, as the log step
/// does (asynchronously: nothing of a burst is in it when the burst is decided).
mod max_active_runs {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::Counter;
    use super::Recorder;
    use crate::event::{Detail, EventType, Status, StepName};
    use crate::inbound::{Inbound, Origin, StartRequest};
    use crate::names::{BucketName, PipelineName, TableRef};
    use crate::ports::{PortError, Ports, RunLog, RunLogQuery, RunLogRow};
    use crate::steps::{Context, Outcome, handle};
    use crate::testing::MemoryStore;

    #[derive(Default)]
    struct Log(Mutex<Vec<RunLogRow>>);

    #[async_trait]
    impl RunLog for Log {
        async fn record(&self, _: &TableRef, row: &RunLogRow) -> Result<(), PortError> {
            self.0.lock().expect("lock").push(row.clone());
            Ok(())
        }
        async fn rows(&self, _: &TableRef, q: &RunLogQuery) -> Result<Vec<RunLogRow>, PortError> {
            Ok(self
                .0
                .lock()
                .expect("lock")
                .iter()
                .filter(|r| q.pipeline.is_none() || r.pipeline == q.pipeline)
                .cloned()
                .collect())
        }
        async fn open_batches(
            &self,
            _: &TableRef,
            _: DateTime<Utc>,
        ) -> Result<Vec<RunLogRow>, PortError> {
            Ok(Vec::new())
        }
    }

    struct Fixture {
        ctx: Context,
        bus: Arc<Recorder>,
        batch: Arc<Counter>,
        log: Arc<Log>,
    }

    impl Fixture {
        fn new() -> Self {
            let yaml = "pipelines:\n  - name: nightly\n    max_active_runs: 2\n    trigger: { manual: true }\n    jobs:\n      - { name: work, engine: local, command: \"true\" }\n";
            let config = crate::config::parse_str(yaml, "t.yaml").expect("config");
            let bus = Arc::new(Recorder::default());
            let batch = Arc::new(Counter::default());
            let log = Arc::new(Log::default());
            let ports = Ports {
                bus: bus.clone(),
                batch: batch.clone(),
                run_log: log.clone(),
                store: Arc::new(MemoryStore::default()),
                ..Ports::unwired()
            };
            let mut ctx = Context::new(Arc::new(config), ports);
            ctx.options.state_bucket = Some(BucketName::parse("state").expect("bucket"));
            Self {
                ctx,
                bus,
                batch,
                log,
            }
        }

        /// What the log step would have written by now: a row per event published.
        fn log_everything(&self) {
            let rows: Vec<RunLogRow> = self
                .bus
                .0
                .lock()
                .expect("lock")
                .drain(..)
                .map(|e| crate::steps::log::row_for(&e, "test"))
                .collect();
            self.log.0.lock().expect("lock").extend(rows);
        }

        /// The dates of the runs whose batch was submitted, in submit order.
        fn submitted(&self) -> Vec<String> {
            self.batch
                .0
                .lock()
                .expect("lock")
                .iter()
                .map(|r| r.vars.get("date").cloned().unwrap_or_default())
                .collect()
        }

        fn run_of(&self, date: &str) -> crate::names::RunId {
            let pipeline = &self.ctx.config.pipelines[0];
            let Inbound::Start(s) = start(date) else {
                unreachable!("a start")
            };
            super::super::start_run_id(pipeline, &s)
        }

        async fn end(&self, date: &str) -> Outcome {
            let mut outcome = Outcome::default();
            let base = Detail {
                vars: [("date".to_owned(), date.to_owned())].into(),
                ..Detail::default()
            };
            super::super::end_run(
                &self.ctx,
                &self.ctx.config.pipelines[0],
                &self.run_of(date),
                Status::Succeeded,
                base,
                &mut outcome,
            )
            .await
            .expect("end");
            outcome
        }
    }

    fn start(date: &str) -> Inbound {
        Inbound::Start(StartRequest {
            pipeline: Some(PipelineName::parse("nightly").expect("name")),
            origin: Origin::Manual,
            at: Utc::now(),
            key: None,
            date: Some(date.parse().expect("date")),
        })
    }

    const DATES: [&str; 6] = [
        "2026-11-01",
        "2026-11-02",
        "2026-11-03",
        "2026-11-04",
        "2026-11-05",
        "2026-11-06",
    ];

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_of_starts_takes_at_most_max_active_runs_slots_and_the_rest_start_in_date_order()
     {
        let f = Fixture::new();
        let starts = DATES.map(|d| {
            let ctx = f.ctx.clone();
            tokio::spawn(async move { handle(StepName::Submit, &ctx, start(d)).await })
        });
        for s in starts {
            s.await.expect("join").expect("start");
        }
        let running = f.submitted();
        assert_eq!(
            running.len(),
            2,
            "six starts at once, max_active_runs 2: {running:?} submitted"
        );
        let queued: BTreeSet<String> = f
            .bus
            .0
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e.kind == EventType::RunQueued)
            .map(|e| e.detail.vars.get("date").cloned().unwrap_or_default())
            .collect();
        assert_eq!(queued.len(), 4, "the other four are queued: {queued:?}");

        // A redelivered start of a running run keeps its slot: nothing else starts.
        f.log_everything();
        handle(StepName::Submit, &f.ctx, start(&running[0]))
            .await
            .expect("redelivery");
        assert_eq!(
            f.submitted().len(),
            3,
            "the redelivery submits its own batch again"
        );
        assert_eq!(f.submitted()[2], running[0]);

        // One run ends: its slot goes to the oldest queued run, and only to it.
        f.log_everything();
        f.end(&running[0]).await;
        let oldest: Vec<&String> = queued.iter().collect();
        assert_eq!(f.submitted()[3..], [oldest[0].clone()]);

        // The other run ends without giving its slot back (ended by a timeout, say): its
        // slot is stale once the run log shows the end, and the poll tick's sweep takes it
        // over for the next queued run.
        f.log_everything();
        let ctx = &f.ctx;
        let ev = ctx.event(
            EventType::RunFinished,
            f.run_of(&running[1]),
            Some(ctx.config.pipelines[0].name.clone()),
            StepName::Submit,
            1,
            Status::TimedOut,
            Detail {
                vars: [("date".to_owned(), running[1].clone())].into(),
                ..Detail::default()
            },
        );
        f.log
            .0
            .lock()
            .expect("lock")
            .push(crate::steps::log::row_for(&ev, "test"));
        let mut outcome = Outcome::default();
        let started = super::super::sweep_queued(ctx, &mut outcome)
            .await
            .expect("sweep");
        assert_eq!(started, 1);
        assert_eq!(f.submitted()[4..], [oldest[1].clone()]);
        f.log_everything();
        let mut outcome = Outcome::default();
        assert_eq!(
            super::super::sweep_queued(ctx, &mut outcome)
                .await
                .expect("sweep"),
            0,
            "two runs going: no slot is free"
        );
    }
}
