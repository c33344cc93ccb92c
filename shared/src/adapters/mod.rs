//! Adapters: implementations of the [`crate::ports`].
//!
//! # Layout
//! - [`embedded`]: one machine, no cloud account: a directory per bucket, an in-process bus,
//!   SQLite as warehouse and run log, local processes as batches.
//! - [`engines`]: the batch engines (Dataproc Serverless, Dataproc clusters, Dataflow flex
//!   templates, Data Fusion) through their REST APIs, and [`engines::Engines`], the batch port
//!   that picks one per pipeline.
//! - `gcp` (production): Pub/Sub, Cloud Storage, BigQuery and the batch engines' APIs.
//! - [`sources`]: the stage step's sources (local files, S3, other buckets, https), and the
//!   secret stores their credentials are read from.

pub mod embedded;
pub mod engines;
pub mod gcp;
pub mod sources;
