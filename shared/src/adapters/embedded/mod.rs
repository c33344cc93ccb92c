//! The embedded adapters: everything on one machine, under one state directory.
//!
//! # Layout
//! - `store.rs`: [`LocalStore`], a directory per bucket, and its watcher.
//! - `bus.rs`: [`InProcessBus`], a channel to the embedded runtime.
//! - `sqlite.rs`: [`SqliteWarehouse`], SQLite as warehouse and run log (one database file
//!   per dataset, so `sqlite3 .conveyor/warehouse/analytics.sqlite` opens a dataset).
//! - `local_batch.rs`: [`LocalBatchEngine`], a local command as the batch.

mod bus;
mod local_batch;
mod sqlite;
mod store;

pub use bus::InProcessBus;
pub use local_batch::LocalBatchEngine;
pub use sqlite::SqliteWarehouse;
pub use store::{LocalStore, Watcher};
