//! Conveyor's embedded adapters: the whole chain on one machine, under one state directory,
//! with no cloud account. The `conveyor` CLI runs them (`conveyor run`, `conveyor dev`).
//!
//! # Layout
//! - `store.rs`: [`LocalStore`], a directory per bucket, and its [`Watcher`].
//! - `bus.rs`: [`InProcessBus`], a channel to the embedded runtime.
//! - `sqlite.rs`: [`SqliteWarehouse`], SQLite as warehouse and run log (one database file
//!   per dataset, so `sqlite3 .conveyor/warehouse/analytics.sqlite` opens a dataset).
//! - [`formats`]: decoding of Avro, Parquet, CSV and NDJSON files into rows for SQLite.
//! - `local_batch.rs`: [`LocalBatchEngine`], a local command as the batch.
//! - `secrets.rs`: [`DirSecrets`], secrets as files under the state directory.
//! - [`lineage`]: OpenLineage run events to `lineage.jsonl` ([`LineageFile`]) or an HTTP
//!   endpoint ([`LineageHttp`]).
//! - [`state_dir`]: the state directory's lock (one process at a time) and writability check.
//! - [`runtime`]: [`Embedded`](runtime::Embedded), which wires them into the steps and plays
//!   Pub/Sub, the GCS notifications and Cloud Scheduler.

mod bus;
pub mod formats;
pub mod lineage;
mod local_batch;
mod notify;
pub mod runtime;
mod secrets;
mod sqlite;
pub mod state_dir;
mod store;

pub use bus::InProcessBus;
pub use lineage::{LINEAGE_FILE, LineageFile, LineageHttp};
pub use local_batch::LocalBatchEngine;
pub use notify::LocalNotifier;
pub use secrets::DirSecrets;
pub use sqlite::{SqliteSqlEngine, SqliteWarehouse};
pub use store::{LocalStore, Watcher};
