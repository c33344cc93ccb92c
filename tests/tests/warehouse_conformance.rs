//! The warehouse port's contract, one set of behaviour tests run against every adapter: the
//! embedded SQLite warehouse (reading its sources from the folder store) and BigQuery on
//! bqemulator (reading them from fake-gcs-server), where the emulator allows: a load of
//! several files into a table it creates, counted and read back; the same job id adopted,
//! never loaded twice; a second job appending.
//!
//! Without the emulators the Google run skips loudly; under `CI=true` it fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use conveyor_core::format::Format;
use conveyor_core::names::{BucketName, JobId, ObjectName, PipelineName, RunId, TableRef};
use conveyor_core::ports::{LoadJob, LoadState, ObjectStore, Warehouse};
use conveyor_e2e::Emulators;
use conveyor_embedded::{LocalStore, SqliteWarehouse};
use conveyor_gcp::{GcpAuth, GcsStore};

/// The parts of a folder, with a header line each.
const PARTS: [(&str, &str); 3] = [
    ("orders/part-0.csv", "id,v\n1,a\n2,b\n"),
    ("orders/part-1.csv", "id,v\n3,c\n"),
    ("orders/part-2.csv", "id,v\n4,d\n5,e\n"),
];

/// Puts `parts` in `landing` and describes a CSV load of them into `table`, job `job`.
async fn load_job(
    store: &dyn ObjectStore,
    parts: &[(&str, &str)],
    table: &TableRef,
    job: &str,
) -> LoadJob {
    let bucket = BucketName::parse("landing").expect("bucket");
    let mut sources = Vec::new();
    for (name, body) in parts {
        let meta = store
            .put(
                &bucket,
                &ObjectName::parse(name).expect("name"),
                Box::pin(std::io::Cursor::new(body.as_bytes().to_vec())),
            )
            .await
            .expect("put");
        sources.push(meta.object);
    }
    let run = RunId::derive(&PipelineName::parse("orders").expect("pipeline"), &[job]);
    LoadJob::new(
        JobId::derive("load", &run, 1),
        sources,
        table.clone(),
        Format::Csv,
    )
    .with_header_row()
}

/// `id → v` of every row of `table`.
async fn rows(warehouse: &dyn Warehouse, table: &TableRef) -> BTreeMap<String, String> {
    warehouse
        .read_table(table, 100)
        .await
        .expect("read table")
        .into_iter()
        .map(|row| {
            (
                row.get("id").cloned().unwrap_or_default(),
                row.get("v").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// What a backend does not do as the service it stands for does: the checks it cannot pass
/// are left out for it, each named here.
#[derive(Clone, Copy)]
struct Backend {
    /// A load reports the rows it loaded. bqemulator's `statistics.load.outputRows` is the
    /// table's row count after the job (BigQuery's is the job's); the table's count is
    /// checked either way.
    reports_the_jobs_rows: bool,
}

/// Every behaviour, on one warehouse reading its sources from `store`.
async fn conforms(store: &dyn ObjectStore, warehouse: &dyn Warehouse, backend: Backend) {
    let table = TableRef::parse("staging.orders").expect("table");
    let wait = Duration::from_secs(30);

    // Several files, one job, one table created for it.
    let job = load_job(store, &PARTS, &table, "folder").await;
    let first = warehouse.load(&job, wait).await.expect("load");
    assert!(
        matches!(first.state, LoadState::Done { rows: 5 }),
        "{first:?}"
    );
    assert!(!first.adopted);
    assert_eq!(warehouse.row_count(&table).await.expect("count"), 5);
    let expected: BTreeMap<String, String> =
        [("1", "a"), ("2", "b"), ("3", "c"), ("4", "d"), ("5", "e")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(rows(warehouse, &table).await, expected);

    // The same job id again (a redelivery): adopted, not loaded twice.
    let again = warehouse.load(&job, wait).await.expect("load again");
    assert!(again.adopted, "the same job id is adopted: {again:?}");
    assert_eq!(warehouse.row_count(&table).await.expect("count"), 5);
    let state = warehouse.load_state(&job.job_id).await.expect("state");
    assert!(matches!(state.state, LoadState::Done { .. }), "{state:?}");

    // Another job appends.
    let more = load_job(store, &[("more/part-0.csv", "id,v\n6,f\n")], &table, "more").await;
    let appended = warehouse.load(&more, wait).await.expect("append");
    match appended.state {
        LoadState::Done { rows } => assert!(
            rows == 1 || !backend.reports_the_jobs_rows,
            "the job loaded 1 row, not {rows}"
        ),
        other => panic!("the append: {other:?}"),
    }
    assert_eq!(warehouse.row_count(&table).await.expect("count"), 6);
    assert_eq!(rows(warehouse, &table).await.len(), 6);
}

#[tokio::test]
async fn the_sqlite_warehouse_keeps_the_warehouse_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(dir.path().join("buckets")).expect("store");
    std::fs::create_dir_all(dir.path().join("buckets/landing")).expect("bucket dir");
    let warehouse = SqliteWarehouse::open(dir.path().join("warehouse"), Arc::new(store.clone()))
        .expect("warehouse");
    let backend = Backend {
        reports_the_jobs_rows: true,
    };
    conforms(&store, &warehouse, backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigquery_on_bqemulator_keeps_the_warehouse_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(emu) = Emulators::start(
        &dir.path().join("emu"),
        // fake-gcs-server and bqemulator on one folder (bqemulator reads `gs://` there); no
        // Pub/Sub emulator: nothing here is notified.
        &["start-gcs", "start-bigquery"],
        "the warehouse conformance on bqemulator",
    ) else {
        return;
    };
    emu.bucket("landing").await;
    emu.dataset("staging").await;
    let store = GcsStore::new(&emu.wire.gcs, GcpAuth::Anonymous);
    let warehouse = emu.bigquery();
    let backend = Backend {
        reports_the_jobs_rows: false,
    };
    conforms(&store, &warehouse, backend).await;
}
