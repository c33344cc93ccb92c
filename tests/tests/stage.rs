//! The stage step against real servers: moto's S3 server and fake-gcs-server (started by
//! `scripts/emulators.sh start-s3` / `start-gcs`), and local axum servers for https sources
//! and for a proxy that corrupts S3 reads. Each test copies into a fake-gcs-server landing
//! bucket through the production `GcsStore`, runs again to see that nothing is copied twice,
//! changes one object, and checks that a corrupted transfer leaves no object behind.
//!
//! Without the emulators (they cannot be installed) these tests skip loudly; under `CI=true`
//! they fail.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use conveyor_core::config::{self, Config};
use conveyor_core::event::{ConveyorEvent, EventType};
use conveyor_core::inbound::{Origin, StartRequest};
use conveyor_core::names::{BucketName, ObjectName, PipelineName};
use conveyor_core::ports::{ByteStream, EventBus, ObjectMeta, ObjectStore, PortError, Ports};
use conveyor_core::steps::{Context, Outcome, StageReport, stage_pipeline};
use conveyor_e2e::{Emulators, binary};
use conveyor_embedded::DirSecrets;
use conveyor_embedded::{LocalBatchEngine, LocalStore, SqliteWarehouse};
use conveyor_gcp::{GcpAuth, GcsStore};
use conveyor_sources::Connector;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// An event bus that keeps what it is given.
#[derive(Default)]
struct RecordingBus(Mutex<Vec<ConveyorEvent>>);

#[async_trait]
impl EventBus for RecordingBus {
    async fn publish(&self, event: &ConveyorEvent) -> Result<(), PortError> {
        self.0.lock().expect("bus").push(event.clone());
        Ok(())
    }
}

impl RecordingBus {
    fn staged(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .lock()
            .expect("bus")
            .iter()
            .filter(|e| e.kind == EventType::ObjectStaged)
            .filter_map(|e| e.detail.object.as_ref().map(|o| o.name.to_string()))
            .collect();
        names.sort();
        names
    }

    fn clear(&self) {
        self.0.lock().expect("bus").clear();
    }
}

/// A store that flips the first byte of every object whose name contains `corrupt` as it is
/// read: a transfer corrupted on the way.
struct FlippingStore(Arc<dyn ObjectStore>);

struct Flip {
    inner: ByteStream,
    first: bool,
}

impl tokio::io::AsyncRead for Flip {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = self.inner.as_mut().poll_read(cx, buf);
        if self.first && buf.filled().len() > before {
            buf.filled_mut()[before] ^= 0xFF;
            self.first = false;
        }
        poll
    }
}

#[async_trait]
impl ObjectStore for FlippingStore {
    async fn put(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        self.0.put(bucket, name, body).await
    }
    async fn open(&self, bucket: &BucketName, name: &ObjectName) -> Result<ByteStream, PortError> {
        let inner = self.0.open(bucket, name).await?;
        if name.as_str().contains("corrupt") {
            return Ok(Box::pin(Flip { inner, first: true }));
        }
        Ok(inner)
    }
    async fn head(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
    ) -> Result<Option<ObjectMeta>, PortError> {
        self.0.head(bucket, name).await
    }
    async fn list(&self, bucket: &BucketName, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        self.0.list(bucket, prefix).await
    }
    async fn create_new(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError> {
        self.0.create_new(bucket, name, body).await
    }
    async fn delete(
        &self,
        bucket: &BucketName,
        name: &ObjectName,
        generation: Option<&str>,
    ) -> Result<bool, PortError> {
        self.0.delete(bucket, name, generation).await
    }
}

/// The stage step wired to fake-gcs-server, with fresh local state for the other ports.
struct Stage {
    servers: Emulators,
    http: reqwest::Client,
    gcs: Arc<dyn ObjectStore>,
    bus: Arc<RecordingBus>,
    ctx: Context,
    _dir: tempfile::TempDir,
}

const MOTO_SECRET: &str = r#"{"access_key_id": "testing", "secret_access_key": "testing"}"#;

impl Stage {
    /// Starts the servers, creates the `landing` bucket, and wires `yaml` (in which `S3` and
    /// `HTTP` stand for the moto and https server addresses) to the ports. `flip` puts a
    /// [`FlippingStore`] between the bucket source and fake-gcs-server.
    async fn start(yaml: &str, http_base: &str, flip: bool) -> Option<Self> {
        let (dir, servers) = Self::boot()?;
        let s = Self::wire(dir, servers, yaml, http_base, flip);
        s.create_gcs_bucket("landing").await;
        Some(s)
    }

    fn boot() -> Option<(tempfile::TempDir, Emulators)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let servers = Emulators::start(
            &dir.path().join("emu"),
            &["start-s3", "start-gcs"],
            "the stage tests",
        )?;
        Some((dir, servers))
    }

    fn wire(
        dir: tempfile::TempDir,
        servers: Emulators,
        yaml: &str,
        http_base: &str,
        flip: bool,
    ) -> Self {
        let http = reqwest::Client::new();
        let gcs: Arc<dyn ObjectStore> =
            Arc::new(GcsStore::new(&servers.wire.gcs, GcpAuth::Anonymous));
        let yaml = yaml.replace("S3", &servers.s3).replace("HTTP", http_base);
        let config: Config =
            config::parse_str(&yaml, "stage.yaml").unwrap_or_else(|e| panic!("{e}"));
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(secrets.join("projects/test/secrets")).expect("secrets dir");
        std::fs::write(secrets.join("projects/test/secrets/moto"), MOTO_SECRET).expect("secret");
        let local = LocalStore::new(dir.path().join("buckets")).expect("local store");
        let warehouse =
            SqliteWarehouse::open(dir.path().join("warehouse"), Arc::new(local)).expect("sqlite");
        let source_store: Arc<dyn ObjectStore> = if flip {
            Arc::new(FlippingStore(gcs.clone()))
        } else {
            gcs.clone()
        };
        let bus = Arc::new(RecordingBus::default());
        let ports = Ports {
            store: gcs.clone(),
            bus: bus.clone(),
            warehouse: Arc::new(warehouse.clone()),
            batch: Arc::new(LocalBatchEngine::new(dir.path().join("batches")).expect("batches")),
            run_log: Arc::new(warehouse),
            sources: Arc::new(Connector::new(
                source_store,
                Arc::new(DirSecrets::new(secrets)),
            )),
            ..Ports::unwired()
        };
        let ctx = Context::new(Arc::new(config), ports);
        Self {
            servers,
            http,
            gcs,
            bus,
            ctx,
            _dir: dir,
        }
    }

    async fn create_gcs_bucket(&self, name: &str) {
        let resp = self
            .http
            .post(format!("{}/storage/v1/b?project=test", self.servers.gcs))
            .json(&json!({"name": name}))
            .send()
            .await
            .expect("create bucket");
        assert!(
            resp.status().is_success(),
            "create bucket {name}: {}",
            resp.status()
        );
    }

    async fn create_s3_bucket(&self, name: &str) {
        let resp = self
            .http
            .put(format!("{}/{name}", self.servers.s3))
            .send()
            .await
            .expect("create s3 bucket");
        assert!(
            resp.status().is_success(),
            "create s3 bucket: {}",
            resp.status()
        );
    }

    async fn put_s3(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let resp = self
            .http
            .put(format!("{}/{bucket}/{key}", self.servers.s3))
            // moto refuses an anonymous overwrite; it does not check signatures.
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20261120/us-east-1/s3/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(body)
            .send()
            .await
            .expect("put s3 object");
        assert!(resp.status().is_success(), "put {key}: {}", resp.status());
    }

    async fn put_gcs(&self, bucket: &str, name: &str, body: Vec<u8>) {
        let b = BucketName::parse(bucket).expect("bucket");
        let n = ObjectName::parse(name).expect("name");
        self.gcs
            .put(&b, &n, Box::pin(std::io::Cursor::new(body)))
            .await
            .unwrap_or_else(|e| panic!("put gs://{bucket}/{name}: {e}"));
    }

    /// The landing bucket's objects (Conveyor's own `_conveyor/` excepted), by name.
    async fn landing(&self) -> HashMap<String, Vec<u8>> {
        let b = BucketName::parse("landing").expect("bucket");
        let mut out = HashMap::new();
        for meta in self.gcs.list(&b, "").await.expect("list landing") {
            let name = meta.object.name.to_string();
            if name.starts_with("_conveyor/") {
                continue;
            }
            let mut body = self.gcs.open(&b, &meta.object.name).await.expect("open");
            let mut bytes = Vec::new();
            body.read_to_end(&mut bytes).await.expect("read");
            out.insert(name, bytes);
        }
        out
    }

    async fn watermark(&self, pipeline: &str) -> Value {
        let b = BucketName::parse("landing").expect("bucket");
        let n = ObjectName::parse(&format!("_conveyor/stage/{pipeline}.json")).expect("name");
        let mut body = self.gcs.open(&b, &n).await.expect("watermark");
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes).await.expect("read");
        serde_json::from_slice(&bytes).expect("json")
    }

    async fn stage(&self, pipeline: &str, full: bool) -> StageReport {
        self.bus.clear();
        let p = self.ctx.config.pipeline(pipeline).expect("pipeline");
        let start = StartRequest {
            pipeline: Some(PipelineName::parse(pipeline).expect("name")),
            origin: Origin::Manual,
            at: chrono::DateTime::parse_from_rfc3339("2026-11-20T05:00:00Z")
                .expect("time")
                .to_utc(),
            key: None,
            date: None,
        };
        let mut lines = Vec::new();
        let mut progress = |l: &conveyor_core::steps::StageProgress| lines.push(l.line.clone());
        let mut outcome = Outcome::default();
        let report = stage_pipeline(&self.ctx, p, &start, full, &mut outcome, &mut progress)
            .await
            .unwrap_or_else(|e| panic!("stage {pipeline}: {e}"));
        assert_eq!(
            self.bus.staged().len(),
            report.copied.len(),
            "one staged event per copied object"
        );
        eprintln!("{}", lines.join("\n"));
        report
    }
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

const S3_PIPELINE: &str = r#"
pipelines:
  - name: rock_quality
    trigger: { manual: true }
    stage:
      source:
        s3:
          bucket: vendor-drop
          prefix: rock_quality
          region: us-east-1
          endpoint: S3
          secret: projects/test/secrets/moto
      bucket: landing
      prefix: "rock_quality/{date}/"
      concurrency: 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_prefix_is_copied_once_and_then_only_the_object_that_changed() {
    let Some(s) = Stage::start(S3_PIPELINE, "", false).await else {
        return;
    };
    s.create_s3_bucket("vendor-drop").await;
    let files = [
        ("rock_quality/site-a/core-001.avro", bytes(1024, 1)),
        (
            "rock_quality/site-a/deep/core-002.avro",
            bytes(300 * 1024, 2),
        ),
        (
            "rock_quality/site-b/core-003.avro",
            bytes(9 * 1024 * 1024 + 17, 3),
        ),
        ("rock_quality/README.txt", b"vendor notes\n".to_vec()),
        ("rock_quality/site-b/_SUCCESS", Vec::new()),
        ("other_vendor/ignored.avro", bytes(10, 4)),
    ];
    for (k, b) in &files {
        s.put_s3("vendor-drop", k, b.clone()).await;
    }

    // 1. Everything under the prefix is copied, names kept below `rock_quality/{date}/`.
    let first = s.stage("rock_quality", false).await;
    assert_eq!(first.copied.len(), 5, "{first:?}");
    assert!(first.failed.is_empty(), "{first:?}");
    let sources: Vec<String> = s
        .bus
        .0
        .lock()
        .expect("bus")
        .iter()
        .filter_map(|e| e.detail.vars.get("source").cloned())
        .collect();
    assert!(
        sources.contains(&"s3://vendor-drop/rock_quality/README.txt".to_owned()),
        "each staged event names its source: {sources:?}"
    );
    let landing = s.landing().await;
    for (k, b) in &files[..5] {
        let staged = format!(
            "rock_quality/2026-11-20/{}",
            k.trim_start_matches("rock_quality/")
        );
        assert_eq!(landing.get(&staged), Some(b), "{staged}");
    }
    assert_eq!(landing.len(), 5, "{:?}", landing.keys());
    let mark = s.watermark("rock_quality").await;
    assert_eq!(mark["source"], "s3://vendor-drop/rock_quality");
    assert_eq!(
        mark["objects"].as_object().map(|o| o.len()),
        Some(5),
        "{mark}"
    );
    assert!(
        mark["objects"]["rock_quality/README.txt"]["digests"]["md5"].is_string(),
        "the ETag's MD5 was verified and recorded: {mark}"
    );

    // 2. A re-run copies nothing.
    let again = s.stage("rock_quality", false).await;
    assert!(again.copied.is_empty(), "{again:?}");
    assert_eq!(again.skipped.len(), 5);

    // 3. One object changes (same size, new content): only it is copied.
    s.put_s3("vendor-drop", files[1].0, bytes(300 * 1024, 99))
        .await;
    let changed = s.stage("rock_quality", false).await;
    assert_eq!(
        changed.copied,
        ["rock_quality/2026-11-20/site-a/deep/core-002.avro"],
        "{changed:?}"
    );
    assert_eq!(
        s.landing().await["rock_quality/2026-11-20/site-a/deep/core-002.avro"],
        bytes(300 * 1024, 99)
    );

    // 4. --full copies everything again.
    let full = s.stage("rock_quality", true).await;
    assert_eq!(full.copied.len(), 5, "{full:?}");
}

/// A proxy to moto that flips the first byte of every object whose key contains `corrupt`.
async fn corrupting_proxy(moto: String) -> String {
    async fn forward(State(moto): State<String>, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let url = format!(
            "{moto}{}",
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let mut headers = parts.headers.clone();
        headers.remove("host");
        let resp = reqwest::Client::new()
            .request(parts.method.clone(), url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let Ok(resp) = resp else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let status = resp.status();
        let headers: HeaderMap = resp.headers().clone();
        let mut bytes = resp.bytes().await.unwrap_or_default().to_vec();
        if parts.method == axum::http::Method::GET
            && parts.uri.path().contains("corrupt")
            && status.is_success()
            && !bytes.is_empty()
        {
            bytes[0] ^= 0xFF;
        }
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        out
    }
    let app = axum::Router::new().fallback(forward).with_state(moto);
    conveyor_e2e::serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_s3_transfer_leaves_no_object_and_the_others_still_copy() {
    let Some((dir, servers)) = Stage::boot() else {
        return;
    };
    // The stage reads S3 through the corrupting proxy.
    let proxy = corrupting_proxy(servers.s3.clone()).await;
    let yaml = S3_PIPELINE.replace("endpoint: S3", &format!("endpoint: {proxy}"));
    let s = Stage::wire(dir, servers, &yaml, "", false);
    s.create_gcs_bucket("landing").await;
    s.create_s3_bucket("vendor-drop").await;
    s.put_s3("vendor-drop", "rock_quality/good-1.avro", bytes(2048, 1))
        .await;
    s.put_s3("vendor-drop", "rock_quality/corrupt.avro", bytes(4096, 2))
        .await;
    s.put_s3(
        "vendor-drop",
        "rock_quality/good-2.avro",
        bytes(10 * 1024 * 1024, 3),
    )
    .await;

    let report = s.stage("rock_quality", false).await;
    assert_eq!(report.copied.len(), 2, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].0, "rock_quality/corrupt.avro");
    assert!(
        report.failed[0].1.contains("checksum mismatch"),
        "{:?}",
        report.failed
    );
    let landing = s.landing().await;
    assert!(
        !landing.contains_key("rock_quality/2026-11-20/corrupt.avro"),
        "a corrupted copy must leave no object: {:?}",
        landing.keys()
    );
    assert_eq!(
        landing["rock_quality/2026-11-20/good-2.avro"],
        bytes(10 * 1024 * 1024, 3)
    );
    let mark = s.watermark("rock_quality").await;
    assert!(
        mark["objects"]["rock_quality/corrupt.avro"].is_null(),
        "{mark}"
    );

    // The failed object is not in the watermark: the next run tries it again, and only it.
    let again = s.stage("rock_quality", false).await;
    assert!(again.copied.is_empty(), "{again:?}");
    assert_eq!(again.skipped.len(), 2);
    assert_eq!(again.failed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcs_folder_is_copied_bucket_to_bucket_and_a_flipped_byte_is_caught() {
    let yaml = r#"
pipelines:
  - name: exports
    trigger: { manual: true }
    stage:
      source: { gcs: { bucket: partner-exports, prefix: daily } }
      bucket: landing
      prefix: "from-partner/"
      name: "{relative}"
"#;
    let Some(s) = Stage::start(yaml, "", true).await else {
        return;
    };
    s.create_gcs_bucket("partner-exports").await;
    s.put_gcs("partner-exports", "daily/a.csv", b"id\n1\n".to_vec())
        .await;
    s.put_gcs("partner-exports", "daily/2026/b.ndjson", bytes(20_000, 5))
        .await;
    s.put_gcs("partner-exports", "daily/corrupt.csv", b"id\n2\n".to_vec())
        .await;
    s.put_gcs("partner-exports", "weekly/c.csv", b"id\n3\n".to_vec())
        .await;

    let report = s.stage("exports", false).await;
    assert_eq!(
        sorted(report.copied.clone()),
        ["from-partner/2026/b.ndjson", "from-partner/a.csv"],
        "{report:?}"
    );
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].1.contains("CRC32C"), "{:?}", report.failed);
    let landing = s.landing().await;
    assert_eq!(landing.len(), 2, "{:?}", landing.keys());
    assert_eq!(landing["from-partner/a.csv"], b"id\n1\n");

    // Nothing new: nothing copied; the corrupted one is tried again.
    let again = s.stage("exports", false).await;
    assert!(again.copied.is_empty(), "{again:?}");
    assert_eq!(again.failed.len(), 1);

    // Rewritten with the same bytes (a new generation): still nothing to copy. Changed: copied.
    s.put_gcs("partner-exports", "daily/a.csv", b"id\n1\n".to_vec())
        .await;
    assert!(s.stage("exports", false).await.copied.is_empty());
    s.put_gcs("partner-exports", "daily/a.csv", b"id\n1\n4\n".to_vec())
        .await;
    assert_eq!(
        s.stage("exports", false).await.copied,
        ["from-partner/a.csv"]
    );
}

/// Files served over HTTP with an ETag; `bad.csv` announces a Content-MD5 its bytes do not
/// have, and `list.txt` is a manifest of relative URLs.
#[derive(Clone, Default)]
struct Files(Arc<Mutex<HashMap<String, Vec<u8>>>>);

async fn serve_files(files: Files) -> String {
    async fn get(State(files): State<Files>, req: Request) -> Response {
        let path = req.uri().path().trim_start_matches('/').to_owned();
        let Some(body) = files.0.lock().expect("files").get(&path).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let etag = format!(
            "\"{}-{}\"",
            body.len(),
            body.iter().map(|b| *b as u64).sum::<u64>()
        );
        let mut resp = Response::new(Body::from(body));
        resp.headers_mut()
            .insert("etag", etag.parse().expect("etag"));
        if path.ends_with("bad.csv") {
            resp.headers_mut().insert(
                "content-md5",
                "AAAAAAAAAAAAAAAAAAAAAA==".parse().expect("md5"),
            );
        }
        resp
    }
    let app = axum::Router::new().fallback(get).with_state(files);
    conveyor_e2e::serve(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_files_listed_by_a_manifest_are_copied_incrementally_and_a_bad_md5_is_caught() {
    let files = Files::default();
    {
        let mut f = files.0.lock().expect("files");
        f.insert("exports/a.csv".into(), b"id\n1\n".to_vec());
        f.insert("exports/sub/b.csv".into(), bytes(70_000, 7));
        f.insert("exports/bad.csv".into(), b"id\n9\n".to_vec());
        f.insert(
            "exports/list.txt".into(),
            b"# today's files\na.csv\nsub/b.csv\n\nbad.csv\n".to_vec(),
        );
    }
    let base = serve_files(files.clone()).await;
    let yaml = r#"
pipelines:
  - name: web
    trigger: { manual: true }
    stage:
      source: { https: { manifest: HTTP/exports/list.txt } }
      bucket: landing
      prefix: "web/{date}/"
      name: "{path}"
"#;
    let Some(s) = Stage::start(yaml, &base, false).await else {
        return;
    };
    let report = s.stage("web", false).await;
    assert_eq!(
        sorted(report.copied.clone()),
        [
            "web/2026-11-20/exports/a.csv",
            "web/2026-11-20/exports/sub/b.csv"
        ],
        "{report:?}"
    );
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].1.contains("MD5"), "{:?}", report.failed);
    assert!(
        !s.landing()
            .await
            .contains_key("web/2026-11-20/exports/bad.csv")
    );

    assert!(s.stage("web", false).await.copied.is_empty());
    files
        .0
        .lock()
        .expect("files")
        .insert("exports/a.csv".into(), b"id\n1\n2\n".to_vec());
    let changed = s.stage("web", false).await;
    assert_eq!(
        changed.copied,
        ["web/2026-11-20/exports/a.csv"],
        "{changed:?}"
    );
    assert_eq!(
        s.landing().await["web/2026-11-20/exports/a.csv"],
        b"id\n1\n2\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_stages_from_s3_with_credentials_from_the_environment() {
    let cli = binary("conveyor");
    let yaml = r#"
pipelines:
  - name: vendor
    trigger: { manual: true }
    stage:
      source: s3://vendor-drop/rock_quality
      bucket: landing
      prefix: "rock_quality/"
"#;
    let Some(s) = Stage::start(yaml, "", false).await else {
        return;
    };
    s.create_s3_bucket("vendor-drop").await;
    s.put_s3("vendor-drop", "rock_quality/a.avro", bytes(5000, 1))
        .await;
    s.put_s3("vendor-drop", "rock_quality/b/c.avro", bytes(7000, 2))
        .await;
    let work = tempfile::tempdir().expect("tempdir");
    let config = work.path().join("conveyor.yaml");
    std::fs::write(&config, yaml).expect("config");
    let run = || {
        let out = Command::new(&cli)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(work.path().join("state"))
            .args(["stage", "vendor", "--timeout", "30s"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &s.servers.s3)
            .output()
            .expect("run conveyor");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = run();
    assert!(first.contains("copied rock_quality/b/c.avro"), "{first}");
    assert!(first.contains("staged 2 object(s)"), "{first}");
    let staged = work
        .path()
        .join("state/buckets/landing/rock_quality/b/c.avro");
    assert_eq!(std::fs::read(staged).expect("staged file"), bytes(7000, 2));
    let second = run();
    assert!(second.contains("staged 0 object(s)"), "{second}");
    assert!(second.contains("2 unchanged"), "{second}");
}
