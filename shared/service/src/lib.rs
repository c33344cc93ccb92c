//! Conveyor's service runner: what turns a step's router into a running Cloud Run service
//! (or AWS Lambda function), shared by the five function binaries, the console and the CLI.
//!
//! # Layout
//! - [`runner`]: `main` of a function binary ([`start`]: configuration from `CONVEYOR_*`,
//!   telemetry, the step's ports, the caller check, then serve, or the Lambda runtime behind
//!   the `lambda` feature); [`start_with`] and [`serve_port`] for the console's start-up.
//! - [`serve`](mod@serve): serving a router on a bound listener with a header-read timeout, a
//!   connection limit and graceful shutdown ([`serve()`], [`bind`], [`shutdown_signal`]).
//! - [`telemetry`]: logging set-up; [`cloud_logging`]: the Cloud Logging writer that lifts
//!   each request's trace context and the run's fields to the top of its JSON lines.
//! - [`engines`](mod@engines): the batch engines and the shared ports ([`batch_ports`]) of the
//!   submit and poll functions (`ssh` with the `ssh` feature).
//!
//! # Features
//! - `lambda`: AWS Lambda through `lambda_http` (off in the Cloud Run binaries and the CLI).
//! - `ssh`: the SSH batch engine in [`engines()`].

pub mod cloud_logging;
pub mod engines;
pub mod runner;
pub mod serve;
pub mod telemetry;

pub use engines::{batch_ports, engines};
pub use runner::{Platform, ServiceConfig, prepare, run, serve_port, start, start_with};
pub use serve::{
    DEFAULT_HEADER_READ_TIMEOUT, ServeOptions, bind, connections_for, open_file_limit, serve,
    shutdown_signal,
};
