//! Support for Conveyor's end-to-end tests (the test binaries are in `tests/`):
//! [`Chain`], the embedded chain on fresh state, [`Emulators`], the servers that
//! `scripts/emulators.sh` starts, [`fake_engines`], a local fake of the batch engines'
//! REST APIs, [`provision`], the emulators' topics, buckets, datasets and function processes,
//! and [`runs`], runs whose state the latest-status views must report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use conveyor_core::config;
use conveyor_core::engines::Engines;
use conveyor_core::event::{ConveyorEvent, StepName};
use conveyor_core::names::TableRef;
use conveyor_core::ports::{PortError, RunLogRow};
use conveyor_core::steps::Context;
use conveyor_embedded::runtime::{Embedded, QuietProbe, RuntimeOptions};
use tower::ServiceExt;

pub mod fake_engines;
pub mod provision;
pub mod runs;

pub use provision::{Function, PROJECT, ok};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lines of the file at `path` (none when it cannot be read): what a local batch job
/// appended to its output file.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Says loudly that the running test did not run here because `why`, and records its name in
/// `$CONVEYOR_SKIPPED_FILE` (set by scripts/test.sh), so the summary counts it as skipped,
/// not passed. The caller then returns early.
pub fn skipped(why: &str) {
    eprintln!("\n!!!!! SKIPPED: {why} !!!!!\n");
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if let Some(file) = std::env::var_os("CONVEYOR_SKIPPED_FILE") {
        use std::io::Write;
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| writeln!(f, "{} {test}: {why}", env!("CARGO_PKG_NAME")));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {}: {e}", file.to_string_lossy());
        }
    }
}

/// A workspace binary built by `cargo build --workspace --all-targets` (scripts/test.sh).
///
/// # Panics
/// When it has not been built.
pub fn binary(name: &str) -> PathBuf {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from);
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --all-targets` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A free loopback port.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Serves `app` on a loopback port bound here (the listener is kept: no port is chosen and
/// bound later, so none can be taken in between), for as long as the test's runtime runs;
/// returns `http://127.0.0.1:PORT`.
///
/// # Panics
/// When no port can be bound.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

/// Starts a server process with `spawn(port)` on a free loopback port and returns it, and its
/// port, once it answers `/healthz`. The port is chosen free and then bound by the child: when
/// the child exits before it answers (another test took the port in between), it is started
/// again on another port, up to five times.
///
/// # Panics
/// When it does not answer within 30 s, or exits on every try.
pub async fn start_listening(
    what: &str,
    mut spawn: impl FnMut(u16) -> tokio::process::Child,
) -> (tokio::process::Child, u16) {
    let http = reqwest::Client::new();
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return (child, port);
            }
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{what} did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("{what} exited before it answered /healthz, on five ports");
}

/// Servers started by `scripts/emulators.sh` in one directory, stopped on drop. A URL is empty
/// for a server that was not started.
pub struct Emulators {
    /// The directory holding their state, logs, PIDs and `env`.
    pub dir: PathBuf,
    /// The Pub/Sub emulator.
    pub pubsub: String,
    /// fake-gcs-server.
    pub gcs: String,
    /// bqemulator.
    pub bq: String,
    /// moto's S3 server.
    pub s3: String,
    /// The Google emulators behind recording proxies: where the adapters under test are
    /// pointed, so each request they send is recorded as it came off the wire and checked
    /// against Google's API descriptions (the test's own set-up calls go to the emulators
    /// directly).
    pub wire: Wire,
    /// The client of the set-up calls ([`provision`]).
    http: reqwest::Client,
    _proxies: Vec<conveyor_contract::Proxy>,
}

/// The recording proxies' URLs (empty for a server that was not started).
#[derive(Debug, Clone, Default)]
pub struct Wire {
    /// To the Pub/Sub emulator.
    pub pubsub: String,
    /// To fake-gcs-server.
    pub gcs: String,
    /// To bqemulator.
    pub bq: String,
}

impl Emulators {
    /// Runs `scripts/emulators.sh VERB DIR` for each verb (`start`, `start-s3`, `start-gcs`).
    /// `None`, after a loud message, when the script says a server cannot be had here (exit 3)
    /// and this is not CI; under `CI=true` that is a failure.
    ///
    /// # Panics
    /// When the script fails otherwise.
    pub fn start(dir: &Path, verbs: &[&str], what: &str) -> Option<Self> {
        for verb in verbs {
            let status = Command::new(repo().join("scripts/emulators.sh"))
                .arg(verb)
                .arg(dir)
                .status()
                .expect("run scripts/emulators.sh");
            match status.code() {
                Some(0) => {}
                Some(3) if std::env::var("CI").as_deref() != Ok("true") => {
                    skipped(&format!(
                        "an emulator is not installed here; {what} did not run"
                    ));
                    let _ = Command::new(repo().join("scripts/emulators.sh"))
                        .arg("stop")
                        .arg(dir)
                        .status();
                    return None;
                }
                other => panic!("scripts/emulators.sh {verb} failed: {other:?}"),
            }
        }
        let env: HashMap<String, String> = std::fs::read_to_string(dir.join("env"))
            .expect("emulator env")
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let url = |k: &str| {
            env.get(k)
                .map(|p| format!("http://127.0.0.1:{p}"))
                .unwrap_or_default()
        };
        let mut proxies = Vec::new();
        let mut proxy = |upstream: String, name: &str, api: &str| {
            if upstream.is_empty() {
                return String::new();
            }
            let p = conveyor_contract::Proxy::start(&upstream, name, &[api]);
            let url = p.url.clone();
            proxies.push(p);
            url
        };
        let wire = Wire {
            pubsub: proxy(url("PUBSUB_PORT"), "the Pub/Sub emulator", "pubsub"),
            gcs: proxy(url("GCS_PORT"), "fake-gcs-server", "storage"),
            bq: proxy(url("BQ_PORT"), "bqemulator", "bigquery"),
        };
        Some(Self {
            dir: dir.to_path_buf(),
            pubsub: url("PUBSUB_PORT"),
            gcs: url("GCS_PORT"),
            bq: url("BQ_PORT"),
            s3: url("S3_PORT"),
            wire,
            http: reqwest::Client::new(),
            _proxies: proxies,
        })
    }

    /// Runs `scripts/emulators.sh VERB DIR` (e.g. `stop-bq`, `start-bq`).
    ///
    /// # Panics
    /// When the script fails.
    pub fn script(&self, verb: &str) {
        let ok = Command::new(repo().join("scripts/emulators.sh"))
            .arg(verb)
            .arg(&self.dir)
            .status()
            .map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "scripts/emulators.sh {verb}");
    }
}

impl Drop for Emulators {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/emulators.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// The embedded chain running on fresh state in a temporary directory: the real steps, the
/// watched bucket directories, SQLite, and either local batches or the given batch port.
pub struct Chain {
    /// The temporary directory (state under `state/`).
    pub dir: tempfile::TempDir,
    /// The steps' context.
    pub ctx: Context,
    /// Tells when nothing is in flight.
    pub probe: QuietProbe,
    /// Every event the runtime dispatched since the chain started.
    events: std::sync::Mutex<tokio::sync::broadcast::Receiver<ConveyorEvent>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::task::JoinHandle<()>>,
    config: Arc<config::Config>,
    watch: bool,
}

impl Chain {
    /// Starts the chain on the pipelines in `yaml`, with local batches.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, None).await
    }

    /// Starts the chain on `yaml`; `batch` replaces the local batch engine when given.
    ///
    /// # Panics
    /// When the configuration is invalid or the state cannot be created.
    pub async fn start_with(yaml: &str, engines: Option<Engines>) -> Self {
        Self::start_configured(yaml, engines, true).await
    }

    /// Starts the chain on `yaml` (local batches) with `clock` as the steps' clock: load
    /// windows close when the test moves it on.
    pub async fn start_with_clock(yaml: &str, clock: Arc<dyn conveyor_core::clock::Clock>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            Arc::new(config::parse_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}")));
        Self::open(dir, config, None, true, Some(clock))
    }

    /// Starts the chain on `yaml` with no bucket watcher (as `conveyor backfill` runs it): only
    /// the objects announced by events load.
    pub async fn start_unwatched(yaml: &str) -> Self {
        Self::start_configured(yaml, None, false).await
    }

    async fn start_configured(yaml: &str, engines: Option<Engines>, watch: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            Arc::new(config::parse_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}")));
        Self::open(dir, config, engines, watch, None)
    }

    fn open(
        dir: tempfile::TempDir,
        config: Arc<config::Config>,
        engines: Option<Engines>,
        watch: bool,
        clock: Option<Arc<dyn conveyor_core::clock::Clock>>,
    ) -> Self {
        let state = dir.path().join("state");
        let mut embedded = match engines {
            Some(e) => Embedded::open_with(config.clone(), &state, e),
            None => Embedded::open(config.clone(), &state),
        }
        .expect("open");
        if let Some(clock) = clock {
            embedded = embedded.with_clock(clock);
        }
        let ctx = embedded.context();
        let probe = embedded.quiet_probe();
        let events = std::sync::Mutex::new(embedded.events());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let options = RuntimeOptions {
            watch_interval: Duration::from_millis(30),
            tick_interval: Duration::from_millis(50),
            schedules: false,
            max_deliveries: 4,
            watch_buckets: watch,
        };
        let runtime = tokio::spawn(async move {
            embedded
                .run(options, async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            dir,
            ctx,
            probe,
            events,
            stop: Some(tx),
            runtime: Some(runtime),
            config,
            watch,
        }
    }

    /// Stops the runtime and starts a new one on the same state (local batches), as a
    /// restarted `conveyor dev` would.
    pub async fn restart(mut self) -> Self {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(r) = self.runtime.take() {
            let _ = r.await;
        }
        let Self {
            dir, config, watch, ..
        } = self;
        Self::open(dir, config, None, watch, None)
    }

    /// The events the runtime dispatched since the last call (since the start, the first
    /// time), in order: each delivery's publication, so an event published twice is listed
    /// twice.
    ///
    /// # Panics
    /// When more events were published than the runtime's broadcast keeps (4,096) in between.
    pub fn dispatched(&self) -> Vec<ConveyorEvent> {
        let mut rx = self.events.lock().expect("lock");
        let mut out = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(e) => out.push(e),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    panic!("{n} events were lost: read them more often")
                }
                Err(_) => return out,
            }
        }
    }

    /// The directory of `bucket`.
    pub fn bucket(&self, name: &str) -> PathBuf {
        self.dir.path().join("state/buckets").join(name)
    }

    /// Drops `src` into `bucket` at `object`, as a producer would (write, then rename).
    pub fn drop_file(&self, bucket: &str, object: &str, src: &Path) {
        let dest = self.bucket(bucket).join(object);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        let tmp = dest.with_file_name(".incoming");
        std::fs::copy(src, &tmp).expect("copy");
        std::fs::rename(&tmp, &dest).expect("rename");
    }

    /// Drops a file with `content` into `bucket` at `object`; returns the source file.
    pub fn write_file(&self, bucket: &str, object: &str, content: &str) -> PathBuf {
        let src = self
            .dir
            .path()
            .join(format!("src-{}", object.replace('/', "_")));
        std::fs::write(&src, content).expect("write");
        self.drop_file(bucket, object, &src);
        src
    }

    /// Waits until nothing has been in flight for a while.
    pub async fn settle(&self, limit: Duration) {
        self.settle_when(limit, || true, String::new).await;
    }

    /// Waits until `started` holds and then nothing has been in flight for a while;
    /// `context` explains a timeout.
    ///
    /// # Panics
    /// When that takes longer than `limit`.
    pub async fn settle_when(
        &self,
        limit: Duration,
        started: impl Fn() -> bool,
        context: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + limit;
        let mut quiet_since: Option<Instant> = None;
        loop {
            let quiet = started() && self.probe.is_quiet().await.expect("probe");
            match (quiet, quiet_since) {
                (true, Some(t)) if t.elapsed() > Duration::from_millis(400) => return,
                (true, None) => quiet_since = Some(Instant::now()),
                (false, _) => quiet_since = None,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the chain did not settle within {limit:?}; {}",
                context()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `table` holds at least `rows` rows.
    ///
    /// # Panics
    /// When that takes longer than `limit`.
    pub async fn wait_rows(&self, table: &str, rows: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let now = self.rows(table).await;
            if now >= rows {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{table} holds {now} rows, not {rows}, after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The run log `conveyor.run_log`, oldest first.
    pub async fn run_log(&self) -> Vec<RunLogRow> {
        let t = TableRef::parse("conveyor.run_log").expect("table");
        let mut rows = self
            .ctx
            .ports
            .run_log
            .recent(&t, 10_000)
            .await
            .expect("run log");
        rows.reverse();
        rows
    }

    /// Rows in `table` (0 when it does not exist).
    ///
    /// # Panics
    /// When the count fails for any other reason: a broken query must not read as "no rows".
    pub async fn rows(&self, table: &str) -> u64 {
        let t = TableRef::parse(table).expect("table");
        match self.ctx.ports.warehouse.row_count(&t).await {
            Ok(n) => n,
            Err(PortError::NotFound(_)) => 0,
            Err(e) => panic!("cannot count the rows of {table}: {e}"),
        }
    }

    /// The GCS notification of `object` in `bucket` as the object is now, with its
    /// generation: what a redelivery of its arrival sends to the load function.
    ///
    /// # Panics
    /// When the object is not there.
    pub async fn notification(&self, bucket: &str, object: &str) -> String {
        let meta = self
            .ctx
            .ports
            .store
            .head(
                &bucket.parse().expect("bucket"),
                &object.parse().expect("name"),
            )
            .await
            .expect("head")
            .expect("object");
        serde_json::json!({"bucket": bucket, "name": object, "generation": meta.object.generation})
            .to_string()
    }

    /// Local batch jobs started.
    pub fn batch_dirs(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("state/batches"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// POSTs `body` to the function running `step`, through its router.
    pub async fn post(
        &self,
        step: StepName,
        body: &str,
        content_type: &str,
    ) -> (StatusCode, serde_json::Value) {
        self.request(step, "POST", "/", body, &[("content-type", content_type)])
            .await
    }

    /// POSTs the JSON `body` to the function running `step` and expects it accepted (200).
    ///
    /// # Panics
    /// When it answers otherwise.
    pub async fn accepted(&self, step: StepName, body: &str) -> serde_json::Value {
        let (status, reply) = self.post(step, body, "application/json").await;
        assert_eq!(status, StatusCode::OK, "{step:?} {body}: {reply}");
        reply
    }

    /// POSTs the JSON `body` to the function running `step` and expects it refused (400) with
    /// a reason that says `why`.
    ///
    /// # Panics
    /// When it answers otherwise, or gives another reason.
    pub async fn refused(&self, step: StepName, body: &str, why: &str) -> serde_json::Value {
        let (status, reply) = self.post(step, body, "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{step:?} {body}: {reply}");
        assert!(
            reply["reason"].as_str().is_some_and(|r| r.contains(why)),
            "the reason should say {why:?}: {reply}"
        );
        reply
    }

    /// Sends a request to the function running `step`, through its router, with `headers`.
    ///
    /// # Panics
    /// When the request cannot be built.
    pub async fn request(
        &self,
        step: StepName,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let router = conveyor_core::http::router(step, self.ctx.clone());
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.to_owned())).expect("request");
        let resp = router.oneshot(req).await.expect("response");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Stops the runtime.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(r) = self.runtime.take() {
            let _ = r.await;
        }
    }
}
