//! Stages one pipeline into a Cloud Storage endpoint (fake-gcs-server in
//! `scripts/bench-stage.sh`) and reports throughput and this process's peak memory.
//!
//! ```text
//! stage_bench CONFIG PIPELINE GCS_ENDPOINT [--full]
//! stage_bench CONFIG PIPELINE local:DIR [--full]
//! ```
//!
//! `local:DIR` stages into the embedded store (a directory per bucket) instead, to measure
//! Conveyor without the emulator's own cost.
//!
//! S3 credentials come from the `AWS_*` environment, as in production.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use conveyor_core::event::ConveyorEvent;
use conveyor_core::inbound::{Origin, StartRequest};
use conveyor_core::ports::{EventBus, ObjectStore, PortError, Ports};
use conveyor_core::steps::{Context, Outcome, stage_pipeline};
use conveyor_embedded::DirSecrets;
use conveyor_embedded::{LocalBatchEngine, LocalStore, SqliteWarehouse};
use conveyor_gcp::{GcpAuth, GcsStore};
use conveyor_sources::Connector;

/// Counts events instead of publishing them.
#[derive(Default)]
struct CountingBus(AtomicUsize);

#[async_trait]
impl EventBus for CountingBus {
    async fn publish(&self, _: &ConveyorEvent) -> Result<(), PortError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
    let [_, config, pipeline, gcs, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: stage_bench CONFIG PIPELINE GCS_ENDPOINT|local:DIR [--full]");
    };
    let full = rest.iter().any(|a| a == "--full");
    let config = conveyor_core::config::load_file(std::path::Path::new(config))?;
    let p = config
        .pipeline(pipeline)
        .ok_or_else(|| anyhow::anyhow!("no pipeline {pipeline}"))?
        .clone();
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn ObjectStore> = match gcs.strip_prefix("local:") {
        Some(root) => Arc::new(LocalStore::new(root)?),
        None => Arc::new(GcsStore::new(gcs, GcpAuth::Anonymous)),
    };
    let local = LocalStore::new(dir.path().join("buckets"))?;
    let warehouse = SqliteWarehouse::open(dir.path().join("warehouse"), Arc::new(local))?;
    let bus = Arc::new(CountingBus::default());
    let ctx = Context::new(
        Arc::new(config),
        Ports {
            store: store.clone(),
            bus: bus.clone(),
            warehouse: Arc::new(warehouse.clone()),
            batch: Arc::new(LocalBatchEngine::new(dir.path().join("batches"))?),
            run_log: Arc::new(warehouse),
            sources: Arc::new(Connector::new(
                store,
                Arc::new(DirSecrets::new(dir.path().join("secrets"))),
            )),
            ..Ports::unwired()
        },
    );
    let start = StartRequest {
        pipeline: Some(p.name.clone()),
        origin: Origin::Manual,
        at: chrono::Utc::now(),
        key: None,
        date: None,
    };
    let mut outcome = Outcome::default();
    let mut progress = |p: &conveyor_core::steps::StageProgress| println!("  {}", p.line);
    let report = stage_pipeline(&ctx, &p, &start, full, &mut outcome, &mut progress)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "bench: copied={} bytes={} seconds={secs:.2} MB/s={:.1} MiB/s={:.1} failed={} events={} peak_rss_kib={}",
        report.copied.len(),
        report.bytes,
        report.bytes as f64 / secs / 1e6,
        report.bytes as f64 / secs / (1024.0 * 1024.0),
        report.failed.len(),
        bus.0.load(Ordering::Relaxed),
        peak_rss_kib().map_or_else(|| "?".to_owned(), |k| k.to_string()),
    );
    for (key, why) in &report.failed {
        println!("bench: FAILED {key}: {why}");
    }
    Ok(())
}
