//! Adapters: implementations of the [`crate::ports`].
//!
//! # Layout
//! - [`embedded`]: one machine, no cloud account: a directory per bucket, an in-process bus,
//!   SQLite as warehouse and run log, local processes as batches.
//! - `gcp` (production): Pub/Sub, Cloud Storage, BigQuery and the batch engines' APIs.

pub mod embedded;
pub mod gcp;
