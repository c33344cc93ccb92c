//! The simulation of `load.batch: { auto: true }` behind `scripts/bench-load-auto.sh`: N
//! arrivals spread over a simulated day into one table, each through the real load step
//! (`steps::handle(Load, …)`), with the poll tick (`steps::handle(Poll, …)`) every simulated
//! minute as Cloud Scheduler runs it. The clock is the context's [`ManualClock`], set to each
//! arrival's and tick's time. The warehouse is the Google adapter (`conveyor_gcp::BigQuery`,
//! anonymous auth, its endpoint on a loopback server) talking to an in-process fake of
//! BigQuery's `jobs.insert` / `jobs.get` behind the contract recorder (`conveyor_contract`:
//! with `CONVEYOR_CONTRACT_DIR` set, every exchange is written there for `contract-check`).
//! The fake answers as BigQuery does: a new job DONE with `statistics.load.outputRows`, a
//! repeated job id 409 `duplicate`, an unknown job 404; it keeps each job's
//! `configuration.load.sourceUris` as the request carried them and the simulated time of its
//! insert. The object store, run log and bus are in memory: a sorted map (a listing reads
//! only its prefix), a run log and a bus that keep nothing.
//!
//! Prints one line of `key=value` figures: arrivals, load jobs, objects loaded (read from
//! the `sourceUris` that reached the fake), objects loaded more than once, objects never
//! loaded, arrival → DONE delay (p50, p99, max, in simulated seconds), the REST calls. It
//! exits non-zero when the loaded objects are not exactly the arrivals, each once, or when
//! the jobs exceed BigQuery's 1,500 a day.
//!
//! `cargo run --release -p conveyor-e2e --example load_auto_sim -- ARRIVALS [SECONDS [N]]`:
//! with N > 0, every Nth arrival's event and every Nth tick is delivered twice, as Pub/Sub
//! may (a repeated job id then reaches the fake, which answers 409).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use chrono::{DateTime, TimeZone as _, Utc};
use conveyor_contract::Recording;
use conveyor_core::clock::{Clock as _, ManualClock};
use conveyor_core::config;
use conveyor_core::event::{ConveyorEvent, ObjectRef, StepName};
use conveyor_core::inbound::{Inbound, Origin, StartRequest};
use conveyor_core::names::{BucketName, ObjectName, TableRef};
use conveyor_core::ports::{
    ByteStream, EventBus, ObjectMeta, ObjectStore, PortError, Ports, RunLog, RunLogQuery, RunLogRow,
};
use conveyor_core::steps::{self, Context};
use conveyor_gcp::{BigQuery, GcpAuth};
use serde_json::{Value, json};
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

/// When a job was inserted (simulated time), and its `sourceUris`.
type Inserted = (DateTime<Utc>, Vec<String>);

/// The fake BigQuery: its jobs by id (the resource `jobs.get` answers, and what the
/// simulation reads), and counts of the calls it answered.
struct Fake {
    clock: Arc<ManualClock>,
    jobs: Mutex<HashMap<String, (Inserted, Value)>>,
    inserts: AtomicUsize,
    conflicts: AtomicUsize,
    gets: AtomicUsize,
    other: AtomicUsize,
}

/// BigQuery's error body.
fn error(code: u16, status: &str, reason: &str, message: String) -> (StatusCode, String) {
    let body = json!({"error": {
        "code": code,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
        "status": status,
    }});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
}

/// `jobs.insert` (`POST …/projects/{p}/jobs`) and `jobs.get` (`GET …/projects/{p}/jobs/{id}`).
async fn bigquery(
    State(f): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path();
    let (status, text) = if method == Method::POST && path == "/bigquery/v2/projects/p/jobs" {
        insert(&f, &body)
    } else if let (true, Some(id)) = (
        method == Method::GET,
        path.strip_prefix("/bigquery/v2/projects/p/jobs/"),
    ) {
        f.gets.fetch_add(1, Ordering::Relaxed);
        match f.jobs.lock().unwrap().get(id) {
            Some((_, job)) => (StatusCode::OK, job.to_string()),
            None => error(
                404,
                "NOT_FOUND",
                "notFound",
                format!("Not found: Job p:{id}"),
            ),
        }
    } else {
        f.other.fetch_add(1, Ordering::Relaxed);
        error(404, "NOT_FOUND", "notFound", format!("Not found: {path}"))
    };
    (
        status,
        [("content-type", "application/json; charset=UTF-8")],
        text,
    )
}

fn insert(f: &Fake, body: &[u8]) -> (StatusCode, String) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(400, "INVALID_ARGUMENT", "invalid", "Parse error".into());
    };
    let Some(id) = req.pointer("/jobReference/jobId").and_then(Value::as_str) else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "invalid",
            "Job ID is missing".into(),
        );
    };
    let Some(uris) = req
        .pointer("/configuration/load/sourceUris")
        .and_then(Value::as_array)
    else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "invalid",
            "Load configuration must specify at least one source URI".into(),
        );
    };
    let uris: Vec<String> = uris
        .iter()
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect();
    let mut jobs = f.jobs.lock().unwrap();
    if jobs.contains_key(id) {
        f.conflicts.fetch_add(1, Ordering::Relaxed);
        return error(
            409,
            "ALREADY_EXISTS",
            "duplicate",
            format!("Already Exists: Job p:US.{id}"),
        );
    }
    f.inserts.fetch_add(1, Ordering::Relaxed);
    let now = f.clock.now();
    let ms = now.timestamp_millis().to_string();
    // Every file is one row of two bytes ("1\n").
    let files = uris.len();
    let job = json!({
        "kind": "bigquery#job",
        "id": format!("p:US.{id}"),
        "selfLink": format!("https://bigquery.googleapis.com/bigquery/v2/projects/p/jobs/{id}?location=US"),
        "jobReference": {"projectId": "p", "jobId": id, "location": "US"},
        "configuration": req.get("configuration").cloned().unwrap_or(Value::Null),
        "status": {"state": "DONE"},
        "statistics": {
            "creationTime": ms,
            "startTime": ms,
            "endTime": ms,
            "load": {
                "inputFiles": files.to_string(),
                "inputFileBytes": (2 * files).to_string(),
                "outputRows": files.to_string(),
                "outputBytes": (8 * files).to_string(),
                "badRecords": "0",
            },
        },
    });
    let text = job.to_string();
    jobs.insert(id.to_owned(), ((now, uris), job));
    (StatusCode::OK, text)
}

/// Serves the fake on a loopback port behind the contract recorder; BigQuery's base URL on it.
async fn serve(fake: Arc<Fake>) -> String {
    let recording = Recording::new("bigquery fake (load_auto_sim)", &["bigquery"], true);
    let app = conveyor_contract::record::layer(
        Router::new().fallback(bigquery).with_state(fake),
        &recording,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/bigquery/v2",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
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
    // Pub/Sub delivers at least once: with N > 0, every Nth arrival's event and every Nth
    // tick is handled a second time right after the first (an ack that was lost).
    let redeliver: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let again = |i: usize| redeliver > 0 && i.is_multiple_of(redeliver);
    // A day that starts on a whole number of 62 s windows, in 2026.
    let t0: i64 = 62 * 28_500_000;
    let at = |s: i64| Utc.timestamp_opt(t0 + s, 0).single().unwrap();
    let clock = Arc::new(ManualClock::new(at(0)));
    let store = Arc::new(Store::default());
    let notes = Arc::new(Notes::default());
    let fake = Arc::new(Fake {
        clock: clock.clone(),
        jobs: Mutex::new(HashMap::new()),
        inserts: AtomicUsize::new(0),
        conflicts: AtomicUsize::new(0),
        gets: AtomicUsize::new(0),
        other: AtomicUsize::new(0),
    });
    let url = serve(fake.clone()).await;
    let warehouse = Arc::new(BigQuery::new("p", None, Some(&url), &GcpAuth::Anonymous));
    let ports = Ports {
        store: store.clone(),
        warehouse,
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
    let poll = |s: i64| {
        let (clock, ctx, tick, again) = (&clock, &ctx, &tick, &again);
        async move {
            clock.set(at(s));
            let times = if again(s as usize / 60) { 2 } else { 1 };
            for _ in 0..times {
                steps::handle(StepName::Poll, ctx, tick(s))
                    .await
                    .expect("tick");
            }
        }
    };
    for (i, t) in times.iter().copied().enumerate() {
        while next_tick <= t {
            poll(next_tick).await;
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
        if again(i) {
            steps::handle(StepName::Load, &ctx, Inbound::Object(object.object.clone()))
                .await
                .expect("arrival");
        }
        steps::handle(StepName::Load, &ctx, Inbound::Object(object.object))
            .await
            .expect("arrival");
        arrived.insert(name, t);
    }
    // The ticks after the last arrival, until every window has closed.
    let end = next_tick + 2 * 62;
    while next_tick <= end {
        poll(next_tick).await;
        next_tick += 60;
    }

    let jobs = fake.jobs.lock().unwrap();
    let mut loaded: HashMap<&str, usize> = HashMap::with_capacity(arrivals);
    let mut delays = Vec::with_capacity(arrivals);
    // The longest delay and its arrival's time.
    let mut longest = (0i64, 0i64);
    let mut files_per_job: Vec<usize> = Vec::with_capacity(jobs.len());
    for ((done, uris), _) in jobs.values() {
        files_per_job.push(uris.len());
        for uri in uris {
            let n = uri.strip_prefix("gs://landing/").unwrap_or(uri);
            *loaded.entry(n).or_default() += 1;
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
        "arrivals={arrivals} seconds={seconds} redeliver_every={redeliver} load_jobs={} quota={quota} at_once_jobs={} loaded={} loaded_twice={twice} never_loaded={never} not_arrived={strangers} delay_p50_s={} delay_p99_s={} delay_max_s={} (arrived at {}s, last arrival {}s) files_per_job_median={} files_per_job_max={} rest_inserts={} rest_409={} rest_gets={} rest_other={} last_window_note=\"{}\"",
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
        fake.inserts.load(Ordering::Relaxed),
        fake.conflicts.load(Ordering::Relaxed),
        fake.gets.load(Ordering::Relaxed),
        fake.other.load(Ordering::Relaxed),
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
