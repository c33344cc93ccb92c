//! Conveyor core: the library behind every Conveyor function and the `conveyor` CLI.
//!
//! Conveyor runs data pipelines on Google Cloud without a central orchestrator: each step
//! (stage, load, submit, poll, log) is a small service that reacts to an event and chains to the
//! next by publishing one. This crate holds everything the steps share.
//!
//! # Layout
//! - [`names`]: parsed newtypes for every name that comes from outside (buckets, objects,
//!   tables, pipelines, run and job ids).
//! - [`config`]: the pipeline configuration file and its validation.
//! - [`event`]: Conveyor's CloudEvents and [`inbound`]: every wire shape a function accepts.
//! - [`ports`]: the traits the steps depend on; [`adapters`]: their implementations.
//! - [`steps`]: the five steps; [`http`]: the axum router every function serves.
//! - [`runtime`]: the embedded runner that wires the steps together on one machine.
//! - [`schedules`]: the Cloud Scheduler jobs a pipeline file asks for (deployed by Terraform).
//! - [`formats`]: decoding of Avro, Parquet, CSV and NDJSON for the embedded warehouse.

pub mod adapters;
pub mod config;
pub mod event;
pub mod formats;
pub mod http;
pub mod inbound;
pub mod names;
pub mod ports;
pub mod runtime;
pub mod schedules;
pub mod service;
pub mod steps;
pub mod telemetry;
