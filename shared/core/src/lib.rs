//! Conveyor core: what every Conveyor function and the `conveyor` CLI share, with no cloud SDK
//! and no database in it.
//!
//! Conveyor runs data pipelines on Google Cloud without a central orchestrator: each step
//! (stage, load, submit, poll, log) is a small service that reacts to an event and chains to the
//! next by publishing one. The steps depend on the [`ports`] only; the adapters live in their
//! own crates, so a binary links exactly the ones it runs:
//!
//! ```text
//! conveyor-core ◄── conveyor-gcp       (Pub/Sub, Cloud Storage, BigQuery, engines' APIs)
//!               ◄── conveyor-sources   (stage sources: S3, https, other buckets, local files)
//!               ◄── conveyor-embedded  (SQLite, a directory per bucket, local processes)
//! ```
//!
//! # Layout
//! From the ground up: a module uses the ones listed before it (and the leaves [`shell`] and
//! [`trace`]), never one after; no two of these modules use each other.
//! - [`names`]: parsed newtypes for every name that comes from outside (buckets, objects,
//!   tables, pipelines, run and job ids); [`format`]: the load formats and column types;
//!   [`ndjson`]: an NDJSON sample's keys and their types (the load step's union schema and the
//!   embedded warehouse's autodetect).
//! - [`config`] (a folder): the pipeline configuration file, one file per section, with
//!   `config/engines/` (one file per batch engine) and `config/validate/` (one per role).
//! - [`event`]: Conveyor's CloudEvents and [`inbound`] (a folder): every wire shape a
//!   function accepts, one file each (CloudEvent, Pub/Sub push, Cloud Storage, plain JSON).
//! - [`ports`] (a folder): the traits the steps depend on, one file per port;
//!   [`engines`]: the batch port that hands each batch to the engine its spec names.
//! - [`schedules`]: the Cloud Scheduler jobs a pipeline file asks for (deployed by Terraform).
//! - [`clock`]: the time the steps stamp (the system's, or a test's manual clock).
//! - [`run_date`]: the logical date a run is for, as the run log records it.
//! - [`run_origin`]: what starts a run and the run id each start gets (every recipe).
//! - [`open_jobs`]: the open jobs the poll tick follows, one rule for every run log.
//! - [`run_state`]: one definition of a run's state from its run-log rows (status, the
//!   views, the console, alerts).
//! - [`task_log`]: the tails of a local or SSH job's output and its telling error line (a
//!   leaf).
//! - [`steps`]: the five steps; [`http`]: the axum router every function serves.
//! - [`trace`]: each request's trace context and `httpRequest` fields in its span (logging
//!   set-up and serving are `conveyor-service`'s); [`shell`]: quoting batch commands for `sh -c`.

pub mod clock;
pub mod config;
pub mod engines;
pub mod event;
pub mod format;
pub mod http;
pub mod inbound;
pub mod links;
pub mod names;
pub mod ndjson;
pub mod open_jobs;
pub mod ports;
pub mod run_date;
pub mod run_origin;
pub mod run_page;
pub mod run_state;
pub mod schedules;
pub mod shell;
pub mod steps;
pub mod task_log;
pub mod trace;

#[cfg(test)]
mod testing;

/// Object names under this folder are Conveyor's own state (the stage watermarks, claims),
/// never data: bucket sources skip them and the load step ignores them.
pub const INTERNAL_PREFIX: &str = "_conveyor/";
