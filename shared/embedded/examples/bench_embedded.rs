//! Benchmarks of the embedded mode, driven by `scripts/bench-embedded.sh` (not a test).
//!
//! ```text
//! bench_embedded load FILE.csv STATE_DIR    # one load job of FILE into analytics.bench
//! bench_embedded events N STATE_DIR         # N files dropped into a watched bucket
//! ```
//!
//! `load` prints the rows and the seconds the load took; `events` prints the objects loaded
//! per second, from the first file written until every object is loaded and the runtime is
//! quiet (each object: an arrival, a load job, a `dev.conveyor.table.loaded` event, run-log rows).

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use conveyor_core::config::parse_str;
use conveyor_core::format::Format;
use conveyor_core::names::{BucketName, JobId, ObjectName, TableRef};
use conveyor_core::ports::{LoadJob, LoadState, ObjectStore, Warehouse};
use conveyor_embedded::runtime::{Embedded, RuntimeOptions};
use conveyor_embedded::{LocalStore, SqliteWarehouse};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [mode, file, state] if mode == "load" => load(Path::new(file), Path::new(state)).await,
        [mode, n, state] if mode == "events" => events(n.parse()?, Path::new(state)).await,
        _ => bail!("usage: bench_embedded load FILE.csv STATE_DIR | events N STATE_DIR"),
    }
}

async fn load(file: &Path, state: &Path) -> anyhow::Result<()> {
    let store = LocalStore::new(state.join("buckets"))?;
    let bucket = BucketName::parse("landing")?;
    let name = ObjectName::parse("bench/file.csv")?;
    let dest = store.bucket_dir(&bucket).join(name.as_str());
    std::fs::create_dir_all(dest.parent().context("a parent")?)?;
    // A hard link: the store reads the file itself, nothing is copied.
    std::fs::hard_link(file, &dest).or_else(|_| std::fs::copy(file, &dest).map(|_| ()))?;
    let meta = store.head(&bucket, &name).await?.context("the object")?;
    let warehouse = SqliteWarehouse::open_local(state.join("warehouse"), store)?;
    let job = LoadJob::new(
        JobId::parse("load-bench")?,
        vec![meta.object],
        TableRef::parse("analytics.bench")?,
        Format::Csv,
    )
    .with_header_row();
    let started = Instant::now();
    let status = warehouse.load(&job, Duration::from_secs(3600)).await?;
    let secs = started.elapsed().as_secs_f64();
    let LoadState::Done { rows } = status.state else {
        bail!("load did not finish: {status:?}");
    };
    println!("load: {rows} rows in {secs:.2} s");
    Ok(())
}

async fn events(n: usize, state: &Path) -> anyhow::Result<()> {
    let config = parse_str(
        "pipelines:\n  - name: bench\n    trigger: { object: { bucket: landing, pattern: \"e/*.csv\" } }\n    load: { table: analytics.events, format: CSV }\n",
        "bench.yaml",
    )?;
    let mut embedded = Embedded::open(Arc::new(config), state)?;
    let probe = embedded.quiet_probe();
    let warehouse = embedded.warehouse().clone();
    let dir: PathBuf = state.join("buckets/landing/e");
    std::fs::create_dir_all(&dir)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(async move {
        embedded
            .run(RuntimeOptions::default(), async {
                let _ = stop_rx.await;
            })
            .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for i in 0..n {
        // Written beside, then renamed into place, as a careful producer does.
        let tmp = dir.join(format!(".{i}.tmp"));
        std::fs::write(&tmp, format!("n\n{i}\n"))?;
        std::fs::rename(&tmp, dir.join(format!("{i}.csv")))?;
    }
    let written = started.elapsed().as_secs_f64();
    let table = TableRef::parse("analytics.events")?;
    loop {
        let loaded = warehouse.row_count(&table).await.unwrap_or(0);
        if loaded as usize >= n && probe.is_quiet().await? {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("only {loaded} of {n} objects loaded after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = runner.await;
    println!(
        "events: {n} objects written in {written:.2} s, all loaded and logged in {secs:.2} s: {:.0} objects/s",
        n as f64 / secs
    );
    Ok(())
}
