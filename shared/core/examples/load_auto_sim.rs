//! The simulation of `load.batch: { auto: true }` behind `scripts/bench-load-auto.sh`: N
//! arrivals spread over a simulated day into one table, each through the real load step
//! (`steps::handle(Load, …)`), with the poll tick (`steps::handle(Poll, …)`) every simulated
//! minute as Cloud Scheduler runs it. The clock is the context's [`ManualClock`], set to each
//! arrival's and tick's time; the ports are in memory: an object store (a sorted map, so a
//! listing reads only its prefix), a warehouse whose load jobs are DONE when inserted (it
//! keeps each job's sources and the simulated time), a run log and a bus that keep nothing.
//!
//! Prints one line of `key=value` figures: arrivals, load jobs, objects loaded, objects
//! loaded more than once, objects never loaded, arrival → DONE delay (p50, p99, max, in
//! simulated seconds). It exits non-zero when the loaded objects are not exactly the
//! arrivals, each once, or when the jobs exceed BigQuery's 1,500 a day.
//!
//! `cargo run --release -p conveyor-core --example load_auto_sim -- ARRIVALS [SECONDS]`
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone as _, Utc};
use conveyor_core::clock::{Clock as _, ManualClock};
use conveyor_core::config;
use conveyor_core::event::{ConveyorEvent, ObjectRef, StepName};
use conveyor_core::inbound::{Inbound, Origin, StartRequest};
use conveyor_core::names::{BucketName, JobId, ObjectName, TableRef};
use conveyor_core::ports::{
    ByteStream, EventBus, LoadJob, LoadState, LoadStatus, ObjectMeta, ObjectStore, PortError,
    Ports, RunLog, RunLogQuery, RunLogRow, Warehouse,
};
use conveyor_core::steps::{self, Context};
use tokio::io::AsyncReadExt as _;

/// An object: its name, body and generation.
type Stored = (ObjectName, Arc<Vec<u8>>, u64);

/// One bucket's objects by name.
#[derive(Default)]
struct Store {
    objects: Mutex<BTreeMap<String, Stored>>,
    next: Mutex<u64>,
}

fn meta(bucket: &BucketName, name: &ObjectName, size: usize, generation: u64) -> ObjectMeta {
    ObjectMeta {
        object: ObjectRef {
            bucket: bucket.clone(),
            name: name.clone(),
            generation: generation.to_string(),
            size: Some(size as u64),
        },
        etag: generation.to_string(),
        updated: DateTime::UNIX_EPOCH,
    }
}

#[async_trait]
impl ObjectStore for Store {
    async fn put(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        mut body: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        let mut buf = Vec::new();
        body.read_to_end(&mut buf)
            .await
            .map_err(|e| PortError::transient(e.to_string()))?;
        let generation = {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            *n
        };
        let m = meta(bucket, name, buf.len(), generation);
        self.objects.lock().unwrap().insert(
            name.as_str().to_owned(),
            (name.clone(), Arc::new(buf), generation),
        );
        Ok(m)
    }
    async fn open(&self, _: &BucketName, name: &ObjectName) -> Result<ByteStream, PortError> {
        let body = self
            .objects
            .lock()
            .unwrap()
            .get(name.as_str())
            .map(|(_, b, _)| b.clone())
            .ok_or_else(|| PortError::not_found(name.to_string()))?;
        Ok(Box::pin(std::io::Cursor::new(body.to_vec())))
    }
    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(name.as_str())
            .map(|(n, b, g)| meta(bucket, n, b.len(), *g)))
    }
    async fn list(&self, bucket: &BucketName, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, (n, b, g))| meta(bucket, n, b.len(), *g))
            .collect())
    }
    async fn delete(
        &self,
        _: &BucketName,
        name: &ObjectName,
        generation: Option<&str>,
    ) -> Result<bool, PortError> {
        let mut objects = self.objects.lock().unwrap();
        match objects.get(name.as_str()) {
            Some((_, _, g)) if generation.is_none_or(|want| want == g.to_string()) => {
                objects.remove(name.as_str());
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn create_new(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError> {
        if self.objects.lock().unwrap().contains_key(name.as_str()) {
            return Ok(None);
        }
        self.put(bucket, name, body).await.map(Some)
    }
}

/// When a job was inserted (simulated), and its sources' names.
type Inserted = (DateTime<Utc>, Vec<String>);

/// Load jobs, DONE when inserted: each job's sources and the simulated time it was inserted.
struct Jobs {
    clock: Arc<ManualClock>,
    jobs: Mutex<HashMap<JobId, Inserted>>,
}

#[async_trait]
impl Warehouse for Jobs {
    async fn load(&self, job: &LoadJob, _: Duration) -> Result<LoadStatus, PortError> {
        let mut jobs = self.jobs.lock().unwrap();
        let adopted = jobs.contains_key(&job.job_id);
        if !adopted {
            let names = job.sources.iter().map(|s| s.name.to_string()).collect();
            jobs.insert(job.job_id.clone(), (self.clock.now(), names));
        }
        Ok(LoadStatus {
            state: LoadState::Done {
                rows: job.sources.len() as u64,
            },
            adopted,
        })
    }
    async fn load_state(&self, id: &JobId) -> Result<LoadStatus, PortError> {
        match self.jobs.lock().unwrap().get(id) {
            Some((_, s)) => Ok(LoadStatus {
                state: LoadState::Done {
                    rows: s.len() as u64,
                },
                adopted: true,
            }),
            None => Err(PortError::not_found("no such job")),
        }
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

/// A bus that keeps only the loads' `batch` notes: how many said "at once", and the last
/// window's.
#[derive(Default)]
struct Notes {
    at_once: Mutex<usize>,
    last_window: Mutex<String>,
}

#[async_trait]
impl EventBus for Notes {
    async fn publish(&self, e: &ConveyorEvent) -> Result<(), PortError> {
        if let Some(note) = e.detail.vars.get("batch") {
            if note.starts_with("auto: at once") {
                *self.at_once.lock().unwrap() += 1;
            } else {
                note.clone_into(&mut self.last_window.lock().unwrap());
            }
        }
        Ok(())
    }
}

/// A run log that keeps nothing (the tick reads no open job from it: every load is DONE
/// when inserted).
struct Nothing;

#[async_trait]
impl RunLog for Nothing {
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
        Ok(Vec::new())
    }
}

const CONFIG: &str = r#"
pipelines:
  - name: feed
    trigger: { object: { bucket: landing, pattern: "events/*.csv" } }
    load: { table: raw.events, format: CSV, schema: autodetect, batch: { auto: true } }
"#;

/// A small deterministic generator (xorshift64*), so a run is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let arrivals: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seconds: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(86_400);
    // A day that starts on a whole number of 62 s windows, in 2026.
    let t0: i64 = 62 * 28_500_000;
    let at = |s: i64| Utc.timestamp_opt(t0 + s, 0).single().unwrap();
    let clock = Arc::new(ManualClock::new(at(0)));
    let store = Arc::new(Store::default());
    let notes = Arc::new(Notes::default());
    let jobs = Arc::new(Jobs {
        clock: clock.clone(),
        jobs: Mutex::new(HashMap::new()),
    });
    let ports = Ports {
        store: store.clone(),
        warehouse: jobs.clone(),
        bus: notes.clone(),
        run_log: Arc::new(Nothing),
        ..Ports::unwired()
    };
    let config = Arc::new(config::parse_str(CONFIG, "sim.yaml").expect("config"));
    let mut ctx = Context::new(config, ports);
    ctx.clock = clock.clone();
    let bucket = BucketName::parse("landing").unwrap();

    // Arrival times: uniform over the day, in order.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut times: Vec<i64> = (0..arrivals)
        .map(|_| (rng.next() % seconds as u64) as i64)
        .collect();
    times.sort_unstable();

    let tick = |s: i64| {
        Inbound::Start(StartRequest {
            pipeline: None,
            origin: Origin::Schedule,
            at: at(s),
            key: None,
            date: None,
        })
    };
    let mut arrived: HashMap<String, i64> = HashMap::with_capacity(arrivals);
    let mut next_tick = 60;
    for (i, t) in times.iter().copied().enumerate() {
        while next_tick <= t {
            clock.set(at(next_tick));
            steps::handle(StepName::Poll, &ctx, tick(next_tick))
                .await
                .expect("tick");
            next_tick += 60;
        }
        clock.set(at(t));
        let name = format!("events/{i:07}.csv");
        let object = store
            .put(
                &bucket,
                &ObjectName::parse(&name).unwrap(),
                Box::pin(std::io::Cursor::new(b"1\n".to_vec())),
            )
            .await
            .expect("put");
        steps::handle(StepName::Load, &ctx, Inbound::Object(object.object))
            .await
            .expect("arrival");
        arrived.insert(name, t);
    }
    // The ticks after the last arrival, until every window has closed.
    let end = next_tick + 2 * 62;
    while next_tick <= end {
        clock.set(at(next_tick));
        steps::handle(StepName::Poll, &ctx, tick(next_tick))
            .await
            .expect("tick");
        next_tick += 60;
    }

    let jobs = jobs.jobs.lock().unwrap();
    let mut loaded: HashMap<&str, usize> = HashMap::with_capacity(arrivals);
    let mut delays = Vec::with_capacity(arrivals);
    // The longest delay and its arrival's time.
    let mut longest = (0i64, 0i64);
    let mut files_per_job: Vec<usize> = Vec::with_capacity(jobs.len());
    for (done, names) in jobs.values() {
        files_per_job.push(names.len());
        for n in names {
            *loaded.entry(n.as_str()).or_default() += 1;
            if let Some(t) = arrived.get(n) {
                let delay = done.timestamp() - t0 - t;
                if delay > longest.0 {
                    longest = (delay, *t);
                }
                delays.push(delay);
            }
        }
    }
    delays.sort_unstable();
    files_per_job.sort_unstable();
    let twice = loaded.values().filter(|&&c| c > 1).count();
    let strangers = loaded.keys().filter(|n| !arrived.contains_key(**n)).count();
    let never = arrived
        .keys()
        .filter(|n| !loaded.contains_key(n.as_str()))
        .count();
    let quota = (config::LOAD_JOBS_PER_TABLE_PER_DAY * seconds as u64).div_ceil(86_400) as usize;
    println!(
        "arrivals={arrivals} seconds={seconds} load_jobs={} quota={quota} at_once_jobs={} loaded={} loaded_twice={twice} never_loaded={never} not_arrived={strangers} delay_p50_s={} delay_p99_s={} delay_max_s={} (arrived at {}s, last arrival {}s) files_per_job_median={} files_per_job_max={} last_window_note=\"{}\"",
        jobs.len(),
        *notes.at_once.lock().unwrap(),
        loaded.len(),
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        longest.0,
        longest.1,
        times.last().copied().unwrap_or(0),
        percentile(
            &files_per_job.iter().map(|&n| n as i64).collect::<Vec<_>>(),
            0.5
        ),
        files_per_job.last().copied().unwrap_or(0),
        notes.last_window.lock().unwrap(),
    );
    if twice > 0 || never > 0 || strangers > 0 || loaded.len() != arrivals {
        eprintln!("FAILED: the loaded objects are not the arrivals, each once");
        std::process::exit(1);
    }
    if jobs.len() > quota {
        eprintln!(
            "FAILED: {} load jobs, over the quota of {quota}",
            jobs.len()
        );
        std::process::exit(1);
    }
}
