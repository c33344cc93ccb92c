//! Measures the marker batch of the load step (`load.batch.marker`): PARTS objects in a
//! folder of a Cloud Storage endpoint (fake-gcs-server in `scripts/bench-marker.sh`), then the
//! `_SUCCESS` marker's arrival through the real load step and `GcsStore`. Reports the load jobs
//! started and their URIs, the listing pages read, the marker request's time and this
//! process's peak memory. The warehouse is a counter that answers DONE at once, so the figures
//! are Conveyor's own.
//!
//! ```text
//! marker_bench GCS_ENDPOINT PARTS
//! ```
#![allow(clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use conveyor_core::event::{ConveyorEvent, ObjectRef, StepName};
use conveyor_core::inbound::Inbound;
use conveyor_core::names::{BucketName, JobId, ObjectName, TableRef};
use conveyor_core::ports::{
    ByteStream, EventBus, LoadJob, LoadState, LoadStatus, ObjectMeta, ObjectPage, ObjectStore,
    PortError, Ports, Warehouse,
};
use conveyor_core::steps::{self, Context};
use conveyor_gcp::{GcpAuth, GcsStore};

/// Counts load jobs and their URIs; every job is DONE at once.
#[derive(Default)]
struct Counter(Mutex<Vec<usize>>);

#[async_trait]
impl Warehouse for Counter {
    async fn load(&self, job: &LoadJob, _: Duration) -> Result<LoadStatus, PortError> {
        self.0.lock().expect("lock").push(job.sources.len());
        Ok(LoadStatus {
            state: LoadState::Done {
                rows: job.sources.len() as u64,
            },
            adopted: false,
        })
    }
    async fn load_state(&self, _: &JobId) -> Result<LoadStatus, PortError> {
        Err(PortError::not_found("not used"))
    }
    async fn row_count(&self, _: &TableRef) -> Result<u64, PortError> {
        Ok(0)
    }
    async fn read_table(
        &self,
        _: &TableRef,
        _: usize,
    ) -> Result<Vec<std::collections::BTreeMap<String, String>>, PortError> {
        Ok(Vec::new())
    }
}

/// Drops events.
struct NoBus;

#[async_trait]
impl EventBus for NoBus {
    async fn publish(&self, _: &ConveyorEvent) -> Result<(), PortError> {
        Ok(())
    }
}

/// Counts the listing pages read through the store.
struct Paging {
    inner: GcsStore,
    pages: Mutex<usize>,
}

#[async_trait]
impl ObjectStore for Paging {
    async fn put(
        &self,
        b: &BucketName,
        n: &ObjectName,
        body: ByteStream,
    ) -> Result<ObjectMeta, PortError> {
        self.inner.put(b, n, body).await
    }
    async fn open(&self, b: &BucketName, n: &ObjectName) -> Result<ByteStream, PortError> {
        self.inner.open(b, n).await
    }
    async fn head(&self, b: &BucketName, n: &ObjectName) -> Result<Option<ObjectMeta>, PortError> {
        self.inner.head(b, n).await
    }
    async fn list(&self, b: &BucketName, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        self.inner.list(b, prefix).await
    }
    async fn list_page(
        &self,
        b: &BucketName,
        prefix: &str,
        token: Option<String>,
    ) -> Result<ObjectPage, PortError> {
        *self.pages.lock().expect("lock") += 1;
        self.inner.list_page(b, prefix, token).await
    }
    async fn create_new(
        &self,
        b: &BucketName,
        n: &ObjectName,
        body: ByteStream,
    ) -> Result<Option<ObjectMeta>, PortError> {
        self.inner.create_new(b, n, body).await
    }
    async fn delete(
        &self,
        b: &BucketName,
        n: &ObjectName,
        g: Option<&str>,
    ) -> Result<bool, PortError> {
        self.inner.delete(b, n, g).await
    }
}

/// `VmHWM` (peak resident set size) of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, parts] = args.as_slice() else {
        anyhow::bail!("usage: marker_bench GCS_ENDPOINT PARTS");
    };
    let parts: usize = parts.parse()?;
    let gcs = GcsStore::new(endpoint, GcpAuth::Anonymous);
    let bucket = BucketName::parse("landing")?;
    let folder = format!("orders/2026-11-20-{parts}");
    println!("marker_bench: writing {parts} parts");
    let began = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..parts {
        let gcs = gcs.clone();
        let bucket = bucket.clone();
        let name = ObjectName::parse(&format!("{folder}/part-{i:06}.csv"))?;
        pending.push(async move {
            let body: ByteStream = Box::pin(std::io::Cursor::new(b"id\n1\n".to_vec()));
            gcs.put(&bucket, &name, body).await
        });
        if pending.len() >= 32 {
            use futures::StreamExt as _;
            if let Some(r) = pending.next().await {
                r?;
            }
        }
    }
    {
        use futures::StreamExt as _;
        while let Some(r) = pending.next().await {
            r?;
        }
    }
    let marker_name = ObjectName::parse(&format!("{folder}/_SUCCESS"))?;
    let meta = gcs
        .put(
            &bucket,
            &marker_name,
            Box::pin(std::io::Cursor::new(Vec::new())),
        )
        .await?;
    println!("marker_bench: wrote them in {:.1?}", began.elapsed());
    let config = conveyor_core::config::parse_str(
        r#"
pipelines:
  - name: gebi
    trigger: { object: { bucket: landing, pattern: "orders/{date}/*.csv" } }
    load: { table: "staging.orders_{date}", format: CSV, batch: { marker: _SUCCESS } }
"#,
        "bench.yaml",
    )?;
    let store = Arc::new(Paging {
        inner: gcs,
        pages: Mutex::new(0),
    });
    let counter = Arc::new(Counter::default());
    let ctx = Context::new(
        Arc::new(config),
        Ports {
            store: store.clone(),
            warehouse: counter.clone(),
            bus: Arc::new(NoBus),
            ..Ports::unwired()
        },
    );
    let rss_before = peak_rss_kib().unwrap_or(0);
    let marker = ObjectRef {
        bucket,
        name: marker_name,
        generation: meta.object.generation,
        size: Some(0),
    };
    let started = Instant::now();
    let outcome = steps::handle(StepName::Load, &ctx, Inbound::Object(marker))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let took = started.elapsed();
    let jobs = counter.0.lock().expect("lock").clone();
    println!(
        "marker_bench: parts {parts} | listing pages {} | load jobs {} (URIs per job {:?}) | marker request {:.1?} | peak RSS {} KiB (before the request {} KiB) | {}",
        store.pages.lock().expect("lock"),
        jobs.len(),
        jobs,
        took,
        peak_rss_kib().unwrap_or(0),
        rss_before,
        outcome.summary
    );
    Ok(())
}
